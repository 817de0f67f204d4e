"""``compose-gen runs``: spec name, step, best checkpoint and final metrics of each run folder."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

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
    assert main(["runs", str(tmp_path / "runs" / "a")]) == 0, "a run folder itself lists that run"
    assert capsys.readouterr().out.strip() == lines[0]
    (tmp_path / "runs" / "a" / "spec.yaml").unlink()  # deleted by mistake: the checkpoints are still there, so is the run
    assert main(["runs", str(tmp_path / "runs")]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'runs' / 'a'}  ? (no spec.yaml: it cannot be loaded, resumed or evaluated until it is restored)  step 4")


def test_damaged_run_folders_are_listed_not_fatal(tmp_path, capsys):
    runs = tmp_path / "runs"
    broken_spec, broken_eval, cut_log = runs / "a", runs / "b", runs / "c"
    for run in (broken_spec, broken_eval, cut_log):
        run.mkdir(parents=True)
        (run / "spec.yaml").write_text(f"name: {run.name}\n")
    (broken_spec / "spec.yaml").write_text("name: [unclosed\n")
    (broken_eval / "evaluation.json").write_text('{"test/nll": 1.')
    (cut_log / "metrics.jsonl").write_text('{"step": 1, "nll": 2.5}\n{"step": 2, "nll": 2.')  # killed mid-write
    assert main(["runs", str(runs)]) == 0
    a, b, c = capsys.readouterr().out.strip().splitlines()
    assert a == f"{broken_spec}  ? (spec.yaml does not parse: it cannot be loaded, resumed or evaluated until it is mended)  step -"
    assert b == f"{broken_eval}  b  step -  (unreadable evaluation.json)"
    assert c == f"{cut_log}  c  step -  train @ 1: nll=2.5"  # no checkpoint holds the model of that record
    (cut_log / "metrics.jsonl").write_text('{"nll": 2.5}\n')  # a record without its step (edited): no "@ None"
    assert main(["runs", str(cut_log)]) == 0
    assert capsys.readouterr().out.strip() == f"{cut_log}  c  step -  train: nll=2.5"
    for not_a_record in ('"hello"', '{"test/nll": 1.0}'):  # JSON, but no record of a step: damaged as much as a torn file
        (broken_eval / "evaluation.json").write_text(not_a_record)
        assert main(["runs", str(broken_eval)]) == 0
        assert capsys.readouterr().out.strip() == f"{broken_eval}  b  step -  (unreadable evaluation.json)"


def test_a_log_or_checkpoint_file_that_is_no_regular_file_neither_hangs_nor_hides_the_other_runs(tmp_path, toys_catalogue, capsys):
    """A metrics.jsonl that was a folder stopped the whole listing; a FIFO hung it, as a FIFO model file hung sample too."""
    spec = load_spec(spec_dict(AUTOENCODER, steps=4, checkpoint_every=2), catalogue=toys_catalogue)
    runs = tmp_path / "runs"
    for name in ("a", "b", "c"):
        Run.create(spec, runs / name, progress=False).train()
    (runs / "a" / "metrics.jsonl").unlink()
    (runs / "a" / "metrics.jsonl").mkdir()
    (runs / "b" / "metrics.jsonl").unlink()
    os.mkfifo(runs / "b" / "metrics.jsonl")
    newest = runs / "c" / "checkpoints" / "step-00000004" / "model.safetensors"
    newest.unlink()
    os.mkfifo(newest)
    assert main(["runs", str(runs)]) == 0
    a, b, c = capsys.readouterr().out.strip().splitlines()
    assert a == f"{runs / 'a'}  ae_tiny  step 4  (unreadable metrics.jsonl)" and b == f"{runs / 'b'}  ae_tiny  step 4  (unreadable metrics.jsonl)"
    assert c.startswith(f"{runs / 'c'}  ae_tiny  step 2 (1 newer checkpoint(s) damaged)")
    assert Run.load(runs / "c", catalogue=toys_catalogue, progress=False, weights_only=True).trainer.step == 2, "skipped, not waited on"


def test_an_evaluation_of_an_older_step_gives_way_to_the_training_metrics(tmp_path, toys_catalogue, capsys):
    """A run evaluated at step 2, then trained on to step 4, shows its step-4 training metrics, not step 2's evaluation."""
    run = tmp_path / "runs" / "a"
    spec = load_spec(spec_dict(AUTOENCODER, steps=4, checkpoint_every=2), catalogue=toys_catalogue)
    Run.create(spec, run, progress=False).train()
    (run / "evaluation.json").write_text(json.dumps({"step": 4}))  # a spec without metrics: the training metrics, then
    assert main(["runs", str(tmp_path / "runs")]) == 0
    assert "train: " in capsys.readouterr().out
    for step, shown in ((2, "train: "), (4, "test/rec=23.62")):
        (run / "evaluation.json").write_text(json.dumps({"step": step, "test/rec": 23.62}))
        assert main(["runs", str(tmp_path / "runs")]) == 0
        line = capsys.readouterr().out.strip()
        assert line.startswith(f"{run}  ae_tiny  step 4  {shown}"), line
        assert ("test/rec" in line) == (step == 4) and ("rec.mse=" in line) == (step == 2)


def test_many_metrics_are_shown_whole_as_far_as_they_fit_then_counted(tmp_path, capsys):
    run = tmp_path / "runs" / "wide"
    run.mkdir(parents=True)
    (run / "spec.yaml").write_text("name: wide\n")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, **{f"test/vae.z.kl_dim{d:02d}": 0.123456 for d in range(16)}}) + "\n")
    assert main(["runs", str(tmp_path / "runs")]) == 0
    line = capsys.readouterr().out.strip()
    shown = line.split("train @ 1: ")[1].split("  … ")[0].split("  ")
    assert all(item.startswith("test/vae.z.kl_dim") and item.endswith("=0.1235") for item in shown), "no entry is cut"
    assert line.endswith(f"  … (+{16 - len(shown)} more)") and 0 < len(shown) < 16


def test_the_step_shown_is_the_newest_checkpoint_that_verifies(tmp_path, toys_catalogue, capsys):
    """The one a resume would take: damaged newer checkpoints are counted, and a run with none sound says so."""
    run = tmp_path / "runs" / "a"
    spec = load_spec(spec_dict(AUTOENCODER, steps=4, checkpoint_every=2), catalogue=toys_catalogue)
    Run.create(spec, run, progress=False).train()
    newest, oldest = run / "checkpoints" / "step-00000004", run / "checkpoints" / "step-00000002"
    with open(newest / "model.safetensors", "r+b") as handle:
        handle.truncate(100)
    assert main(["runs", str(tmp_path / "runs")]) == 0
    assert capsys.readouterr().out.startswith(f"{run}  ae_tiny  step 2 (1 newer checkpoint(s) damaged)  train @ 4: ")
    (oldest / "state.json").write_text("[]")
    assert main(["runs", str(tmp_path / "runs")]) == 0
    assert capsys.readouterr().out.startswith(f"{run}  ae_tiny  step - (all 2 checkpoint(s) damaged)  ")


def test_a_best_checkpoint_that_is_damaged_or_unreadable_is_said_so(tmp_path, toys_catalogue, capsys):
    """runs showed "best rec=… @ 2" for a checkpoint load_run(checkpoint="best") then refused, and dropped a torn best.json."""
    run = tmp_path / "runs" / "a"
    spec = load_spec(spec_dict(AUTOENCODER, steps=4, best_metric="rec", checkpoint_every=2), catalogue=toys_catalogue)
    Run.create(spec, run, progress=False).train()
    best = json.loads((run / "checkpoints" / "best.json").read_text())

    def listed() -> str:
        assert main(["runs", str(tmp_path / "runs")]) == 0
        return capsys.readouterr().out

    assert f"  best rec={best['value']:.4g} @ {best['step']}  " in listed()
    recovered = f"  best rec={best['value']:.4g} @ {best['step']} (unreadable best.json: the newest checkpoint's record)  "
    for damaged in ('{"step": 2, "met', '{"step": 2, "metric": [1, 2], "value": 1}', '{"step": 4}'):  # torn; edited: not "best [1, 2]=1";
        (run / "checkpoints" / "best.json").write_text(damaged)  # edited: any checkpoint would pass for the best
        assert recovered in listed()
    (run / "checkpoints" / "best.json").write_text(json.dumps(best))
    with open(run / "checkpoints" / f"step-0000000{best['step']}" / "model.safetensors", "r+b") as handle:
        handle.truncate(100)
    assert f"  best rec={best['value']:.4g} @ {best['step']} (damaged or gone)  " in listed()
    (run / "checkpoints" / "best.json").write_text("{")
    for checkpoint in (run / "checkpoints").glob("step-*"):
        checkpoint.joinpath("state.json").write_text("{")
    assert "  best ? (unreadable best.json)  " in listed()


def test_a_folder_that_cannot_be_read_is_listed_as_such_and_the_others_still_are(tmp_path, toys_catalogue, capsys, monkeypatch):
    """One sub-folder without read permission ended `compose-gen runs` with a traceback before any run was listed."""
    spec = load_spec(spec_dict(AUTOENCODER, steps=2), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "runs" / "b", progress=False).train()
    locked = tmp_path / "runs" / "a"
    locked.mkdir()
    (tmp_path / "runs" / "c" / "spec.yaml").mkdir(parents=True)  # read, it is no file: not a spec that "does not parse"
    exists, iterdir = Path.exists, Path.iterdir

    def refused(call, inside):  # as `chmod 000 runs/a` does for anyone but root: nothing in it can be seen
        def checked(path: Path, *args):
            if locked in path.parents or (path == locked and not inside):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return call(path, *args)

        return checked

    monkeypatch.setattr(Path, "exists", refused(exists, inside=True))
    monkeypatch.setattr(Path, "iterdir", refused(iterdir, inside=False))
    assert main(["runs", str(tmp_path / "runs")]) == 0
    a, b, c = capsys.readouterr().out.strip().splitlines()
    assert a == f"{locked}  ? (unreadable: Permission denied)"
    assert b.startswith(f"{tmp_path / 'runs' / 'b'}  ae_tiny  step 2")
    assert c.startswith(f"{tmp_path / 'runs' / 'c'}  ? (spec.yaml cannot be read: ")
