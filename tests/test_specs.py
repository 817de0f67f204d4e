"""Every spec in ``specs/`` compiles (dry run included), trains, samples, and passes the JSON Schema editors use.

``compose-gen validate`` only dry-runs a spec; here each one also takes real
optimizer steps with its own players, batch size and losses, so a shipped spec
cannot silently stop training.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import yaml

import compose_gen as cg
from compose_gen.runtime import Trainer, build
from compose_gen.runtime.data import BatchStream
from compose_gen.spec.source import load_source

SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.yaml"))


def test_specs_are_shipped() -> None:
    assert len(SPECS) >= 20


_ON_CUDA = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
MODES = {  # where and how a spec trains: autocast and the compiler each failed shipped specs that train in eager fp32
    "cpu": ("cpu", []),
    "cuda-bf16": pytest.param("cuda", ["train.precision=bf16"], marks=_ON_CUDA),
    "cuda-bf16-compiled": pytest.param("cuda", ["train.precision=bf16", "train.compile=true"], marks=_ON_CUDA),
}


@pytest.mark.parametrize(("device", "overrides"), MODES.values(), ids=MODES.keys())
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_spec_trains_and_samples(path: Path, device: str, overrides: list[str]) -> None:
    spec = cg.load_spec(path, overrides)
    model, data = build(spec, device)
    before = {name: [p.detach().clone() for p in plan.params] for name, plan in model.plans.items()}
    trainer = Trainer(model, BatchStream(data.train, spec.model.train.batch_size, spec.model.seed, model.device), progress=False)
    logs = trainer.fit(2)
    assert logs and all(math.isfinite(v) for v in logs.values()), logs
    for name, plan in model.plans.items():
        assert f"{name}.grad_norm" in logs, f"player {name!r} took no finite step"
        moved = [not torch.equal(a, p) for a, p in zip(before[name], plan.params, strict=True)]
        assert any(moved), f"player {name!r} changed none of its parameters"
    if model.sampler is None:  # a spec without `sample:` is judged by its value grids (CycleGAN's translations)
        assert spec.sections.sampler is None and spec.model.evaluate.metrics
        return
    samples = model.sample(4)
    assert samples.shape == (4, *data.train.event_shape("x"))
    assert torch.isfinite(samples).all()


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_json_schema_accepts_shipped_spec(path: Path, catalogue) -> None:
    import jsonschema

    from compose_gen.spec.schema import spec_schema

    validator = jsonschema.Draft202012Validator(spec_schema(catalogue))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(load_source(path).data)]
    assert not errors, errors


def _readme_specs() -> list[str]:
    """The README's YAML examples that are whole specs (they have a name), not fragments."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)
    return [block for block in blocks if re.search(r"^name:", block, flags=re.MULTILINE)]


def test_the_readme_has_whole_specs() -> None:
    assert len(_readme_specs()) >= 2


@pytest.mark.parametrize("text", _readme_specs(), ids=lambda text: text.split("\n", 1)[0])
def test_a_readme_spec_validates(text: str) -> None:
    """What a reader copies from the README must work: compiled with its dry run, as ``compose-gen validate`` does."""
    build(cg.load_spec(yaml.safe_load(text)), "cpu")
