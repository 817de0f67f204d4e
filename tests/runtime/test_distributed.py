"""Data parallelism over 2 CPU processes (gloo): same result as one process with the same global batch.

Tolerance: the specs compared here draw no noise, so the only difference from one
process is float rounding (mean of two half-batch means vs one mean, then the
all-reduce); after 8 Adam rounds parameters agree to ``atol=1e-6, rtol=1e-5`` (measured: at
most 1.2e-7 apart, while training moved them by up to 0.16).
(With noise, e.g. a VAE or a GAN sampling z, each process draws its own noise by
design, so the results are equally good but not equal.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from runtime_toys import (
    ACTNORM_FLOW,
    AUTOENCODER,
    EMA_VQVAE,
    GAN,
    ROOT,
    TRANSLATION_GAN,
    VAE,
    catalogue,
    forked,
    spec_dict,
    subprocess_env,
)
from safetensors.torch import load_file

from compose_gen.runtime import Run, build
from compose_gen.runtime.checkpoint import list_checkpoints, load_checkpoint
from compose_gen.runtime.logging import read_metrics
from compose_gen.spec import load_spec

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, jobs: list[tuple[dict, str, str | None, int | None]]) -> int:
    """One process of the group: for each job, create (or resume) a run and train it."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    toys = catalogue()
    for raw, out, resume, steps in jobs:
        if resume:
            run = Run.load(resume, catalogue=toys, progress=False)
        else:
            run = Run.create(load_spec(raw, catalogue=toys), out, progress=False)
        run.train(steps)
    return 0


def run_processes(tmp_path: Path, jobs: list[tuple[dict, str, str | None, int | None]], world: int = 2) -> None:
    port = free_port()
    children = [forked(_rank, r, world, port, jobs, output=str(tmp_path / f"rank{r}.txt")) for r in range(world)]
    for child in children:
        child.join(120)
    for r, child in enumerate(children):
        assert child.exitcode == 0, (tmp_path / f"rank{r}.txt").read_text()


#: Logs that are statistics of a whole batch, not means over its examples: under several processes, the mean of the processes'.
BATCH_STATISTICS = {"vq.usage", "vq.perplexity"}


ADAM, SGD = {"type": "adam", "lr": 1e-2}, {"type": "sgd", "lr": 0.05}  # Adam: the toys' own
AVERAGED = spec_dict(AUTOENCODER, ema={"components": ["net"], "decay": 0.9})  # not broadcast each round: it follows the parameters


@pytest.mark.parametrize(
    "base, optimizer",
    [(AUTOENCODER, ADAM), (TRANSLATION_GAN, ADAM), (ACTNORM_FLOW, SGD), (EMA_VQVAE, SGD), (AVERAGED, ADAM)],
    ids=["one-player", "two-player", "actnorm", "ema-codebook", "weight-average"],
)
def test_two_processes_match_one_with_the_same_global_batch(base, optimizer, tmp_path, toys_catalogue):
    """Actnorm starts from the global batch's statistics and an EMA codebook follows the global batch's codes, as with one
    process; each process's own (its half batch, then rank 0's copy) moved them from step 1.  SGD there: actnorm's loc
    starts at a zero-mean gradient, whose float rounding Adam's g/√v would turn into whole steps."""
    raw = spec_dict(base, steps=8, batch_size=32, optimizer=optimizer)
    run_processes(tmp_path, [(raw, str(tmp_path / "ddp"), None, None)])
    single = Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path / "single", progress=False)
    single.train()
    model = build(load_spec(raw, catalogue=toys_catalogue), "cpu")[0]
    assert load_checkpoint(list_checkpoints(tmp_path / "ddp")[-1], model).state["world_size"] == 2
    model = Run.load(tmp_path / "ddp", catalogue=toys_catalogue, progress=False).model  # with its weight average, if any
    for (name, a), b in zip(single.model.state_dict().items(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)
    # logs are averaged over the processes, so they match too; only rank 0 wrote them
    ddp_logs, single_logs = read_metrics(tmp_path / "ddp" / "metrics.jsonl"), read_metrics(tmp_path / "single" / "metrics.jsonl")
    assert [r["step"] for r in ddp_logs] == [r["step"] for r in single_logs] == [2, 4, 6, 8]
    for a, b in zip(ddp_logs, single_logs, strict=True):
        for key in a.keys() - {"elapsed_s"} - BATCH_STATISTICS:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    assert "run folder" not in (tmp_path / "rank1.txt").read_text()


def _train_then_look(rank: int, world: int, port: int, raw: dict, out: str) -> int:
    """Train, and on return say whether process 0's evaluation is written (exit code 0 if so)."""
    _rank(rank, world, port, [(raw, out, None, None)])
    return 0 if (Path(out) / "evaluation.json").exists() else 3


def test_every_process_returns_from_train_once_process_0_has_evaluated(tmp_path):
    """Under gloo a process that exited straight after training could abort at exit (its worker thread freeing the last
    collective's tensors as Python finalised), and torchrun then killed process 0 mid-evaluation."""
    raw = spec_dict(AUTOENCODER, steps=2, batch_size=32, evaluate_at_end=True)
    raw["evaluate"] = {"metrics": [{"type": "test_losses"}]}
    port, out = free_port(), str(tmp_path / "ddp")
    children = [forked(_train_then_look, r, 2, port, raw, out, output=str(tmp_path / f"rank{r}.txt")) for r in range(2)]
    for child in children:
        child.join(120)
    assert [child.exitcode for child in children] == [0, 0], (tmp_path / "rank1.txt").read_text()


def test_a_nan_in_one_process_is_skipped_by_all_and_described_by_the_process_that_found_it(tmp_path):
    raw = spec_dict(AUTOENCODER, steps=4, batch_size=32, on_nan="skip")
    raw["losses"]["rec"].update(nan_at=[3], nan_rank=1)  # call 3 (the dry run made call 1): step 2, in process 1 only
    run_processes(tmp_path, [(raw, str(tmp_path / "ddp"), None, None)])
    said = [line for line in (tmp_path / "rank0.txt").read_text().splitlines() if "skipped" in line]
    assert said == ["warning: player 'model', step 2: non-finite loss on another process (which says where); skipped the batch (1 of at most 10)"]
    own = [line for line in (tmp_path / "rank1.txt").read_text().splitlines() if "skipped" in line]
    assert len(own) == 1 and own[0].startswith("process 1: warning: player 'model', step 2: non-finite loss (rec=nan, rec.mse=nan)")


def _train_and_keep_parameters(rank: int, world: int, port: int, raw: dict, out: str) -> int:
    """Train; then write this process's parameters to ``out/rank{rank}.safetensors``."""
    from safetensors.torch import save_file

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    run = Run.create(load_spec(raw, catalogue=catalogue()), out, progress=False)
    run.train()
    save_file({k: v.contiguous() for k, v in run.model.state_dict().items()}, str(Path(out) / f"rank{rank}.safetensors"))
    return 0


def test_a_parameter_without_gradient_in_one_process_gets_the_average_of_the_others(tmp_path):
    """A graph may depend on the data, so that a parameter has a gradient in some processes only: its gradient is then
    the sum of theirs over the number of processes (the missing ones count as 0, as under DDP), and every process
    steps it alike.  The gradients used to be bucketed by which ones existed, and the buckets' sizes differed."""
    raw = spec_dict(AUTOENCODER, steps=4, batch_size=32)
    raw["components"]["shift"] = {"type": "mlp", "in_features": 2, "out_features": 2, "hidden": [8]}
    raw["graph"]["s"] = "shift(x)"
    raw["losses"]["rec"].update(b="s", detach_a_rank=1)  # net's gradient comes from process 0 only
    port, out = free_port(), tmp_path / "ddp"
    children = [forked(_train_and_keep_parameters, r, 2, port, raw, str(out), output=str(tmp_path / f"rank{r}.txt")) for r in range(2)]
    for child in children:
        child.join(120)
    assert [child.exitcode for child in children] == [0, 0], (tmp_path / "rank1.txt").read_text()
    first, second = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    initial = build(load_spec(raw, catalogue=catalogue()), "cpu")[0].state_dict()
    assert not torch.equal(first["components.net.net.0.weight"], initial["components.net.net.0.weight"])  # net learned


def _slow_main(rank: int, port: int) -> int:
    """Join a group whose default timeout is 3 s; process 0 then takes 6 s to get to the end of training."""
    import datetime
    import time

    import torch.distributed as dist

    from compose_gen.runtime.distributed import setup

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    init = dist.init_process_group
    dist.init_process_group = lambda *args, **kwargs: init(*args, timeout=datetime.timedelta(seconds=3), **kwargs)
    group, _ = setup(torch.device("cpu"))
    if rank == 0:
        time.sleep(6)  # sampling and evaluating alone
    group.wait_for_main()
    return 0


def test_the_wait_for_process_0_outlasts_the_default_group_s_timeout(tmp_path):
    """An evaluation longer than the group's timeout (30 minutes by default) must not end the others' wait with an error."""
    port = free_port()
    children = [forked(_slow_main, r, port, output=str(tmp_path / f"rank{r}.txt")) for r in range(2)]
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0], (tmp_path / "rank1.txt").read_text()


def test_resume_under_two_processes_is_exact_with_per_process_noise(tmp_path):
    raw = spec_dict(GAN, steps=6, batch_size=32)
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    run_processes(tmp_path, [(raw, straight, None, None), (raw, split, None, 3), (raw, None, split, None)])
    a = load_file(list_checkpoints(Path(straight))[-1] / "model.safetensors")
    b = load_file(list_checkpoints(Path(split))[-1] / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rng = load_file(list_checkpoints(Path(split))[-1] / "optim.safetensors")
    assert not torch.equal(rng["rng/0/cpu"], rng["rng/1/cpu"])  # each process has its own noise stream


def test_indivisible_global_batch_is_a_clear_error(tmp_path):
    raw = spec_dict(AUTOENCODER, steps=1, batch_size=33)
    port = free_port()
    children = [forked(_rank, r, 2, port, [(raw, str(tmp_path / "ddp"), None, None)], output=str(tmp_path / f"rank{r}.txt")) for r in range(2)]
    for child in children:
        child.join(120)
    said = (tmp_path / "rank0.txt").read_text()  # a SpecError, which the command line has process 0 alone say
    assert "train.batch_size: 33 cannot be split evenly over 2 processes: give a multiple of 2" in said


def _rank_with_own_setting(rank: int, world: int, port: int, raw: dict, out: str) -> int:
    """A process whose spec differs by rank (its learning rate), as an edited copy given to one process would."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    raw = {**raw, "train": {**raw["train"], "optimizer": {"type": "adam", "lr": 0.01 * (rank + 1)}}}
    try:
        Run.create(load_spec(raw, catalogue=catalogue()), out, progress=False).train()
    except ValueError as error:
        print(f"refused: {error}")
    return 0


def test_processes_given_different_specs_are_refused_by_every_process(tmp_path):
    """Each trained its own weights (another learning rate) or waited on the others for ever (other steps), unseen."""
    raw = spec_dict(AUTOENCODER, steps=2)
    port = free_port()
    children = [forked(_rank_with_own_setting, r, 2, port, raw, str(tmp_path / "ddp"), output=str(tmp_path / f"rank{r}.txt")) for r in range(2)]
    for child in children:
        child.join(120)
    told = "given another spec or other data than process 0 (the model, the train settings, the seed or the data's examples differ)"
    assert f"refused: another process was {told}" in (tmp_path / "rank0.txt").read_text()
    assert f"refused: this process was {told}" in (tmp_path / "rank1.txt").read_text()
    assert not list_checkpoints(tmp_path / "ddp")


def _rank_whose_process_0_fails_after_training(rank: int, world: int, port: int, raw: dict, out: str) -> int:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))

    def fails(self) -> None:  # process 0's evaluation, say, raising
        raise OSError(28, "No space left on device", "evaluation.json")

    Run._sample_and_evaluate = fails
    try:
        Run.create(load_spec(raw, catalogue=catalogue()), out, progress=False).train()
    except (OSError, RuntimeError) as error:
        print(f"failed: {error}")
    return 0


def test_when_process_0_fails_after_training_the_others_say_so_not_gloo_s_lost_connection(tmp_path):
    """Process 1 added gloo's raw 'Connection closed by peer' to process 0's own error."""
    port = free_port()
    raw = spec_dict(AUTOENCODER, steps=2)
    children = [
        forked(_rank_whose_process_0_fails_after_training, r, 2, port, raw, str(tmp_path / "ddp"), output=str(tmp_path / f"rank{r}.txt"))
        for r in range(2)
    ]
    for child in children:
        child.join(120)
    assert "failed: [Errno 28] No space left on device: 'evaluation.json'" in (tmp_path / "rank0.txt").read_text()
    assert "failed: process 0 ended before the end of the run (its error says why)" in (tmp_path / "rank1.txt").read_text()


def test_torchrun_command_line(tmp_path):
    """The documented command: ``torchrun --nproc_per_node=2 -m compose_gen train SPEC``."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_dict(VAE, steps=3, batch_size=32, log_every=1, channels_last=True)))  # a spec warning
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
               "-m", "compose_gen", "train", str(spec), "--out", str(tmp_path / "run"), "--no-progress"]
    done = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("run folder:") == 1 and len(done.stdout.strip().splitlines()) == 1
    assert done.stderr.count("warning:") == done.stderr.count("channels_last") == 1  # said by process 0 only
    state = json.loads((list_checkpoints(tmp_path / "run")[-1] / "state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 3
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]
