"""``compose-gen runs``: one line per run folder with its spec, step and final metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import yaml

from compose_gen.runtime.checkpoint import list_checkpoints

__all__ = ["list_runs"]


def list_runs(folder: Path) -> Iterator[str]:
    if not folder.is_dir():
        return
    for run in sorted(p for p in folder.iterdir() if (p / "spec.yaml").exists()):
        try:
            name = yaml.safe_load((run / "spec.yaml").read_text()).get("name", "?")
        except yaml.YAMLError:
            name = "?"
        checkpoints = list_checkpoints(run)
        step = checkpoints[-1].name.removeprefix("step-").lstrip("0") or "0" if checkpoints else "-"
        summary = ""
        if (run / "evaluation.json").exists():
            try:
                results = json.loads((run / "evaluation.json").read_text())
                summary = "  ".join(f"{k}={v:.4g}" for k, v in results.items() if isinstance(v, float))[:160]
            except json.JSONDecodeError:
                summary = "(unreadable evaluation.json)"
        yield f"{run}  {name}  step {step}  {summary}"
