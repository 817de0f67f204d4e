"""Machine instructions per training step, compose_gen's trainer over the hand-written loop: VAE, IWAE (k=5), VQ-VAE.

A count that neither load nor memory placement moves, to set beside
``latent_step_time.py``'s times: where the time ratio is well above the
instruction ratio, the rest of the gap is not work compose_gen does but what
its Python work does to the caches the tensor work runs from.  The same twins
and fused Adam as that script (``--fused-baseline``), one thread.  Each side
runs in a process of its own under ``valgrind --tool=cachegrind``, which counts
every instruction the process executes; a run of ``--steps`` + 2 steps less one
of 2 steps leaves the steps alone (the start, import and build cancel).  About
4 minutes a process, two processes at a time; needs valgrind.

    python benchmarks/step_instructions.py [--models vae,iwae,vqvae] [--steps 100]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from latent_step_time import CASES  # noqa: E402  (a sibling script, not a package)

#: latent_step_time.py's models by a short name: spec and hand-written twin (formulas).
MODELS = dict(zip(("vae", "iwae", "vqvae"), ((path, twin) for _, path, twin in CASES), strict=True))
SIDES = ("compose_gen", "hand")


def run_steps(model: str, side: str, steps: int) -> None:
    """Build ``side``'s ``model`` as latent_step_time.py does, warm it up for 5 steps, then train ``steps`` more."""
    import compose_gen as cg
    from compose_gen.runtime import Trainer, build
    from compose_gen.runtime.data import BatchStream

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    path, twin = MODELS[model]
    spec = cg.load_spec(path)
    built, data = build(spec, torch.device("cpu"))
    stream = BatchStream(data.train, spec.model.train.batch_size, spec.model.seed, built.device)
    if side == "compose_gen":
        trainer = Trainer(built, stream, progress=False)
        for n in (5, steps):
            trainer.fit(trainer.step + n)
        return
    hand = twin(False)
    optimizer = torch.optim.Adam(hand.parameters(), lr=spec.model.train.optimizer.lr, fused=True)
    for _ in range(5 + steps):
        loss = hand.loss(next(stream)["x"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        hand.after_step()


def instructions(model: str, side: str, steps: int) -> int:
    """Instructions valgrind counts in a whole process that trains ``steps`` steps after the warm-up."""
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    command += [sys.executable, str(HERE), "--run", model, side, str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vae,iwae,vqvae", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=100, help="steps counted (the difference of two runs)")
    parser.add_argument("--run", nargs=3, metavar=("MODEL", "SIDE", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        model, side, steps = args.run
        run_steps(model, side, int(steps))
        return
    models = args.models.split(",")
    jobs = [(model, side, steps) for model in models for side in SIDES for steps in (2, 2 + args.steps)]
    with ThreadPoolExecutor(2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: instructions(*job), jobs), strict=True))
    print(f"instructions per training step (millions), {args.steps} steps counted, one thread, fused Adam on both sides")
    for model in models:
        per_step = {side: (counts[model, side, 2 + args.steps] - counts[model, side, 2]) / args.steps for side in SIDES}
        print(
            f"{model:6s} compose_gen {per_step['compose_gen'] / 1e6:7.3f}, hand-written {per_step['hand'] / 1e6:7.3f}, "
            f"ratio {per_step['compose_gen'] / per_step['hand']:.3f}"
        )


if __name__ == "__main__":
    main()
