"""Speed settings of ``train:``: mixed precision, ``torch.compile`` and channels-last.

Mixed precision (``precision``)
    ``fp32``: no autocast.  ``bf16``: each player's loss runs under
    ``torch.autocast`` with bfloat16 (CPU or CUDA; float32's range, so no
    scaling).  ``fp16``: autocast with float16 and one ``torch.amp.GradScaler``
    per player, whose state is checkpointed; a step whose gradients overflow is
    skipped by the scaler, which halves its scale (that is not a NaN event).
    Parameters, gradients and optimizer state stay float32.

    Every tensor a loss module returns is cast to float32 as it leaves the loss
    (a forward hook), so weighted totals, logs and the NaN guard are float32.
    Inside a loss, CUDA autocast already runs reductions and transcendental ops
    (``sum``, ``log``, ``exp``, ``pow``, ``softplus``, ``log_softmax``, the
    ``*_loss`` functions) in float32; CPU autocast does not.  A plugin that must
    accumulate log-densities or log-determinants in float32 on every device opts
    in locally, e.g.::

        with torch.autocast(z.device.type, enabled=False):
            log_prob = base.log_prob(z.float()) + ladj.float()

``compile``
    Each player's loss function goes through ``torch.compile`` (backend
    ``compile_backend``).  Compiling happens on the first steps; if it fails
    there (or later), the trainer says so once, restores the RNG and buffers
    touched by the failed attempt, and runs that player eagerly from then on.

``channels_last``
    4D weights and 4D batch fields use the channels-last memory format, which
    convolutions on recent GPUs (and oneDNN on CPU) run faster.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterable, Iterator, TypeVar

import torch
from torch import Tensor, nn

from compose_gen.runtime.rng import snapshot

__all__ = ["LossFunction", "Precision", "use_channels_last"]

T = TypeVar("T")

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast and gradient scalers for ``train.precision``."""

    def __init__(self, mode: str, device: torch.device, players: Iterable[str]) -> None:
        self.mode = mode
        self.device = device
        self.dtype = DTYPES[mode]
        if mode == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("train.precision: bf16 is not supported by this GPU; use fp16")
        self.scalers = {p: torch.amp.GradScaler(device.type) for p in players} if mode == "fp16" else {}

    def autocast(self) -> ContextManager[Any]:
        """The run's precision for one forward pass (nothing to do under fp32, every step)."""
        return contextlib.nullcontext() if self.dtype is None else self._mixed()

    @contextlib.contextmanager
    def _mixed(self) -> Iterator[None]:
        """Training runs inside ``own_modes``' autocast off switch, so this region is nested, and torch clears its cache
        of cast weights only when the outermost one ends: cleared here, or the next step would compute with the
        weights as they were before the optimizer moved them."""
        try:
            with torch.autocast(self.device.type, dtype=self.dtype):
                yield
        finally:
            torch.clear_autocast_cache()

    def float32_outputs(self, losses: Iterable[nn.Module]) -> None:
        """Make every loss return float32 tensors (only under mixed precision)."""
        if self.dtype is not None:
            for loss in losses:
                loss.register_forward_hook(_to_float32)

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {player: scaler.state_dict() for player, scaler in self.scalers.items()}

    def load_state_dict(self, state: dict[str, dict[str, Any]]) -> None:
        for player, scaler in self.scalers.items():
            if player in state:
                scaler.load_state_dict(state[player])


def _to_float32(module: nn.Module, args: Any, output: Any) -> Any:
    if isinstance(output, dict):
        return {k: v.float() if isinstance(v, Tensor) and v.is_floating_point() else v for k, v in output.items()}
    return output


class LossFunction:
    """A player's loss function, eager or through ``torch.compile`` with an eager fallback.

    :meth:`run` calls ``compute(fn)`` with the compiled function (``compute``
    does the forward and backward, so failures while compiling the backward are
    caught too).  The very first call of a run runs eagerly, so that data-dependent
    initialisations (actnorm, a VQ-VAE's codebook) happen outside the graph,
    which then sees them done and traces no host read; a resumed run, whose
    checkpoint holds them done, compiles from its first call (:meth:`resumed`),
    as the run it continues did then.  The calls that compile run on a snapshot
    of the RNG and the buffers so that a failed attempt leaves no trace.  Past
    them, only torch.compile's own errors (a recompile for a new shape that
    fails) fall back, and only when the failed call changed no buffer (one that
    ran up to a graph break may have); any other is the step's, raised as an
    eager step would.
    """

    PROBE_CALLS = 2

    def __init__(
        self,
        player: str,
        eager: Callable[..., Any],
        backend: str | None,
        model: nn.Module,
        device: torch.device,
        say: Callable[[str], None],
    ) -> None:
        self.player = player
        self.eager = eager
        self.compiled = torch.compile(eager, backend=backend) if backend else None
        self.backend = backend
        self.model, self.device, self.say = model, device, say
        self.calls = 0
        self.eager_first = True
        self._buffers: list[Tensor] | None = None

    def _buffer_versions(self) -> list[int]:
        """The model's buffers' version counters, which a compiled call that ran in part (up to a graph break) moves on."""
        if self._buffers is None:
            self._buffers = list(self.model.buffers())
        return [buffer._version for buffer in self._buffers]

    def _buffers_changed(self, versions: list[int]) -> bool:
        """Whether a buffer moved on since ``versions`` were read, or is another tensor than when they first were (a
        module that reassigns ``self.count = self.count + 1``; since then, or in this call: either way, not safe)."""
        now, then = list(self.model.buffers()), self._buffers or []
        replaced = len(now) != len(then) or any(a is not b for a, b in zip(now, then, strict=True))
        return replaced or self._buffer_versions() != versions

    def resumed(self) -> None:
        """Continue a run past its first step: compile from the first call, as an eager step there would round (and
        draw noise) otherwise than the compiled steps of the run that was not stopped."""
        self.eager_first = False

    def run(self, compute: Callable[[Callable[..., Any]], T]) -> T:
        if self.compiled is None:
            return compute(self.eager)
        if self.calls == 0:  # said on the first training call, not when a run is loaded to sample or evaluate
            self.say(f"compiling the loss of player {self.player!r} with torch.compile (backend {self.backend}); the first steps are slow")
            self.calls += 1
            if self.eager_first:
                return compute(self.eager)
        restore = snapshot(self.model, self.device) if self.calls <= self.PROBE_CALLS else None
        versions = None if restore is not None else self._buffer_versions()
        try:
            out = compute(self.compiled)
        except Exception as error:
            if restore is None and not _from_the_compiler(error):  # the step's own error, past the calls that compile
                raise
            if restore is None and self._buffers_changed(versions):
                raise RuntimeError(
                    f"torch.compile failed for player {self.player!r} ({_why(error)}) after part of the compiled step had "
                    "run and changed buffers, so the step cannot be run again eagerly; resume with train.compile: false"
                ) from error
            self.compiled = None
            if restore is not None:
                restore()
            self.say(f"torch.compile failed for player {self.player!r} ({_why(error)}); running it eagerly")
            return compute(self.eager)
        self.calls += 1
        return out


def _from_the_compiler(error: Exception) -> bool:
    """Whether ``error`` is torch.compile's (a recompile that fails, say), not the step's own: a plugin's error, or memory
    running out, raised as it would be eagerly once the compiled graph runs."""
    from torch._dynamo.exc import TorchDynamoException  # loaded already: something was compiled

    return isinstance(error, TorchDynamoException)


def _why(error: Exception) -> str:
    """The error's type and first line; for a backend's failure, which ``torch.compile`` wraps (``BackendCompilerFailed``,
    its first line only "backend='inductor' raised:"), the backend's name and its own innermost error's."""
    cause, backend = error, None
    while isinstance(getattr(cause, "inner_exception", None), Exception):
        backend = backend or getattr(cause, "backend_name", None)
        cause = cause.inner_exception
    first_line = (str(cause).strip().splitlines() or [""])[0][:300].rstrip(": ")  # "AssertionError: " of a bare assert
    what = f"{type(cause).__name__}: {first_line}" if first_line else type(cause).__name__
    return f"backend {backend!r} raised {what}" if backend else what


def use_channels_last(model: nn.Module) -> bool:
    """Put 4D weights in channels-last format; False (and nothing changed) when there are none."""
    if not any(p.dim() == 4 for p in model.parameters()):
        return False
    model.to(memory_format=torch.channels_last)
    return True
