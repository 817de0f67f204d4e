"""The training loop: rounds of player steps, nothing model-specific.

One round gives each player (in spec order) its ``steps`` optimizer steps, each
on a fresh batch.  A player step

1. sets the player's learning rate from its schedule (a pure function of the
   round and ``train.steps``, so schedules carry no state to checkpoint);
2. switches ``requires_grad`` to the player's parameters (several players);
3. computes the plan's weighted loss under ``train.precision`` (eagerly or
   compiled) and backpropagates it (scaled under fp16);
4. averages the gradients over processes under ``torchrun``;
5. clips, and reads the loss, the gradient norm and the logged scalars in one
   host sync, the only one per step, to check that the first two are finite;
6. steps the optimizer and lets losses apply their parameter hooks
   (``after_step``, e.g. WGAN weight clipping);
7. updates the moving average of weights (``train.ema``) when the player owns
   some of the averaged parameters.

NaN guard: a non-finite loss or gradient is reported with the player, the
term(s) and the step (1-based, as in logs and checkpoint names); then training
stops (``on_nan: stop``) or the batch is skipped (``on_nan: skip``, at most
``max_nan_skips`` times in a run).  Parameters are checked before every
checkpoint, so no checkpoint of non-finite parameters is ever written: the last
good one stays.

SIGINT/SIGTERM finish the current round, save a checkpoint and return (a second
Ctrl-C aborts at once without saving).

A checkpoint also holds the sums of the logged scalars since the last log line
and the training time so far, so a resumed run's log lines are those of a run
that never stopped (``elapsed_s`` apart, which counts the time actually spent).
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from compose_gen.compiler import GenerativeModel, Plan
from compose_gen.compiler.plan import term_address
from compose_gen.core.contracts import check_loss_result
from compose_gen.core.errors import described
from compose_gen.core.files import write_json_atomic
from compose_gen.core.modes import own_modes
from compose_gen.core.seeds import RANK_STRIDE, offset_seed
from compose_gen.runtime import rng
from compose_gen.runtime.acceleration import LossFunction, Precision
from compose_gen.runtime.checkpoint import (
    Checkpoint,
    checkpoint_step,
    clean_temporary,
    list_checkpoints,
    parameter_names,
    restore_optimizers,
    save_checkpoint,
)
from compose_gen.runtime.data import BatchStream
from compose_gen.runtime.distributed import Distributed
from compose_gen.runtime.ema import WeightAverage
from compose_gen.runtime.layout import BEST_FILE, CHECKPOINTS_DIR, DROPPED_METRICS_FILE, METRICS_FILE, TENSORBOARD_DIR
from compose_gen.runtime.logging import MetricsLog, RunningMeans, TensorBoardLog, TrainingProgress, prune_metrics, require_tensorboard, tell
from compose_gen.runtime.optim import make_optimizer
from compose_gen.spec.resolve import origin

__all__ = ["NonFiniteLoss", "StepFailed", "Trainer"]


class NonFiniteLoss(RuntimeError):
    """A loss, gradient or parameter became NaN or infinite; names the player, term and step."""


#: The smallest positive float16 (subnormal): a loss scale below it leaves no gradient that float16 can hold.
FLOAT16_TINIEST = 2.0**-24
#: A second SIGINT within this many seconds of the first is the same Ctrl-C (a terminal's and torchrun's copy of it),
#: not a second one, which aborts without saving.
SAME_KEYPRESS_S = 0.5


class StepFailed(RuntimeError):
    """A player's step raised; names the player, the step and the part of the spec whose code raised."""


def _read_step(loss: Tensor, norms: list[Tensor], logs: dict[str, Tensor]) -> tuple[float, float, dict[str, float]]:
    """The loss, the gradient norm ‖(g_1, …, g_n)‖₂ = hypot(‖g_1‖₂, …, ‖g_n‖₂) of the per-gradient ``norms``, and the
    logged scalars, as numbers read from the device in one host sync.

    The logs ride along with the two numbers the NaN guard needs anyway, so they cost
    no sync of their own, and are then summed in Python in double precision (float32
    sums on the device drifted by 3·10⁻⁴ of the mean over 30 000 steps).  One player's
    gradients live on one device, so the norm skips ``torch.nn.utils.get_total_norm``'s
    grouping by device and dtype, Python work that cost about 3% of a small model's
    eager step (``benchmarks/latent_step_time.py``); and it combines the gradients'
    norms in double, where that function's float32 total overflows once it passes
    1.8·10¹⁹ though every gradient is finite.  A log that is no real scalar tensor
    (a loss may return one only on some steps, after the dry run) is named.
    """
    with torch.no_grad():  # the loss terms among the logs carry gradients; their stack needs no autograd node
        try:
            stacked = torch.stack([loss, *norms, *logs.values()])
        except (RuntimeError, TypeError):
            check_loss_result(logs, ())
            raise
        if stacked.is_complex():
            check_loss_result(logs, ())
    numbers = stacked.tolist()
    return numbers[0], math.hypot(*numbers[1 : 1 + len(norms)]), dict(zip(logs, numbers[1 + len(norms) :], strict=True))


def _forget_gradients(params: list[Tensor]) -> None:
    """``optimizer.zero_grad(set_to_none=True)`` for an optimizer over ``params``, without the profiler range torch
    wraps that call in: 13 µs on CPU, half a percent of a small VAE's step."""
    for p in params:
        p.grad = None


def _clip_to_norm(params: list[Tensor], norms: list[Tensor], max_norm: float) -> None:
    """Scale the gradients of ``params`` by min(1, max_norm / ‖g‖₂), the total ‖g‖₂ combined from the per-gradient
    ``norms`` in double as :func:`_read_step` does (``clip_grad_norm``; Pascanu et al. 2013)."""
    total = torch.linalg.vector_norm(torch.stack(norms).double())
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)


@dataclass
class Trainer:
    """The loop of the module docstring over ``model``'s plans, drawing batches from ``stream``, writing logs and
    checkpoints to ``run_dir`` (none without one), in step with the other processes of ``dist``."""

    model: GenerativeModel
    stream: BatchStream
    run_dir: Path | None = None
    progress: bool = True
    dist: Distributed = field(default_factory=Distributed)
    #: Called on rank 0 every ``train.sample_every`` rounds; returns the picture it wrote.
    on_sample: Callable[[int], Path | None] | None = None
    #: Called on rank 0 before each checkpoint is written: a Run records there the spec it trains with, so that a
    #: resume with other settings killed before its first checkpoint leaves the folder's spec as its checkpoints'.
    before_save: Callable[[], None] | None = None
    step: int = 0
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    #: The best checkpoint so far: ``{"metric", "mode", "value", "step"}``.
    best: dict[str, Any] | None = None
    #: The bests of the criteria a resume dropped (``train.best_metric`` changed): their checkpoints are kept too.
    former_bests: list[dict[str, Any]] = field(default_factory=list)
    #: Steps of the checkpoints newer than the one training went on from (unreadable ones a resume fell back behind):
    #: kept, and not counted among the newest, until a checkpoint of the same step replaces one.
    skipped: set[int] = field(default_factory=set)
    nan_skips: int = 0
    #: The signal that stopped the last :meth:`fit` early, if one did.
    interrupted: str | None = None
    #: The moving average of weights (``train.ema``), a submodule ``ema`` of the model so checkpoints hold it.
    ema: WeightAverage | None = None
    #: Set when an error ended a round after some player had stepped in it: the model is part-way through that round.
    half_round: str | None = None

    def __post_init__(self) -> None:
        self.train = self.model.spec.model.train
        if self.train.ema is not None:
            self.ema = _make_average(self.model, self.train.ema.components, self.train.ema.decay, self.train.ema.warmup)
        for name, plan in self.model.plans.items():
            self.optimizers[name] = make_optimizer(plan.spec.optimizer or self.train.optimizer, plan.params)
        self._base_lr = {n: [g["lr"] for g in o.param_groups] for n, o in self.optimizers.items()}
        device = self.model.device
        self.precision = Precision(self.train.precision, device, self.model.plans)
        self.precision.float32_outputs(self.model.losses.values())
        backend = self.train.compile_backend if self.train.compile else None
        self.loss_functions = {
            name: LossFunction(name, self._player_loss(name), backend, self.model, device, self.say) for name in self.model.plans
        }
        if self.train.tensorboard and self.dist.is_main and self.run_dir is not None:
            require_tensorboard()
        self._owner: dict[int, str] = {}
        for component, module in sorted(self.model.all_components.items(), key=lambda item: item[0].count(".")):
            for p in module.parameters():
                self._owner.setdefault(id(p), component)  # a parent's name over its inline parts'
        self._stop: str | None = None
        self._running = RunningMeans()
        #: Training seconds before the current :meth:`fit` (from the checkpoint resumed), and when that fit started.
        self._elapsed = 0.0
        self._fit_started: float | None = None
        #: The step of the checkpoint this trainer wrote last, so :meth:`fit` does not write it twice.
        self._saved_step: int | None = None
        #: The checkpoints this trainer wrote (rank 0), by folder name.
        self.written: set[str] = set()
        #: :meth:`TensorData.fingerprint` of every train split this run trained on, oldest first, recorded in checkpoints.
        self.trained_on: list[str] = []
        #: :meth:`TensorData.fingerprint` of the test split it is evaluated on, recorded in checkpoints (None: not recorded).
        self.test_fingerprint: str | None = None
        #: :meth:`Spec.model_fingerprint` of every model spec the weights were trained with, oldest first (more than one
        #: after a resume on an edited model), recorded in checkpoints.
        self.trained_with: list[str] = []

    def _player_loss(self, name: str) -> Callable[[dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]:
        def loss(batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
            return self.model.player_loss(name, batch)

        return loss

    def say(self, message: str) -> None:
        """A message for the user, from rank 0 only."""
        if self.dist.is_main:
            tell(message)

    # -- resuming -------------------------------------------------------------------------------

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue exactly where ``checkpoint`` (already loaded into the model) left off.

        A checkpoint loaded without its optimizer file gives its step and records only: enough to sample and evaluate.
        """
        state = checkpoint.state
        self.step = checkpoint.step
        self.best = state.get("best")
        self.former_bests = list(state.get("former_bests", []))
        self.nan_skips = int(state.get("nan_skips", 0))
        self._elapsed = float(state.get("elapsed_s", 0.0))
        self._saved_step = None
        if checkpoint.tensors is None:
            return
        for note in restore_optimizers(checkpoint, self.optimizers, parameter_names(self.model)):
            self.say(f"warning: {note}")
        prefix = f"rng/{self.dist.rank}/"
        states = {k.removeprefix(prefix): v for k, v in checkpoint.tensors.items() if k.startswith(prefix)}
        if "cpu" in states:
            rng.set_state(states, self.model.device)
        else:  # saved by fewer processes: this one starts a fresh (seeded) noise stream
            tell(f"warning: {checkpoint.path} holds no RNG state for process {self.dist.rank}; its noise stream restarts")
            torch.manual_seed(offset_seed(self.model.spec.model.seed + checkpoint.step, self.dist.rank, RANK_STRIDE))
        self.stream.load_state_dict(state["data"])
        self.precision.load_state_dict(state.get("scalers", {}))
        if self.step > 0:
            for loss_function in self.loss_functions.values():
                loss_function.resumed()
        self._running.load_state_dict(state.get("running", []))  # older checkpoints: the window starts here

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self, steps: int) -> dict[str, float]:
        """Train until round ``steps``; return the means of the log window that ends at the round it stopped at (the line
        logged there, or the means since the last line).

        Log lines come every ``train.log_every`` rounds and at the run's last round (``train.steps``), not where an
        earlier ``steps`` or a signal stops it: the window goes on in the checkpoint, so a resumed run logs as if
        it had never stopped.
        """
        if self.half_round is not None:  # training on would step those players twice in that round
            raise RuntimeError(f"{self.half_round}, so the model is part-way through that round; load the run again "
                               "from its folder (compose_gen.load_run) to go on from its last checkpoint")
        train = self.train
        self.model.train()
        best, criterion = self.best, (train.best_metric, train.best_mode)
        if best is not None and (best["metric"], best["mode"]) != criterion:
            self.say(
                f"warning: the best checkpoint so far, step {best['step']}, was judged by {best['metric']!r} ({best['mode']}), not by "
                f"train.best_metric {train.best_metric!r} ({train.best_mode}): the best is judged afresh from step {self.step} on; "
                f"step {best['step']} is kept beside it, whatever keep_checkpoints says (delete it yourself once you need it no more)"
            )
            self.former_bests.append(best)
            self.best = None
        again = [former for former in self.former_bests if (former["metric"], former["mode"]) == criterion]
        if self.best is None and again:  # judged so before a resume judged otherwise: that best is the best again
            self.best = again[-1]
            self.former_bests.remove(self.best)
            self.say(f"the best checkpoint by {self.best['metric']!r} ({self.best['mode']}) is step {self.best['step']} again, as before")
        main = self.dist.is_main and self.run_dir is not None
        if main:  # records and a best pointer from after the checkpoint this run continues from are stale
            clean_temporary(self.run_dir)  # here, where this process writes the folder: a reader must not delete a writer's
            self.skipped = {checkpoint_step(path) for path in list_checkpoints(self.run_dir) if checkpoint_step(path) > self.step}
            torn = prune_metrics(self.run_dir / METRICS_FILE, self.step)
            if torn:
                self.say(
                    f"warning: {self.run_dir / METRICS_FILE}: dropped line(s) {', '.join(map(str, torn))}, which hold no JSON record "
                    "(a killed process leaves its last line unfinished; other lines were edited or damaged); they are kept in "
                    f"{self.run_dir / DROPPED_METRICS_FILE}"
                )
            if self.best is not None:
                write_json_atomic(self.run_dir / CHECKPOINTS_DIR / BEST_FILE, self.best)
            else:  # of another metric, or of a step after this checkpoint's
                (self.run_dir / CHECKPOINTS_DIR / BEST_FILE).unlink(missing_ok=True)
        log = MetricsLog(self.run_dir / METRICS_FILE) if main else None
        board = TensorBoardLog(self.run_dir / TENSORBOARD_DIR, self.step) if main and train.tensorboard else None
        running = self._running
        last: dict[str, float] = {}
        logged_at: int | None = None
        multi = len(self.model.plans) > 1
        # the parameters a component froze (requires_grad=False): the players' turns switch the others' requires_grad only
        frozen = {id(p) for p in self.model.parameters() if not p.requires_grad} if multi else set()
        rounds = 0
        # What process 0 hands the others: its buffers after every round, its parameters once (after data-dependent
        # initialisation); a weight average follows the parameters, so it goes with them, not every round. A single
        # process hands nothing on, and skips walking the model's modules for it.
        first_round: list[Tensor] = []
        every_round: list[Tensor] = []
        if self.dist.active:
            first_round = [*self.model.buffers(), *self.model.parameters()]
            averaged = {id(b) for b in self.ema.buffers()} if self.ema is not None else set()
            every_round = [b for b in self.model.buffers() if id(b) not in averaged]
        self._fit_started = time.perf_counter()
        self.interrupted = self._stop = None
        try:
            with (
                self._signals(),
                own_modes(self.model.device.type),
                TrainingProgress(steps, self.step, self.progress and self.dist.is_main) as bar,
            ):
                while self.step < steps:
                    if self.dist.any(self._stop is not None):
                        self.interrupted = self._stop or "a signal to another process"
                        self.say(f"{self.interrupted}: stopping at step {self.step} and saving a checkpoint")
                        break
                    stepped: list[str] = []
                    try:
                        for name, plan in self.model.plans.items():
                            if multi:
                                self._select(plan, frozen)
                            for _ in range(plan.spec.steps):
                                try:
                                    running.add(self._player_step(name, plan))
                                except NonFiniteLoss:
                                    raise
                                except Exception as error:
                                    raise self._failed(name, error) from error
                                stepped.append(name)
                    except BaseException:
                        if stepped:
                            self.half_round = f"round {self.step + 1} stopped after {', '.join(dict.fromkeys(stepped))} had stepped in it"
                        raise
                    self.step += 1
                    rounds += 1
                    self.dist.broadcast(first_round if rounds == 1 else every_round)
                    logged = self.step % train.log_every == 0 or self.step >= max(steps, train.steps)
                    if logged:
                        last, logged_at = running.read(self.dist), self.step
                        rates = self._learning_rates()
                        # the spec refuses losses named as the record's own keys (LOG_RECORD_KEYS), which they would overwrite
                        record = {"step": self.step, **last, **rates, "nan_skips": self.nan_skips, "elapsed_s": round(self._elapsed_s(), 3)}
                        if log:
                            log.write(record)
                        if board:
                            board.scalars(self.step, {**last, **rates})
                        bar.update(self.step, last)
                    else:
                        bar.update(self.step)
                    if train.sample_every and self.step % train.sample_every == 0 and main and self.on_sample:
                        picture = self.on_sample(self.step)
                        if board and picture is not None:
                            board.image("samples", picture, self.step)
                    if self.run_dir and train.checkpoint_every and self.step % train.checkpoint_every == 0:
                        self.save(last if logged else None)  # the best checkpoint is judged on a line of its own round
                if logged_at == self.step:
                    window = last
                else:  # stopped between log lines: what the next line will average so far
                    window = running.read(self.dist, start_over=False)
                # still under the signal handlers: a second SIGTERM (a scheduler's, torchrun's) must not abort this save
                if self.run_dir and self._saved_step != self.step:  # the loop may have just checkpointed this step
                    self.save(last if logged_at == self.step else None)
                self.interrupted = self.interrupted or self._stop  # one that came after the last round: no sampling either
        finally:
            self._elapsed, self._fit_started = self._elapsed_s(), None
            if multi:
                for p in self.model.parameters():
                    p.requires_grad_(id(p) not in frozen)
            if log:
                log.close()
            if board:
                board.close()
        return window

    def _elapsed_s(self) -> float:
        """Training wall time of the run so far, summed over the resumes."""
        return self._elapsed + (time.perf_counter() - self._fit_started if self._fit_started is not None else 0.0)

    def _learning_rates(self) -> dict[str, float]:
        """Each player's learning rate (first parameter group) as its last step set it: Python floats, no device work."""
        return {f"{name}.lr": float(optimizer.param_groups[0]["lr"]) for name, optimizer in self.optimizers.items()}

    def _player_step(self, name: str, plan: Plan) -> dict[str, float]:
        optimizer = self.optimizers[name]
        scaler = self.precision.scalers.get(name)
        factor = plan.spec.schedule.factor(self.step, self.train.steps)
        for group, base in zip(optimizer.param_groups, self._base_lr[name], strict=True):
            group["lr"] = base * factor
        batch = next(self.stream)

        def forward_backward(loss_fn: Callable[..., Any]) -> tuple[Tensor, dict[str, Tensor]]:
            _forget_gradients(plan.params)
            with self.precision.autocast():
                loss, logs = loss_fn(batch)
            loss = loss.float()
            (scaler.scale(loss) if scaler else loss).backward()
            return loss, logs

        loss, logs = self.loss_functions[name].run(forward_backward)
        loss_check = self.dist.average_gradients(plan.params, loss.detach())  # finite iff every process's loss is
        if scaler:
            scaler.unscale_(optimizer)
        grads = [p.grad for p in plan.params if p.grad is not None]
        norms = list(torch._foreach_norm(grads)) if grads else []  # before clipping: what the guard checks and the log says
        loss_value, norm, values = _read_step(loss_check, norms, logs)  # the one host sync
        if not math.isfinite(norm) and grads:  # a float32 norm overflows past 1.8e19 though every entry is finite: count in double
            norms = list(torch._foreach_norm(grads, 2, dtype=torch.float64))
            norm = math.hypot(*torch.stack(norms).tolist())
        loss_ok, grads_ok = math.isfinite(loss_value), math.isfinite(norm)
        # fp16 gradients that overflowed are the scaler's to cure by lowering its scale (below 1 too: a float16 gradient
        # on the way may overflow though the true one is finite), until float16 would flush every gradient to zero
        if not loss_ok or (not grads_ok and (scaler is None or scaler.get_scale() < FLOAT16_TINIEST)):
            self._nonfinite(name, plan, batch, values, loss_ok)
            _forget_gradients(plan.params)
            if scaler:
                scaler.update()
            return {}
        if plan.spec.clip_grad_value:  # after the guard: an infinite entry clamped to v would have passed it
            torch.nn.utils.clip_grad_value_(plan.params, plan.spec.clip_grad_value)
        if plan.spec.clip_grad_norm and grads:  # the clamped gradients' norms in double: their float32 squares may overflow too
            clamped = list(torch._foreach_norm(grads, 2, dtype=torch.float64)) if plan.spec.clip_grad_value else norms
            _clip_to_norm(plan.params, clamped, plan.spec.clip_grad_norm)
        if scaler:
            scaler.step(optimizer)  # skips the step itself when fp16 gradients overflowed
            scaler.update()
        else:
            optimizer.step()
        if not grads_ok:  # the scaler skipped the step: no hook (an EMA codebook, weight clipping) nor average follows it
            return {**values, f"{name}.overflowed": 1.0}
        for call in plan.losses:
            if call.trained:  # not for a loss this player only logs (weight 0): its warm-up or clipping waits
                call.module.after_step(call.trained)
        if self.ema is not None and not self.ema.param_ids.isdisjoint(plan.param_ids):
            self.ema.update(self.step, plan.param_ids)
        values[f"{name}.grad_norm"] = norm
        if scaler:  # logged as the fraction of the window's steps whose float16 gradients overflowed, which it skipped
            values[f"{name}.overflowed"] = 0.0
        return values

    def _failed(self, name: str, error: Exception) -> StepFailed:
        """Say which player, step and spec part (type, plugin) ``error`` came from; checkpoints stay as they are."""
        what = described(error)
        culprit = self.model.culprit(error)
        if culprit is not None:
            what = str(self.model.spec.blame(culprit, f"raised {what}{self.model.spec.catalogue.where_raised(error, culprit.type.name)}"))
        kept = self._checkpoints_left("checkpoints already written are kept")
        return StepFailed(f"player {name!r}, step {self.step + 1}: {what}; training stopped, {kept}")

    def _checkpoints_left(self, some: str) -> str:
        """``some`` when this run's folder holds a checkpoint, else that none was written yet, for a stopping message."""
        return some if self.run_dir and list_checkpoints(self.run_dir) else "no checkpoint was written yet"

    def _select(self, plan: Plan, frozen: set[int]) -> None:
        """Gradients for the parameters of ``plan``'s player alone, those a component froze (``frozen``) excepted."""
        for p in self.model.parameters():
            p.requires_grad_(id(p) in plan.param_ids and id(p) not in frozen)

    # -- the NaN guard ----------------------------------------------------------------------------

    def _nonfinite(self, name: str, plan: Plan, batch: dict[str, Tensor], logs: dict[str, float], loss_ok: bool) -> None:
        """Describe a non-finite loss or gradient; skip the batch or raise :class:`NonFiniteLoss`."""
        if loss_ok:
            what = self._diagnose_gradients(name, plan, batch)
        else:
            bad = [k for k, v in logs.items() if not math.isfinite(v)]
            if bad:
                values = ", ".join(f"{k}={logs[k]:g}" for k in bad)
                what = f"non-finite loss ({values}){self._nonfinite_source(name, batch, bad)}"
            elif self.dist.world_size > 1:
                what = "non-finite loss on another process (which says where)"
            else:
                what = f"non-finite weighted sum of finite terms (check the weights of players.{name}.terms)"
        if self.precision.mode == "fp16":  # a likely cause, which the advice to skip such batches would not cure
            what += (
                "; train.precision is fp16, whose values end at ±65504: if data, activations, losses or gradients (at any "
                "loss scale) may be larger, they are inf in it; train in bf16 or fp32, or bring them down (standardise the data, "
                "lower term weights)"
            )
        message = f"player {name!r}, step {self.step + 1}: {what}"
        if self.train.on_nan == "skip" and self.nan_skips < self.train.max_nan_skips:
            self.nan_skips += 1
            note = f"warning: {message}; skipped the batch ({self.nan_skips} of at most {self.train.max_nan_skips})"
            if self.dist.is_main:
                self.say(note)
            elif not loss_ok and any(not math.isfinite(v) for v in logs.values()):  # its own finding, which process 0 lacks
                tell(f"process {self.dist.rank}: {note}")
            return
        if self.train.on_nan == "skip":
            advice = f"; more than train.max_nan_skips={self.train.max_nan_skips} batches were non-finite"
        else:
            advice = "; `train.on_nan: skip` skips such batches"
        raise NonFiniteLoss(f"{message}: training stopped, {self._checkpoints_left('the last good checkpoint stays')}{advice}")

    def _nonfinite_source(self, name: str, batch: dict[str, Tensor], terms: list[str]) -> str:
        """``; the first NaN or inf comes from <component>`` naming the component that turns finite inputs non-finite, recomputed
        on ``batch`` (with fresh noise, the random state restored after); when none does, the losses whose logged
        ``terms`` are non-finite, which made them of finite values."""
        restore = rng.snapshot(self.model, self.model.device)
        try:
            with self.precision.autocast():
                source = self.model.nonfinite_source(name, batch)
        finally:
            restore()
        spec = self.model.spec
        catalogue, losses = spec.catalogue, spec.sections.losses
        if source is not None:
            return f"; the first NaN or inf comes from {spec.where(source.path)}, {origin(source.type.name, catalogue)}, given finite inputs"
        blamed = [losses[loss] for loss in dict.fromkeys(term.split(".")[0] for term in terms) if loss in losses]
        named = "; ".join(f"{spec.where(d.path)}, {origin(d.type.name, catalogue)}" for d in blamed)
        return f"; no component made NaN or inf when the step was recomputed, so it comes from {named}" if named else ""

    def _diagnose_gradients(self, name: str, plan: Plan, batch: dict[str, Tensor]) -> str:
        """Which components got non-finite gradients, and from which terms (recomputed term by term, before any clipping)."""
        bad = {id(p) for p in plan.params if p.grad is not None and not torch.isfinite(p.grad).all()}
        params = [p for p in plan.params if p.requires_grad]
        terms = []
        restore = rng.snapshot(self.model, self.model.device)
        try:
            with self.precision.autocast():
                _, logs = self.model.player_loss(name, batch)
            for call in plan.losses:
                for term in call.weights:
                    value = logs[term_address(call.name, term)]
                    if not value.requires_grad:
                        continue
                    grads = torch.autograd.grad(value.float(), params, retain_graph=True, allow_unused=True)
                    nonfinite = {id(p) for p, g in zip(params, grads, strict=True) if g is not None and not torch.isfinite(g).all()}
                    if nonfinite:
                        terms.append(term_address(call.name, term))
                        bad |= nonfinite
        finally:
            restore()
        components = sorted({self._owner.get(id(p), "?") for p in plan.params if id(p) in bad})
        from_terms = f" from term(s) {', '.join(terms)}" if terms else ""
        where = f" in component(s) {', '.join(components)}" if components else ""
        return f"non-finite gradient{from_terms}{where}"

    # -- checkpoints ------------------------------------------------------------------------------

    def save(self, last: dict[str, float] | None = None) -> Path | None:
        """Checkpoint the run (every process takes part; rank 0 writes); refuse non-finite parameters."""
        assert self.run_dir is not None
        params = list(self.model.parameters())
        if params and not bool(torch.stack([p.detach().isfinite().all() for p in params]).all()):
            bad = sorted({self._owner.get(id(p), "?") for p in params if not p.detach().isfinite().all()})
            raise NonFiniteLoss(
                f"step {self.step}: non-finite parameters in {', '.join(bad)}; not checkpointed, the last good checkpoint stays"
            )
        improved = self._update_best(last or {})
        states = self._gathered_rng()
        running = self._running.state_dict(self.dist)
        if not self.dist.is_main:
            self._saved_step = self.step
            return None
        state: dict[str, Any] = {
            "data": self.stream.state_dict(),
            "spec_name": self.model.spec.name,
            "scalers": self.precision.state_dict(),
            "best": self.best,
            "former_bests": self.former_bests,
            "nan_skips": self.nan_skips,
            "world_size": self.dist.world_size,
            "running": running,
            "elapsed_s": self._elapsed_s(),
            **({"trained_on": self.trained_on} if self.trained_on else {}),
            **({"test_sha256": self.test_fingerprint} if self.test_fingerprint else {}),
            "sources_counted": True,  # the fingerprints count the data as read, before transforms (TensorData.source)
            **({"trained_with": self.trained_with} if self.trained_with else {}),
        }
        if self.before_save is not None:
            self.before_save()
        keep = self.train.keep_checkpoints
        protect = [best["step"] for best in [self.best, *self.former_bests] if best]
        self.skipped.discard(self.step)  # the checkpoint written now replaces one of the same step
        path = save_checkpoint(self.run_dir, self.step, self.model, self.optimizers, state, states, keep, protect, self.skipped)
        if improved:
            write_json_atomic(self.run_dir / CHECKPOINTS_DIR / BEST_FILE, self.best)
        self._saved_step = self.step
        self.written.add(path.name)
        return path

    def _update_best(self, last: dict[str, float]) -> bool:
        metric = self.train.best_metric
        if metric is None or not last:
            return False
        if metric not in last:  # the dry run checks the name; a model built without it can still be saved
            self.say(f"warning: train.best_metric {metric!r} is not a logged metric (logged: {', '.join(sorted(last))}); no best checkpoint")
            return False
        value = last[metric]
        if not math.isfinite(value):
            return False
        better = self.best is None or (value < self.best["value"] if self.train.best_mode == "min" else value > self.best["value"])
        if better:
            self.best = {"metric": metric, "mode": self.train.best_mode, "value": value, "step": self.step}
        return better

    def _gathered_rng(self) -> dict[str, Tensor]:
        """Every process's RNG states, keyed ``RANK/cpu`` and ``RANK/cuda``."""
        out = {}
        for key, state in sorted(rng.get_state(self.model.device).items()):
            for rank, gathered in enumerate(self.dist.gather_bytes(state)):
                out[f"{rank}/{key}"] = gathered
        return out

    # -- signals ----------------------------------------------------------------------------------

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM ask to stop after the current round; a second SIGINT aborts at once.  A signal the process was
        started ignoring (SIGINT for a shell's background job, ``nohup``'s SIGHUP-style) stays ignored, as Python leaves it."""

        def request_stop(signum: int, frame: object) -> None:
            now = time.monotonic()
            if self._stop is not None and signum == signal.SIGINT and now - first[0] > SAME_KEYPRESS_S:
                raise KeyboardInterrupt
            if self._stop is None:
                first[0] = now
            self._stop = signal.Signals(signum).name

        first = [0.0]  # when the first signal came: a terminal's Ctrl-C and torchrun's copy of it are one keypress

        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not the main thread
            pass
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _make_average(model: GenerativeModel, names: list[str], decay: float, warmup: bool) -> WeightAverage:
    """A :class:`WeightAverage` of the named components (the compiler checked them), registered on the model as ``ema``."""
    average = WeightAverage({n: model.components[n] for n in names}, decay, warmup)
    model.ema = average
    return average
