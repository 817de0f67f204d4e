"""Step times of a flow, a VAE and a GAN spec with and without mixed precision and torch.compile.

Each (spec, mode) pair builds the model fresh, trains ``--warmup`` rounds (compiling
happens there), then times ``--repeats`` blocks of ``--steps`` rounds with
``Trainer.fit`` (the whole loop: batch, forward, backward, gradient norm and NaN
check, optimizer) and reports the median milliseconds per round and the speed-up
over fp32 eager.  On CUDA every block is bracketed by ``torch.cuda.synchronize``.
A mode the device cannot run (or a spec whose plugins are missing) is reported as skipped; a compile failure shows up as
the trainer's eager-fallback message and the row is marked ``(fell back)``.

    python benchmarks/runtime_modes.py                       # every mode the device can run
    python benchmarks/runtime_modes.py --device cuda --modes fp32 bf16 fp16 fp32+compile bf16+compile
    python benchmarks/runtime_modes.py --specs vae --steps 50 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import yaml

import compose_gen as cg
from compose_gen.runtime import Trainer, build, resolve_device
from compose_gen.runtime.data import BatchStream
from compose_gen.spec import SpecError

ROOT = Path(__file__).resolve().parents[1]

FLOW: dict[str, Any] = {
    "name": "bench_flow",
    "data": {"type": "digits", "shape": "flat", "scale": False, "transforms": [{"type": "scale", "a": 1 / 17}]},
    "components": {
        "flow": {
            "type": "flow",
            "base": {"type": "standard_normal", "shape": [64]},
            "head": [{"type": "dequantize", "shape": [64], "levels": 17}],  # pixels k/17, as in specs/realnvp_digits.yaml
            "bijectors": [
                {"type": "affine_coupling", "shape": [64], "hidden": [256, 256]},
                {"type": "reverse", "shape": [64]},
            ],
            "repeat": 6,
        }
    },
    "losses": {"nll": {"type": "flow_nll", "flow": "flow"}},
    "train": {"batch_size": 256},
}

GAN: dict[str, Any] = {
    "name": "bench_gan",
    "data": {"type": "eight_gaussians", "n": 20000},
    "components": {
        "noise": {"type": "standard_normal", "shape": [64]},
        "generator": {"type": "mlp_generator", "latent_dim": 64, "hidden": [512, 512]},
        "critic": {"type": "mlp_critic", "hidden": [512, 512]},
    },
    "graph": {"z": "noise.sample(x)", "fake": "generator(z)"},
    "losses": {"adv": {"type": "non_saturating", "critic": "critic", "real": "x", "fake": "fake"}},
    "players": {
        "critic": {"params": ["critic"], "terms": ["adv.critic"], "optimizer": {"type": "adam", "lr": 2e-4, "betas": [0.5, 0.999]}},
        "generator": {"params": ["generator"], "terms": ["adv.generator"], "optimizer": {"type": "adam", "lr": 2e-4, "betas": [0.5, 0.999]}},
    },
    "train": {"batch_size": 512},
}

SPECS = {
    "flow": FLOW,
    "vae": yaml.safe_load((ROOT / "specs" / "vae_digits.yaml").read_text()),
    "gan": GAN,
}
MODES = ["fp32", "bf16", "fp16", "fp32+compile", "bf16+compile"]


def timed_blocks(spec_raw: dict[str, Any], mode: str, device: torch.device, args: argparse.Namespace) -> tuple[list[float], bool]:
    """Seconds per round for each timed block, and whether compiling fell back to eager."""
    raw = copy.deepcopy(spec_raw)
    precision, _, compiled = mode.partition("+")
    raw.setdefault("train", {}).update(precision=precision, compile=bool(compiled), compile_backend=args.backend, log_every=10**9)
    spec = cg.load_spec(raw)
    model, data = build(spec, device)
    train = spec.model.train
    trainer = Trainer(model, BatchStream(data.train, train.batch_size, spec.model.seed, model.device), progress=False)
    trainer.fit(args.warmup)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    blocks = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = clock()
        trainer.fit(trainer.step + args.steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        blocks.append((clock() - start) / args.steps)
    fell_back = bool(compiled) and any(f.compiled is None for f in trainer.loss_functions.values())
    return blocks, fell_back


def runnable(mode: str, device: torch.device) -> str | None:
    """Why ``mode`` cannot run on ``device``, or None."""
    if mode.startswith("bf16") and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "no bf16 on this GPU"
    if mode.startswith("fp16") and device.type == "cpu" and not hasattr(torch.amp, "GradScaler"):
        return "no CPU GradScaler in this torch"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--specs", nargs="+", default=list(SPECS), choices=list(SPECS))
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (inductor, aot_eager, ...)")
    parser.add_argument("--steps", type=int, default=30, help="rounds per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks (the median is reported)")
    parser.add_argument("--warmup", type=int, default=5, help="rounds before timing (compiling happens here)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: process CPU time (a loaded CPU machine, with --threads 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}; compile backend {args.backend}; {args.clock} clock")
    print(f"{'spec':6s} {'mode':14s} {'ms/round':>10s} {'rounds/s':>10s} {'vs fp32':>8s}")
    for spec_name in args.specs:
        reference = None
        for mode in args.modes:
            reason = runnable(mode, device)
            if reason:
                print(f"{spec_name:6s} {mode:14s} {'skipped: ' + reason}")
                continue
            try:
                blocks, fell_back = timed_blocks(SPECS[spec_name], mode, device, args)
            except SpecError as error:
                print(f"{spec_name:6s} {mode:14s} skipped: the spec does not build here: {str(error).splitlines()[0]}")
                continue
            seconds = statistics.median(blocks)
            reference = reference if reference is not None or mode != "fp32" else seconds
            ratio = f"{reference / seconds:7.2f}x" if reference else ""
            note = "  (fell back)" if fell_back else ""
            print(f"{spec_name:6s} {mode:14s} {seconds * 1e3:10.2f} {1 / seconds:10.1f} {ratio:>8s}{note}", flush=True)


if __name__ == "__main__":
    main()
