"""Remedies for a run folder that no longer rebuilds as it was trained: its data moved, or a plugin is gone or changed.

The folder records the plugin (and package, with its version) behind each type its spec
uses (:data:`PLUGINS_FILE`), so an unknown type can name the package to install, and its
``spec.yaml`` records where the data were, so a missing file can name the ``--set`` that
says where they are now.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Mapping

from compose_gen.core import Splits
from compose_gen.core.files import read_json
from compose_gen.runtime.checkpoint import list_checkpoints
from compose_gen.runtime.folder import override_keys
from compose_gen.runtime.layout import PLUGINS_FILE, SPEC_FILE, STATE_FILE
from compose_gen.spec import Problem, Spec, SpecError

__all__ = [
    "changed_plugins",
    "missing_data_files",
    "recorded_plugins",
    "types_used",
    "with_missing_plugin_remedy",
    "with_moved_data_remedy",
]

def types_used(spec: Spec) -> list[str]:
    """The names of the types ``spec`` declares: components, losses, metrics, data and sampler."""
    sections = spec.sections
    declared = [*sections.components.values(), *sections.losses.values(), *sections.metrics, sections.data, sections.sampler]
    return [d.type.name for d in declared if d is not None]


def recorded_plugins(run_dir: Path) -> dict[str, str]:
    """The folder's :data:`PLUGINS_FILE` (empty if absent or unreadable: a record for messages, not for rebuilding)."""
    try:
        recorded = read_json(run_dir / PLUGINS_FILE)
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in recorded.items() if isinstance(v, str)} if isinstance(recorded, dict) else {}


def changed_plugins(run_dir: Path, spec: Spec) -> list[str]:
    """A warning for each type of ``spec`` that the folder records as given by another plugin or package version than now
    (a plugin loaded as ``NAME (from DIST)`` while another package's entry point shares its name is the same plugin)."""
    recorded, now = recorded_plugins(run_dir), spec.catalogue.provenance(types_used(spec))
    return [
        f"warning: {run_dir} was trained with type {name!r} of {recorded[name]}; it is now of {now[name]}"
        for name in sorted(set(recorded) & set(now))
        if _unqualified(recorded[name]) != _unqualified(now[name])
    ]


#: What a plugin's name gains when another distribution's entry point shares it: `` (from DIST)``.
_QUALIFIER = re.compile(r" \(from [^)']*\)")


def _unqualified(origin: str) -> str:
    """A provenance (``plugin 'NAME' from DIST VERSION``) with its plugin named as its entry point is."""
    return _QUALIFIER.sub("", origin)


def _failure_of(origin: str, failures: Mapping[str, str]) -> str | None:
    """The problem of the plugin of a provenance (it failed to load, or shares its name), if it has one, whether or not a
    shared name qualifies it now or did then."""
    found = re.match(r"plugin '([^']*)'(?: from (\S+))?", origin)
    if found is None:
        return None
    name, plain = found[1], _QUALIFIER.sub("", found[1])
    return failures.get(name) or failures.get(plain) or failures.get(f"{plain} (from {found[2]})")


def missing_data_files(data: Any, path: tuple[str, ...] = ("data",)) -> list[tuple[str, ...]]:
    """The keys of the data section (sources within it too) whose file or folder is not there."""
    missing: list[tuple[str, ...]] = []
    for key, value in data.items() if isinstance(data, dict) else ():
        if isinstance(value, dict):
            missing += missing_data_files(value, (*path, key))
        elif isinstance(value, str) and Path(value).is_absolute() and not Path(value).exists():  # recorded absolute
            missing.append((*path, key))
    return missing


def with_missing_plugin_remedy(error: SpecError, run_dir: Path, failures: Mapping[str, str], offer_set: bool = False) -> SpecError:
    """A run folder's unknown types, each with the plugin and package the run was trained with (and its problem, when
    it is among the plugins that have one, ``failures``: it failed to load, or shares its name); for metrics, with
    ``offer_set`` (a command that records no spec: sample, evaluate), also the ``--set`` that leaves them out of it."""
    recorded = recorded_plugins(run_dir)
    data = getattr(error.where, "data", None)  # the spec as loaded, overrides applied
    evaluate = data.get("evaluate") if isinstance(data, dict) else None
    metrics = evaluate.get("metrics") if isinstance(evaluate, dict) else None
    unknown = {p.path[2] for p in error.problems if p.path[:2] == ("evaluate", "metrics") and p.path[3:] == ("type",)}
    only_metrics = all(p.path[:2] == ("evaluate", "metrics") for p in error.problems)  # else leaving them out won't do
    without = ""
    if offer_set and isinstance(metrics, list) and unknown and only_metrics:
        kept = [metric for i, metric in enumerate(metrics) if i not in unknown]
        without = f", or leave the metric(s) out of one command: --set {shlex.quote('evaluate.metrics=' + json.dumps(kept))}"

    def remedy(problem: Problem) -> str:
        for name, origin in recorded.items():
            if re.search(rf"unknown [\w/]+ type {re.escape(repr(name))}", problem.message):
                extra = without if problem.path[:2] == ("evaluate", "metrics") else ""
                failure = _failure_of(origin, failures)
                fix = f"it is installed, with a problem: {failure}" if failure else "install that package"
                return f"{problem.message}; {run_dir} was trained with it from {origin}: {fix}{extra}"
        return problem.message

    return SpecError([Problem(p.path, remedy(p)) for p in error.problems], error.where)


def with_moved_data_remedy(error: SpecError, spec: Spec, run_dir: Path) -> SpecError:
    """A run folder's data problem, with the README's remedy where a recorded file or folder is gone (it moved)."""
    missing = missing_data_files(spec.source.data.get("data"))
    if not missing or not any(problem.path[:1] == ("data",) for problem in error.problems):
        return error
    keys = " ".join(f"--set {'.'.join(key)}=NEW" for key in missing)
    names = ", ".join(".".join(key) for key in missing)
    remedy = (
        f"; the run's spec.yaml records where the data were; if they moved, say where: `compose-gen evaluate {run_dir} {keys}` "
        f"(or sample) for one command, `compose-gen train --resume {run_dir} {keys}` to train on with it, or edit {names} in "
        f"{run_dir / SPEC_FILE} to the new absolute path to record it (the run checks that the data found there are those it "
        "trained on)"
    )
    problems = [Problem(p.path, p.message + remedy) if p.path[:1] == ("data",) else p for p in error.problems]
    return SpecError(problems, error.where)


def with_changed_data_note(error: SpecError, data: Splits, run_dir: Path, overrides: list[str]) -> SpecError:
    """A run folder's model that no longer builds, told where the data built now are not those its newest checkpoint trained
    on (a data file rewritten with another shape, say, or ``overrides`` of the data), which then likely explains it."""
    checkpoints = list_checkpoints(run_dir)
    try:
        recorded = read_json(checkpoints[-1] / STATE_FILE)["trained_on"]
    except (IndexError, OSError, ValueError, KeyError, TypeError):  # no checkpoint, or no record to compare with
        return error
    current = {data.train.fingerprint(), data.train.fingerprint(with_source=False)}  # older checkpoints: the fields alone
    if not isinstance(recorded, list) or not current.isdisjoint(recorded):
        return error
    shapes = ", ".join(f"{name} {tuple(value.shape[1:])}" for name, value in data.train.fields.items())
    told = sorted(key for key in override_keys(overrides) if key == "seed" or key.split(".")[0] == "data")
    cause = f"--set {', '.join(told)} changed them" if told else "has a data file changed since training?"
    note = (
        f"the data built now (examples of shape {shapes}) are not those {checkpoints[-1].name} trained on, which likely "
        f"explains the problem below: {cause}"
    )
    return SpecError([Problem(("data",), note), *error.problems], error.where)
