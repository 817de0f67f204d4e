"""compose_gen's training step against the same model hand-written in plain PyTorch: VAE, IWAE (k=5), VQ-VAE.

For each of specs/vae_digits.yaml, specs/iwae_digits.yaml and specs/vqvae_digits.yaml,
compose_gen's model is built with ``compose_gen.load_spec`` + ``compose_gen.runtime.build``
and trained by ``Trainer.fit`` (the whole loop: batch, plan, backward, Adam, NaN
guard, hooks, logging sums); the hand-written twin has the same layers, batch stream,
batch size and optimizer and writes the objective with plain tensor formulas (the
VQ-VAE's twin also measures codebook usage and perplexity every step, as compose_gen's
model does for its log); before timing, the script checks that with compose_gen's
weights, the same batch and the same noise, each twin computes the same loss.  A
second twin writes the same objective with ``torch.distributions`` (``Normal``,
``Bernoulli``, ``kl_divergence``), as compose_gen's components do, which separates
that library's own per-step cost from the framework's.  A second copy of the
formula twin, timed like the others, gives the noise floor: its ratio to the
first copy is what the machine alone does to a ratio of identical code.  A third
formula twin also makes the check compose_gen's trainer makes before every optimizer
step (the loss and the total gradient norm finite, read in one host sync), which
separates the cost of that NaN guard from the rest of the framework's.  compose_gen
runs Adam's fused kernel (``compose_gen.runtime.optim``); the twin runs
``torch.optim.Adam`` as written by default, or fused too with ``--fused-baseline``,
which leaves only the framework's own overhead in the ratio.  Each side is
built ``--instances`` times, because where an instance's tensors land in memory
moves its step time by several percent, a difference between copies of the same
code that one copy per side would read as a difference between the sides.  All
warm up, then every round times a block of steps of every instance in random
order (so load drift hits all alike); a side's time for the round is the mean
over its instances, and the ratio is the median over rounds of the ratio within
a round, target ≤ 1.10.  Denormal floats are flushed to
zero on both sides: as these models train, softplus tails produce subnormal
values that slow CPU arithmetic by tens of percent at random moments, which would
time the numbers rather than the code (``--keep-denormals`` to see it).  On a busy machine, ``--threads 1 --clock cpu``
times the process's own CPU time, which other processes do not inflate.

    python benchmarks/latent_step_time.py [--steps 25] [--repeats 21] [--instances 3] [--threads 2] [--clock wall|cpu] [--device cpu|cuda] [--fused-baseline] [--compile] [--keep-denormals]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

import compose_gen as cg
from compose_gen.runtime import Trainer, build
from compose_gen.runtime.data import BatchStream

LATENT, HIDDEN, PIXELS = 16, 256, 64


def mlp(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, outputs))


def bernoulli_log_lik(logits: Tensor, x: Tensor, distributions: bool = False) -> Tensor:
    if distributions:
        return Independent(Bernoulli(logits=logits, validate_args=False), 1, validate_args=False).log_prob(x)
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def normal_log_prob(z: Tensor, loc: Tensor | float, scale: Tensor | float) -> Tensor:
    scale = torch.as_tensor(scale)
    return (-((z - loc) ** 2) / (2 * scale**2) - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


class HandVAE(nn.Module):
    """specs/vae_digits.yaml by hand: analytic-KL ELBO (samples = 1), or the k-sample IWAE bound."""

    def __init__(self, samples: int, iwae: bool, distributions: bool = False) -> None:
        super().__init__()
        self.encoder, self.decoder = mlp(PIXELS, 2 * LATENT), mlp(LATENT, PIXELS)
        self.samples, self.iwae, self.distributions = samples, iwae, distributions

    def loss(self, x: Tensor) -> Tensor:
        loc, raw = self.encoder(x).split(LATENT, -1)
        scale = F.softplus(raw) + 1e-4
        if self.distributions:
            return self.loss_with_distributions(x, loc, scale)
        z = loc + scale * torch.randn(self.samples, *loc.shape, device=loc.device)
        log_lik = bernoulli_log_lik(self.decoder(z), x)
        if self.iwae:
            log_w = log_lik + normal_log_prob(z, 0.0, 1.0) - normal_log_prob(z, loc, scale)
            return -(torch.logsumexp(log_w, 0) - math.log(self.samples)).mean()
        kl = 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).sum(-1)
        return -(log_lik.mean(0) - kl).mean()

    def loss_with_distributions(self, x: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        q = Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)
        prior = Independent(Normal(torch.zeros_like(loc[0]), 1.0, validate_args=False), 1, validate_args=False)
        z = q.rsample((self.samples,))
        log_lik = bernoulli_log_lik(self.decoder(z), x, distributions=True)
        if self.iwae:
            log_w = log_lik + prior.log_prob(z) - q.log_prob(z)
            return -(torch.logsumexp(log_w, 0) - math.log(self.samples)).mean()
        return -(log_lik.mean(0) - kl_divergence(q, prior)).mean()

    def after_step(self) -> None:
        pass


class HandVQVAE(nn.Module):
    """specs/vqvae_digits.yaml by hand: 8 codes of size 4, 32 entries, β = 0.25, EMA codebook (γ = 0.99).

    Like compose_gen's ``vqvae`` (and the VQ-VAE of DeepMind's Sonnet), the model measures
    codebook usage and perplexity on every batch, for its training log.
    """

    def __init__(self, distributions: bool = False, codes: int = 32, dim: int = 4, beta: float = 0.25, decay: float = 0.99) -> None:
        super().__init__()
        self.encoder, self.decoder = mlp(PIXELS, 32), mlp(32, PIXELS)
        self.codes, self.dim, self.beta, self.decay = codes, dim, beta, decay
        self.distributions = distributions
        self.register_buffer("codebook", torch.randn(codes, dim))
        self.register_buffer("cluster_size", torch.ones(codes))
        self.register_buffer("code_sum", self.codebook.clone())
        self.pending: tuple[Tensor, Tensor] | None = None
        self.usage_and_perplexity: tuple[Tensor, Tensor] | None = None

    def loss(self, x: Tensor) -> Tensor:
        z_e = self.encoder(x).unflatten(-1, (-1, self.dim))
        flat = z_e.detach().reshape(-1, self.dim)
        index = (flat.square().sum(1, keepdim=True) - 2 * flat @ self.codebook.T + self.codebook.square().sum(1)).argmin(1)
        codes = self.codebook[index].reshape(z_e.shape)
        z_q = z_e + (codes - z_e).detach()
        log_lik = bernoulli_log_lik(self.decoder(z_q.flatten(-2)), x, self.distributions).mean()
        commitment = (z_e - codes).square().sum((-2, -1)).mean()
        counts = torch.bincount(index, minlength=self.codes).float()
        self.pending = (counts, torch.zeros_like(self.code_sum).index_add_(0, index, flat))
        self.usage_and_perplexity = (counts.count_nonzero() / self.codes, torch.special.entr(counts / len(index)).sum().exp())
        return -log_lik + self.beta * commitment

    @torch.no_grad()
    def after_step(self) -> None:
        counts, sums = self.pending
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.code_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + 1e-5) / (total + self.codes * 1e-5) * total
        self.codebook.copy_(self.code_sum / smoothed[:, None])


@torch.no_grad()
def copy_weights(hand: nn.Module, model: nn.Module) -> None:
    """compose_gen's parameters into the twin (which builds the same layers in the same order), and its same-named buffers."""
    for mine, theirs in zip(hand.parameters(), model.parameters(), strict=True):
        mine.copy_(theirs)
    buffers = {name.rsplit(".", 1)[-1]: buffer for name, buffer in model.named_buffers()}
    for name, buffer in hand.named_buffers():
        buffer.copy_(buffers[name])


def check_same_objective(spec_path: str, twin: Callable[[bool], nn.Module], device: torch.device) -> None:
    """Each twin computes compose_gen's training loss: same weights, batch and noise give the same number.

    Otherwise the ratios would compare two different models.
    """
    spec = cg.load_spec(spec_path)
    model, data = build(spec, device)
    model.train()
    player = next(iter(model.plans))
    batch = next(BatchStream(data.train, spec.model.train.batch_size, spec.model.seed, device))
    model.player_loss(player, batch)  # data-dependent initialisation (the VQ-VAE's codebook) happens here
    for distributions in (False, True):
        hand = twin(distributions).to(device)
        copy_weights(hand, model)
        torch.manual_seed(1)
        ours = model.player_loss(player, batch)[0]
        torch.manual_seed(1)
        theirs = hand.loss(batch["x"])
        where = f"{spec_path}, twin with distributions={distributions}"
        torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5, msg=lambda message, where=where: f"{where}: {message}")


def finite_loss_and_gradients(loss: Tensor, params: list[nn.Parameter]) -> bool:
    """The trainer's NaN guard written by hand: ‖∇‖₂ over all gradients, then one host read of it and the loss."""
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in params if p.grad is not None])))
    return all(map(math.isfinite, torch.stack([loss.detach(), norm]).tolist()))


def timed(run: Callable[[int], None], steps: int, clock: Callable[[], float], device: torch.device) -> float:
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    start = clock()
    run(steps)
    synchronize()
    return (clock() - start) / steps


#: A hand-written twin: how to build its model, and whether its loop runs the NaN guard.
Twin = tuple[Callable[[], nn.Module], bool]


def compare(
    spec_path: str,
    twins: dict[str, Twin],
    steps: int,
    repeats: int,
    instances: int,
    clock: Callable[[], float],
    device: torch.device,
    fused_hand: bool,
    overrides: list[str],
) -> dict[str, list[float]]:
    """Seconds per step of compose_gen's trainer (``"ours"``) and of each hand-written twin, one number per round.

    Every side is built ``instances`` times (its own model, optimizer and batch
    stream, so its own memory layout, which alone moves one instance's step time
    by several percent); a round times a block of every instance in random order,
    and a side's number for the round is the mean over its instances.
    """
    spec = cg.load_spec(spec_path, overrides)
    train = spec.model.train

    def ours() -> Callable[[int], None]:
        model, data = build(spec, device)
        trainer = Trainer(model, BatchStream(data.train, train.batch_size, spec.model.seed, model.device), progress=False)
        return lambda n: trainer.fit(trainer.step + n)

    _, data = build(spec, device)

    def hand_loop(twin: Twin) -> Callable[[int], None]:
        make, guarded = twin
        hand = make().to(device)
        stream = BatchStream(data.train, train.batch_size, spec.model.seed, device)
        params = list(hand.parameters())
        optimizer = torch.optim.Adam(params, lr=train.optimizer.lr, fused=fused_hand or None)

        def by_hand(n: int) -> None:
            for _ in range(n):
                x = next(stream)["x"]
                loss = hand.loss(x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if guarded and not finite_loss_and_gradients(loss, params):
                    continue
                optimizer.step()
                hand.after_step()

        return by_hand

    makers = {"ours": ours, **{name: partial(hand_loop, twin) for name, twin in twins.items()}}
    runs = [(name, make()) for name, make in makers.items() for _ in range(instances)]
    for _, run in runs:
        run(50)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in makers}
    order = random.Random(0)
    for _ in range(repeats):
        order.shuffle(runs)  # no side always runs right after another
        block: dict[str, list[float]] = {name: [] for name in makers}
        for name, run in runs:
            block[name].append(timed(run, steps, clock, device))
        for name, seconds in block.items():
            times[name].append(statistics.fmean(seconds))
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over rounds of one side's time over another's in the same round (drift between rounds cancels)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


#: Each model timed: its label, its spec, and its hand-written twin (written with ``torch.distributions`` or not).
CASES: list[tuple[str, str, Callable[[bool], nn.Module]]] = [
    ("VAE", "specs/vae_digits.yaml", lambda d: HandVAE(samples=1, iwae=False, distributions=d)),
    ("IWAE k=5", "specs/iwae_digits.yaml", lambda d: HandVAE(samples=5, iwae=True, distributions=d)),
    ("VQ-VAE", "specs/vqvae_digits.yaml", lambda d: HandVQVAE(distributions=d)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=21, help="timed rounds (a block of every instance of every side)")
    parser.add_argument("--instances", type=int, default=3, help="copies of each side, built apart and timed in turn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: process CPU time (use with --threads 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (each block is bracketed by a synchronize)")
    parser.add_argument(
        "--fused-baseline", action="store_true", help="the hand-written loops use torch's fused Adam too, as compose_gen does"
    )
    parser.add_argument("--keep-denormals", action="store_true", help="do not flush subnormal floats to zero")
    parser.add_argument("--compile", action="store_true", help="compose_gen trains with train.compile: true (the twins stay eager)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(not args.keep_denormals)
    torch.manual_seed(0)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    device = torch.device(args.device)
    baseline = "fused Adam" if args.fused_baseline else "default Adam"
    overrides = ["train.compile=true"] if args.compile else []
    mode = "compiled" if args.compile else "eager"
    print(
        f"{device}, {args.threads} thread(s), {args.clock} clock, {args.repeats} rounds x {args.instances} instances x {args.steps} steps "
        f"per side; compose_gen {mode}; hand-written loops: {baseline}"
    )
    print("ms/step: the median round; ratios: the median over rounds of the ratio within a round.  compose_gen over the")
    print("hand-written twin with formulas (target <= 1.10), the same with the trainer's NaN guard, the one with torch.distributions;")
    print("noise floor: a second copy of the formula twin over the first")
    for label, path, twin in CASES:
        check_same_objective(path, twin, device)
        twins: dict[str, Twin] = {
            "formulas": (partial(twin, False), False),
            "formulas again": (partial(twin, False), False),
            "guarded": (partial(twin, False), True),
            "distributions": (partial(twin, True), False),
        }
        times = compare(path, twins, args.steps, args.repeats, args.instances, clock, device, args.fused_baseline, overrides)
        ms = {side: statistics.median(seconds) * 1e3 for side, seconds in times.items()}
        ratio = {side: paired_ratio(times["ours"], times[side]) for side in ("formulas", "guarded", "distributions")}
        verdict = "ok" if ratio["formulas"] <= 1.10 else "over target"
        noise = paired_ratio(times["formulas again"], times["formulas"])
        print(
            f"{label:9s} ms/step: formulas {ms['formulas']:6.3f}, with NaN guard {ms['guarded']:6.3f}, "
            f"torch.distributions {ms['distributions']:6.3f}, compose_gen {ms['ours']:6.3f}"
        )
        print(
            f"{'':9s} compose_gen / formulas {ratio['formulas']:.3f} ({verdict}), / with NaN guard {ratio['guarded']:.3f}, "
            f"/ torch.distributions {ratio['distributions']:.3f}; noise floor {noise:.3f}"
        )


if __name__ == "__main__":
    main()
