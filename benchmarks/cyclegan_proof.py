"""CycleGAN on digits → rotated digits: the cycle error falls and mapped samples land in the target domain.

Trains specs/cyclegan_digits.yaml, reads the cycle terms at the first and last
logged steps, then trains a domain classifier (logistic regression on pixels)
on the test images of both domains and reports which domain it assigns to
G_ab(a) and G_ba(b).

    python benchmarks/cyclegan_proof.py [--steps 1000]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from sklearn.linear_model import LogisticRegression

import compose_gen as cg
from compose_gen.runtime.logging import read_metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = cg.load_spec("specs/cyclegan_digits.yaml", [f"train.steps={args.steps}", "train.log_every=50"])
    with tempfile.TemporaryDirectory() as folder:
        run = cg.train(spec, out=folder, progress=False)
        records = read_metrics(run.dir / "metrics.jsonl")
        test = run.data.test.fields
        with torch.no_grad():
            values = run.model.values({"a": test["a"], "b": test["b"]}, ["ab", "ba"])
    first, last = records[0], records[-1]
    for term in ("cycle_a", "cycle_b"):
        print(f"{term}: step {first['step']} {first[term]:.3f} -> step {last['step']} {last[term]:.3f}")
    a, b = test["a"].flatten(1).numpy(), test["b"].flatten(1).numpy()
    half = len(a) // 2
    classifier = LogisticRegression(max_iter=2000).fit(
        [*a[:half], *b[:half]], [0] * half + [1] * half
    )
    held_out = classifier.score([*a[half:], *b[half:]], [0] * (len(a) - half) + [1] * (len(b) - half))
    ab = classifier.predict(values["ab"].flatten(1).numpy()).mean()
    ba = 1 - classifier.predict(values["ba"].flatten(1).numpy()).mean()
    print(f"domain classifier held-out accuracy {held_out:.3f}")
    print(f"G_ab(a) classified as domain b: {ab:.3f}   G_ba(b) classified as domain a: {ba:.3f}")


if __name__ == "__main__":
    main()
