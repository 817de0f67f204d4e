"""Mixed precision, torch.compile with its eager fallback, channels-last; CUDA variants skip without a GPU."""

from __future__ import annotations

import json

import pytest
import torch
from runtime_toys import AUTOENCODER, EMA_VQVAE, GAN, ROOT, VAE, same_state, spec_dict

from compose_gen.runtime import NonFiniteLoss, Run
from compose_gen.runtime.checkpoint import list_checkpoints
from compose_gen.spec import SpecWarning, load_spec


def _run(tmp_path, catalogue, base, name="run", device=None, **train):
    return Run.create(load_spec(spec_dict(base, **train), catalogue=catalogue), tmp_path / name, device, progress=False)


def test_bf16_autocasts_the_networks_and_keeps_terms_and_parameters_float32(tmp_path, toys_catalogue):
    run = _run(tmp_path, toys_catalogue, VAE, steps=4, precision="bf16")
    seen = []
    run.model.component("encoder.net").net[0].register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    logs = run.train()
    assert seen and set(seen) == {torch.bfloat16}
    with run.trainer.precision.autocast():
        loss, terms = run.model.player_loss("model", next(run.trainer.stream))
    assert loss.dtype == torch.float32 and all(t.dtype == torch.float32 for t in terms.values())
    assert all(p.dtype == torch.float32 for p in run.model.parameters())
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())


def test_fp16_scaler_state_is_checkpointed_and_resume_is_exact(tmp_path, toys_catalogue):
    straight = _run(tmp_path, toys_catalogue, GAN, "straight", steps=6, precision="fp16")
    straight.train()
    _run(tmp_path, toys_catalogue, GAN, "split", steps=6, precision="fp16").train(3)
    state = json.loads((list_checkpoints(tmp_path / "split")[-1] / "state.json").read_text())
    assert set(state["scalers"]) == {"critic", "generator"} and state["scalers"]["critic"]["scale"] > 0
    resumed = Run.load(tmp_path / "split", catalogue=toys_catalogue, progress=False)
    resumed.train()
    assert same_state(straight.model, resumed.model)
    for player, scaler in straight.trainer.precision.scalers.items():
        assert resumed.trainer.precision.scalers[player].state_dict() == scaler.state_dict()


def test_an_fp16_step_the_scaler_skips_runs_no_after_step_hook(tmp_path, toys_catalogue):
    """An EMA codebook (or weight clipping, a step counter) must not follow a step that never happened."""
    run = _run(tmp_path, toys_catalogue, EMA_VQVAE, steps=3, log_every=1, precision="fp16")
    run.train(1)
    scaler = run.trainer.precision.scalers["model"]
    scaler.update(2.0**8)  # gradients scaled by 256 fit in float16 here: a step taken
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    taken = run.train(2)
    assert "model.grad_norm" in taken and taken["model.overflowed"] == 0.0
    assert not torch.equal(before["losses.vq.quantizer.cluster_size"], run.model.state_dict()["losses.vq.quantizer.cluster_size"])
    scaler.update(3e38)  # scaled gradients overflow float32: the scaler skips the step
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    skipped = run.train(3)
    assert "model.grad_norm" not in skipped and skipped["model.overflowed"] == 1.0  # the log says so
    assert all(torch.equal(before[k], v) for k, v in run.model.state_dict().items())


@pytest.mark.parametrize(("scale", "stops"), [(2.0**-20, False), (2.0**-25, True)])
def test_fp16_gradients_non_finite_at_a_vanishing_scale_are_a_nan_event(scale, stops, tmp_path, toys_catalogue):
    """Below float16's tiniest value no scale cures them (a NaN, not an overflow): not to be skipped in silence for ever.
    Above it, the scaler goes on lowering its scale: below 1 it still cures a float16 gradient that overflows on the way."""
    raw = spec_dict(AUTOENCODER, steps=4, precision="fp16")
    raw["losses"]["rec"].update(nan_at=[3], nan_kind="grad")  # call 3 (the dry run made call 1): step 2
    run = Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path / "run", progress=False)
    run.train(1)
    run.trainer.precision.scalers["model"].update(scale)
    if stops:
        with pytest.raises(NonFiniteLoss, match="step 2: non-finite gradient.*; train.precision is fp16, whose values end at ±65504"):
            run.train()
    else:
        run.train()
        assert run.trainer.step == 4 and run.trainer.precision.scalers["model"].get_scale() < scale


def test_fp16_on_data_beyond_its_range_is_warned_of_and_named_where_the_first_step_stops(tmp_path, toys_catalogue):
    """Data of size 1e6 became inf in the first layer: the stop blamed the mlp "given finite inputs", and said nothing of fp16."""
    raw = spec_dict(AUTOENCODER, steps=2, precision="fp16")
    raw["data"]["transforms"] = [{"type": "scale", "a": 1e6}]
    with pytest.warns(SpecWarning, match=r"train.precision: fp16, but the data's x reach 2.\d+e\+06 in size, beyond float16's ±65504"):
        run = Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path / "run", progress=False)
    with pytest.raises(NonFiniteLoss, match="step 1: non-finite loss .*; train.precision is fp16, whose values end at ±65504"):
        run.train()


def test_compile_trains_like_eager(tmp_path, toys_catalogue, capsys):
    eager = _run(tmp_path, toys_catalogue, AUTOENCODER, "eager", steps=3)
    eager.train()
    compiled = _run(tmp_path, toys_catalogue, AUTOENCODER, "compiled", steps=3, compile=True, compile_backend="aot_eager")
    assert "compiling" not in capsys.readouterr().err  # nothing is compiled until the first training step
    compiled.train()
    assert "compiling the loss of player 'model' with torch.compile (backend aot_eager)" in capsys.readouterr().err
    assert compiled.trainer.loss_functions["model"].compiled is not None  # no fallback happened
    for a, b in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_compile_failure_falls_back_to_eager_with_a_message_and_no_trace(tmp_path, toys_catalogue, capsys, monkeypatch):
    def broken_compile(fn, **options):
        def compiled(*args):
            torch.randn(3)  # consumes randomness before failing, like a half-run graph would
            raise RuntimeError("backend exploded\nsecond line")

        return compiled

    eager = _run(tmp_path, toys_catalogue, GAN, "eager", steps=3)
    eager.train()
    monkeypatch.setattr(torch, "compile", broken_compile)
    fallback = _run(tmp_path, toys_catalogue, GAN, "fallback", steps=3, compile=True)
    fallback.train()
    err = capsys.readouterr().err
    assert "torch.compile failed for player 'critic' (RuntimeError: backend exploded); running it eagerly" in err
    assert "player 'generator'" in err
    assert same_state(eager.model, fallback.model)  # the failed attempts left the random stream untouched


def test_channels_last_for_conv_weights_and_batches(tmp_path, toys_catalogue):
    raw = spec_dict(AUTOENCODER, steps=3, channels_last=True, batch_size=16)
    raw["data"] = {"type": "digits", "shape": "image"}
    raw["components"]["net"] = {"type": "toy_conv"}
    run = Run.create(load_spec(raw, catalogue=toys_catalogue), tmp_path / "run", progress=False)
    weight = run.model.component("net").net[2].weight  # (1, 4, 3, 3): the two formats differ
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert run.trainer.stream.memory_format == torch.channels_last
    run.train()
    back = Run.load(tmp_path / "run", catalogue=toys_catalogue, progress=False)  # non-contiguous weights checkpoint fine
    assert same_state(back.model, run.model)


def test_channels_last_without_conv_weights_leaves_batches_as_they_are(tmp_path, toys_catalogue):
    with pytest.warns(SpecWarning, match="no 4D"):  # said by the build (tests/compiler/test_advice.py)
        run = _run(tmp_path, toys_catalogue, AUTOENCODER, steps=1, channels_last=True)
    assert run.trainer.stream.memory_format == torch.contiguous_format


def test_a_resumed_compiled_run_compiles_from_its_first_step(tmp_path, toys_catalogue, monkeypatch):
    """The run it continues compiled every step after its very first; an eager step after the resume would round (and,
    under inductor, draw noise) otherwise, so the resume would not be exact."""
    calls = []

    def recording_compile(fn, **options):
        def compiled(*args):
            calls.append(args)
            return fn(*args)

        return compiled

    monkeypatch.setattr(torch, "compile", recording_compile)
    _run(tmp_path, toys_catalogue, VAE, steps=3, compile=True).train()
    assert len(calls) == 2  # steps 2 and 3: the first ran eagerly, to initialise data-dependent layers
    resumed = Run.load(tmp_path / "run", overrides=["train.steps=5"], catalogue=toys_catalogue, progress=False)
    resumed.train()
    assert len(calls) == 4


@pytest.mark.parametrize("late", ["step", "compiler", "compiler_after_a_graph_ran", "compiler_after_a_buffer_was_replaced"])
def test_past_the_compiling_calls_only_torch_compile_s_own_errors_fall_back(tmp_path, toys_catalogue, capsys, monkeypatch, late):
    """A plugin's error at step 5 was said to be torch.compile's and the step run again eagerly, without putting back
    what the failed call had changed (a buffer updated twice); a recompile that fails still falls back, unless the
    call had run in part (up to a graph break) and changed a buffer."""
    from torch._dynamo.exc import RecompileError

    from compose_gen.runtime.trainer import StepFailed

    calls, buffers = [], []

    def failing_late(fn, **options):
        def compiled(*args):
            calls.append(args)
            if len(calls) == 4:  # step 5: the first step runs eagerly
                if late == "step":
                    raise ValueError("a plugin's bug")
                if late == "compiler_after_a_graph_ran":
                    buffers[0].add_(0)  # as a graph before the break would update a running statistic
                if late == "compiler_after_a_buffer_was_replaced":  # a module's `self.count = self.count + 1`
                    owner = next(m for m in run.model.modules() if any(b is buffers[0] for b in m.buffers(recurse=False)))
                    name = next(n for n, b in owner.named_buffers(recurse=False) if b is buffers[0])
                    setattr(owner, name, buffers[0] + 0)
                raise RecompileError("recompiling for a new shape failed")
            return fn(*args)

        return compiled

    monkeypatch.setattr(torch, "compile", failing_late)
    run = _run(tmp_path, toys_catalogue, VAE, steps=6, compile=True)
    buffers.extend(run.model.buffers())
    if late == "step":
        with pytest.raises(StepFailed, match=r"step 5: .*ValueError: a plugin's bug"):
            run.train()
        assert "torch.compile failed" not in capsys.readouterr().err
    elif late.startswith("compiler_after"):
        with pytest.raises(StepFailed, match=r"step 5: .*after part of the compiled step had run and changed buffers"):
            run.train()
    else:
        run.train()
        said = "torch.compile failed for player 'model' (RecompileError: recompiling for a new shape failed); running it eagerly"
        assert said in capsys.readouterr().err and run.trainer.step == 6


def test_a_backend_s_failure_is_named_by_the_backend_s_own_error(tmp_path, toys_catalogue, capsys, monkeypatch):
    """torch.compile wraps what inductor raises as BackendCompilerFailed, whose first line names only the backend."""
    from torch._dynamo.exc import BackendCompilerFailed

    def inductor(fn, **options):
        def compiled(*args):
            raise BackendCompilerFailed(inductor, inner, None)

        return compiled

    monkeypatch.setattr(torch, "compile", inductor)
    inner = AssertionError("no lowering for bf16 scatter\ndetails")
    _run(tmp_path, toys_catalogue, VAE, "said", steps=3, compile=True).train()
    said = "torch.compile failed for player 'model' (backend 'inductor' raised AssertionError: no lowering for bf16 scatter); running it eagerly"
    assert said in capsys.readouterr().err
    inner = BackendCompilerFailed(inductor, RuntimeError("AssertionError: \n  target: aten.index_put"), None)  # wrapped twice
    _run(tmp_path, toys_catalogue, VAE, "bare", steps=3, compile=True).train()
    assert "(backend 'inductor' raised RuntimeError: AssertionError); running it eagerly" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training_in_every_precision(precision, tmp_path, toys_catalogue):
    run = _run(tmp_path, toys_catalogue, GAN, device="cuda", steps=4, precision=precision)
    logs = run.train()
    assert run.device.type == "cuda" and all(v == v for v in logs.values())
    back = Run.load(tmp_path / "run", catalogue=toys_catalogue, device="cuda", progress=False)
    assert same_state(back.model, run.model)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_compile_with_inductor(tmp_path, toys_catalogue):
    run = _run(tmp_path, toys_catalogue, VAE, device="cuda", steps=3, compile=True, precision="bf16")
    run.train()
    assert run.trainer.loss_functions["model"].compiled is not None


@pytest.mark.parametrize("spec", ["vqvae_digits", "glow_digits"])
def test_data_initialised_models_compile_without_graph_breaks(spec, tmp_path):
    """The first step runs eagerly: a VQ-VAE's codebook and Glow's actnorm initialise from data outside the graph."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    overrides = ["train.steps=3", "train.compile=true", "train.compile_backend=aot_eager"]
    run = Run.create(load_spec(ROOT / "specs" / f"{spec}.yaml", overrides), tmp_path / spec, progress=False)
    run.train()
    assert all(f.compiled is not None for f in run.trainer.loss_functions.values())
    assert counters["stats"]["unique_graphs"] > 0
    assert not counters["graph_break"], dict(counters["graph_break"])
