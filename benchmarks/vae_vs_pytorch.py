"""compose_gen's VAE against the same VAE hand-written in plain PyTorch: test ELBO after an equal budget.

Both train specs/vae_digits.yaml's model on the binarised digits from the same
initialisation (same seed, layers built in the same order), with the same batch
order, optimizer and number of steps, in one process; the hand-written twin is
``HandVAE`` of ``latent_step_time.py`` (which times the step).  Prints both test
ELBOs in nats (target: within 2%).

    python benchmarks/vae_vs_pytorch.py [--steps 3000] [--threads 2]
"""

from __future__ import annotations

import argparse

import torch
from latent_step_time import HandVAE

import compose_gen as cg
from compose_gen.runtime import Trainer, build
from compose_gen.runtime.data import BatchStream

SPEC = "specs/vae_digits.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = cg.load_spec(SPEC)
    train = spec.model.train
    model, data = build(spec, "cpu")
    Trainer(model, BatchStream(data.train, train.batch_size, spec.model.seed, model.device), progress=False).fit(args.steps)

    torch.manual_seed(spec.model.seed)
    hand = HandVAE(samples=1, iwae=False)
    optimizer = torch.optim.Adam(hand.parameters(), lr=train.optimizer.lr)
    stream = BatchStream(data.train, train.batch_size, spec.model.seed, torch.device("cpu"))
    for _ in range(args.steps):
        loss = hand.loss(next(stream)["x"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    x_test = data.test.fields["x"]
    with torch.no_grad():
        torch.manual_seed(1)
        ours = model.evaluate_terms({"x": x_test, "y": data.test.fields["y"]})["vae.elbo"].item()
        torch.manual_seed(1)
        by_hand = -hand.loss(x_test).item()
    gap = abs(ours - by_hand) / abs(by_hand)
    print(f"test ELBO after {args.steps} steps: hand-written {by_hand:8.3f} nats, compose_gen {ours:8.3f} nats, relative gap {gap:.2%} (target <= 2%)")


if __name__ == "__main__":
    main()
