"""The compose-gen command: exit codes, messages, and the whole train → sample → evaluate loop."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pytest
import torch
import yaml

from compose_gen.cli import main
from compose_gen.runtime import Trainer
from compose_gen.spec import load_spec
from compose_gen_plugins.quality import fidelity

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False) if name.endswith(".yaml") else json.dumps(spec, indent=1))
    return path


def test_validate_ok_and_broken(tmp_path, vae_spec, capsys) -> None:
    good = write(tmp_path, vae_spec, "good.yaml")
    vae_spec["components"]["encoder"]["net"]["hiden"] = [3]
    vae_spec["losses"]["vae"]["prior"] = "priorr"
    bad = write(tmp_path, vae_spec, "bad.yaml")
    assert main(["validate", str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: ok"
    assert main(["validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{good}: ok"
    assert len(out) == 3
    assert all(line.startswith(f"{bad}:") for line in out[1:])
    assert any("components.encoder.net.hiden: unknown parameter 'hiden'" in line for line in out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("static", [[], ["--static"]])
def test_validate_warns_of_a_device_this_machine_has_not(tmp_path, vae_spec, capsys, static) -> None:
    """validate checks on the CPU and said ok to device: cuda, on which train then failed."""
    spec = write(tmp_path, {**vae_spec, "device": "cuda"})
    assert main(["validate", *static, str(spec)]) == 0
    assert "device: device 'cuda' was asked for but CUDA is not available on this machine" in capsys.readouterr().err
    assert main(["validate", "--strict", *static, str(spec)]) == 1


def test_validate_static_checks_the_graph_with_the_fields_it_reads_assumed(tmp_path, vae_spec, capsys) -> None:
    vae_spec["graph"] = {"c": "one_hot(y, 10)", "h": "encodr(x)"}
    path = write(tmp_path, vae_spec)
    assert main(["validate", str(path), "--static"]) == 1
    assert "graph.h: unknown name 'encodr'; did you mean 'encoder'?" in capsys.readouterr().out
    vae_spec["graph"]["h"] = "c.detach()"
    write(tmp_path, vae_spec)
    assert main(["validate", str(path), "--static"]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: ok (static: assumes the data give x, y)"


def test_validate_static_finds_names_in_players_that_the_spec_does_not_declare(tmp_path, vae_spec, capsys) -> None:
    vae_spec["players"] = {"model": {"params": ["encoder", "decodr"], "terms": ["vea"]}}
    path = write(tmp_path, vae_spec)
    for static in (["--static"], []):  # what the build says, said without it
        assert main(["validate", str(path), *static]) == 1
        out = capsys.readouterr().out
        assert "players.model.params[1]: unknown component or loss 'decodr'; did you mean 'decoder'?" in out
        assert "players.model.terms.vea: unknown loss term 'vea'; did you mean 'vae'?" in out


def test_validate_static_gives_the_warnings_that_need_no_data(tmp_path, vae_spec, capsys) -> None:
    vae_spec["train"].update(batch_size=100_000, optimizer={"type": "adam", "lr": 2})
    path = write(tmp_path, vae_spec)
    assert main(["validate", str(path), "--static", "--strict"]) == 1
    err = capsys.readouterr().err
    assert "train.optimizer.lr: 2 is far above any learning rate" in err
    assert "batch_size" not in err, "how many examples the data hold is not known without them"


def test_validate_finds_shape_mismatch_by_dry_run(tmp_path, vae_spec, capsys) -> None:
    vae_spec["components"]["decoder"]["net"]["in_features"] = 5
    path = write(tmp_path, vae_spec)
    assert main(["validate", str(path), "--static"]) == 0
    capsys.readouterr()
    assert main(["validate", str(path)]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{path}:") and "components.decoder.net: type 'mlp' (plugin 'networks') dry run failed" in line


def test_validate_json_with_trailing_comma(tmp_path, capsys) -> None:
    path = tmp_path / "spec.json"
    path.write_text('{\n "name": "x",\n "data": {"type": "digits"},\n}\n')
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().out.startswith(f"{path}:4: invalid JSON")


def test_override_of_unknown_key(tmp_path, vae_spec, capsys) -> None:
    path = write(tmp_path, vae_spec)
    assert main(["validate", str(path), "--set", "train.stepz=3"]) == 1
    assert "--set: train.stepz: unknown key 'stepz'; did you mean 'steps'?" in capsys.readouterr().out


def test_plugins_json_and_schema(tmp_path, capsys) -> None:
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert {"mlp", "elbo", "digits"} <= {t["name"] for t in listing["types"]}
    assert main(["plugins", "elbo", "sampler", "--json"]) == 0
    chosen = json.loads(capsys.readouterr().out)["types"]
    assert {t["name"] for t in chosen} == {"elbo"} | {t["name"] for t in listing["types"] if t["kind"] == "sampler"}
    schema_path = tmp_path / "schema.json"
    assert main(["schema", "-o", str(schema_path)]) == 0
    schema = json.loads(schema_path.read_text())
    assert "Component_mlp" in schema["$defs"] and "Loss_elbo" in schema["$defs"]


def test_plugins_json_and_schema_are_standard_json_for_an_infinite_default(tmp_path, install_plugin, capsys) -> None:
    """json.dumps wrote a bare Infinity, which strict JSON readers (editors reading the schema) refuse."""
    install_plugin(
        "boundless",
        """
        import math
        from pydantic import Field
        from compose_gen import ComponentType, Params, hookimpl

        class P(Params):
            clip: float = Field(math.inf, allow_inf_nan=True)

        def build(p, ctx):
            \'\'\'A network that clips nothing by default.\'\'\'

        @hookimpl
        def compose_gen_types():
            return [ComponentType("boundless_net", "network", P, build)]
        """,
    )
    assert main(["plugins", "boundless_net", "boundless_net", "--json"]) == 0
    (described,) = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"not standard JSON: {c}"))["types"]
    assert described["name"] == "boundless_net", "named twice, described once"
    assert main(["plugins", "boundless_net", "boundless_net"]) == 0
    assert capsys.readouterr().out.count("boundless_net") == 1
    assert main(["schema", "-o", str(tmp_path / "schema.json")]) == 0
    json.loads((tmp_path / "schema.json").read_text(), parse_constant=lambda c: pytest.fail(f"not standard JSON: {c}"))


@pytest.mark.parametrize("suffix", ["dot", "png", "svg"])
def test_graph_drawing(tmp_path, vae_spec, suffix) -> None:
    path = write(tmp_path, vae_spec)
    out = tmp_path / f"graph.{suffix}"
    assert main(["graph", str(path), "-o", str(out)]) == 0
    assert out.stat().st_size > 0
    if suffix == "dot":
        text = out.read_text()
        assert '"component:encoder" -> "loss:vae"' in text and '"field:x" -> "loss:vae"' in text


@pytest.mark.parametrize("suffix", ["dot", "svg", "json"])
def test_a_graph_or_schema_whose_write_fails_leaves_the_file_there_before(tmp_path, vae_spec, suffix, capsys, monkeypatch) -> None:
    """A full disk left a torn graph.svg (or an empty graph.png, or a torn schema.json) in place of the good one, with an
    error that named no file."""
    import matplotlib.figure

    def torn(path: object, *args: object, **kwargs: object) -> None:
        Path(str(path)).write_bytes(b"half of the new")
        raise OSError(28, os.strerror(28))

    spec = write(tmp_path, vae_spec)
    out = tmp_path / "out" / f"graph.{suffix}"
    out.parent.mkdir()
    out.write_text("old")
    monkeypatch.setattr(Path, "write_text", torn)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda figure, path, *args, **kwargs: torn(path))
    command = ["schema", "-o", str(out)] if suffix == "json" else ["graph", str(spec), "-o", str(out)]
    assert main(command) == 1
    assert f"No space left on device; not written (a file there before stays): '{out}'" in capsys.readouterr().err
    assert out.read_text() == "old" and [p.name for p in out.parent.iterdir()] == [out.name]


def test_a_spec_from_stdin_is_named_alike_in_verdicts_and_errors(tmp_path, vae_spec, capsys, monkeypatch) -> None:
    """The verdict said '-: ok' where the error lines said '<stdin>:1: ...'."""
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(vae_spec)))
    assert main(["validate", "-"]) == 0
    assert capsys.readouterr().out == "<stdin>: ok\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("name: x\n"))
    assert main(["validate", "-"]) == 1
    assert capsys.readouterr().out.startswith("<stdin>:1: data: required key is missing")


def test_a_spec_whose_dry_run_fails_is_drawn_still(tmp_path, vae_spec, capsys) -> None:
    """graph built the whole model: a spec failing its dry run, when a picture would help most, got none."""
    vae_spec["components"]["decoder"]["net"]["in_features"] += 1  # the decoder reads z of another size: the dry run fails
    path = write(tmp_path, vae_spec)
    assert main(["validate", str(path)]) == 1
    out = tmp_path / "graph.dot"
    assert main(["graph", str(path), "-o", str(out)]) == 0
    assert '"component:decoder" -> "loss:vae"' in out.read_text()


def test_warnings_are_said_once_each_and_strict_validation_fails_on_them(tmp_path, cgan_spec, capsys) -> None:
    cgan_spec["players"]["critic"]["schedule"] = {"type": "cosine", "warmup": 5}
    path = write(tmp_path, cgan_spec)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    warning = f"warning: {path}:42: players.critic.schedule.warmup: the warm-up of 5 rounds outlasts the run (2 rounds)"
    assert out == f"{path}: ok\n" and err.startswith(warning) and err.count("warning:") == 1
    assert main(["validate", "--strict", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == f"{path}: 1 warning(s), which --strict counts as problems\n" and err.startswith(warning)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert capsys.readouterr().err.count(warning) == 1
    assert main(["sample", str(tmp_path / "run"), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0
    assert "warning:" not in capsys.readouterr().err, "said when the run was made, not again"


def test_until_pauses_a_run_whose_schedule_then_resumes_as_if_never_stopped(tmp_path, vae_spec, capsys) -> None:
    """A cosine schedule over 12 rounds: 12 straight and 5 (--until) + resume give the same weights."""
    from safetensors.torch import load_file

    vae_spec["players"] = {"model": {"schedule": {"type": "cosine", "warmup": 2}}}
    vae_spec["train"].update(steps=12, log_every=5)
    path = write(tmp_path, vae_spec)
    assert main(["train", str(path), "--out", str(tmp_path / "straight"), "--no-progress"]) == 0
    assert main(["train", str(path), "--out", str(tmp_path / "split"), "--until", "5", "--no-progress"]) == 0
    assert yaml.safe_load((tmp_path / "split" / "spec.yaml").read_text())["train"]["steps"] == 12, "the schedule's end stays"
    assert main(["train", "--resume", str(tmp_path / "split"), "--no-progress"]) == 0
    weights = [load_file(tmp_path / run / "checkpoints" / "step-00000012" / "model.safetensors") for run in ("straight", "split")]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert main(["train", "--resume", str(tmp_path / "split"), "--until", "13", "--no-progress"]) == 2
    assert re.search(r"--until 13 must lie after step 12 and at most at train.steps \(12\)", capsys.readouterr().err)
    assert main(["train", str(path), "--out", str(tmp_path / "never"), "--until", "20"]) == 2
    assert re.search(r"--until 20 must lie after step 0 and at most at train.steps \(12\)", capsys.readouterr().err)
    assert not (tmp_path / "never").exists(), "refused before the folder is made"
    assert main(["train", "--no-progress"]) == 2, "a usage error, as argparse's are"
    assert "compose-gen train: give a SPEC, or --resume RUN_DIR" in capsys.readouterr().err


def test_train_sample_evaluate_resume(tmp_path, vae_spec, capsys, monkeypatch) -> None:
    path = write(tmp_path, vae_spec)
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", str(path), "--out", str(run), "--steps", "10", "--no-progress", "--device", "cpu"]) == 0
    assert (run / "spec.yaml").exists() and (run / "metrics.jsonl").exists()
    printed = json.loads(capsys.readouterr().out)  # the last training averages, then the evaluation at that step
    assert printed == {**printed, **json.loads((run / "evaluation.json").read_text())} and "vae.elbo" in printed
    assert main(["train", str(path), "--resume", str(run), "--steps", "15"]) == 2
    assert re.search(rf"--resume continues {run} with the spec it records, so SPEC {path} would not be used", capsys.readouterr().err)
    assert main(["sample", str(run), "-n", "9", "-o", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["step"] == 10 and results["test/vae.elbo"] < 0
    assert main(["train", "--resume", str(run), "--steps", "15", "--no-progress"]) == 0
    assert json.loads((run / "evaluation.json").read_text())["step"] == 15
    assert yaml.safe_load((run / "spec.yaml").read_text())["train"]["steps"] == 15  # the schedule runs to the new end
    assert main(["train", "--resume", str(run), "--steps", "12", "--no-progress"]) == 2
    assert re.search(rf"{run} is at step 15 already; give --steps beyond it", capsys.readouterr().err)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert re.search(rf"{run} is at step 15 already, the end of its train.steps; give --steps beyond it", capsys.readouterr().err)
    assert main(["train", "--resume", str(run), "--set", "train.steps=12", "--no-progress"]) == 2
    assert re.search(rf"{run} is at step 15 already, past its train.steps \(12\); give --steps beyond it\n", capsys.readouterr().err)
    assert yaml.safe_load((run / "spec.yaml").read_text())["train"]["steps"] == 15
    evaluated = (run / "evaluation.json").read_text()
    (run / "evaluation.json").unlink()  # killed while evaluating at the end
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert f"give --steps beyond it (it was not evaluated there, stopped before: compose-gen evaluate {run})" in capsys.readouterr().err
    (run / "evaluation.json").write_text(evaluated)
    assert main(["runs", str(tmp_path)]) == 0
    assert "tiny_vae  step 15" in capsys.readouterr().out
    recorded = (run / "evaluation.json").read_text()
    grid = ["--set", "evaluate.metrics=[{type: sample_grid, samples: 4}]"]
    assert main(["evaluate", str(run), *grid, "--out", str(tmp_path / "pictures")]) == 0
    assert (tmp_path / "pictures" / "samples_T1.png").exists() and not (run / "samples_T1.png").exists()
    (tmp_path / "taken.png").touch()
    assert main(["evaluate", str(run), "--out", str(tmp_path / "taken.png")]) == 1
    assert f"{tmp_path / 'taken.png'} is a file; the files metrics write (grids, plots) go to a folder" in capsys.readouterr().err
    assert (run / "evaluation.json").read_text() == recorded, "the mistake costs no recorded result"
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked").chmod(0o500)  # a folder that cannot be written (root, who may, has none here: see below)
    if not os.access(tmp_path / "blocked", os.W_OK):
        assert main(["evaluate", str(run), "--out", str(tmp_path / "blocked" / "pictures")]) == 1
        assert "the files metrics write (grids, plots) cannot go there" in capsys.readouterr().err
        assert (run / "evaluation.json").read_text() == recorded, "no partial evaluation replaces the whole one"
    (tmp_path / "file").touch()
    assert main(["evaluate", str(run), "--out", str(tmp_path / "file" / "pictures")]) == 1  # below a file: unwritable even for root
    assert f"{tmp_path / 'file' / 'pictures'}: the files metrics write (grids, plots) cannot go there" in capsys.readouterr().err
    assert (run / "evaluation.json").read_text() == recorded, "no partial evaluation replaces the whole one"
    assert main(["evaluate", str(run), *grid]) == 0
    assert (run / "evaluation.json").read_text() == recorded, "an override is for one command, not the run's record"
    assert (run / "evaluation-set" / "samples_T1.png").exists() and not (run / "samples_T1.png").exists(), "nor its pictures"
    err = capsys.readouterr().err
    assert f"not recorded in {run / 'evaluation.json'}: the spec was changed with --set" in err
    assert f"files the metrics write go to {run / 'evaluation-set'}" in err
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "grid")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'grid.png'}" and (tmp_path / "grid.png").exists()
    assert main(["sample", str(run), "-o", str(tmp_path)]) == 1
    assert f"{tmp_path} is a folder; give a file name such as {tmp_path / 'samples.png'}" in capsys.readouterr().err
    assert main(["sample", str(run), "-o", f"{tmp_path / 'new'}/"]) == 1  # a folder meant, not yet made: not new.png
    assert f"{tmp_path / 'new'} is a folder; give a file name such as {tmp_path / 'new' / 'samples.png'}" in capsys.readouterr().err
    assert not (tmp_path / "new.png").exists()
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.xyz")]) == 1
    assert f"cannot write samples to {tmp_path / 's.xyz'}: give a picture (.png, .jpg, ...) or, for the arrays, .npy or .npz" in capsys.readouterr().err
    assert main(["sample", str(run), "-n", "5", "-o", str(tmp_path / "s.npy")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 's.npy'}"
    drawn = numpy.load(tmp_path / "s.npy", allow_pickle=False)
    assert drawn.shape[0] == 5 and numpy.isfinite(drawn).all() and 0 <= drawn.min() and drawn.max() <= 1  # data space: pixels
    def diverged(*args: object) -> None:  # a metric failing on what the model drew, which no build can foresee
        raise ValueError("the samples hold NaN")

    monkeypatch.setattr(fidelity, "knn_precision_recall", diverged)
    failing = "evaluate.metrics=[{type: test_losses}, {type: precision_recall, n: 20, k: 3}]"
    assert main(["evaluate", str(run), "--json", "--set", failing]) == 1
    out, err = capsys.readouterr()
    shown = json.loads(out)  # what worked is printed even when a metric fails
    assert "test/vae.elbo" in shown and list(shown["failed"]) == ["evaluate.metrics[1]"]
    assert "1 metric(s) failed" in err and "evaluate.metrics[1]: type 'precision_recall'" in err
    assert main(["train", "--resume", str(run), "--steps", "16", "--no-progress", "--set", failing]) == 1
    shown = json.loads(capsys.readouterr().out)  # train too ends with the metrics that worked, and which failed
    assert shown["step"] == 16 and "test/vae.elbo" in shown and list(shown["failed"]) == ["evaluate.metrics[1]"]
    assert "vae.elbo" in shown and "model.grad_norm" in shown, "and with the training averages, as when all metrics work"


def test_sample_draws_the_chosen_classes_of_a_model_that_samples_by_class(tmp_path, cgan_spec, vae_spec, capsys) -> None:
    run = tmp_path / "cgan"
    assert main(["train", str(write(tmp_path, cgan_spec)), "--out", str(run), "--no-progress"]) == 0
    assert main(["sample", str(run), "-n", "6", "--class", "3", "--class", "5", "-o", str(tmp_path / "s.npz")]) == 0
    with numpy.load(tmp_path / "s.npz", allow_pickle=False) as drawn:
        assert drawn["x"].shape == (6, 2) and drawn["y"].tolist() == [3, 5, 3, 5, 3, 5]
    for name in ("upper.NPZ", "upper.NPY"):  # numpy added its own lowercase suffix: upper.NPZ.npz, while it said upper.NPZ
        assert main(["sample", str(run), "-n", "2", "-o", str(tmp_path / name)]) == 0
        assert (tmp_path / name).is_file() and not (tmp_path / f"{name}{name[-4:].lower()}").exists()
    assert main(["sample", str(run), "-n", "6", "--class", "3", "-o", str(tmp_path / "threes.png")]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--class", "8", "-o", str(tmp_path / "s.png")]) == 2  # a usage mistake
    assert "spec 'cgan' samples classes 0..7; class 8 given" in capsys.readouterr().err
    vae = tmp_path / "vae"
    assert main(["train", str(write(tmp_path, vae_spec, "vae.yaml")), "--out", str(vae), "--steps", "1", "--no-progress"]) == 0
    assert main(["sample", str(vae), "--class", "1", "-o", str(tmp_path / "v.png")]) == 2
    assert "spec 'tiny_vae' does not sample by class" in capsys.readouterr().err


@pytest.mark.parametrize("option, low", [(["-n", "0"], "1"), (["--temperature", "nan"], "0.0"), (["--temperature", "-1"], "0.0")])
def test_sample_options_are_checked(option, low, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["sample", "run", "-o", "s.png", *option])
    assert f"argument {option[0]}: must be a finite number of at least {low}, got {option[1]}" in capsys.readouterr().err


def test_schema_into_a_folder_is_an_error_not_a_traceback(tmp_path, capsys) -> None:
    assert main(["schema", "-o", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: [Errno 21] Is a directory")


def test_errors_are_messages_not_tracebacks(tmp_path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "compose_gen", "evaluate", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr and f"{tmp_path / 'nope'}: no such folder (give a run folder" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {type: digits}\ncomponents:\n  a: {type: mlp, in_features: 2}\n")
    result = subprocess.run([sys.executable, "-m", "compose_gen", "train", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}:4: components.a.out_features: required parameter is missing" in result.stderr


def test_plugins_lists_types_by_kind_and_plugins_that_failed(install_plugin, capsys) -> None:
    install_plugin("broken_plugin", "raise ImportError('missing dependency: fancylib')\n")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "loss types" in out and "bijector types" in out
    assert "discretized_logistic_decoder" in out, "type names are never cut to fit the terminal"
    assert "plugin 'broken_plugin': entry point broken_plugin = 'broken_plugin' of broken_plugin: ImportError: missing dependency: fancylib" in " ".join(out.split())


def test_plugins_details_a_type_and_lists_a_kind(capsys) -> None:
    assert main(["plugins", "vqvae"]) == 0
    out = capsys.readouterr().out
    assert "vqvae (loss, plugin 'latent')" in out
    assert all(word in out for word in ("code_dim", "required", "commitment", "0.25", "'data' | 'uniform'"))
    assert main(["plugins", "prior"]) == 0
    out = capsys.readouterr().out
    assert "prior types" in out and "standard_normal" in out and "loss types" not in out


def test_plugins_gives_a_metrics_whole_description_with_what_it_reports(capsys) -> None:
    """Not only its first line: a GAN tester found the output keys of the quality metrics explained nowhere they looked."""
    assert main(["plugins", "birthday_paradox", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["types"]
    assert "data_estimated_support" in entry["help"] and entry["doc"] in entry["help"]
    assert main(["plugins", "birthday_paradox"]) == 0
    assert "birthday_pass" in " ".join(capsys.readouterr().out.split())


def test_plugins_with_an_unknown_name_suggests_one_and_names_plugins_that_failed(capsys, install_plugin) -> None:
    assert main(["plugins", "elbow"]) == 1
    assert "no type or kind 'elbow'; did you mean 'elbo'?" in capsys.readouterr().err
    install_plugin("tcvae_plugin", "raise ImportError('a dependency is missing')\n")  # whose beta_tcvae type is wanted
    assert main(["plugins", "beta_tcvae"]) == 1
    err = capsys.readouterr().err
    assert "(unless it is of a plugin that failed to load, see `compose-gen plugins`: 'tcvae_plugin': " in err
    assert "ImportError: a dependency is missing" in err


def test_a_run_whose_data_moved_is_pointed_at_it_with_set(tmp_path, capsys) -> None:
    import numpy as np

    old, new = tmp_path / "old.npz", tmp_path / "moved" / "new.npz"
    np.savez(old, x=np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32))
    spec = {
        "name": "moved_data",
        "data": {"type": "npz", "path": str(old)},
        "components": {"flow": {"type": "flow", "base": {"type": "standard_normal", "shape": [2]},
                                "bijectors": [{"type": "affine_coupling", "shape": [2], "hidden": [8]}]}},
        "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
        "sample": {"type": "flow_sampler", "flow": "flow"},
        "train": {"steps": 2, "batch_size": 16, "evaluate_at_end": False},
        "evaluate": {"metrics": [{"type": "test_losses"}]},
    }
    run = tmp_path / "run"
    assert main(["train", str(write(tmp_path, spec)), "--out", str(run), "--no-progress"]) == 0
    new.parent.mkdir()
    old.rename(new)
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2
    assert f"{old}: no such file" in capsys.readouterr().err
    move = ["--set", f"data.path={new}"]
    assert main(["evaluate", str(run), "--json", *move]) == 0
    assert "test/nll" in json.loads(capsys.readouterr().out)
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png"), *move]) == 0
    assert main(["train", "--resume", str(run), "--steps", "3", "--no-progress", *move]) == 0
    assert yaml.safe_load((run / "spec.yaml").read_text())["data"]["path"] == str(new)  # training with it records it
    assert main(["evaluate", str(run)]) == 0


def test_sample_and_evaluate_refuse_a_run_with_no_checkpoint_yet(tmp_path, vae_spec, capsys) -> None:
    """A run killed before its first checkpoint holds only spec.yaml; its untrained model is not the result."""
    run = tmp_path / "run"
    run.mkdir()
    write(run, vae_spec)
    for command in (["evaluate", str(run)], ["sample", str(run), "-o", str(tmp_path / "s.png")]):
        assert main(command) == 1
        assert f"{run} holds no checkpoint yet; train it first: compose-gen train --resume {run}" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists() and not (run / "evaluation.json").exists()


def test_a_plugins_prints_go_to_stderr_not_into_the_results_on_stdout(tmp_path, vae_spec, install_plugin, capsys) -> None:
    """A leftover print() in any installed plugin, at import or in its hook, came first in `validate --resolved > spec.yaml`
    (which then failed to load) and in `evaluate --json` (which `| jq` then refused)."""
    install_plugin(
        "chatty",
        """
        from compose_gen import hookimpl

        print("chatty imported")

        @hookimpl
        def compose_gen_types():
            print("chatty registers nothing")
            return []
        """,
    )
    path = write(tmp_path, vae_spec)
    assert main(["validate", str(path), "--static", "--resolved"]) == 0
    said = capsys.readouterr()
    assert yaml.safe_load(said.out)["name"] == "tiny_vae"
    assert "chatty imported" in said.err and "chatty registers nothing" in said.err
    assert main(["plugins", "--json"]) == 0
    assert "chatty" not in json.loads(capsys.readouterr().out)["failed_plugins"]


def test_plugins_names_a_plugin_slow_to_import(install_plugin, capsys, monkeypatch) -> None:
    """A plugin importing a heavy library at its top slowed every command by seconds, with no word of why."""
    install_plugin("sluggish", "import time\ntime.sleep(0.3)\n")
    monkeypatch.setattr("compose_gen.registry.catalogue.SLOW_IMPORT_S", 0.25)
    assert main(["plugins", "elbo"]) == 0
    assert "plugin 'sluggish' took 0.3 s to import, which every command pays" in " ".join(capsys.readouterr().out.split())
    monkeypatch.delitem(sys.modules, "sluggish")  # imported afresh, as by the next command
    assert main(["plugins", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["slow_plugins"]) == ["sluggish"]


def test_validate_resolved_prints_the_spec_with_its_defaults(tmp_path, vae_spec, capsys) -> None:
    path = write(tmp_path, vae_spec)
    assert main(["validate", str(path), "--static", "--resolved"]) == 0
    said = capsys.readouterr()
    assert said.err == f"{path}: ok (static: assumes the data give x)\n"  # stdout holds the YAML alone: > spec.yaml works
    resolved = yaml.safe_load(said.out)
    assert resolved["train"]["optimizer"]["betas"] == [0.9, 0.999]  # a default the file did not say
    assert resolved["components"]["encoder"]["net"]["activation"] == "relu"
    assert load_spec(resolved).to_dict() == resolved  # what it prints is a spec that loads to itself
    vae_spec["name"] = "other"
    other = write(tmp_path, vae_spec, "other.yaml")
    assert main(["validate", str(path), str(other), "--static", "--resolved"]) == 0
    assert [d["name"] for d in yaml.safe_load_all(capsys.readouterr().out)] == ["tiny_vae", "other"], "several: one document each"
    vae_spec["components"]["encoder"]["net"]["hiden"] = [3]
    broken = write(tmp_path, vae_spec, "broken.yaml")
    vae_spec["components"]["encoder"]["net"].pop("hiden")
    vae_spec["train"]["optimizer"] = {"type": "adam", "lr": 5.0}  # warned of: --strict counts it
    warned = write(tmp_path, vae_spec, "warned.yaml")
    assert main(["validate", str(broken), str(warned), str(path), "--static", "--strict", "--resolved"]) == 1
    said = capsys.readouterr()
    assert [d["name"] for d in yaml.safe_load_all(said.out)] == ["tiny_vae"], "the problems and verdicts stay out of the YAML"
    assert "unknown parameter 'hiden'" in said.err and f"{warned}: 1 warning(s), which --strict counts as problems" in said.err


def test_runs_in_a_folder_that_does_not_exist_is_an_error(tmp_path, capsys) -> None:
    assert main(["runs", str(tmp_path / "nonexist")]) == 1
    assert f"{tmp_path / 'nonexist'}: no such folder" in capsys.readouterr().err
    assert main(["runs", str(tmp_path)]) == 0
    assert f"no run folders in {tmp_path}" in capsys.readouterr().err


def test_a_step_count_below_one_is_refused_as_the_option_given(capsys) -> None:
    """Not as `--set: train.steps`, which the user never wrote."""
    with pytest.raises(SystemExit):
        main(["train", "specs/vae_digits.yaml", "--steps", "-5"])
    assert "argument --steps: must be a finite number of at least 1, got -5" in capsys.readouterr().err


def test_tabular_samples_and_a_moved_data_file_name_the_cli_remedy(tmp_path, capsys) -> None:
    """4-D points cannot be drawn: say ``-o x.npy``; a data file gone from where the run recorded it: say ``--set data.path=NEW``."""
    numpy.save(tmp_path / "points.npy", numpy.random.default_rng(0).normal(size=(64, 4)).astype("float32"))
    spec = {
        "name": "tabular",
        "data": {"type": "npy", "path": str(tmp_path / "points.npy")},
        "components": {"flow": {"type": "flow", "base": {"type": "standard_normal", "shape": [4]}, "bijectors": [{"type": "affine", "shape": [4]}]}},
        "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
        "train": {"steps": 2, "batch_size": 16},
        "sample": {"type": "flow_sampler", "flow": "flow"},
        "evaluate": {"metrics": [{"type": "test_losses"}]},
    }
    run = tmp_path / "run"
    assert main(["train", str(write(tmp_path, spec)), "--out", str(run), "--no-progress", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "x.png")]) == 1
    assert "write them as an array instead: -o x.npy" in capsys.readouterr().err
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "x.npy")]) == 0
    assert numpy.load(tmp_path / "x.npy").shape == (4, 4)
    (tmp_path / "points.npy").rename(tmp_path / "moved.npy")
    assert main(["evaluate", str(run)]) == 2
    remedy = capsys.readouterr().err
    assert f"compose-gen evaluate {run} --set data.path=NEW" in remedy
    assert main(["evaluate", str(run), "--set", f"data.path={tmp_path / 'moved.npy'}"]) == 0
    # A finished run cannot train on to record the move (`train --resume` needs steps beyond it); an edit records it.
    assert f"or edit data.path in {run / 'spec.yaml'} to the new absolute path to record it" in remedy
    (run / "spec.yaml").write_text((run / "spec.yaml").read_text().replace(str(tmp_path / "points.npy"), str(tmp_path / "moved.npy")))
    (run / "evaluation.json").unlink()
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    assert (run / "evaluation.json").exists() and "not recorded" not in capsys.readouterr().err


def test_evaluate_records_nothing_when_the_newest_checkpoint_is_unreadable(tmp_path, vae_spec, capsys, monkeypatch) -> None:
    """The folder's evaluation.json is the newest model's: an older checkpoint's numbers are printed, not written over it."""
    vae_spec["train"].update(steps=4, checkpoint_every=2)
    run = tmp_path / "run"
    assert main(["train", str(write(tmp_path, vae_spec)), "--out", str(run), "--no-progress", "--device", "cpu"]) == 0
    recorded = (run / "evaluation.json").read_text()
    (run / "checkpoints" / "step-00000004" / "state.json").write_text("{not json")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["step"] == 2
    assert f"not recorded in {run / 'evaluation.json'}: step 2 is loaded, but a newer checkpoint could not be" in err
    assert (run / "evaluation.json").read_text() == recorded
    shutil.rmtree(run / "checkpoints" / "step-00000004")  # something that is no folder in its place is no checkpoint either
    (run / "checkpoints" / "step-00000004").write_text("")
    assert main(["evaluate", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"skipped {run / 'checkpoints' / 'step-00000004'}: no checkpoint folder but a file" in err
    assert f"not recorded in {run / 'evaluation.json'}: step 2 is loaded, but a newer checkpoint could not be" in err
    assert (run / "evaluation.json").read_text() == recorded
    assert main(["runs", str(run)]) == 0
    assert "step 2 (1 newer checkpoint(s) damaged)" in capsys.readouterr().out

    def read_only(*args: object) -> None:
        raise PermissionError(13, "Permission denied")

    (run / "checkpoints" / "step-00000004").unlink()  # step 2 is now the newest
    monkeypatch.setattr("compose_gen.runtime.run.write_json_atomic", read_only)
    assert main(["evaluate", str(run), "--json"]) == 0  # a folder it cannot write to still gets its results printed
    out, err = capsys.readouterr()
    assert "test/vae.elbo" in json.loads(out) and f"warning: could not record {run / 'evaluation.json'}" in err


def test_train_refuses_a_folder_with_records_and_a_device_it_cannot_have(tmp_path, vae_spec, capsys) -> None:
    """A fresh run into a folder holding another's log would overwrite it; a device torch does not know is named."""
    spec = write(tmp_path, vae_spec)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.jsonl").write_text('{"step": 50, "loss": 1.0}\n')
    assert main(["train", str(spec), "--out", str(tmp_path / "old"), "--no-progress"]) == 1
    assert "holds no checkpoint, but metrics.jsonl (up to step 50): starting over would overwrite them; choose another folder" in capsys.readouterr().err
    assert (tmp_path / "old" / "metrics.jsonl").read_text() == '{"step": 50, "loss": 1.0}\n'
    for device in ("tpu", "meta", "cpu:0x"):  # torch knows meta, but a model cannot train there
        with pytest.raises(SystemExit) as refused:  # a usage mistake, as --set device=tpu is
            main(["train", str(spec), "--out", str(tmp_path / "new"), "--device", device, "--no-progress"])
        assert refused.value.code == 2
        assert f"argument --device: unknown device '{device}': give cpu, cuda, cuda:N, mps or auto" in capsys.readouterr().err


def test_a_reader_that_goes_away_ends_the_output_quietly(monkeypatch, capsys) -> None:
    """``compose-gen plugins --json | head``: a closed pipe is no error to report."""

    def closed(*args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("compose_gen.cli._plugins", closed)
    assert main(["plugins", "--json"]) == 141
    assert "error" not in capsys.readouterr().err


def test_the_plugin_tables_end_quietly_when_the_reader_goes_away() -> None:
    """``compose-gen plugins | head -1``: rich draws the tables into a pipe whose reader has gone."""
    read, write = os.pipe()
    os.close(read)
    done = subprocess.run([sys.executable, "-m", "compose_gen", "plugins"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert done.returncode == 141 and "Traceback" not in done.stderr and "error" not in done.stderr, done.stderr


def test_a_run_folder_that_is_a_file_is_refused_by_name(tmp_path, vae_spec, capsys) -> None:
    spec = write(tmp_path, vae_spec)
    assert main(["train", str(spec), "--out", str(spec), "--no-progress"]) == 1
    assert f"error: {spec} is a file, not a folder" in capsys.readouterr().err
    assert main(["train", str(spec), "--out", str(spec / "sub" / "run"), "--no-progress"]) == 1
    assert f"error: {spec} is a file, so no run folder can be made at {spec / 'sub' / 'run'}, below it" in capsys.readouterr().err


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_during_the_final_evaluation_says_the_training_is_saved(tmp_path, vae_spec, capsys, monkeypatch, signum, status) -> None:
    """SIGTERM (a scheduler's, ``timeout``'s) there killed the process without a word."""

    def interrupted(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the signal arrives before this ends

    monkeypatch.setattr("compose_gen.runtime.Run.evaluate", interrupted)
    run = tmp_path / "run"
    assert main(["train", str(write(tmp_path, vae_spec)), "--out", str(run), "--no-progress"]) == status
    assert f"interrupted after training, while sampling or evaluating; step 20 is saved: compose-gen evaluate {run}" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_final_picture_that_cannot_be_written_costs_no_evaluation_and_says_the_training_is_saved(tmp_path, vae_spec, capsys, monkeypatch) -> None:
    """A samples/ folder that refused the final grid skipped the evaluation and said only the OSError."""

    def refused(self, step):
        raise OSError(1, "Operation not permitted", str(self.dir / "samples" / "step-00000020.png"))

    monkeypatch.setattr("compose_gen.runtime.Run._samples_at", refused)
    run = tmp_path / "run"
    assert main(["train", str(write(tmp_path, vae_spec)), "--out", str(run), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"step 20 is trained and saved; this failed after, while sampling or evaluating: compose-gen evaluate {run}" in err
    assert "Operation not permitted" in err
    assert json.loads((run / "evaluation.json").read_text())["step"] == 20, "the metrics ran"


@pytest.mark.parametrize("resume", [False, True])
def test_a_sigterm_while_the_run_starts_is_told_and_leaves_no_half_made_folder(tmp_path, vae_spec, capsys, monkeypatch, resume) -> None:
    """A SIGTERM while the model was built killed the process without a word, leaving an empty run folder that
    ``--resume`` then called "not a run folder"."""
    run, spec = tmp_path / "run", write(tmp_path, vae_spec)
    if resume:
        assert main(["train", str(spec), "--out", str(run), "--no-progress", "--until", "10"]) == 0
    before = sorted(p.relative_to(run) for p in run.rglob("*")) if resume else []
    capsys.readouterr()

    def terminated(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives before this ends

    monkeypatch.setattr("compose_gen.runtime.run.compile_spec" if resume else "compose_gen.runtime.run.build", terminated)
    command = ["train", "--resume", str(run)] if resume else ["train", str(spec), "--out", str(run)]
    assert main([*command, "--no-progress"]) == 143
    told = f"{run} is as it was: compose-gen train --resume {run}" if resume else "nothing was written"
    assert f"interrupted while starting, before training; {told}" in capsys.readouterr().err
    assert (sorted(p.relative_to(run) for p in run.rglob("*")) == before) if resume else not run.exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_second_interrupt_says_what_it_did_not_save(tmp_path, vae_spec, capsys, monkeypatch) -> None:
    """The last word was "saving a checkpoint", though the second Ctrl-C aborted before it was."""
    vae_spec["train"].update(steps=8, checkpoint_every=4)
    save = Trainer.save

    def aborted_at_step_6(self, last=None):
        if self.step == 6:
            raise KeyboardInterrupt
        return save(self, last)

    monkeypatch.setattr(Trainer, "save", aborted_at_step_6)
    run = tmp_path / "run"
    assert main(["train", str(write(tmp_path, vae_spec)), "--out", str(run), "--no-progress", "--until", "6"]) == 130
    message = f"aborted at step 6, without saving it; the newest checkpoint is step-00000004; continue with: compose-gen train --resume {run}"
    assert message in capsys.readouterr().err
    vae_spec["train"]["checkpoint_every"] = 10  # none before step 6: a resume would be refused, so it is not offered
    fresh = tmp_path / "fresh"
    assert main(["train", str(write(tmp_path, vae_spec)), "--out", str(fresh), "--no-progress", "--until", "6"]) == 130
    said = capsys.readouterr().err
    assert f"no checkpoint was written, so start again: compose-gen train {fresh / 'spec.yaml'} --out NEW_DIR" in said


def test_sample_and_evaluate_take_an_older_or_the_best_checkpoint(tmp_path, vae_spec, capsys) -> None:
    """Only Python's load_run could pick one; an older checkpoint's metrics are printed, not recorded over the newest's."""
    vae_spec["train"].update(steps=4, checkpoint_every=2, log_every=2, best_metric="vae", best_mode="min")
    run = tmp_path / "run"
    assert main(["train", str(write(tmp_path, vae_spec)), "--out", str(run), "--no-progress"]) == 0
    recorded = (run / "evaluation.json").read_text()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--checkpoint", "step-00000002"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["step"] == 2 and "not recorded" in err and (run / "evaluation.json").read_text() == recorded
    best = json.loads((run / "checkpoints" / "best.json").read_text())["step"]
    for which, name in (("best", "best.npy"), (f"step-0000000{best}", "that.npy"), ("step-00000002", "2.npy"), ("step-00000004", "4.npy")):
        assert main(["sample", str(run), "-n", "3", "-o", str(tmp_path / name), "--checkpoint", which]) == 0
    drawn = {name: numpy.load(tmp_path / name) for name in ("best.npy", "that.npy", "2.npy", "4.npy")}
    assert numpy.array_equal(drawn["best.npy"], drawn["that.npy"]) and not numpy.array_equal(drawn["2.npy"], drawn["4.npy"])
    assert main(["sample", str(run), "-n", "3", "-o", str(tmp_path / "x.npy"), "--checkpoint", "step-00000009"]) == 1
    assert "step-00000009 is not a checkpoint of" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["train", "specs/vae_digits.yaml", "--bogus"], ["validate", "specs/vae_digits.yaml", "--strikt"]])
def test_an_unknown_option_shows_its_subcommands_usage(argv, capsys) -> None:
    """Not the top-level usage, which lists the subcommands and none of their options."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert err.startswith(f"usage: compose-gen {argv[0]} ")
    assert f"compose-gen {argv[0]}: error: unrecognized arguments: {argv[2]}" in err
    with pytest.raises(SystemExit):
        main(["--bogus", *argv[:2]])  # before the subcommand: the top level's
    assert "compose-gen: error: unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("environment", [{"WORLD_SIZE": "abc"}, {"WORLD_SIZE": "2", "RANK": "zz"}])
def test_a_malformed_torchrun_variable_is_said_by_name(environment, tmp_path, vae_spec, capsys, monkeypatch) -> None:
    """WORLD_SIZE=abc and RANK=zz were ValueError tracebacks ("invalid literal for int() with base 10"), naming no variable."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(["validate", str(write(tmp_path, vae_spec))]) == 2
    name, value = next((n, v) for n, v in environment.items() if not v.isdigit())
    assert f"error: the environment variable {name}={value!r} is no whole number" in capsys.readouterr().err


def test_rank_outside_torchrun_is_not_read(tmp_path, vae_spec, capsys, monkeypatch) -> None:
    """Without WORLD_SIZE, a RANK of another tool was "error: invalid literal for int() with base 10: 'abc'"."""
    monkeypatch.setenv("RANK", "abc")
    assert main(["validate", str(write(tmp_path, vae_spec))]) == 0


def test_under_torchrun_a_spec_error_is_said_by_process_0_alone_and_evaluate_is_refused(tmp_path, vae_spec, capsys, monkeypatch) -> None:
    """Every process printed the same error, two of them at times run together on one line; evaluate and sample ran
    whole on every process, each writing the results."""
    vae_spec["train"]["steps"] = "many"
    spec = write(tmp_path, vae_spec)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "train.steps" in capsys.readouterr().err
    for command in (["evaluate", str(tmp_path)], ["sample", str(tmp_path), "-o", str(tmp_path / "x.png")]):
        assert main(command) == 2
        assert f"compose-gen {command[0]}: run it as one process, without torchrun" in capsys.readouterr().err
