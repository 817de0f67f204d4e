"""Crash-safe checkpoints that load without unpickling anything.

A checkpoint is a folder ``checkpoints/step-00001000/`` holding

* ``model.safetensors`` — every parameter and buffer;
* ``optim.safetensors`` — optimizer tensors and RNG states;
* ``state.json`` — step, data-stream positions, optimizer hyper-parameters and
  the SHA-256 of both tensor files.

It is written into a temporary folder, each file fsynced, then renamed into
place, so a crash leaves either the old set of checkpoints or the new one.
Loading verifies the hashes; :func:`load_latest` falls back to the newest
checkpoint that verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest",
    "restore_optimizers",
    "restore_rng",
    "save_checkpoint",
]

FORMAT = 1


class CheckpointError(Exception):
    """A checkpoint that is missing, truncated, corrupt or does not fit the model."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]
    tensors: dict[str, torch.Tensor]


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoint folders, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-"))


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
    keep: int,
) -> Path:
    """Atomically write a checkpoint for ``step`` and keep only the newest ``keep``."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:08d}"
    tmp = folder / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    tensors, optim_meta = _flatten_optimizers(optimizers)
    tensors.update(_rng_tensors())
    save_file(tensors, str(tmp / "optim.safetensors"))
    payload = {
        "format": FORMAT,
        "step": step,
        "optimizers": optim_meta,
        "sha256": {name: _sha256(tmp / name) for name in ("model.safetensors", "optim.safetensors")},
        **state,
    }
    (tmp / "state.json").write_text(json.dumps(payload, indent=1))
    for file in tmp.iterdir():
        _fsync(file)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(folder)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: nn.Module) -> Checkpoint:
    """Verify and load one checkpoint into ``model``; optimizer tensors are returned for the trainer."""
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text())
        for name, digest in state["sha256"].items():
            if _sha256(path / name) != digest:
                raise CheckpointError(f"{path / name}: contents do not match the hash recorded in state.json (corrupt or truncated)")
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: does not fit this model (missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
            )
        tensors = load_file(str(path / "optim.safetensors"))
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})") from None
    return Checkpoint(path, int(state["step"]), state, tensors)


def load_latest(run_dir: Path, model: nn.Module) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint that loads, and a warning for every newer one that did not."""
    warnings = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint(path, model), warnings
        except CheckpointError as error:
            warnings.append(f"skipped {error}")
    return None, warnings


def restore_optimizers(checkpoint: Checkpoint, optimizers: dict[str, torch.optim.Optimizer]) -> None:
    for player, optimizer in optimizers.items():
        meta = checkpoint.state["optimizers"][player]
        state: dict[int, dict[str, Any]] = {}
        for index, entries in meta["state"].items():
            state[int(index)] = {
                key: checkpoint.tensors[f"optim/{player}/{index}/{key}"] if value == "<tensor>" else value
                for key, value in entries.items()
            }
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def restore_rng(checkpoint: Checkpoint) -> None:
    torch.set_rng_state(checkpoint.tensors["rng/cpu"])
    if torch.cuda.is_available():
        states = [checkpoint.tensors[k] for k in sorted(checkpoint.tensors) if k.startswith("rng/cuda")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def _flatten_optimizers(optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for player, optimizer in optimizers.items():
        sd = optimizer.state_dict()
        entries: dict[str, dict[str, Any]] = {}
        for index, values in sd["state"].items():
            entries[str(index)] = {}
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim/{player}/{index}/{key}"] = value.detach().contiguous().cpu()
                    entries[str(index)][key] = "<tensor>"
                else:
                    entries[str(index)][key] = value
        meta[player] = {"state": entries, "param_groups": sd["param_groups"]}
    return tensors, meta


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng/cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda{i:02d}"] = state
    return tensors


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
