"""Compiler: spec → networkx graph → checks → modules → per-player plans → dry run."""

from compose_gen.compiler.advice import advise, advise_paths
from compose_gen.compiler.expressions import Call, parse_call
from compose_gen.compiler.graph import SpecGraph, assumed_fields, build_graph
from compose_gen.compiler.model import GenerativeModel, SamplingFailed, compile_spec
from compose_gen.compiler.plan import Plan, run_plan, term_address, unknown_player_names

__all__ = [
    "Call",
    "GenerativeModel",
    "Plan",
    "SamplingFailed",
    "SpecGraph",
    "advise",
    "advise_paths",
    "assumed_fields",
    "build_graph",
    "compile_spec",
    "parse_call",
    "run_plan",
    "term_address",
    "unknown_player_names",
]
