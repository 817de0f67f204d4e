"""``compose-gen runs``: spec name, step, best checkpoint and final metrics of each run folder."""

from __future__ import annotations

from runtime_toys import AUTOENCODER, spec_dict

from compose_gen.cli import main
from compose_gen.runtime import Run
from compose_gen.spec import load_spec


def test_runs_lists_name_step_best_and_metrics(tmp_path, toys_catalogue, capsys):
    spec = load_spec(spec_dict(AUTOENCODER, steps=4, best_metric="rec", checkpoint_every=2), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "runs" / "a", progress=False).train()
    (tmp_path / "runs" / "not-a-run").mkdir()
    assert main(["runs", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{tmp_path / 'runs' / 'a'}  ae_tiny  step 4  best rec=")
    assert "train: " in lines[0] and "rec.mse=" in lines[0]  # no evaluation.json: the last logged metrics
