"""Test-only plugins and tiny specs for the runtime tests (imported by tests and by their subprocesses).

* ``toy_mse``: ``mean((a - b)²)``, optionally non-finite (loss or gradient) at chosen forward calls, or with no
  gradient into ``a`` in one process of a group;
* ``toy_gan``: the non-saturating GAN (Goodfellow et al. 2014) with a critic it references:
  critic term ``E softplus(-D(real)) + E softplus(D(fake))``, generator term ``E softplus(-D(fake))``;
* ``toy_conv``: a 3×3 convolution keeping the image shape (for channels-last).
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from compose_gen import ComponentType, Loss, Params, Ref, Value, hookimpl, make_catalogue

ROOT = Path(__file__).resolve().parents[2]


def subprocess_env() -> dict[str, str]:
    """The environment of a child ``python -m compose_gen``: one thread, this checkout first on an inherited path."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


class MSEParams(Params):
    a: Value
    b: Value = "x"
    nan_at: list[int] = Field(default_factory=list, description="forward calls (1-based, with gradients) that go wrong")
    nan_kind: Literal["loss", "grad"] = "loss"
    nan_rank: int | None = Field(None, description="only in this process of a torchrun group (RANK)")
    detach_a_rank: int | None = Field(None, description="in this process of a torchrun group, no gradient flows into a")


class ToyMSE(Loss):
    """``mean((a - b)²)``; at the calls in ``nan_at`` the loss is NaN, or finite with a NaN gradient."""

    def __init__(self, params: MSEParams) -> None:
        super().__init__()
        here = params.nan_rank is None or int(os.environ.get("RANK", "0")) == params.nan_rank
        self.nan_at, self.nan_kind = set(params.nan_at) if here else set(), params.nan_kind
        self.calls = 0
        self.detach_a = params.detach_a_rank is not None and int(os.environ.get("RANK", "0")) == params.detach_a_rank

    def forward(self, inputs: Mapping[str, Any], terms: frozenset[str]) -> dict[str, Tensor]:
        a, b = inputs["a"], inputs["b"]
        if self.detach_a:  # a graph that depends on the data: a's parameters get no gradient in this process
            a = a.detach()
        loss = ((a - b) ** 2).mean()
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls in self.nan_at:
                # sqrt at 0: value 0, gradient 0 · ∞ = NaN
                loss = loss * float("nan") if self.nan_kind == "loss" else loss + (a.sum() * 0.0).sqrt()
        return {"loss": loss, "mse": loss.detach()}


class GANParams(Params):
    critic: Ref("critic", "network")  # type: ignore[valid-type]
    real: Value = "x"
    fake: Value


class ToyGAN(Loss):
    terms = ("critic", "generator")
    term_inputs = {"critic": ("real", "fake"), "generator": ("fake",)}

    def __init__(self, critic: nn.Module) -> None:
        super().__init__()
        self._critic = (critic,)  # referenced, not owned

    def forward(self, inputs: Mapping[str, Any], terms: frozenset[str]) -> dict[str, Tensor]:
        critic = self._critic[0]
        d_fake = critic(inputs["fake"])
        out = {}
        if "critic" in terms:
            out["critic"] = F.softplus(-critic(inputs["real"])).mean() + F.softplus(d_fake).mean()
        if "generator" in terms:
            out["generator"] = F.softplus(-d_fake).mean()
        return out


class ConvParams(Params):
    channels: int = 1
    hidden: int = 4


class ToyConv(nn.Module):
    """Two 3×3 convolutions, ``channels → hidden → channels``, keeping the image size."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class FrozenParams(Params):
    features: int = 2
    frozen: Literal["first", "all"] = "first"


class ToyFrozenFirst(nn.Module):
    """A fixed random projection ``features → 16`` (frozen: ``requires_grad=False``), then a trained ``16 → features``
    (frozen too with ``frozen: all``)."""

    def __init__(self, features: int, frozen: str = "first") -> None:
        super().__init__()
        self.fixed = nn.Linear(features, 16).requires_grad_(False)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(16, features)).requires_grad_(frozen != "all")

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.fixed(x))


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("toy_mse", "loss", MSEParams, lambda p, ctx: ToyMSE(p)),
        ComponentType("toy_gan", "loss", GANParams, lambda p, ctx: ToyGAN(ctx.component(p.critic))),
        ComponentType("toy_conv", "network", ConvParams, lambda p, ctx: ToyConv(p.channels, p.hidden)),
        ComponentType("toy_frozen_first", "network", FrozenParams, lambda p, ctx: ToyFrozenFirst(p.features, p.frozen)),
    ]


def catalogue() -> Any:
    import runtime_toys

    return make_catalogue([runtime_toys], entry_points=True)


def _with(spec: dict[str, Any], train: Mapping[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    spec["train"].update(train)
    return spec


_TRAIN = {"steps": 8, "batch_size": 32, "log_every": 2, "evaluate_at_end": False, "optimizer": {"type": "adam", "lr": 1e-2}}

VAE = {
    "name": "vae_tiny",
    "seed": 0,
    "device": "cpu",
    "data": {"type": "digits", "binarize": "threshold", "shape": "flat"},
    "components": {
        "prior": {"type": "standard_normal", "shape": [4]},
        "encoder": {"type": "gaussian_encoder", "latent": 4, "net": {"type": "mlp", "in_features": 64, "out_features": 8, "hidden": [16]}},
        "decoder": {"type": "bernoulli_decoder", "net": {"type": "mlp", "in_features": 4, "out_features": 64, "hidden": [16]}},
    },
    "losses": {"vae": {"type": "elbo", "encoder": "encoder", "decoder": "decoder", "prior": "prior"}},
    "players": {"model": {"schedule": {"type": "cosine", "warmup": 2}}},
    "train": _TRAIN,
    "sample": {"type": "ancestral", "prior": "prior", "decoder": "decoder"},
}

GAN = {
    "name": "gan_tiny",
    "seed": 1,
    "device": "cpu",
    "data": {"type": "moons", "n": 400},
    "components": {
        "noise": {"type": "standard_normal", "shape": [2]},
        "generator": {"type": "mlp", "in_features": 2, "out_features": 2, "hidden": [16]},
        "critic": {"type": "mlp", "in_features": 2, "out_features": 1, "hidden": [16], "dropout": 0.1},
    },
    "graph": {"z": "noise.sample(x)", "fake": "generator(z)"},
    "losses": {"adv": {"type": "toy_gan", "critic": "critic", "real": "x", "fake": "fake"}},
    "players": {
        "critic": {"params": ["critic"], "terms": ["adv.critic"], "steps": 2, "clip_grad_norm": 1.0},
        "generator": {"params": ["generator"], "terms": ["adv.generator"], "schedule": {"type": "cosine"}},
    },
    "train": _TRAIN,
    "sample": {"type": "generator", "noise": "noise", "generator": "generator"},
}

# Deterministic given the data (no noise draws), for comparing one process with several.
AUTOENCODER = {
    "name": "ae_tiny",
    "seed": 2,
    "device": "cpu",
    "data": {"type": "moons", "n": 400},
    "components": {"net": {"type": "mlp", "in_features": 2, "out_features": 2, "hidden": [16]}},
    "graph": {"r": "net(x)"},
    "losses": {"rec": {"type": "toy_mse", "a": "r", "b": "x"}},
    "train": _TRAIN,
}

# Noise-free layers that learn from batch statistics rather than gradients, which must combine them over processes.
ACTNORM_FLOW = {
    "name": "actnorm_tiny",
    "seed": 4,
    "device": "cpu",
    "data": {"type": "moons", "n": 400},
    "components": {
        "flow": {
            "type": "flow",
            "base": {"type": "standard_normal", "shape": [2]},
            "bijectors": [{"type": "actnorm", "shape": [2]}, {"type": "affine_coupling", "shape": [2], "mask": "alternating", "hidden": [16]}],
        }
    },
    "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
    "train": _TRAIN,
}

EMA_VQVAE = {
    "name": "vq_tiny",
    "seed": 5,
    "device": "cpu",
    "data": {"type": "digits", "binarize": "threshold", "shape": "flat"},
    "components": {
        "encoder": {"type": "mlp", "in_features": 64, "out_features": 8, "hidden": [16]},
        "decoder": {"type": "bernoulli_decoder", "net": {"type": "mlp", "in_features": 8, "out_features": 64, "hidden": [16]}},
    },
    "losses": {"vq": {"type": "vqvae", "encoder": "encoder", "decoder": "decoder", "codes": 8, "code_dim": 2, "ema": True, "init": "uniform"}},
    "train": _TRAIN,
}

TRANSLATION_GAN = {
    "name": "translate_tiny",
    "seed": 3,
    "device": "cpu",
    "data": {"type": "moons", "n": 400},
    "components": {
        "generator": {"type": "mlp", "in_features": 2, "out_features": 2, "hidden": [16]},
        "critic": {"type": "mlp", "in_features": 2, "out_features": 1, "hidden": [16]},
    },
    "graph": {"fake": "generator(x)"},
    "losses": {"adv": {"type": "toy_gan", "critic": "critic", "real": "x", "fake": "fake"}},
    "players": {
        "critic": {"params": ["critic"], "terms": ["adv.critic"], "steps": 2},
        "generator": {"params": ["generator"], "terms": ["adv.generator"]},
    },
    "train": _TRAIN,
}


def spec_dict(base: dict[str, Any], **train: Any) -> dict[str, Any]:
    """A copy of ``base`` with ``train`` settings changed."""
    return _with(base, train)


def same_state(a: nn.Module, b: nn.Module) -> bool:
    """Bitwise-equal state dicts."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def forked(target: Any, *args: Any, output: Any = None) -> Any:
    """Start ``target(*args)`` in a child process, stdout/stderr to ``output``.

    The child is forked (cheap: torch is already imported) unless the machine has a GPU. There the parent's first
    backward pass starts autograd's device threads, after which a forked child's autograd refuses to run ("Unable to
    handle autograd's threading in combination with fork-based multiprocessing"), so the child is spawned, and
    ``target`` must be a module-level function. The child uses one thread, like a DataLoader worker, and exits with
    ``target``'s return value.
    """
    import multiprocessing

    method = "spawn" if torch.cuda.is_available() or torch.backends.mps.is_available() else "fork"
    child = multiprocessing.get_context(method).Process(target=_child, args=(target, args, output), daemon=True)
    child.start()
    return child


def _child(target: Any, args: tuple[Any, ...], output: Any) -> None:
    import os
    import sys

    torch.set_num_threads(1)
    if output is not None:
        sys.stdout = sys.stderr = open(output, "w", buffering=1)
        os.dup2(sys.stdout.fileno(), 1)
        os.dup2(sys.stdout.fileno(), 2)
    try:
        code = target(*args) or 0
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def errors_without_waiting(calls: list[Callable[[], Any]], fifos: Callable[[], Iterable[Path]]) -> list[OSError]:
    """The OSErrors ``calls`` raise, run in a thread; the test fails if they wait on a FIFO, one of ``fifos()`` (which are
    then opened both ways and closed, so that a blocked reader or writer sees their end and no thread outlives the test)."""
    errors: list[OSError] = []

    def run() -> None:
        for call in calls:
            try:
                call()
            except OSError as error:
                errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    hung = thread.is_alive()
    for _ in range(100):
        if not thread.is_alive():
            break
        for fifo in fifos():
            for way in (os.O_RDONLY, os.O_WRONLY):  # a writer blocked opening it gets its reader, a reader its writer
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, way | os.O_NONBLOCK))
        thread.join(0.1)
    assert not hung, f"waited on a FIFO: {list(fifos())}"
    return errors
