"""IWAE-trained (k=5) against VAE-trained models at an equal budget, by importance-sampled test NLL.

Trains specs/vae_digits.yaml (ELBO) and specs/iwae_digits.yaml (IWAE, k = 5) — the
same architecture, data, batch size, optimizer and number of steps — for each seed,
then estimates both models' test log-likelihood with the same estimator: the IWAE
bound with 5000 importance samples (Burda et al. 2016, §5).  Burda et al.'s table
puts the IWAE-trained model ahead; this prints both NLLs (nats, lower is better).

    python benchmarks/iwae_vs_vae.py [--steps 3000] [--samples 5000] [--seeds 0 1 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import compose_gen as cg
from compose_gen.core import EvalContext
from compose_gen.runtime import Run
from compose_gen_plugins.latent.evaluation import ImportanceSampledNLL

SPECS = {"VAE (ELBO)": ("specs/vae_digits.yaml", "vae"), "IWAE (k=5)": ("specs/iwae_digits.yaml", "iwae")}


def train_and_measure(path: str, loss: str, steps: int, seed: int, samples: int) -> tuple[float, float, float]:
    """Test NLL (nats), test ELBO (nats) and training seconds of one spec at one seed."""
    spec = cg.load_spec(path, [f"seed={seed}", f"train.steps={steps}", "train.evaluate_at_end=false"])
    with tempfile.TemporaryDirectory() as folder:
        run = Run.create(spec, folder, "cpu", progress=False)
        start = time.perf_counter()
        run.trainer.fit(steps)
        seconds = time.perf_counter() - start
        run.model.eval()
        ctx = EvalContext(model=run.model, data=run.data, device=run.device, out_dir=run.dir, seed=seed)
        model = run.model.losses[loss]
        nll = ImportanceSampledNLL(loss, model, samples, chunk=500, batch_size=32)(ctx)[f"test/{loss}.nll_k{samples}"]
        elbo = ImportanceSampledNLL(loss, model, 1, chunk=1, batch_size=256)(ctx)[f"test/{loss}.nll_k1"]
    return nll, -elbo, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--samples", type=int, default=5000, help="importance samples of the test NLL")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, list[float]] = {label: [] for label in SPECS}
    for seed in args.seeds:
        for label, (path, loss) in SPECS.items():
            nll, elbo, seconds = train_and_measure(path, loss, args.steps, seed, args.samples)
            results[label].append(nll)
            print(
                f"seed {seed}  {label:11s} test NLL (k={args.samples}) {nll:7.3f} nats   "
                f"test ELBO {elbo:8.3f}   trained {seconds:5.1f} s"
            )
    vae, iwae = (statistics.mean(results[label]) for label in SPECS)
    print(f"mean over {len(args.seeds)} seed(s): VAE {vae:.3f} nats, IWAE {iwae:.3f} nats; IWAE better by {vae - iwae:.3f} nats")


if __name__ == "__main__":
    main()
