"""Runtime: the trainer, checkpoints, logging, sampling and evaluation of run folders."""

from compose_gen.runtime.checkpoint import CheckpointError
from compose_gen.runtime.run import Run, build, resolve_device
from compose_gen.runtime.trainer import NonFiniteLoss, Trainer

__all__ = ["CheckpointError", "NonFiniteLoss", "Run", "Trainer", "build", "resolve_device"]
