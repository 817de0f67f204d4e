"""compose_gen's VAE against the same VAE hand-written in plain PyTorch.

Trains both on the binarised digits with the same architecture, batch order,
optimizer and budget, in one process, and prints the step-time ratio
(target ≤ 1.10) and both test ELBOs (target: within 2%).

    python benchmarks/vae_vs_pytorch.py [--steps 3000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

import compose_gen as cg
from compose_gen.runtime import Trainer, build
from compose_gen.runtime.data import BatchStream

SPEC = "specs/vae_digits.yaml"


class HandVAE(nn.Module):
    """The same model as specs/vae_digits.yaml, written directly."""

    def __init__(self, latent: int = 16, hidden: int = 256) -> None:
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 64)
        )

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        loc, raw = self.encoder(x).split(self.latent, -1)
        q = Independent(Normal(loc, nn.functional.softplus(raw) + 1e-4), 1)
        z = q.rsample()
        p = Independent(Normal(torch.zeros_like(loc), torch.ones_like(loc)), 1)
        rec = Independent(Bernoulli(logits=self.decoder(z), validate_args=False), 1).log_prob(x)
        return rec - kl_divergence(q, p)


def time_steps(step, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--timing-steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)

    spec = cg.load_spec(SPEC)
    model, data = build(spec, "cpu")
    train_spec = spec.model.train
    trainer = Trainer(model, BatchStream(data.train, train_spec.batch_size, spec.model.seed, model.device), progress=False)

    torch.manual_seed(spec.model.seed)
    hand = HandVAE()
    hand_opt = torch.optim.Adam(hand.parameters(), lr=train_spec.optimizer.lr)
    hand_stream = BatchStream(data.train, train_spec.batch_size, spec.model.seed, torch.device("cpu"))

    def hand_step() -> None:
        x = next(hand_stream)["x"]
        loss = -hand.elbo(x).mean()
        hand_opt.zero_grad(set_to_none=True)
        loss.backward()
        hand_opt.step()

    plan = model.plans["model"]

    def ours_step() -> None:
        trainer._player_step("model", plan)

    for step in (hand_step, ours_step):  # warm-up
        time_steps(step, 50)
    ours_times, hand_times = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        hand_times.append(time_steps(hand_step, args.timing_steps))
        ours_times.append(time_steps(ours_step, args.timing_steps))
    hand_t, ours_t = statistics.median(hand_times), statistics.median(ours_times)

    # Equal budget: the full spec step count for both, from fresh initialisations.
    remaining = args.steps
    model, data = build(spec, "cpu")
    trainer = Trainer(model, BatchStream(data.train, train_spec.batch_size, spec.model.seed, model.device), progress=False)
    trainer.fit(remaining)
    torch.manual_seed(spec.model.seed)
    hand = HandVAE()
    hand_opt = torch.optim.Adam(hand.parameters(), lr=train_spec.optimizer.lr)
    hand_stream = BatchStream(data.train, train_spec.batch_size, spec.model.seed, torch.device("cpu"))
    for _ in range(remaining):
        hand_step()

    x_test = data.test.fields["x"]
    torch.manual_seed(1)
    with torch.no_grad():
        ours_elbo = model.evaluate_terms({"x": x_test, "y": data.test.fields["y"]})["vae.elbo"].item()
        torch.manual_seed(1)
        hand_elbo = hand.elbo(x_test).mean().item()

    print(f"step time   hand-written {hand_t * 1e3:7.3f} ms   compose_gen {ours_t * 1e3:7.3f} ms   ratio {ours_t / hand_t:.3f} (target <= 1.10)")
    print(f"test ELBO   hand-written {hand_elbo:8.3f} nats compose_gen {ours_elbo:8.3f} nats relative gap {abs(ours_elbo - hand_elbo) / abs(hand_elbo):.2%} (target <= 2%) after {remaining} steps")


if __name__ == "__main__":
    main()
