"""The names of the files a run folder holds: the one place that spells them.

::

    RUN/
      spec.yaml                  SPEC_FILE: the resolved spec (defaults filled in; a resume's --set included)
      metrics.jsonl              METRICS_FILE: a line per log_every rounds, and one where training ends
      metrics.dropped.jsonl      DROPPED_METRICS_FILE: lines a resume took out of it (torn, or after its checkpoint)
      evaluation.json            EVALUATION_FILE: the metrics of the last recorded evaluation
      evaluation.dropped-step-00001000.json  dropped_evaluation_name(1000): one of a step a resume trains again, set aside
      tensorboard/               TENSORBOARD_DIR: TensorBoard events, when train.tensorboard
      samples/                   SAMPLES_DIR: sample pictures during training (train.sample_every)
      checkpoints/               CHECKPOINTS_DIR
        step-00001000/           step_folder_name(1000): a checkpoint (STEP_FOLDER reads its step back)
          model.safetensors      MODEL_FILE: parameters and buffers
          optim.safetensors      OPTIMIZER_FILE: optimizer tensors and every process's RNG states
          state.json             STATE_FILE: step, data position, hashes of the tensor files, ...
        best.json                BEST_FILE: the best checkpoint's step and metric, when train.best_metric
      plugins.json               PLUGINS_FILE: the plugin and package (with its version) of each type the spec uses
      .writer                    CLAIM_FILE: the process writing the folder, while it does

A killed process may leave ``.tmp-*`` files and folders, which :mod:`compose_gen.runtime.checkpoint` removes.
"""

from __future__ import annotations

import re

__all__ = [
    "BEST_FILE",
    "CHECKPOINTS_DIR",
    "CLAIM_FILE",
    "DROPPED_METRICS_FILE",
    "EVALUATION_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "PLUGINS_FILE",
    "SAMPLES_DIR",
    "SPEC_FILE",
    "STATE_FILE",
    "STEP_FOLDER",
    "TENSORBOARD_DIR",
    "dropped_evaluation_name",
    "step_folder_name",
]

SPEC_FILE = "spec.yaml"
METRICS_FILE = "metrics.jsonl"
DROPPED_METRICS_FILE = "metrics.dropped.jsonl"
EVALUATION_FILE = "evaluation.json"
TENSORBOARD_DIR = "tensorboard"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optim.safetensors"
STATE_FILE = "state.json"
BEST_FILE = "best.json"
PLUGINS_FILE = "plugins.json"
CLAIM_FILE = ".writer"
#: A checkpoint folder's name, as :func:`step_folder_name` writes it; the step in it must be the one ``state.json`` records.
STEP_FOLDER = re.compile(r"step-(\d+)")


def dropped_evaluation_name(step: int, copy: int = 1) -> str:
    """The name an evaluation of ``step`` is set aside under (``copy`` 2, 3, ... where one of that step already is)."""
    return f"evaluation.dropped-{step_folder_name(step)}{'' if copy == 1 else f'-{copy}'}.json"


def step_folder_name(step: int) -> str:
    """The name of the checkpoint folder of ``step``, in :data:`CHECKPOINTS_DIR`: ``step-00001000`` for 1000."""
    return f"step-{step:08d}"
