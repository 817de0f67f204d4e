"""compose_gen's RealNVP and MAF against the same flows in plain PyTorch, zuko and nflows.

All flows model the 8x8 digits in logit space (pixels k -> (k + u)/17 ->
logit(α + (1 - 2α)·x), preprocessed once per batch outside the flows, identically
for all), with the same depth, widths, batch order, optimizer and budget:

* RealNVP: ``couplings`` affine couplings with alternating masks, MLP conditioner
  ``[hidden, hidden]``;
* MAF: ``mafs`` MADE-conditioned affine layers ``[hidden, hidden]``, order reversed
  between layers.

Measured, in one process: log_prob throughput (examples/s, no grad), training
step time (log_prob + backward + Adam), sampling throughput (examples/s), and
test NLL in bits/dim in pixel space (dequantization and logit Jacobians counted)
after ``--steps`` steps.  Ratios are compose_gen relative to the fastest (best)
peer: throughput ratio > 1 and time ratio < 1 mean compose_gen is faster.
Peers that are not installed (``pip install zuko nflows``) are skipped.
``--compile`` puts every contestant's ``log_prob`` through ``torch.compile``; the
first training step (which compiles the backward) is left out of the step time.

    OMP_NUM_THREADS=1 python benchmarks/flows_vs_peers.py [--steps 1000] [--threads 1] [--device cpu|cuda] [--compile]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from functools import partial
from itertools import pairwise

import torch
from torch import Tensor, nn

from compose_gen.runtime.data import BatchStream
from compose_gen_plugins.datasets.bundled import DigitsParams, build_digits
from compose_gen_plugins.distributions import StandardNormal
from compose_gen_plugins.flows.autoregressive import AutoregressiveParams, build_maf
from compose_gen_plugins.flows.coupling import AffineCouplingParams, build_affine_coupling
from compose_gen_plugins.flows.distribution import Flow, chain_of
from compose_gen_plugins.flows.permutations import ReverseParams, build_reverse

D, LEVELS, ALPHA = 64, 17, 0.05


def preprocess(k: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Dequantize and logit: ``y = logit(α + (1-2α)(k+u)/17)`` and ``log|dy/du|`` summed (u in pixel units)."""
    u = torch.rand(k.shape, generator=generator, dtype=k.dtype).to(k.device)
    p = ALPHA + (1 - 2 * ALPHA) * (k + u) / LEVELS
    y = torch.log(p) - torch.log1p(-p)
    ladj = (math.log((1 - 2 * ALPHA) / LEVELS) - torch.log(p) - torch.log1p(-p)).sum(-1)
    return y, ladj


def bits_per_dim(log_p_model: Tensor, ladj: Tensor) -> float:
    return float(-(log_p_model + ladj).mean() / (D * math.log(2)))


# --- the flows: each entry returns (module, log_prob(x), sample(n)) -------------------------------------------------


def compose_gen_realnvp(couplings: int, hidden: int):
    layers = [
        build_affine_coupling(
            AffineCouplingParams(shape=[D], mask="alternating", flip=i % 2 == 1, hidden=[hidden, hidden], clamp=2.0), None
        )
        for i in range(couplings)
    ]
    flow = Flow(StandardNormal([D]), chain_of(layers))
    return flow, flow.log_prob, lambda n: flow.sample(n)


def compose_gen_maf(mafs: int, hidden: int):
    layers = []
    for _ in range(mafs):
        layers += [build_maf(AutoregressiveParams(shape=[D], hidden=[hidden, hidden]), None), build_reverse(ReverseParams(shape=[D]), None)]
    flow = Flow(StandardNormal([D]), chain_of(layers[:-1]))
    return flow, flow.log_prob, lambda n: flow.sample(n)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class _ContextFreeMLP(nn.Module):
    """nflows calls its conditioner as ``net(x, context)``."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.net = _mlp(sizes)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def _normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * (z**2).sum(-1) - 0.5 * D * math.log(2 * math.pi)


class HandRealNVP(nn.Module):
    """Affine couplings y = x·e^s + t, (t, s) = (1-m)·MLP(m·x), s soft-clamped by 2c/π·atan(s/c)."""

    def __init__(self, couplings: int, hidden: int, clamp: float = 2.0) -> None:
        super().__init__()
        even = (torch.arange(D) % 2 == 0).float()
        self.register_buffer("masks", torch.stack([even if i % 2 == 0 else 1 - even for i in range(couplings)]))
        self.nets = nn.ModuleList(_mlp([D, hidden, hidden, 2 * D]) for _ in range(couplings))
        self.clamp = clamp

    def _st(self, i: int, x: Tensor) -> tuple[Tensor, Tensor]:
        m = self.masks[i]
        t, raw = self.nets[i](x * m).chunk(2, -1)
        s = (2 * self.clamp / math.pi) * torch.atan(raw / self.clamp)
        return t * (1 - m), s * (1 - m)

    def log_prob(self, x: Tensor) -> Tensor:
        total = x.new_zeros(x.shape[0])
        for i in range(len(self.nets)):
            t, s = self._st(i, x)
            x = x * s.exp() + t
            total = total + s.sum(-1)
        return _normal_log_prob(x) + total

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        x = torch.randn(n, D, device=self.masks.device)
        for i in reversed(range(len(self.nets))):
            t, s = self._st(i, x)
            x = (x - t) * (-s).exp()
        return x


class MaskedLinear(nn.Linear):
    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class HandMADE(nn.Module):
    """MADE (Germain et al. 2015), natural order, outputs (raw log-scale, shift) per feature."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        d_in = torch.arange(1, D + 1)
        d_h = torch.arange(hidden) % (D - 1) + 1
        m1 = (d_h[:, None] >= d_in[None]).float()
        m2 = (d_h[:, None] >= d_h[None]).float()
        m3 = (d_in[:, None] > d_h[None]).float().repeat(2, 1)
        self.net = nn.Sequential(MaskedLinear(m1), nn.ReLU(), MaskedLinear(m2), nn.ReLU(), MaskedLinear(m3))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raw, shift = self.net(x).chunk(2, -1)
        return 3.0 * torch.tanh(raw / 3.0), shift


class HandMAF(nn.Module):
    """u = x·e^{s(x_<d)} + t(x_<d) per layer, features reversed between layers."""

    def __init__(self, mafs: int, hidden: int) -> None:
        super().__init__()
        self.mades = nn.ModuleList(HandMADE(hidden) for _ in range(mafs))

    def log_prob(self, x: Tensor) -> Tensor:
        total = x.new_zeros(x.shape[0])
        for i, made in enumerate(self.mades):
            if i:
                x = x.flip(-1)
            s, t = made(x)
            x = x * s.exp() + t
            total = total + s.sum(-1)
        return _normal_log_prob(x) + total

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        u = torch.randn(n, D, device=next(self.parameters()).device)
        for i in reversed(range(len(self.mades))):
            x = torch.zeros_like(u)
            for _ in range(D):
                s, t = self.mades[i](x)
                x = (u - t) * (-s).exp()
            u = x.flip(-1) if i else x
        return u


def hand(kind: Callable[[int, int], nn.Module]):
    def make(layers: int, hidden: int):
        model = kind(layers, hidden)
        return model, model.log_prob, model.sample

    return make


def zuko_flow(name: str):
    def make(layers: int, hidden: int):
        import zuko

        cls = zuko.flows.RealNVP if name == "realnvp" else zuko.flows.MAF
        flow = cls(features=D, transforms=layers, hidden_features=(hidden, hidden))
        return flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,))

    return make


def nflows_flow(name: str):
    def make(layers: int, hidden: int):
        from nflows.distributions.normal import StandardNormal as NStandardNormal
        from nflows.flows.base import Flow as NFlow
        from nflows.transforms import (
            AffineCouplingTransform,
            CompositeTransform,
            MaskedAffineAutoregressiveTransform,
            ReversePermutation,
        )
        from nflows.utils.torchutils import create_alternating_binary_mask

        if name == "realnvp":
            transforms = [
                AffineCouplingTransform(
                    create_alternating_binary_mask(D, even=i % 2 == 0), lambda a, b: _ContextFreeMLP([a, hidden, hidden, b])
                )
                for i in range(layers)
            ]
        else:
            transforms = []
            for _ in range(layers):
                # one feed-forward block: MADE layers D -> hidden -> hidden -> 2D, as the others (nflows' default,
                # two residual blocks, has twice the depth)
                made = MaskedAffineAutoregressiveTransform(D, hidden, num_blocks=1, use_residual_blocks=False)
                transforms += [made, ReversePermutation(D)]
            transforms = transforms[:-1]
        flow = NFlow(CompositeTransform(transforms), NStandardNormal([D]))
        return flow, flow.log_prob, flow.sample

    return make


CHUNK = 50  # training steps per turn

# --- measurements ------------------------------------------------------------------------------------------------


class Contestant:
    """One library's flow with its optimizer and batch stream; trained and timed in turns with the others."""

    def __init__(self, make, args, data, device: torch.device) -> None:
        torch.manual_seed(0)
        self.module, self.log_prob, self.sample = make(args.layers_for, args.hidden)
        self.module.to(device)
        if args.compile:
            self.log_prob = torch.compile(self.log_prob)
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=args.lr)
        self.stream = BatchStream(data.train, args.batch_size, 0, device)
        self.times: dict[str, list[float]] = {"step": [], "log_prob": [], "sample": []}

    def steps(self, n: int) -> None:
        for _ in range(n):
            self.step()

    def step(self) -> None:
        y, _ = preprocess(next(self.stream)["x"])
        loss = -self.log_prob(y).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def timed(self, kind: str, fn: Callable[[], object], per: int = 1) -> None:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        self.times[kind].append((time.perf_counter() - start) / per)


def measure_all(makers: dict[str, Callable], args, data, device: torch.device) -> dict[str, dict[str, float]]:
    """Train every contestant ``args.steps`` steps and time it, in rotating turns so that load drift hits all alike.

    Training runs in chunks of ``CHUNK`` steps per turn (the first step, which
    compiles under ``--compile``, is not timed); then ``args.repeats`` rounds time
    one ``log_prob`` of ``args.eval_batch`` test points and one draw of
    ``args.sample_batch`` samples each.  Medians are reported.
    """
    contestants = {name: Contestant(make, args, data, device) for name, make in makers.items()}
    order = list(contestants.values())
    for c in order:
        c.step()
    for turn, done in enumerate(range(1, args.steps, CHUNK)):
        n = min(CHUNK, args.steps - done)
        for c in order[turn % len(order) :] + order[: turn % len(order)]:
            c.timed("step", partial(c.steps, n), per=n)
    eval_y, eval_ladj = preprocess(data.test.fields["x"].to(device), torch.Generator().manual_seed(1))
    big = eval_y.repeat(math.ceil(args.eval_batch / len(eval_y)), 1)[: args.eval_batch]
    with torch.no_grad():
        for c in order:  # warm-up
            c.log_prob(big), c.sample(args.sample_batch)
        for turn in range(args.repeats):
            for c in order[turn % len(order) :] + order[: turn % len(order)]:
                c.timed("log_prob", partial(c.log_prob, big))
                c.timed("sample", partial(c.sample, args.sample_batch))
        results = {}
        for name, c in contestants.items():
            median = {kind: statistics.median(times) for kind, times in c.times.items()}
            results[name] = {
                "log_prob/s": args.eval_batch / median["log_prob"],
                "step ms": 1e3 * median["step"],
                "sample/s": args.sample_batch / median["sample"],
                "test bpd": bits_per_dim(c.log_prob(eval_y), eval_ladj),
            }
    return results


def available(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000, help="training steps (equal budget; also times the step)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--couplings", type=int, default=8)
    parser.add_argument("--mafs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-batch", type=int, default=4096)
    parser.add_argument("--sample-batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile every contestant's log_prob (training and evaluation)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = build_digits(DigitsParams(shape="flat", scale=False))  # integers k = 0..16

    peers = {"plain PyTorch": {"realnvp": hand(HandRealNVP), "maf": hand(HandMAF)}}
    if available("zuko"):
        peers["zuko"] = {"realnvp": zuko_flow("realnvp"), "maf": zuko_flow("maf")}
    if available("nflows"):
        peers["nflows"] = {"realnvp": nflows_flow("realnvp"), "maf": nflows_flow("maf")}
    ours = {"realnvp": compose_gen_realnvp, "maf": compose_gen_maf}

    print(f"device {device}, threads {args.threads}, {args.steps} steps of batch {args.batch_size}, hidden {args.hidden}, "
          f"{args.couplings} couplings / {args.mafs} MAF layers; torch {torch.__version__}{', compiled' if args.compile else ''}")
    header = f"{'model':8} {'library':14} {'log_prob/s':>11} {'step ms':>8} {'sample/s':>10} {'test bpd':>9}"
    for name, layers in (("realnvp", args.couplings), ("maf", args.mafs)):
        args.layers_for = layers
        makers = {"compose_gen": ours[name], **{library: flows[name] for library, flows in peers.items()}}
        results = measure_all(makers, args, data, device)
        print(header)
        for library, r in results.items():
            print(f"{name:8} {library:14} {r['log_prob/s']:11.0f} {r['step ms']:8.2f} {r['sample/s']:10.0f} {r['test bpd']:9.3f}")
        libraries = [lib for lib in results if lib not in ("compose_gen", "plain PyTorch")]
        for label, group in (("vs PyTorch", ["plain PyTorch"]), ("vs best peer", libraries)):
            if group:
                print_ratios(name, label, results["compose_gen"], [results[lib] for lib in group])
        print()


def print_ratios(name: str, label: str, ours: dict[str, float], others: list[dict[str, float]]) -> None:
    """compose_gen over the best of ``others`` (throughput x, time x, bpd difference; targets >= 1, <= 1, <= 0)."""
    best = {
        "log_prob/s": max(r["log_prob/s"] for r in others),
        "step ms": min(r["step ms"] for r in others),
        "sample/s": max(r["sample/s"] for r in others),
        "test bpd": min(r["test bpd"] for r in others),
    }
    print(
        f"{name:8} {label:14} {ours['log_prob/s'] / best['log_prob/s']:11.2f} {ours['step ms'] / best['step ms']:8.2f} "
        f"{ours['sample/s'] / best['sample/s']:10.2f} {ours['test bpd'] - best['test bpd']:+9.3f}"
    )


if __name__ == "__main__":
    main()
