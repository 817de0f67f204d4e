"""Whether a metric left the data as it found it: :func:`snapshot` before it, :func:`data_change` after.

A split's tensors are compared by identity and version counter, which every in-place change moves on (no copy of
the data is kept); its settings (``ladj_to_model``, ``num_classes``, ``meta``, ...) by value, dicts and lists entry
by entry.  A change through ``.data`` or a NumPy view moves no counter and goes unseen.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import Tensor

from compose_gen.core.data import Splits, TensorData

__all__ = ["data_change", "snapshot"]


@dataclass(frozen=True)
class _Seen:
    """One split as a metric found it: which :class:`TensorData` it is, its settings (``ladj_to_model``,
    ``num_classes``, ...; dicts and lists copied) and each field's tensor with its version counter, which each in-place
    change moves on (so too for the tensors in ``meta``).  No copy of the data."""

    half: TensorData
    settings: dict[str, Any]
    fields: dict[str, tuple[Tensor, int | None]]


def snapshot(data: Splits) -> dict[str, _Seen]:
    """What :func:`data_change` compares against, for each split."""
    return {split: _seen(half) for split, half in (("train", data.train), ("test", data.test))}


class _Tensor(NamedTuple):
    """A tensor among a split's settings (in ``meta``) and its version counter then."""

    tensor: Tensor
    version: int | None


def _version(tensor: Tensor) -> int | None:
    """The tensor's version counter; None for an inference tensor, which keeps none (its changes go unseen)."""
    return None if tensor.is_inference() else tensor._version


def _seen(half: TensorData) -> _Seen:
    settings = {f.name: _as_now(getattr(half, f.name)) for f in dataclasses.fields(half) if f.name != "fields"}
    return _Seen(half, settings, {name: (values, _version(values)) for name, values in half.fields.items()})


def _as_now(setting: Any, within: frozenset[int] = frozenset()) -> Any:
    """A setting as :func:`_same` compares it later: a tensor with its version counter, a dict, list or tuple copied
    entry by entry (one inside itself kept as it is)."""
    if isinstance(setting, Tensor):
        return _Tensor(setting, _version(setting))
    if id(setting) in within:
        return setting
    if isinstance(setting, dict):
        return {key: _as_now(value, within | {id(setting)}) for key, value in setting.items()}
    if type(setting) in (list, tuple):
        return type(setting)(_as_now(value, within | {id(setting)}) for value in setting)
    return setting


def _same(now: Any, then: Any) -> bool:
    """Whether a setting is as it was: the same object, the same tensor unchanged, or equal (a dict or list entry by
    entry); a tensor or array put in its place, which has no single truth value to compare by, counts as a change."""
    if isinstance(now, _Tensor) and isinstance(then, _Tensor):
        return now.tensor is then.tensor and now.version == then.version
    if now is then:
        return True
    if isinstance(now, dict) and isinstance(then, dict):
        return now.keys() == then.keys() and all(_same(now[key], then[key]) for key in now)
    if type(now) in (list, tuple) and type(now) is type(then):
        return len(now) == len(then) and all(map(_same, now, then))
    try:
        return bool(now == then)
    except (TypeError, ValueError, RuntimeError):
        return False


def data_change(data: Splits, before: dict[str, _Seen]) -> str | None:
    """What changed in ``data`` since ``before``, as a message says it: a split or a field replaced by another, a setting
    of a split, a field added, removed or changed in place; views of one tensor share a version counter, so fields
    sharing memory with the one changed are named as the alternatives they are."""
    now = snapshot(data)
    for split, seen in now.items():
        if seen.half is not before[split].half:
            return f"replaced the {split} split"
        settings = [name for name, value in seen.settings.items() if not _same(value, before[split].settings[name])]
        if settings:
            return f"changed the {split} split's {settings[0]}"
    fields = {(split, name): field for split, seen in now.items() for name, field in seen.fields.items()}
    earlier = {(split, name): field for split, seen in before.items() for name, field in seen.fields.items()}
    added, removed = sorted(fields.keys() - earlier.keys()), sorted(earlier.keys() - fields.keys())
    if added or removed:
        split, name = (added or removed)[0]
        return f"{'added' if added else 'removed'} the {split} split's {name!r}"
    replaced = [f"{split} split's {name!r}" for (split, name), (values, _) in fields.items() if values is not earlier[split, name][0]]
    if replaced:
        return f"replaced the {replaced[0]}"
    moved = [key for key, (_, version) in fields.items() if version != earlier[key][1]]
    if not moved:
        return None
    storage = fields[moved[0]][0].untyped_storage().data_ptr()
    sharing = [f"{split} split's {name!r}" for split, name in moved if fields[split, name][0].untyped_storage().data_ptr() == storage]
    return f"changed the {sharing[0] if len(sharing) == 1 else ' or '.join(sharing) + ' (which share memory)'} in place"
