"""A run folder: everything needed to resume, sample and evaluate a model.

::

    RUN/
      spec.yaml          the resolved spec (defaults filled in)
      metrics.jsonl      one JSON object per logged step
      checkpoints/       step-XXXXXXXX/{model,optim}.safetensors + state.json
      samples/           sample grids (or 2D scatter plots) during and after training
      evaluation.json    the metrics of the last evaluation
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import yaml
from torch import Tensor

from compose_gen.compiler import GenerativeModel, compile_spec
from compose_gen.compiler.build import BuildContext
from compose_gen.core import EvalContext, Splits
from compose_gen.registry import Catalogue
from compose_gen.runtime.checkpoint import CheckpointError, load_latest
from compose_gen.runtime.data import BatchStream
from compose_gen.runtime.images import save_grid, save_scatter
from compose_gen.runtime.trainer import Trainer
from compose_gen.spec import Spec, load_spec

__all__ = ["Run", "build", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but CUDA is not available")
    return device


def build(spec: Spec, device: str | torch.device | None = None) -> tuple[GenerativeModel, Splits]:
    """The spec's dataset and compiled model, moved to ``device`` (default: the spec's)."""
    device = resolve_device(str(device or spec.model.device))
    data = BuildContext(spec, None).make(spec.sections.data)
    return compile_spec(spec, data, device), data


@dataclass
class Run:
    """A model with its data, spec and (optional) folder."""

    spec: Spec
    model: GenerativeModel
    data: Splits
    dir: Path | None
    trainer: Trainer

    @property
    def device(self) -> torch.device:
        return self.model.device

    @classmethod
    def create(cls, spec: Spec, out: str | Path | None = None, device: str | None = None, progress: bool = True) -> "Run":
        """A fresh run; ``out`` defaults to ``runs/<name>-<timestamp>``."""
        model, data = build(spec, device)
        run_dir = Path(out) if out is not None else Path("runs") / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
        stream = BatchStream(data.train, spec.model.train.batch_size, spec.model.seed, model.device)
        return cls(spec, model, data, run_dir, Trainer(model, stream, run_dir, progress))

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        device: str | None = None,
        overrides: Iterable[str] = (),
        catalogue: Catalogue | None = None,
        progress: bool = True,
    ) -> "Run":
        """Rebuild a run from its folder alone, at its newest readable checkpoint."""
        run_dir = Path(run_dir)
        if not (run_dir / "spec.yaml").exists():
            raise FileNotFoundError(f"{run_dir} is not a run folder (no spec.yaml)")
        spec = load_spec(run_dir / "spec.yaml", overrides, catalogue)
        model, data = build(spec, device)
        stream = BatchStream(data.train, spec.model.train.batch_size, spec.model.seed, model.device)
        trainer = Trainer(model, stream, run_dir, progress)
        checkpoint, warnings = load_latest(run_dir, model)
        for warning in warnings:
            print(f"warning: {warning}")
        if checkpoint is None and warnings:
            raise CheckpointError(f"{run_dir}: no checkpoint could be loaded")
        if checkpoint is not None:
            trainer.restore(checkpoint)
        return cls(spec, model, data, run_dir, trainer)

    def train(self, steps: int | None = None) -> dict[str, float]:
        """Train to round ``steps`` (default: the spec's), then sample and evaluate into the folder."""
        total = steps or self.spec.model.train.steps
        logs = self.trainer.fit(total)
        if self.dir is not None and self.model.sampler is not None:
            self.save_samples(self.dir / "samples" / f"step-{self.trainer.step:08d}.png")
        if self.spec.model.train.evaluate_at_end:
            self.evaluate()
        return logs

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` samples in model space."""
        self.model.eval()
        return self.model.sample(n, temperature)

    def save_samples(self, path: str | Path, n: int | None = None, temperature: float = 1.0) -> Path:
        """Write samples as an image grid (image data) or a scatter plot over the data (2D)."""
        n = n or self.spec.model.evaluate.samples
        x = self.sample(n, temperature)
        test = self.data.test
        if test.image_shape is not None:
            return save_grid(test.to_display(x).reshape(n, *test.image_shape), path)
        if x[0].numel() == 2:
            return save_scatter(test.to_display(x).reshape(n, 2), path, test.to_display(test.fields["x"]).reshape(-1, 2))
        raise ValueError("samples are neither images nor 2D points; use Run.sample() for the tensors")

    @torch.no_grad()
    def evaluate(self, out_dir: str | Path | None = None) -> dict[str, Any]:
        """Run every metric of ``evaluate.metrics``; write ``evaluation.json`` into the folder."""
        self.model.eval()
        folder = Path(out_dir) if out_dir else (self.dir or Path("."))
        ctx = EvalContext(
            model=self.model,
            data=self.data,
            device=self.device,
            out_dir=folder,
            batch_size=self.spec.model.evaluate.batch_size,
            seed=self.spec.model.seed,
        )
        results: dict[str, Any] = {"step": self.trainer.step}
        for metric in self.model.metrics:
            results.update(metric(ctx))
        if self.dir is not None:
            (self.dir / "evaluation.json").write_text(json.dumps(results, indent=1))
        return results
