"""The run folder's lifecycle: the checks before a run is made in a folder or loaded from one, and the checkpoint it loads.

A folder that holds records of training (``metrics.jsonl``, ``evaluation.json``) but no
checkpoint is never trained over from the start, which would overwrite them; a folder
another process is writing to is refused (:mod:`compose_gen.runtime.claim`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from torch import nn

from compose_gen.runtime.checkpoint import Checkpoint, CheckpointError, list_checkpoints, load_checkpoint, load_latest, read_best, recorded_best
from compose_gen.runtime.claim import refuse_if_busy
from compose_gen.runtime.layout import (
    BEST_FILE,
    CHECKPOINTS_DIR,
    EVALUATION_FILE,
    METRICS_FILE,
    SAMPLES_DIR,
    SPEC_FILE,
    STEP_FOLDER,
    TENSORBOARD_DIR,
    step_folder_name,
)
from compose_gen.runtime.logging import read_metrics

__all__ = ["SPLIT_KEYS", "check_loadable", "check_new_folder", "checkpoint_path", "load_chosen", "moved_split_keys", "refuse_to_start_over"]

#: Data parameters whose change on a resume may move examples between the splits (a file's path does not).
SPLIT_KEYS = frozenset({"seed", "test_fraction", "transforms", "n"})


def check_new_folder(run_dir: Path, spec_text: str) -> None:
    """Refuse ``run_dir`` for a fresh run of the spec ``spec_text`` (as the run records it): a file, below a file, busy,
    holding checkpoints or records of training, a link in it, or a ``spec.yaml`` other than this one (a user's own
    spec kept there, or another run's)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"{run_dir} is a file, not a folder: the run folder must be a folder (--out DIR)")
    above = next((folder for folder in run_dir.parents if folder.exists() and not folder.is_dir()), None)
    if above is not None:
        raise FileExistsError(f"{above} is a file, so no run folder can be made at {run_dir}, below it: choose another --out")
    refuse_if_busy(run_dir)
    if list_checkpoints(run_dir):
        raise FileExistsError(f"{run_dir} already holds checkpoints: resume it (--resume {run_dir}) or choose another folder")
    refuse_to_start_over(run_dir, "choose another folder")
    _refuse_links(run_dir)
    recorded = run_dir / SPEC_FILE
    if (recorded.exists() or recorded.is_symlink()) and (not recorded.is_file() or recorded.read_bytes() != spec_text.encode()):
        raise FileExistsError(
            f"{recorded} exists and is not the spec this run records there (every default filled in), which would replace it: "
            "choose another --out, or move that file"
        )
    left = _records_of_a_run(run_dir)
    if left and not recorded.exists():  # beside this spec's own spec.yaml, they are an earlier try's of this very run
        raise FileExistsError(
            f"{run_dir} holds {', '.join(left)} of another run, which this one would overwrite or add to: choose another --out, "
            "or move them"
        )


def _records_of_a_run(run_dir: Path) -> list[str]:
    """What a run folder holds of a run beside its checkpoints and log: pictures, TensorBoard events, what a resume set aside."""
    folders = [f"{name}/" for name in (SAMPLES_DIR, TENSORBOARD_DIR) if (run_dir / name).is_dir() and any((run_dir / name).iterdir())]
    aside = sorted(path.name for path in run_dir.glob("*.dropped*") if path.is_file())
    return folders + aside


def _refuse_links(run_dir: Path) -> None:
    """Refuse a run folder whose checkpoints, samples or TensorBoard folder is a symbolic link."""
    for name in (CHECKPOINTS_DIR, SAMPLES_DIR, TENSORBOARD_DIR):
        if (run_dir / name).is_symlink():  # compose_gen never makes one; through it, rotation would delete another folder's files
            raise CheckpointError(
                f"{run_dir / name} is a symbolic link (to {os.readlink(run_dir / name)}), which compose_gen never makes: through it "
                "this run would read, write and rotate away the files of another folder; make it a folder of the run's own"
            )


def check_loadable(run_dir: Path, trained: bool, checkpoint: str | Path | None) -> None:
    """Refuse ``run_dir`` to load from: no run folder, or (when a ``trained`` model is asked for) no checkpoint yet."""
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir}: no such folder (give a run folder, which `compose-gen train` makes)")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is a file, not a run folder (give the folder that holds {SPEC_FILE})")
    if not (run_dir / SPEC_FILE).exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no {SPEC_FILE})")
    if not (run_dir / SPEC_FILE).is_file():  # a FIFO would hang the reader
        raise CheckpointError(f"{run_dir / SPEC_FILE} is not a regular file, which the run folder's spec always is")
    _refuse_links(run_dir)
    if trained and checkpoint is None and not list_checkpoints(run_dir):
        refuse_if_busy(run_dir)  # a training still before its first checkpoint: say that, not "train it first"
        refuse_to_start_over(run_dir, why="none was written before the training stopped, or they were removed, so there is no trained model to load")
        raise CheckpointError(f"{run_dir} holds no checkpoint yet; train it first: compose-gen train --resume {run_dir}")


def refuse_to_start_over(run_dir: Path, instead: str | None = None, why: str = "starting over would overwrite them") -> None:
    """A folder that has no checkpoint but records of training: training there would start over and overwrite them."""
    records = read_metrics(run_dir / METRICS_FILE)
    evaluated = (run_dir / EVALUATION_FILE).exists()
    if not records and not evaluated:
        return
    refuse_if_busy(run_dir)  # a live training that has not checkpointed yet: say that, not that it is stale
    step = max((r["step"] for r in records if isinstance(r.get("step"), int)), default=0)
    found = " and ".join(name for name, present in ((METRICS_FILE, records), (EVALUATION_FILE, evaluated)) if present)
    raise CheckpointError(
        f"{run_dir} holds no checkpoint, but {found} (up to step {step}): {why}; "
        + (instead or f"train into a new folder instead: compose-gen train {run_dir / SPEC_FILE} --out NEW_DIR")
    )


def checkpoint_path(run_dir: Path, which: str | Path) -> Path:
    """``which`` checkpoint of ``run_dir``: ``"best"``, or a folder of its own (a relative path is taken in the run folder)."""
    folder = run_dir / CHECKPOINTS_DIR
    if str(which) != "best":
        path = Path(which)
        if not path.is_absolute():  # in the run folder, or its checkpoints folder (a bare step-00000040)
            path = next((p for p in (run_dir / path, folder / path) if p.exists()), path)
        if path.resolve().parent != folder.resolve() or not STEP_FOLDER.fullmatch(path.name) or not path.is_dir():
            raise CheckpointError(f"{which} is not a checkpoint of {run_dir}: give one of its own, {_named(run_dir)}")
        return path
    best = read_best(run_dir)
    if best is None and (folder / BEST_FILE).exists():  # damaged: the newest checkpoint keeps the record too
        best = recorded_best(run_dir)
        if best is None:
            raise CheckpointError(
                f"{folder / BEST_FILE}: unreadable (damaged or edited), and no checkpoint records the best either, so it is "
                f"unknown; give another checkpoint, {_named(run_dir)}"
            )
    if best is None:
        raise CheckpointError(f"{run_dir}: no best checkpoint recorded ({folder / BEST_FILE} is absent: train.best_metric tracks one)")
    path = folder / step_folder_name(int(best["step"]))
    if not path.is_dir():
        raise CheckpointError(f"{folder / BEST_FILE} names {path.name}, which is gone; give another checkpoint, {_named(run_dir)}")
    return path


def _named(run_dir: Path) -> str:
    """``one of step-…, step-…`` in the checkpoints folder of ``run_dir``, or that it holds none."""
    names = [path.name for path in list_checkpoints(run_dir)]
    return f"one of {', '.join(names)}" if names else f"but {run_dir / CHECKPOINTS_DIR} holds none"


def load_chosen(
    run_dir: Path,
    model: nn.Module,
    checkpoint: str | Path | None,
    overrides: list[str],
    weights_only: bool,
    say: Callable[[str], None],
) -> tuple[Checkpoint | None, str | None]:
    """The ``checkpoint`` of ``run_dir`` (see :func:`checkpoint_path`), or with None its newest readable one, loaded
    into ``model`` (its optimizer state too unless ``weights_only``), and why it is not the folder's newest (or None).

    With None, checkpoints skipped as unreadable are said (``say``); a folder with no checkpoint gives None,
    unless it holds records of training that starting over would overwrite, or only unreadable checkpoints.
    """
    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint_path(run_dir, checkpoint), model, optimizer=not weights_only)
        newest = list_checkpoints(run_dir)[-1]
        if loaded.path.resolve() != newest.resolve():
            return loaded, f"step {loaded.step} is loaded, not the newest checkpoint ({newest.name})"
        return loaded, None
    loaded, skipped = load_latest(run_dir, model, optimizer=not weights_only)
    if loaded is None and skipped:
        raise CheckpointError(f"{run_dir}: no checkpoint could be loaded{_model_changed(run_dir, skipped, overrides)}: " + "; ".join(skipped))
    if loaded is None:
        refuse_to_start_over(run_dir)
        return None, None
    for reason in skipped:
        say(f"warning: {reason}")
    return loaded, f"step {loaded.step} is loaded, but a newer checkpoint could not be" if skipped else None


def _model_changed(run_dir: Path, skipped: list[str], overrides: list[str]) -> str:
    """Where no checkpoint fits the model, what may have changed it: the ``--set`` overrides or an edit of the spec."""
    if not any("does not fit this model" in reason for reason in skipped):
        return ""
    told = [o for o in overrides if not o.startswith("train.steps=")]  # --steps says train.steps, which is no model
    by = "the --set overrides" if told else f"an edit of {run_dir / SPEC_FILE}"
    return f"; {by} may have changed the model, which a run cannot change once trained"


def override_keys(overrides: Iterable[str]) -> set[str]:
    """The dotted keys that ``--set KEY=VALUE`` overrides set."""
    return {o.split("=", 1)[0].strip() for o in overrides}


def moved_split_keys(overrides: Iterable[str]) -> list[str]:
    """The keys of ``overrides`` that may move examples between the data's splits (:data:`SPLIT_KEYS`, the seed)."""
    return sorted(k for k in override_keys(overrides) if k == "seed" or (k.startswith("data") and k.split(".")[-1] in SPLIT_KEYS))
