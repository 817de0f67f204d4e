"""Crash-safe checkpoints that load without unpickling anything.

A checkpoint is a folder ``checkpoints/step-00001000/`` holding

* ``model.safetensors`` — every parameter and buffer (a tensor registered under
  several names, e.g. an encoder held by the model and by its ELBO, is stored
  once and listed under ``aliases`` in ``state.json``);
* ``optim.safetensors`` — optimizer tensors and every process's RNG states;
* ``state.json`` — step, data-stream position, optimizer hyper-parameters,
  gradient-scaler state, the best checkpoint so far, and the SHA-256 of both
  tensor files.

It is written into a temporary folder, each file and the folder fsynced, then
renamed into place, so a crash (even SIGKILL) leaves either the old set of
checkpoints or the new one, plus at worst a ``.tmp-*`` folder that the next run
removes.  Loading verifies the hashes and that every tensor fits the model
before touching it (only the tensors the model owns must be there: a name that
shares another's tensor takes its value, so a sampler of another type, ``--set
sample=...``, loads a trained run) and that ``state.json`` records the step its
folder is named for; :func:`load_latest` falls back to the newest checkpoint
that verifies, but not past one that reads and does not fit the model.  The moving averages of weights (``train.ema``) may be there or
not: a spec that drops them, or adds them, loads the run with a note saying so.
The newest ``keep`` checkpoints up to the step written are kept, and any others
the trainer protects (the best one, named in ``checkpoints/best.json``); a later
one (which a resume skipped as unreadable) is not this training's to rotate, and
counting it would delete the checkpoint just written.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import reprlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError, field_validator, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from compose_gen.core.errors import described
from compose_gen.core.files import fsync, read_json, regular_file_stat
from compose_gen.runtime.layout import BEST_FILE, CHECKPOINTS_DIR, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, STEP_FOLDER, step_folder_name

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointMismatch",
    "checkpoint_step",
    "clean_temporary",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest",
    "read_best",
    "recorded_best",
    "restore_optimizers",
    "save_checkpoint",
    "verify_checkpoint",
]

FORMAT = 2


class CheckpointError(Exception):
    """A checkpoint that is missing, truncated, corrupt or does not fit the model."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint that reads, whose tensors' names or shapes are not the model's (the spec changed it)."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]
    #: Optimizer and RNG tensors; None when only the weights were loaded (for sampling and evaluation).
    tensors: dict[str, torch.Tensor] | None
    #: What the user should know about how it was loaded (moving averages dropped or started afresh).
    notes: list[str] = field(default_factory=list)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoint folders, oldest first: those named ``step-N``, by N.  A file so named is listed too, as a
    checkpoint that cannot be read: left out, the one before it was taken for the newest, and its evaluation written
    over the newer one's.

    Any other folder (a user's copy, ``step-backup`` or ``step-00000060.bak``) is no
    checkpoint: taken for the newest, it would send a resume back to its step, to
    overwrite the newer checkpoints and logs, and it would never be rotated away.
    """
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    named = [(int(match[1]), p) for p in folder.iterdir() if (match := STEP_FOLDER.fullmatch(p.name))]
    return [p for _, p in sorted(named)]


def checkpoint_step(checkpoint: Path) -> int:
    """The step a checkpoint folder of :func:`list_checkpoints` is named for."""
    return int(STEP_FOLDER.fullmatch(checkpoint.name)[1])  # type: ignore[index]


def clean_temporary(run_dir: Path) -> None:
    """Remove half-written checkpoint folders left by a killed process."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if folder.is_dir():
        for tmp in folder.glob(".tmp-*"):
            _delete(tmp)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
    rng: dict[str, torch.Tensor],
    keep: int,
    protect: Iterable[int] = (),
    spare: Iterable[int] = (),
) -> Path:
    """Atomically write a checkpoint for ``step``; keep the newest ``keep`` and the ``protect``-ed steps, and the ``spare``-d
    ones, which do not count among the newest (the unreadable checkpoints a resume went on from behind)."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / step_folder_name(step)
    tmp = folder / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(tmp, step, model, optimizers, state, rng)
    except (OSError, SafetensorError) as error:  # a full disk: the half-written folder goes, the earlier checkpoints stay
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"{final}: could not write the checkpoint of step {step} ({described(error)}); "
            "it is not saved, and the earlier checkpoints stay"
        ) from None
    except BaseException:  # a second Ctrl-C while writing: nothing would ever remove the half-written folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        _remove(final)
    os.replace(tmp, final)
    fsync(folder)
    kept, spared = {step_folder_name(s) for s in protect}, {step_folder_name(s) for s in spare}
    for old in [path for path in list_checkpoints(run_dir) if checkpoint_step(path) <= step and path.name not in spared][:-keep]:
        if old.name not in kept:
            _remove(old)
    return final


def _write(
    tmp: Path, step: int, model: nn.Module, optimizers: dict[str, torch.optim.Optimizer], state: dict[str, Any], rng: dict[str, torch.Tensor]
) -> None:
    """The checkpoint's files, fsynced, into the new folder ``tmp``."""
    tmp.mkdir()
    tensors, aliases = _model_tensors(model)
    save_file(tensors, str(tmp / MODEL_FILE))
    optim_tensors, optim_meta = _flatten_optimizers(optimizers, parameter_names(model))
    save_file({**optim_tensors, **{f"rng/{k}": v.contiguous() for k, v in rng.items()}}, str(tmp / OPTIMIZER_FILE))
    payload = {
        "format": FORMAT,
        "step": step,
        "optimizers": optim_meta,
        "aliases": aliases,
        "sha256": {name: _sha256(tmp / name) for name in (MODEL_FILE, OPTIMIZER_FILE)},
        **state,
    }
    (tmp / STATE_FILE).write_text(json.dumps(payload, indent=1))
    for file in tmp.iterdir():
        shutil.copymode(tmp / STATE_FILE, file)  # safetensors writes 0600; the folder's files share the umask's mode
        fsync(file)
    fsync(tmp)


def _remove(checkpoint: Path) -> None:
    """Take a checkpoint out of the listing with one rename, then delete it (a crash leaves a ``.tmp-*``)."""
    doomed = checkpoint.with_name(f".tmp-old-{checkpoint.name}-{os.getpid()}")
    _delete(doomed)
    os.replace(checkpoint, doomed)
    _delete(doomed)


def _delete(path: Path) -> None:
    """Delete a folder with what it holds, or a file (one named as a checkpoint, which is none), if there; a link (a
    checkpoint folder linked in from another run) goes itself, what it points to stays (``rmtree`` refused it silently,
    so the link stayed behind as ``.tmp-old-*`` for good)."""
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def read_best(run_dir: Path) -> dict[str, Any] | None:
    """The best checkpoint's record (step, metric, mode, value), if the run tracks one and the file is whole."""
    try:
        best = read_json(Path(run_dir) / CHECKPOINTS_DIR / BEST_FILE)
    except (OSError, ValueError):
        return None
    return best if _whole_best(best) else None


def recorded_best(run_dir: Path) -> dict[str, Any] | None:
    """The best record that the newest checkpoint whose files are whole holds (each checkpoint's ``state.json`` keeps
    the best as of its step, as ``best.json`` does): what stands in for a damaged ``best.json``."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            best = verify_checkpoint(path, hashes=False).get("best")
        except CheckpointError:
            continue
        return best if _whole_best(best) else None
    return None


def _whole_best(best: Any) -> bool:
    """A best record with its step, metric and value (an edited ``{"step": 30}`` would make any checkpoint the best)."""
    if not isinstance(best, dict):
        return False
    step, metric, value = best.get("step"), best.get("metric"), best.get("value")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(step, int) and not isinstance(step, bool) and isinstance(metric, str) and number


def verify_checkpoint(path: Path, hashes: bool = True, optimizer: bool = True) -> dict[str, Any]:
    """The ``state.json`` of the checkpoint at ``path`` once it and the hashes of its files check out.

    A folder named ``step-N`` must hold step N: its ``state.json`` is not hashed, and
    a resume from a step other than its weights' would later overwrite the true ``step-N``.
    Without ``hashes``, each file's size is checked against its safetensors header instead:
    a truncated file is found without reading the whole of it.  Without ``optimizer``, the
    optimizer file is not checked: its weights are all that sampling and evaluation read.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path}: no checkpoint folder but a file, which holds no checkpoint")
    try:
        state = read_json(path / STATE_FILE)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"{path}: checkpoint format {found!r}, this version reads {FORMAT}")
        named = STEP_FOLDER.fullmatch(path.name)
        if named and state.get("step") != int(named[1]):
            raise CheckpointError(
                f"{path / STATE_FILE}: records step {state.get('step')!r}, but its folder is named for step {int(named[1])}: "
                "the file was edited or the folder renamed, so the step of its weights is unknown; "
                "restore the original, or load another checkpoint"
            )
        _check_state(path / STATE_FILE, state)
        for name, digest in state["sha256"].items():
            if name == OPTIMIZER_FILE and not optimizer:
                continue
            regular_file_stat(path / name)  # an OSError for a FIFO, which would hang the read
            if hashes and _sha256(path / name) != digest:
                raise CheckpointError(f"{path / name}: contents do not match the hash recorded in state.json (corrupt or truncated)")
            if not hashes and not _size_fits_header(path / name):
                raise CheckpointError(f"{path / name}: not as long as its header says (truncated or damaged)")
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({described(error)})") from None
    return state


def load_checkpoint(path: Path, model: nn.Module, optimizer: bool = True) -> Checkpoint:
    """Verify one checkpoint (:func:`verify_checkpoint`) and load it into ``model``; optimizer and RNG tensors are
    returned for the trainer, unless ``optimizer`` is False (weights only: the optimizer file is neither read nor
    checked).  Nothing is loaded into ``model`` unless every check passes."""
    path = Path(path)
    state = verify_checkpoint(path, optimizer=optimizer)
    try:
        step = int(state["step"])
        stored = load_file(str(path / MODEL_FILE))
        lost = sorted({original for original in state["aliases"].values() if original not in stored})
        if lost:
            raise CheckpointError(f"{path}: {STATE_FILE} names tensors as aliases that {MODEL_FILE} lacks ({lost[:3]}); the files were edited or damaged")
        saved_aliases = {alias: stored[original] for alias, original in state["aliases"].items()}
        fitted, dropped, unsaved = _fitted(path, model, stored, saved_aliases)
        extra = load_file(str(path / OPTIMIZER_FILE)) if optimizer else None
        model.load_state_dict(fitted, strict=True)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, json.JSONDecodeError, SafetensorError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({described(error)})") from None
    notes = []
    if dropped:
        notes.append(
            f"{path}: its moving averages of weights are not used, as the spec has no train.ema: the run samples, evaluates "
            "and trains on the live weights (to use them, load it with the train.ema it was trained with)"
        )
    if unsaved:
        notes.append(
            f"{path}: holds no weights for {', '.join(unsaved)} (inline parts that checkpoints of earlier compose_gen versions did "
            "not save, or that the spec it was written with did not train): they start from their built weights"
        )
    if any(name.startswith(AVERAGES) for name in fitted) and not any(name.startswith(AVERAGES) for name in stored):
        model.ema.restart()
        notes.append(f"{path}: holds no moving averages of weights (trained without train.ema): averaging starts at step {step}, from its weights")
    return Checkpoint(path, step, state, extra, notes)


class _Record(BaseModel):
    """A part of ``state.json``: JSON types as the trainer wrote them (strict: no ``"3"`` for 3, no ``true`` for 1)."""

    model_config = ConfigDict(strict=True)


class _LogWindow(_Record):
    names: list[str]
    count: PositiveInt  # the steps that logged these names since the last line: a group is made by its first
    sums: list[float | None]  # a non-finite sum is written as null (json_text)

    @model_validator(mode="after")
    def _a_sum_per_name(self) -> "_LogWindow":
        if len(self.sums) != len(self.names):
            raise ValueError(f"it holds {len(self.sums)} sums for {len(self.names)} names")
        return self


class _Best(_Record):
    metric: str
    mode: Literal["min", "max"]
    value: float
    step: NonNegativeInt


class _Stream(_Record):
    epoch: NonNegativeInt
    position: NonNegativeInt


class _Optimizer(_Record):
    model_config = ConfigDict(extra="allow")

    state: dict[str, dict[str, Any]]  # by the index of a parameter: its moments, "<tensor>" where optim.safetensors holds them
    param_groups: list[dict[str, Any]]
    params: list[str] | None = None  # older checkpoints: read by position


class _State(_Record):
    """What the trainer reads back from ``state.json``; entries older versions did not write are optional, others are kept."""

    model_config = ConfigDict(extra="allow")

    step: NonNegativeInt
    sha256: dict[str, str]
    aliases: dict[str, str] = {}
    optimizers: dict[str, _Optimizer] = {}
    data: _Stream
    nan_skips: NonNegativeInt = 0
    elapsed_s: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    running: list[_LogWindow] = []
    best: _Best | None = None
    former_bests: list[_Best] = []
    trained_on: list[str] = []
    trained_with: list[str] = []
    model_sha256: str | None = None  # older checkpoints: the model spec of the last resume alone
    test_sha256: str | None = None

    @field_validator("sha256")
    @classmethod
    def _a_hash_per_file(cls, sha256: dict[str, str]) -> dict[str, str]:
        """Each file is checked against its hash: one whose hash is gone would be read unchecked."""
        missing = [name for name in (MODEL_FILE, OPTIMIZER_FILE) if name not in sha256]
        if missing:
            raise ValueError(f"it holds no hash of {', '.join(missing)}")
        return sha256


def _check_state(path: Path, state: Any) -> None:
    """A :class:`CheckpointError` naming the entry of ``state.json`` that is not what the trainer reads (an edited file)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds {type(state).__name__}, not a mapping")
    try:
        _State.model_validate(state)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(map(str, first["loc"]))
        found = "missing" if first["type"] == "missing" else f"{reprlib.repr(first['input'])}"
        raise CheckpointError(f"{path}: {where} is {found}: {first['msg'].lower()}; the file was edited or damaged") from None


def load_latest(run_dir: Path, model: nn.Module, optimizer: bool = True) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint that loads (see :func:`load_checkpoint`), and a warning for every newer one that did not.

    One that reads but does not fit ``model`` ends the search with None: an older one may fit (one from before
    ``train.ema`` listed other components), and loading it would silently throw away the training after it.
    """
    warnings = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            checkpoint = load_checkpoint(path, model, optimizer)
        except CheckpointMismatch as error:
            return None, [*warnings, f"skipped {error}"]
        except CheckpointError as error:
            warnings.append(f"skipped {error}")
        else:
            return checkpoint, warnings
    return None, warnings


def parameter_names(model: nn.Module) -> dict[int, str]:
    """Each parameter of ``model``, by identity, under its name in the model's state dict (a shared one under its first)."""
    return {id(p): name for name, p in model.named_parameters()}


def restore_optimizers(checkpoint: Checkpoint, optimizers: dict[str, torch.optim.Optimizer], names: dict[int, str]) -> list[str]:
    """Load each player's optimizer state (moments, step counts) into its parameters, found by their ``names``
    (:func:`parameter_names`); return notes for the user.

    The state follows each parameter by name, so a resume whose spec lists a player's
    ``params`` in another order keeps each parameter's moments; a parameter new to the
    player starts with fresh state, and that of one it no longer trains is dropped, each
    said in a note.  (Checkpoints older than the names are read by position, and refused
    where a moment's shape is not its parameter's.)  The hyper-parameters stay the spec's
    (a resume's ``--set train.optimizer.betas=...`` takes effect), and a player whose
    optimizer type changed starts that optimizer afresh.
    """
    notes = []
    try:
        for player, optimizer in optimizers.items():
            meta = checkpoint.state["optimizers"].get(player)
            if meta is None:
                raise CheckpointError(f"{checkpoint.path}: no optimizer state for player {player!r}")
            kind = type(optimizer).__name__
            if meta.get("type", kind) != kind:
                notes.append(f"player {player!r}: the optimizer changed from {meta['type']} to {kind}; it starts afresh")
                continue
            params = [p for group in optimizer.param_groups for p in group["params"]]
            current = [names.get(id(p), f"parameter {i}") for i, p in enumerate(params)]
            if "params" in meta:
                where = {name: i for i, name in enumerate(meta["params"])}
                indices = [where.get(name) for name in current]
                notes += _changed_parameters(player, current, meta["params"])
            else:  # an older checkpoint: by position
                indices = list(range(sum(len(group["params"]) for group in meta["param_groups"])))
                if len(indices) != len(params):
                    raise ValueError(f"the checkpoint holds the state of {len(indices)} parameters, player {player!r} has {len(params)}")
            state: dict[int, dict[str, Any]] = {}
            for i, (index, name, param) in enumerate(zip(indices, current, params, strict=True)):
                if index is None or str(index) not in meta["state"]:
                    continue
                state[i] = {
                    key: checkpoint.tensors[f"optim/{player}/{index}/{key}"] if value == "<tensor>" else value
                    for key, value in meta["state"][str(index)].items()
                }
                for key, value in state[i].items():  # a fused kernel would read past a moment smaller than its parameter
                    if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                        raise ValueError(f"its {key} for {name} has shape {tuple(value.shape)}, the parameter {tuple(param.shape)}")
            settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
            starts = list(itertools.accumulate((len(group["params"]) for group in optimizer.param_groups), initial=0))[:-1]
            groups = [
                {**saved_group, "params": list(range(start, start + len(group["params"])))}
                for saved_group, group, start in zip(meta["param_groups"], optimizer.param_groups, starts, strict=True)
            ]
            optimizer.load_state_dict({"state": state, "param_groups": groups})
            for group, setting in zip(optimizer.param_groups, settings, strict=True):
                group.update(setting)
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as error:
        raise CheckpointError(f"{checkpoint.path}: optimizer state does not fit ({described(error)})") from None
    return notes


def _changed_parameters(player: str, current: list[str], saved: list[str]) -> list[str]:
    """Notes on the parameters a player trains now and did not when the checkpoint was saved, and the other way round."""
    before, now = set(saved), set(current)
    new, gone = [n for n in current if n not in before], [n for n in saved if n not in now]
    notes = []
    if new:
        notes.append(f"player {player!r} now trains {_some(new)}, which it did not: they start with fresh optimizer state")
    if gone:
        notes.append(f"player {player!r} no longer trains {_some(gone)}: their optimizer state is dropped")
    return notes


def _some(names: list[str]) -> str:
    return f"{len(names)} parameter(s) ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"


#: Where the compiled model keeps its sampler: tensors only a sampler holds are never trained, so another sampler may drop them.
SAMPLER = "sampler."
#: Where the trainer keeps the moving averages of weights (``train.ema``): a spec may drop them, or add them to a run trained without.
AVERAGES = "ema."
#: The prefix of the inline parts a model holds because their parents do not (a loss's critic), which older checkpoints lack.
UNOWNED = "unowned."


def _aliases(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Each name whose tensor an earlier name of ``state`` already holds (same storage and view), mapped to that name."""
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape, tensor.stride(), tensor.dtype)
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
    return aliases


def _model_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Contiguous CPU copies of the state dict, each shared tensor once, and the aliases of the others."""
    state = model.state_dict()
    aliases = _aliases(state)
    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in state.items() if name not in aliases}
    return tensors, aliases


def _fitted(
    path: Path, model: nn.Module, stored: dict[str, torch.Tensor], saved_aliases: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], bool, list[str]]:
    """The checkpoint's tensors under every name of ``model``'s state dict, or :class:`CheckpointError` saying what does not fit;
    whether the checkpoint's moving averages were left out; and the inline parts it holds no weights for (``unowned.*``,
    which older checkpoints lack: they keep their built values).  Its ``unowned.*`` tensors that the model does not hold
    (inline parts the spec it was written with trained, or a metric's, which checkpoints held for a while) are left aside.

    Only the tensors ``model`` owns must be there: a name that shares another's
    tensor (the sampler's view of a decoder the components hold) takes that
    one's value, so a sampler of another type, holding other parts under other
    names, still loads the trained run.  Names the checkpoint only listed as
    aliases are not required of ``model`` either, nor are the tensors only the
    run's own sampler held (an inline prior of its own, which no player trains).
    Moving averages (``ema.*``) are left out when ``model`` keeps none, and are
    not required when the checkpoint holds none (they keep their built values,
    for :meth:`WeightAverage.restart`); averages of other components still do not fit.
    """
    expected = model.state_dict()
    derived = _aliases(expected)
    averaged = any(name.startswith(AVERAGES) for name in expected)
    dropped = not averaged and any(name.startswith(AVERAGES) for name in stored)
    if dropped:
        stored = {name: tensor for name, tensor in stored.items() if not name.startswith(AVERAGES)}
        saved_aliases = {name: tensor for name, tensor in saved_aliases.items() if not name.startswith(AVERAGES)}
    # A tensor the new sampler owns comes only from one the run's sampler owned, not from another part's alias of that name.
    available = {**{k: v for k, v in saved_aliases.items() if not k.startswith(SAMPLER)}, **stored}
    missing = sorted(name for name in expected if name not in derived and name not in available)
    if averaged and not any(name.startswith(AVERAGES) for name in stored):
        available.update({name: expected[name] for name in missing if name.startswith(AVERAGES)})
        missing = [name for name in missing if not name.startswith(AVERAGES)]
    unsaved = sorted({name[len(UNOWNED):].split(".", 1)[0].replace(":", ".") for name in missing if name.startswith(UNOWNED)})
    available.update({name: expected[name] for name in missing if name.startswith(UNOWNED)})
    missing = [name for name in missing if not name.startswith(UNOWNED)]
    if missing and all(name.startswith(SAMPLER) for name in missing):
        parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)} & set(missing)
        if parameters:
            raise CheckpointError(
                f"{path}: the sampler has parameters of its own ({', '.join(sorted(parameters)[:3])}) that no checkpoint trained; "
                "give it the trained components by name instead"
            )
        available.update({name: expected[name] for name in missing})  # its own buffers (a standard normal's) keep their built values
        missing = []
    # another sampler's own, and inline parts this model does not train (a metric's, which no checkpoint needs)
    unexpected = sorted(name for name in set(stored) - set(expected) if not name.startswith((SAMPLER, UNOWNED)))
    owned = [(name, available[name], tensor) for name, tensor in expected.items() if name not in derived and name in available]
    wrong = [f"{name} {tuple(saved.shape)} in the checkpoint, {tuple(kept.shape)} in the model" for name, saved, kept in owned if saved.shape != kept.shape]
    # load_state_dict would cast silently: int64 weights, or bf16 ones that resume "exactly" yet rounded
    retyped = [f"{name} {saved.dtype} in the checkpoint, {kept.dtype} in the model" for name, saved, kept in owned if saved.dtype != kept.dtype]
    if missing or unexpected or wrong or retyped:
        details = []
        if missing:
            details.append(f"missing {missing[:5]} (in the model, not the checkpoint)")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]} (in the checkpoint, not the model)")
        if wrong:
            details.append(f"shapes differ: {wrong[:5]}")
        if retyped:
            details.append(f"dtypes differ: {retyped[:5]}")
        # names and shapes follow the spec, which may have changed; dtypes do not (the file was edited or damaged)
        raise (CheckpointMismatch if missing or unexpected or wrong else CheckpointError)(f"{path}: does not fit this model ({'; '.join(details)})")
    owned = {name: available[name] for name in expected if name not in derived}
    return {name: owned[derived.get(name, name)] for name in expected}, dropped, unsaved


def _flatten_optimizers(optimizers: dict[str, torch.optim.Optimizer], names: dict[int, str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizers' tensors, and for ``state.json`` the rest of their state with the ``names`` of their parameters in
    order (the state dict's indices), by which a resume finds each parameter's state."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for player, optimizer in optimizers.items():
        sd = optimizer.state_dict()
        entries: dict[str, dict[str, Any]] = {}
        for index, values in sd["state"].items():
            entries[str(index)] = {}
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim/{player}/{index}/{key}"] = value.detach().cpu().contiguous().clone()
                    entries[str(index)][key] = "<tensor>"
                else:
                    entries[str(index)][key] = value
        params = [names.get(id(p), "?") for group in optimizer.param_groups for p in group["params"]]
        meta[player] = {"type": type(optimizer).__name__, "params": params, "state": entries, "param_groups": sd["param_groups"]}
    return tensors, meta


def _size_fits_header(path: Path) -> bool:
    """Whether a safetensors file is as long as its header says: 8 bytes of header length, the header, the tensors.

    Any damage to the header itself (a length beyond the file, JSON that is not a header) is a False, not an error.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if size < 8 or length > size - 8:
            return False
        try:
            header = json.loads(handle.read(length))
            ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):  # JSON errors are ValueErrors
            return False
    return all(isinstance(end, int) for end in ends) and size == 8 + length + max(ends, default=0)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
