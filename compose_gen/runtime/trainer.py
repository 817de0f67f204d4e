"""The training loop: rounds of player steps, nothing model-specific.

One round gives each player (in spec order) its ``steps`` optimizer steps, each
on a fresh batch: sets the player's learning rate from its schedule, switches
``requires_grad`` to the player's parameters, computes its plan's weighted loss,
checks it is finite, backpropagates, clips, steps, and lets losses apply their
parameter hooks (``after_step``, e.g. WGAN weight clipping).
"""

from __future__ import annotations

import signal
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from compose_gen.compiler import GenerativeModel, Plan
from compose_gen.runtime.checkpoint import Checkpoint, restore_optimizers, restore_rng, save_checkpoint
from compose_gen.runtime.data import BatchStream
from compose_gen.runtime.logging import MetricsLog, TrainingProgress
from compose_gen.runtime.optim import lr_factor, make_optimizer

__all__ = ["NonFiniteLoss", "Trainer"]


class NonFiniteLoss(RuntimeError):
    """A loss or gradient became NaN or infinite; names the player, term and step."""


@dataclass
class Trainer:
    model: GenerativeModel
    stream: BatchStream
    run_dir: Path | None = None
    progress: bool = True
    step: int = 0
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        train = self.model.spec.model.train
        for name, plan in self.model.plans.items():
            self.optimizers[name] = make_optimizer(plan.spec.optimizer or train.optimizer, plan.params)
        self._base_lr = {n: [g["lr"] for g in o.param_groups] for n, o in self.optimizers.items()}
        self._stop_requested = False

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue exactly where ``checkpoint`` (already loaded into the model) left off."""
        restore_optimizers(checkpoint, self.optimizers)
        restore_rng(checkpoint)
        self.stream.load_state_dict(checkpoint.state["data"])
        self.step = checkpoint.step

    def fit(self, steps: int) -> dict[str, float]:
        """Train until round ``steps``; return the last logged averages."""
        spec = self.model.spec.model
        train = spec.train
        self.model.train()
        log = MetricsLog(self.run_dir / "metrics.jsonl") if self.run_dir else None
        sums: dict[str, Tensor] = defaultdict(lambda: torch.zeros((), device=self.model.device))
        count = 0
        last: dict[str, float] = {}
        multi = len(self.model.plans) > 1
        try:
            with self._signals(), TrainingProgress(steps, self.step, self.progress) as bar:
                while self.step < steps and not self._stop_requested:
                    for name, plan in self.model.plans.items():
                        if multi:
                            self._select(plan)
                        for _ in range(plan.spec.steps):
                            logs = self._player_step(name, plan, steps)
                            for key, value in logs.items():
                                sums[key] += value.detach()
                    count += 1
                    self.step += 1
                    if self.step % train.log_every == 0 or self.step == steps:
                        last = {k: float(v) / count for k, v in sums.items()}
                        sums.clear()
                        count = 0
                        if log:
                            log.write({"step": self.step, **last})
                        bar.update(self.step, last)
                    else:
                        bar.update(self.step)
                    if self.run_dir and train.checkpoint_every and self.step % train.checkpoint_every == 0:
                        self.save()
        finally:
            if multi:
                for p in self.model.parameters():
                    p.requires_grad_(True)
            if log:
                log.close()
        if self.run_dir:
            self.save()
        return last

    def _player_step(self, name: str, plan: Plan, total: int) -> dict[str, Tensor]:
        optimizer = self.optimizers[name]
        factor = lr_factor(plan.spec.schedule, self.step, total)
        for group, base in zip(optimizer.param_groups, self._base_lr[name]):
            group["lr"] = base * factor
        batch = next(self.stream)
        loss, logs = self.model.player_loss(name, batch)
        if not torch.isfinite(loss):
            bad = [k for k, v in logs.items() if not torch.isfinite(v).all()]
            raise NonFiniteLoss(f"player {name!r}: non-finite loss at step {self.step} (terms: {', '.join(bad) or 'total'})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if plan.spec.clip_grad_value:
            torch.nn.utils.clip_grad_value_(plan.params, plan.spec.clip_grad_value)
        if plan.spec.clip_grad_norm:
            norm = torch.nn.utils.clip_grad_norm_(plan.params, plan.spec.clip_grad_norm)
            logs[f"{name}.grad_norm"] = norm
        optimizer.step()
        for call in plan.losses:
            call.module.after_step(call.terms)
        return logs

    def _select(self, plan: Plan) -> None:
        for p in self.model.parameters():
            p.requires_grad_(id(p) in plan.param_ids)

    def save(self) -> Path:
        assert self.run_dir is not None
        state: dict[str, Any] = {"data": self.stream.state_dict(), "spec_name": self.model.spec.name}
        keep = self.model.spec.model.train.keep_checkpoints
        return save_checkpoint(self.run_dir, self.step, self.model, self.optimizers, state, keep)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM finish the current round, checkpoint and return."""

        def request_stop(signum: int, frame: object) -> None:
            self._stop_requested = True

        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not the main thread
            pass
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
