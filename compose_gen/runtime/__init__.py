"""Runtime: the trainer, checkpoints, logging, sampling and evaluation of run folders."""

from compose_gen.runtime.checkpoint import CheckpointError
from compose_gen.runtime.device import resolve_device
from compose_gen.runtime.evaluation import EvaluationFailed
from compose_gen.runtime.run import Run, build
from compose_gen.runtime.trainer import NonFiniteLoss, StepFailed, Trainer

__all__ = ["CheckpointError", "EvaluationFailed", "NonFiniteLoss", "Run", "StepFailed", "Trainer", "build", "resolve_device"]
