"""compose_gen's WGAN-GP against the same model hand-written in plain PyTorch.

The model of specs/wgan_gp_8gaussians.yaml: MLP generator 2 → 256³ → 2 (ReLU) and critic
2 → 256³ → 1 (LeakyReLU 0.2), Wasserstein loss with a gradient penalty λ = 0.1 on
random interpolates (Gulrajani et al. 2017), Adam(1e-3, β = (0.5, 0.9)) per player with
linear decay, n_critic = 5.  One round = five critic steps and one generator step, each
on a fresh batch of 256.  compose_gen is timed through ``Trainer.fit`` (the whole loop:
schedules, player switching, NaN guard, logging); both run in one process, interleaved,
and the script prints the median round times and their ratio (target ≤ 1.10).

    OMP_NUM_THREADS=1 python benchmarks/wgan_gp_vs_pytorch.py [--rounds 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from itertools import pairwise

import torch
from torch import Tensor, nn

import compose_gen as cg
from compose_gen.runtime import Trainer, build
from compose_gen.runtime.data import BatchStream

SPEC = "specs/wgan_gp_8gaussians.yaml"
TOTAL = 10**6  # train.steps for both: the linear decay barely moves while timing


def mlp(sizes: list[int], activation: type[nn.Module] | nn.Module) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in pairwise(sizes[:-1]):
        layers += [nn.Linear(a, b), activation() if isinstance(activation, type) else activation]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


class HandWGANGP:
    """The spec's model and round, written directly."""

    def __init__(self, data: cg.TensorData, batch_size: int, seed: int, n_critic: int = 5, gp_weight: float = 0.1) -> None:
        torch.manual_seed(seed)
        self.generator = mlp([2, 256, 256, 256, 2], nn.ReLU)
        self.critic = mlp([2, 256, 256, 256, 1], nn.LeakyReLU(0.2))
        self.opt_c = torch.optim.Adam(self.critic.parameters(), lr=1e-3, betas=(0.5, 0.9))
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=1e-3, betas=(0.5, 0.9))
        self.stream = BatchStream(data, batch_size, seed, torch.device("cpu"))
        self.n_critic, self.gp_weight, self.round = n_critic, gp_weight, 0

    def penalty(self, real: Tensor, fake: Tensor) -> Tensor:
        alpha = torch.rand(real.shape[0], 1)
        mixed = torch.lerp(fake, real, alpha).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.critic(mixed).sum(), mixed, create_graph=True)
        return self.gp_weight * (grad.norm(dim=1) - 1).pow(2).mean()

    def step(self) -> None:
        lr = 1e-3 * (1 - min(1.0, self.round / TOTAL))
        for opt in (self.opt_c, self.opt_g):
            for group in opt.param_groups:
                group["lr"] = lr
        self.generator.requires_grad_(False)
        for _ in range(self.n_critic):
            real = next(self.stream)["x"]
            with torch.no_grad():
                fake = self.generator(torch.randn(real.shape[0], 2))
            loss = self.critic(fake).mean() - self.critic(real).mean() + self.penalty(real, fake)
            self.opt_c.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_c.step()
        self.generator.requires_grad_(True)
        self.critic.requires_grad_(False)
        real = next(self.stream)["x"]
        loss = -self.critic(self.generator(torch.randn(real.shape[0], 2))).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.critic.requires_grad_(True)
        self.round += 1


def seconds_per_round(run_rounds, rounds: int) -> float:
    start = time.perf_counter()
    run_rounds(rounds)
    return (time.perf_counter() - start) / rounds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=100, help="rounds per timing")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    spec = cg.load_spec(SPEC, [f"train.steps={TOTAL}", f"train.log_every={TOTAL}"])
    model, data = build(spec, "cpu")
    batch_size = spec.model.train.batch_size
    trainer = Trainer(model, BatchStream(data.train, batch_size, spec.model.seed, model.device), progress=False)
    hand = HandWGANGP(data.train, batch_size, spec.model.seed)

    def ours(rounds: int) -> None:
        trainer.fit(trainer.step + rounds)

    def hand_written(rounds: int) -> None:
        for _ in range(rounds):
            hand.step()

    for run in (hand_written, ours):  # warm-up
        seconds_per_round(run, 10)
    hand_times, ours_times = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        hand_times.append(seconds_per_round(hand_written, args.rounds))
        ours_times.append(seconds_per_round(ours, args.rounds))
    hand_t, ours_t = statistics.median(hand_times), statistics.median(ours_times)
    print(f"threads {torch.get_num_threads()}, {args.repeats} × {args.rounds} rounds (5 critic steps + 1 generator step, batch {batch_size})")
    print(f"round time   hand-written {hand_t * 1e3:7.3f} ms   compose_gen {ours_t * 1e3:7.3f} ms   ratio {ours_t / hand_t:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
