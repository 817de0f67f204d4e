"""Means over a log window, metrics JSON lines, TensorBoard (optional), sample pictures during training, progress off a terminal."""

from __future__ import annotations

import json
import os
import shutil
import sys
import types

import pytest
from PIL import Image
from runtime_toys import GAN, VAE, errors_without_waiting, spec_dict

from compose_gen.runtime import Run
from compose_gen.runtime.checkpoint import list_checkpoints
from compose_gen.runtime.distributed import Distributed
from compose_gen.runtime.logging import MetricsLog, RunningMeans, TrainingProgress, prune_metrics, read_metrics
from compose_gen.spec import load_spec


def test_a_line_torn_by_a_crash_does_not_swallow_the_next_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    log = MetricsLog(path)
    log.write({"step": 3, "loss": float("nan")})
    log.close()
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}, {"step": 3, "loss": "nan"}]
    assert prune_metrics(path, 2) == [2], "the torn line is named, so a resume can say it is dropped"
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}]
    assert prune_metrics(path, 2) == []
    aside = (tmp_path / "metrics.dropped.jsonl").read_text().splitlines()
    assert aside == ['{"step": 2, "lo', '{"step": 3, "loss": "nan"}'], "what a resume drops (torn, or after its step) is kept aside"


def test_a_log_line_the_disk_cannot_take_is_an_error_that_names_the_file(tmp_path):
    """A full disk said only "[Errno 28] No space left on device", naming neither the file nor the line."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full, whose writes fail as a full disk's do")
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.handle.close()
    log.handle = open("/dev/full", "w", encoding="utf-8")
    with pytest.raises(OSError, match=r"No space left on device; the training log's line of step 7 was not written \(the checkpoints stay\): '.*metrics.jsonl'"):
        log.write({"step": 7, "loss": 1.0})


def test_a_line_of_bytes_that_are_no_utf8_is_dropped_like_a_torn_one(tmp_path):
    """It made a resume fail with a bare codec error naming no file, until the byte was removed by hand."""
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1, "loss": 2.0}\n\xff\xfe\n{"step": 2, "loss": 1.0}\n')
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]
    assert prune_metrics(path, 2) == [2]
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]


def test_a_metrics_log_or_its_set_aside_lines_that_is_a_fifo_is_refused_rather_than_waited_on(tmp_path):
    """A resume (and loading a folder without checkpoints) read metrics.jsonl, and appended what it dropped to
    metrics.dropped.jsonl, whatever they were: a FIFO in either place hung it for good."""
    path = tmp_path / "metrics.jsonl"
    os.mkfifo(path)
    errors = errors_without_waiting([lambda: read_metrics(path), lambda: prune_metrics(path, 1)], lambda: [path])
    assert [str(e) for e in errors] == [f"[Errno 22] not a regular file: '{path}'"] * 2
    path.unlink()
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.0}\n')
    aside = tmp_path / "metrics.dropped.jsonl"
    os.mkfifo(aside)
    errors = errors_without_waiting([lambda: prune_metrics(path, 1)], lambda: [aside])
    assert [str(e) for e in errors] == [f"[Errno 22] not a regular file: '{aside}'"]
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}], "the log is left as it was"


class FakeWriter:
    instances: list["FakeWriter"] = []

    def __init__(self, folder: str, purge_step: int | None = None) -> None:
        self.folder, self.purge_step, self.scalars, self.images = folder, purge_step, [], []
        FakeWriter.instances.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, step))

    def add_image(self, tag, picture, step, dataformats):
        self.images.append((tag, step, picture.shape, dataformats))

    def flush(self):
        pass

    def close(self):
        pass


def test_tensorboard_gets_scalars_and_sample_images(tmp_path, toys_catalogue, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    spec = load_spec(spec_dict(VAE, steps=4, log_every=2, sample_every=2, tensorboard=True), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "run", progress=False).train()
    writer = FakeWriter.instances[-1]
    assert writer.folder == str(tmp_path / "run" / "tensorboard")
    assert ("vae", 2) in writer.scalars and ("vae.kl", 4) in writer.scalars and ("model.lr", 4) in writer.scalars
    assert [(tag, step) for tag, step, _, _ in writer.images] == [("samples", 2), ("samples", 4)]
    assert writer.images[0][2][2] == 3 and writer.images[0][3] == "HWC"


def test_a_resume_hides_the_tensorboard_points_logged_after_its_checkpoint(tmp_path, toys_catalogue, monkeypatch):
    """Resumed from the checkpoint of step 2, a run logs steps 3 and 4 again: TensorBoard drew two points at each."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    spec = load_spec(spec_dict(VAE, steps=4, log_every=1, checkpoint_every=2, tensorboard=True), catalogue=toys_catalogue)
    Run.create(spec, tmp_path / "run", progress=False).train()
    assert FakeWriter.instances[-1].purge_step is None
    shutil.rmtree(list_checkpoints(tmp_path / "run")[-1])  # as if killed before the checkpoint of step 4
    Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False).train()
    resumed = FakeWriter.instances[-1]
    assert resumed.purge_step == 3 and {step for _, step in resumed.scalars} == {3, 4}


def test_tensorboard_missing_is_a_clear_error_before_training(tmp_path, toys_catalogue, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    spec = load_spec(spec_dict(VAE, steps=4, tensorboard=True), catalogue=toys_catalogue)
    with pytest.raises(RuntimeError, match=r"TensorBoard is not installed: pip install 'compose-gen\[tensorboard\]'"):
        Run.create(spec, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists(), "no empty folder is left of a run that never started"


def test_samples_during_training_are_grids_or_scatter_plots(tmp_path, toys_catalogue):
    for base, name in ((VAE, "vae"), (GAN, "gan")):
        spec = load_spec(spec_dict(base, steps=2, sample_every=1), catalogue=toys_catalogue)
        Run.create(spec, tmp_path / name, progress=False).train()
        pictures = sorted((tmp_path / name / "samples").iterdir())
        assert [p.name for p in pictures] == ["step-00000001.png", "step-00000002.png"]
        width, height = Image.open(pictures[0]).size
        assert (width > 1.5 * height) == (name == "gan")  # 2D: scatter and density side by side


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "dumb terminal"])
def test_progress_to_a_pipe_is_one_line_per_logged_step(capsys, monkeypatch, terminal):
    """Off a terminal, or on one that cannot redraw (TERM=dumb), the bar is not redrawn (it would leave one truncated
    line): each logged step is a whole line."""
    if terminal:
        monkeypatch.setenv("TERM", "dumb")
        monkeypatch.setattr("rich.console.Console.is_terminal", property(lambda self: True))
    with TrainingProgress(total=300, start=100) as bar:
        bar.update(150)
        bar.update(200, {"loss": 1.25, "loss.kl": 0.5})
        bar.update(300, {"loss": 1.0, "loss.kl": 0.25})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("step 200/300  ") and lines[0].endswith("loss=1.25  loss.kl=0.5")
    assert lines[1].startswith("step 300/300  ") and lines[1].endswith("loss=1  loss.kl=0.25")


@pytest.mark.parametrize("enabled", [True, False], ids=["shown", "off"])
def test_progress_on_a_terminal_draws_a_bar_only_when_enabled(capsys, monkeypatch, enabled):
    """On a terminal that redraws, the bar shows the step and the logged terms; turned off, nothing is written."""
    monkeypatch.delenv("TERM", raising=False)
    monkeypatch.setattr("rich.console.Console.is_terminal", property(lambda self: True))
    with TrainingProgress(total=300, start=100, enabled=enabled) as bar:
        bar.update(200, {"loss": 1.25})
    err = capsys.readouterr().err
    if enabled:
        assert "200/300" in err and "loss=1.25" in err
    else:
        assert err == ""


def test_logged_values_are_means_over_the_steps_since_the_last_line():
    means = RunningMeans()
    means.add({"a.loss": 1.0, "a.kl": 2.0})
    means.add({"a.loss": 3.0, "a.kl": 4.0})
    means.add({"b.loss": 10.0, "a.loss": 5.0})  # another player's names, one shared
    means.add({})  # a skipped batch logs nothing
    assert means.read(Distributed()) == {"a.kl": 3.0, "a.loss": 3.0, "b.loss": 10.0}
    assert means.read(Distributed()) == {}


def test_the_running_sums_survive_a_checkpoint_as_json():
    means = RunningMeans()
    means.add({"a.loss": 1.0, "a.kl": 2.0})
    means.add({"a.loss": 3.0, "a.kl": 4.0})
    state = json.loads(json.dumps(means.state_dict(Distributed())))
    assert state == [{"names": ["a.loss", "a.kl"], "count": 2, "sums": [4.0, 6.0]}]
    resumed = RunningMeans()
    resumed.load_state_dict(state)
    resumed.add({"a.loss": 5.0, "a.kl": 6.0})
    assert resumed.read(Distributed()) == {"a.kl": 4.0, "a.loss": 3.0}


def test_the_running_sums_keep_double_precision():
    means = RunningMeans()
    for value in (1e8, 1.0, 1.0, 1.0):  # in float32, 1e8 + 1 == 1e8
        means.add({"a.loss": value})
    assert means.read(Distributed()) == {"a.loss": (1e8 + 3) / 4}


def test_a_training_whose_log_reader_has_gone_trains_on_and_saves(tmp_path):
    """``train ... 2>&1 | head`` closed the pipe: the next progress line raised BrokenPipeError inside the loop, and the
    training ended at once without a checkpoint, in a folder that neither --resume nor --out then took."""
    import subprocess

    import yaml
    from runtime_toys import subprocess_env

    spec = tmp_path / "vae.yaml"
    spec.write_text(yaml.safe_dump(spec_dict(VAE, steps=40, log_every=1, checkpoint_every=40)))
    command = [sys.executable, "-m", "compose_gen", "train", str(spec), "--out", str(tmp_path / "run"), "--set", "evaluate.metrics=[]"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=subprocess_env())
    child.stderr.close()  # the reader goes away before the first line
    assert child.wait(timeout=300) == 0
    assert [record["step"] for record in read_metrics(tmp_path / "run" / "metrics.jsonl")][-1] == 40
    assert (tmp_path / "run" / "checkpoints" / "step-00000040").is_dir()
