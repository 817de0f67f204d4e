"""Generated and mutated specs only ever produce ``SpecError``: no other exception, no hang.

About 2,600 cases (dict mutations, random dicts, YAML and JSON text mutations,
``--set`` overrides), each loaded with :func:`load_spec` and, when valid, put
through the compiler's static graph checks (no data, no training).  Each case
runs under a 5-second alarm, so a hang fails the test instead of stalling CI.
"""

from __future__ import annotations

import copy
import json
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compose_gen import make_catalogue
from compose_gen.compiler import build_graph
from compose_gen.spec import SpecError, SpecSource, load_spec, parse_text
from compose_gen.spec.model import PlayerSpec, SpecModel, TrainSpec

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = make_catalogue()

VAE = yaml.safe_load((ROOT / "specs" / "vae_digits.yaml").read_text())
GAN = {
    "name": "gan",
    "data": {"type": "eight_gaussians", "n": 100},
    "components": {
        "noise": {"type": "standard_normal", "shape": [2]},
        "generator": {"type": "mlp", "in_features": 2, "out_features": 2, "hidden": [8]},
        "critic": {"type": "mlp", "in_features": 2, "out_features": 1},
    },
    "graph": {"z": "noise.sample(x)", "fake": "generator(z)", "both": "cat(x, fake)", "d": "detach(fake)"},
    "losses": {"rec": {"type": "elbo", "encoder": "encoder", "decoder": "decoder", "prior": "noise"}},
    "players": {
        "critic": {"params": ["critic"], "terms": {"rec": 1.0}, "steps": 5, "optimizer": {"type": "adam", "betas": [0.5, 0.9]}},
        "generator": {"params": ["generator"], "terms": ["rec"], "schedule": {"type": "cosine", "warmup": 3}},
    },
    "train": {"steps": 10, "precision": "bf16", "best_metric": "rec", "on_nan": "skip"},
    "sample": {"type": "generator", "noise": "noise", "generator": "generator"},
    "evaluate": {"metrics": [{"type": "test_losses"}]},
}
BASES = [VAE, GAN]

KEYS = sorted(
    set(SpecModel.model_fields) | set(TrainSpec.model_fields) | set(PlayerSpec.model_fields)
    | {f for t in CATALOGUE.types.values() for f in t.params.model_fields}
    | {"type", "lr", "betas", "x", "y", "__class__", "!!python", ""}
)
TYPE_NAMES = sorted(CATALOGUE.types) + ["adam", "cosine", "nope", "__import__"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(KEYS + TYPE_NAMES + ["x", "z(x)", "a.b(c)", "cat(x, x)", "noise.sample(x)", "1e309", "-0", "[1, 2]"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=4),
    ),
    max_leaves=12,
)

SETTINGS = {"deadline": None, "derandomize": True, "suppress_health_check": list(HealthCheck), "database": None}


@contextmanager
def alarm(seconds: float) -> Iterator[None]:
    def timeout(signum: int, frame: object) -> None:
        raise TimeoutError(f"a spec took more than {seconds} s to check (hang?)")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def only_spec_errors(load: Callable[[], Any]) -> None:
    """``load()`` and the static graph checks either pass or raise SpecError."""
    with alarm(5.0):
        try:
            spec = load()
            build_graph(spec, ("x", "y"))
        except SpecError as error:
            assert str(error)  # the message renders


def paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into nested dicts and lists, the root included."""
    found = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            found += paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found += paths(v, (*prefix, i))
    return found


def mutate(data: Any, draw: Callable[[Any], Any]) -> Any:
    """Apply one random edit at a random path: replace, delete, insert a key, rename a type, or wrap in a list."""
    data = copy.deepcopy(data)
    path = draw(st.sampled_from(paths(data)))
    op = draw(st.sampled_from(["replace", "delete", "insert", "type", "wrap"]))
    if not path:
        return draw(values) if op == "replace" else data
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    if op == "replace":
        parent[key] = draw(values)
    elif op == "delete":
        del parent[key]
    elif op == "insert" and isinstance(parent[key], dict):
        parent[key][draw(st.sampled_from(KEYS))] = draw(values)
    elif op == "type" and isinstance(parent[key], dict):
        parent[key]["type"] = draw(st.sampled_from(TYPE_NAMES))
    elif op == "wrap":
        parent[key] = [parent[key]]
    return data


@settings(max_examples=1000, **SETTINGS)
@given(st.sampled_from(BASES), st.integers(1, 4), st.data())
def test_mutated_dict_specs(base, edits, data):
    spec = base
    for _ in range(edits):
        spec = mutate(spec, data.draw)
    only_spec_errors(lambda: load_spec(SpecSource("<dict>", spec), catalogue=CATALOGUE))


@settings(max_examples=400, **SETTINGS)
@given(st.dictionaries(st.sampled_from(sorted(SpecModel.model_fields)), values, max_size=8))
def test_random_dict_specs(spec):
    only_spec_errors(lambda: load_spec(spec, catalogue=CATALOGUE))


YAML_CHARS = st.sampled_from(list(":-[]{},&*!|>'\"#%@`?\n\t  ") + ["0", "1e9", "x", "é", "\x00", "\ufeff", "<<", "---", "..."])


def mutate_text(text: str, draw: Callable[[Any], Any], edits: int) -> str:
    for _ in range(edits):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(YAML_CHARS)
        if op == "insert":
            text = text[:at] + piece + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        else:
            text = text[:at] + piece + text[at + len(piece) :]
    return text


@settings(max_examples=700, **SETTINGS)
@given(st.sampled_from(BASES), st.integers(1, 6), st.data())
def test_mutated_yaml_text(base, edits, data):
    text = mutate_text(yaml.safe_dump(base, sort_keys=False), data.draw, edits)
    only_spec_errors(lambda: load_spec(parse_text(text, "spec.yaml"), catalogue=CATALOGUE))


@settings(max_examples=250, **SETTINGS)
@given(st.sampled_from(BASES), st.integers(1, 4), st.data())
def test_mutated_json_text(base, edits, data):
    text = mutate_text(json.dumps(base, indent=1), data.draw, edits)
    only_spec_errors(lambda: load_spec(parse_text(text, "spec.json", json_syntax=True), catalogue=CATALOGUE))


override_keys = st.lists(st.one_of(st.sampled_from(KEYS), st.text(max_size=4), st.integers(0, 3).map(str)), min_size=0, max_size=4)


@settings(max_examples=300, **SETTINGS)
@given(st.sampled_from(BASES), st.lists(st.tuples(override_keys, st.sampled_from(["=", ""]), st.one_of(st.text(max_size=10), YAML_CHARS)), max_size=3))
def test_overrides(base, overrides):
    texts = [".".join(key) + sep + value for key, sep, value in overrides]
    only_spec_errors(lambda: load_spec(base, texts, catalogue=CATALOGUE))


def test_pathological_inputs():
    deep = "a: " + "[" * 5000 + "]" * 5000
    for load in (
        lambda: load_spec(parse_text(deep), catalogue=CATALOGUE),
        lambda: load_spec(parse_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}", json_syntax=True), catalogue=CATALOGUE),
        lambda: load_spec(parse_text("a: &a [" + ", ".join(["*a"] * 0) + "]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                                     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                                     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]"), catalogue=CATALOGUE),
        lambda: load_spec(GAN, ["graph.z.²=1", "players.critic.params.²=x", "train=[1]", "a..b=1"], catalogue=CATALOGUE),
        lambda: load_spec({**GAN, "graph": {"v": "f(" + "x," * 10000 + "x)"}}, catalogue=CATALOGUE),
        lambda: load_spec({**GAN, "graph": {"v": "f(" + "9" * 5000 + ")"}}, catalogue=CATALOGUE),
    ):
        only_spec_errors(load)
    for depth in range(100, 700, 50):  # around the depth where the YAML parser itself runs out of stack
        text = "name: a\ndata: {type: moons, x: " + "[" * depth + "]" * depth + "}"
        only_spec_errors(lambda text=text: load_spec(parse_text(text), ["data.x.0=1", "train.steps=2"], catalogue=CATALOGUE))
