"""The dataset plugins of docs/datasets.md, run as the page prints them, so the page stays true.

Each example is taken from the page's Python blocks and registered in-process, by its own
``compose_gen_types`` hook as an installed plugin is, beside the first-party types: it validates, applies its ``transforms:``, and
``run.log_prob`` of the raw test examples agrees with the ``test/nll`` that evaluation reports.
"""

from __future__ import annotations

import math
import re
import sys
import types
from pathlib import Path

import pytest
import torch

import compose_gen as cg
from compose_gen import SpecError, make_catalogue
from compose_gen.core.contracts import check_splits

DOC = Path(__file__).resolve().parents[3] / "docs" / "datasets.md"


def doc_module(marker: str, name: str) -> types.ModuleType:
    """The page's Python block that defines ``marker``, executed as module ``name``."""
    blocks = [block for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if marker in block]
    assert len(blocks) == 1, f"docs/datasets.md has {len(blocks)} Python blocks defining {marker!r}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # pydantic resolves the postponed annotations through the module
    exec(compile(blocks[0], f"{DOC}:{name}", "exec"), module.__dict__)
    return module


POINTS = doc_module("def build_text_points", "docs_datasets_text_points")
SCALED = doc_module("def build_scaled_points", "docs_datasets_scaled_points")
CATALOGUE = make_catalogue([POINTS, SCALED], entry_points="first-party")  # registered by their own hooks, as installed


@pytest.fixture
def points_file(tmp_path: Path) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """200 two-feature rows on very different scales, with a label 0/1 in the last column."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (200,), generator=g)
    x = torch.stack([100 + 20 * y + 5 * torch.randn(200, generator=g), 0.01 * y + 0.002 * torch.randn(200, generator=g)], 1).double()
    path = tmp_path / "points.txt"
    path.write_text("".join(f"{a:.6f} {b:.8f} {int(c)}\n" for (a, b), c in zip(x.tolist(), y.tolist(), strict=True)))
    raw = torch.tensor([[float(v) for v in line.split()] for line in path.read_text().splitlines()], dtype=torch.float64)
    return path, raw[:, :2], raw[:, 2].long()


def spec(data: dict, steps: int = 20) -> cg.spec.Spec:
    return cg.load_spec(
        {
            "name": "documented_dataset",
            "data": data,
            "components": {"flow": {"type": "flow", "base": {"type": "standard_normal", "shape": [2]},
                                    "bijectors": [{"type": "affine", "shape": [2]}]}},
            "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
            "train": {"steps": steps, "batch_size": 64, "optimizer": {"type": "adam", "lr": 1e-2}},
            "sample": {"type": "flow_sampler", "flow": "flow"},
            "evaluate": {"metrics": [{"type": "test_losses"}]},
        },
        catalogue=CATALOGUE,
    )


def assert_log_prob_is_test_nll(run, raw_test: torch.Tensor) -> None:
    nll = run.evaluate(record=False)["test/nll"]
    assert math.isfinite(nll)
    assert -run.log_prob(raw_test).double().mean().item() == pytest.approx(nll, rel=1e-4, abs=1e-4)


def test_text_points_gets_the_shared_parameters() -> None:
    assert {"seed", "test_fraction", "transforms", "path", "labels"} <= set(POINTS.TextPointsParams.model_json_schema()["properties"])


def test_text_points_validates_and_applies_transforms(points_file) -> None:
    path, raw_x, raw_y = points_file
    model, data = cg.build(spec({"type": "text_points", "path": str(path), "labels": True, "transforms": ["standardise"]}), "cpu")
    check_splits(data)
    train, test = data.train, data.test
    assert len(train) == 160 and len(test) == 40
    assert train.fields["x"].dtype == torch.float32 and train.fields["y"].dtype == torch.int64 and train.classes() == 2
    torch.testing.assert_close(train.fields["x"].mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(train.fields["x"].std(0), torch.ones(2), atol=1e-5, rtol=0)
    raw_train = train.to_display(train.fields["x"].double())  # back in the file's units
    assert train.ladj_to_model == pytest.approx(-raw_train.std(0).log().sum().item(), rel=1e-5)
    shown = torch.cat([raw_train, test.to_display(test.fields["x"].double())])
    labels = torch.cat([train.fields["y"], test.fields["y"]])
    torch.testing.assert_close(shown[shown[:, 0].argsort()], raw_x[raw_x[:, 0].argsort()], rtol=1e-5, atol=1e-6)
    assert torch.equal(labels[shown[:, 0].argsort()], raw_y[raw_x[:, 0].argsort()])
    model_x, ladj = test.to_model(raw_x[:3])
    assert model_x.shape == (3, 2) and torch.allclose(ladj, torch.full((3,), train.ladj_to_model, dtype=ladj.dtype))


def test_text_points_log_prob_matches_test_nll(points_file, tmp_path: Path) -> None:
    path, _, _ = points_file
    run = cg.train(spec({"type": "text_points", "path": str(path), "labels": True, "transforms": ["standardise"]}),
                   out=tmp_path / "run", progress=False)
    test = run.data.test
    assert_log_prob_is_test_nll(run, test.to_display(test.fields["x"].double()))
    assert run.log_prob([[118.5, 0.0127], [97.2, 0.0031]]).shape == (2,)


def test_text_points_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("1 2\n3 x\n")
    with pytest.raises(SpecError, match=r"text_points.*bad\.txt: line 2"):
        cg.build(spec({"type": "text_points", "path": str(path)}), "cpu")
    path.write_text("1 2 0\n3 4 -1\n5 6 1\n")
    with pytest.raises(SpecError, match="labels"):
        cg.build(spec({"type": "text_points", "path": str(path), "labels": True}), "cpu")


def test_hand_built_dataset_keeps_its_own_data_space(points_file, tmp_path: Path) -> None:
    path, raw_x, _ = points_file
    points = tmp_path / "unlabelled.txt"
    points.write_text("".join(f"{a!r} {b!r}\n" for a, b in raw_x.tolist()))
    run = cg.train(spec({"type": "scaled_points", "path": str(points), "divide_by": 50.0}), out=tmp_path / "run", progress=False)
    check_splits(run.data)
    test = run.data.test
    assert test.ladj_to_model == pytest.approx(-2 * math.log(50.0)) and run.data.train.ladj_to_model == test.ladj_to_model
    assert_log_prob_is_test_nll(run, test.to_display(test.fields["x"].double()))
