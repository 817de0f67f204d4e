"""Loading a spec: its source, with overrides, validated against the catalogue into a :class:`Spec`."""


from __future__ import annotations

import copy
import hashlib
import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Mapping

import yaml
from pydantic import BaseModel, ValidationError

from compose_gen.registry import Catalogue, RefTo, make_catalogue, ref_fields, suggest
from compose_gen.spec.errors import Problem, SpecError, SpecWarning, format_path
from compose_gen.spec.model import EXTENSION_PREFIX, EMASpec, EvaluateSpec, PlayerSpec, SpecModel, TrainSpec, typed_section_models
from compose_gen.spec.overrides import ModelOf, apply_overrides
from compose_gen.spec.resolve import Declared, Sections, error_location, origin, pydantic_message, resolve_sections
from compose_gen.spec.source import SpecSource, load_source, source_of_mapping

__all__ = ["MODEL_SECTIONS", "Spec", "load_spec", "override_list"]


@dataclass
class Spec:
    """A validated spec: top-level settings plus resolved plugin declarations."""

    model: SpecModel
    sections: Sections
    source: SpecSource
    catalogue: Catalogue

    @property
    def name(self) -> str:
        return self.model.name

    def __repr__(self) -> str:
        overridden = f", {len(self.source.overridden)} override(s)" if self.source.overridden else ""
        return f"<Spec {self.name!r} from {self.source.name}{overridden}>"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as its source (overrides applied), validated again where it is unpickled, such as in a worker
        process, against that process's installed plugins: a catalogue's types hold code, which is not pickled."""
        if not self.catalogue.installed:
            raise TypeError(
                f"spec {self.name!r} was loaded with a catalogue of your own, which cannot be pickled (its types hold code): "
                "give the other process the spec's file or spec.source.data, and load it there with that catalogue"
            )
        return load_spec, (self.source,)

    def __copy__(self) -> "Spec":
        return replace(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> "Spec":
        """A copy of everything but the catalogue, which is shared: the registry of types, not part of the spec."""
        return Spec(*(copy.deepcopy(getattr(self, f), memo) for f in ("model", "sections", "source")), self.catalogue)

    def error(self, path: Iterable[Any], message: str) -> SpecError:
        """A located :class:`SpecError` for one problem at ``path``."""
        return SpecError([Problem(tuple(path), message)], self.source)

    def where(self, path: Iterable[Any]) -> str:
        """``path`` with the place the spec holds it, for messages that are no :class:`SpecError`: ``components.net
        (spec.yaml:12)``, or ``(--set)`` for an override."""
        path = tuple(path)
        file, line = self.source.locate(path)
        return f"{format_path(path)} ({file}:{line})" if line else f"{format_path(path)} ({file})"

    def blame(self, declared: Declared, message: str) -> SpecError:
        """A :class:`SpecError` at ``declared`` whose message starts with its type and plugin."""
        return self.error(declared.path, f"{origin(declared.type.name, self.catalogue)} {message}")

    def warn(self, path: Iterable[Any], message: str) -> None:
        """Issue a :class:`SpecWarning` located like :meth:`error`'s problem at ``path``."""
        problem = Problem(tuple(path), message)
        warnings.warn(SpecWarning(problem.format(self.source), problem.path), stacklevel=2)

    def warn_of(self, declared: Declared, message: str) -> None:
        """:meth:`warn` at ``declared``, the message starting with its type and plugin, as :meth:`blame`'s does."""
        self.warn(declared.path, f"{origin(declared.type.name, self.catalogue)} {message}")

    def to_yaml(self) -> str:
        """:meth:`to_dict` as YAML, in section order: what a run folder's ``spec.yaml`` holds."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def model_fingerprint(self, as_written: bool = False) -> str:
        """SHA-256 of the resolved :data:`MODEL_SECTIONS`: what trained weights mean depends on them, and on nothing
        else of the spec (training settings, the sampler and the metrics may change between resumes).

        ``as_written``: of the sections as the source holds them instead, which for a run folder's ``spec.yaml``
        (written resolved) is the same unless the file was edited since, while a newer compose_gen that gives a type
        another default parameter leaves it alone.
        """
        data = self.source.data if as_written else self.to_dict()
        model = {key: data.get(key) for key in MODEL_SECTIONS} if isinstance(data, Mapping) else None
        return hashlib.sha256(json.dumps(model, sort_keys=True, default=str).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The spec with every default filled in, inline components kept inline."""
        out = self.model.model_dump(mode="json", exclude_none=True)
        sections = self.sections
        components = sections.components
        if sections.data is not None:
            out["data"] = _dump(sections.data, components)
        out["components"] = {n: _dump(d, components) for n, d in components.items() if not d.inline}
        out["losses"] = {n: _dump(d, components) for n, d in sections.losses.items()}
        if sections.sampler is not None:
            out["sample"] = _dump(sections.sampler, components)
        out["evaluate"]["metrics"] = [_dump(d, components) for d in sections.metrics]
        return out


#: The sections of a spec that say what a model computes, so what its trained weights mean.
MODEL_SECTIONS = ("components", "graph", "losses")


def _dump(declared: Declared, components: Mapping[str, Declared]) -> dict[str, Any]:
    data = {"type": declared.type.name, **declared.params.model_dump(mode="json")}
    for field, marker in ref_fields(type(declared.params)):
        if not isinstance(marker, RefTo) or data.get(field) is None:
            continue
        is_list = isinstance(data[field], list)
        names = data[field] if is_list else [data[field]]
        dumped = [_dump(components[n], components) if components[n].inline else n for n in names]
        data[field] = dumped if is_list else dumped[0]
    return data


def load_spec(
    spec: str | Path | Mapping[str, Any] | SpecSource | Spec,
    overrides: Iterable[str] = (),
    catalogue: Catalogue | None = None,
) -> Spec:
    """Load, override and validate a spec from a file, a mapping, a parsed source or a loaded spec (its source again, with
    ``overrides`` on top of its own, against its catalogue unless another is given)."""
    if isinstance(spec, Spec):
        spec, catalogue = spec.source, catalogue if catalogue is not None else spec.catalogue
    if isinstance(spec, SpecSource):
        source = spec
    elif isinstance(spec, Mapping):
        source = source_of_mapping(spec)
    else:
        source = load_source(spec)
    catalogue = catalogue if catalogue is not None else make_catalogue()
    overrides = override_list(overrides)
    anchored = [text for text in overrides if text.lstrip("\"'").startswith(EXTENSION_PREFIX)]
    if anchored:  # its anchors were expanded where the sections use them when the spec was read
        raise SpecError([Problem((), f"override {anchored[0]!r} sets a block of anchors, which the sections copied when the spec was read: set the places that use it")])
    if overrides:
        source = apply_overrides(source, overrides, _model_of(catalogue))
    if not isinstance(source.data, dict):
        raise SpecError([Problem((), "a spec must be a mapping at the top level")], source)
    data = {key: value for key, value in source.data.items() if not str(key).startswith(EXTENSION_PREFIX)}
    try:
        model = SpecModel.model_validate(data)
    except ValidationError as error:
        problems = _problems(error, data)
        problems += _typed_section_problems(data, catalogue, {p.path[:1] for p in problems})
        raise SpecError(problems, source) from None
    try:
        sections = resolve_sections(model, catalogue)
    except SpecError as error:
        raise error.located(source) from None
    return Spec(model, sections, source, catalogue)


def override_list(overrides: Iterable[str]) -> list[str]:
    """``overrides`` as a list, refusing a lone string, which ``list`` would split into one override per character."""
    if isinstance(overrides, str):
        raise TypeError(f"overrides must be a list of 'key=value' strings, got the string {overrides!r}: write [{overrides!r}]")
    return list(overrides)


#: Top-level sections that hold plugin types, at any depth (inline components).
_PLUGIN_SECTIONS = frozenset({"data", "components", "losses", "sample", "evaluate"})


def _model_of(catalogue: Catalogue) -> ModelOf:
    """What validates a mapping of a given ``type`` at a spec path: an optimizer or schedule model, or a plugin's."""

    def model_of(path: tuple[Any, ...], type_name: str) -> type[BaseModel] | None:
        models = typed_section_models(path)
        if models is not None:
            return models.get(type_name)
        if path[:1] and path[0] in _PLUGIN_SECTIONS and type_name in catalogue:
            return catalogue.get(type_name).params
        return None

    return model_of


def _typed_section_problems(data: dict[str, Any], catalogue: Catalogue, broken: set[tuple[Any, ...]]) -> list[Problem]:
    """Problems in the plugin-typed sections, found even when the top level is invalid.

    Problems in sections already reported broken are left out, but their entries are still
    declared: references to a section's sound entries are then not reported unknown.
    """

    def section(key: str, kind: type, default: Any) -> Any:
        value = data.get(key, default)
        return value if isinstance(value, kind) else default

    evaluate = section("evaluate", dict, {})
    metrics = evaluate.get("metrics", [])
    view = SimpleNamespace(
        data=section("data", dict, None),
        components=section("components", dict, {}),
        graph=section("graph", dict, {}),
        losses=section("losses", dict, {}),
        sample=section("sample", dict, None),
        # a metric given by its name alone is read as the first pass reads it (EvaluateSpec's `_by_name`)
        evaluate=SimpleNamespace(metrics=[{"type": m} if isinstance(m, str) else m for m in metrics] if isinstance(metrics, list) else []),
        train=SimpleNamespace(ema=None),  # checked once the top level is valid
    )
    try:
        resolve_sections(view, catalogue)  # type: ignore[arg-type]
    except SpecError as error:
        return [p for p in error.problems if p.path[:1] not in broken]
    return []


def _problems(error: ValidationError, data: Any) -> list[Problem]:
    problems = []
    for item in error.errors():
        loc = error_location(data, item)
        if item["type"] == "extra_forbidden":
            hint = _hint(loc, data)
            if not hint and len(loc) == 1:  # no near miss at the top level: perhaps a block of anchors (`defaults: &net ...`)
                hint = f"; a top-level key of your own (one that holds anchors, say) begins with {EXTENSION_PREFIX!r}: {EXTENSION_PREFIX}{loc[0]}"
            message = f"unknown key {loc[-1]!r}{hint}"
        elif item["type"] == "missing":
            message = "required key is missing"
        else:
            message = pydantic_message(item)
        problems.append(Problem(loc, message))
    return problems


_OWNERS = {(): SpecModel, ("train",): TrainSpec, ("evaluate",): EvaluateSpec, ("train", "ema"): EMASpec}


def _hint(loc: tuple[Any, ...], data: Any) -> str:
    """A "did you mean" for an unknown key at ``loc`` of the top level, a player or a typed section (an optimizer...)."""
    where = tuple(loc[:-1])
    owner = _OWNERS.get(where)
    if owner is None and len(loc) == 3 and loc[0] == "players":
        owner = PlayerSpec
    models = typed_section_models(where) if owner is None else None
    if models:
        node = data
        for part in where:
            node = node.get(part) if isinstance(node, dict) else None
        chosen = models.get(node.get("type")) if isinstance(node, dict) else None
        fields = chosen.model_fields if chosen else {field for model in models.values() for field in model.model_fields}
        return suggest(str(loc[-1]), sorted(fields))
    return suggest(str(loc[-1]), owner.model_fields) if owner else ""
