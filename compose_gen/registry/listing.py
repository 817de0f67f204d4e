"""The catalogue for people (``compose-gen plugins [NAME ...]``) or as JSON (``--json``).

Without names: every type, one table per kind.  With names of types: each
type's description (its build's, or a metric's, docstring) and its parameters with
their types, defaults and descriptions.  A kind as a
name (``bijector``) lists just that kind.
"""

from __future__ import annotations

import json
import types
from typing import Annotated, Any, Literal, Sequence, TextIO, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from compose_gen.registry.catalogue import Catalogue, failed_plugins_note, suggest
from compose_gen.registry.types import KINDS, LossRef, RefTo, ValueRef, ref_fields

__all__ = ["describe", "render", "select"]


def describe(catalogue: Catalogue) -> dict[str, Any]:
    """Every type with kind, plugin, doc and parameters (name → type, default, description), plus failed plugins and those
    slow to import."""
    listing = []
    for name in sorted(catalogue.types, key=lambda n: (catalogue.types[n].kind, n)):
        t = catalogue.types[name]
        references = dict(ref_fields(t.params))
        params = {}
        for field, info in t.params.model_fields.items():
            entry: dict[str, Any] = {"type": _field_type(info, references.get(field))}
            if info.is_required():
                entry["required"] = True
            elif info.default_factory_takes_validated_data:
                entry["default"] = "computed from the other parameters"
            else:
                default = info.get_default(call_default_factory=True)
                entry["default"] = to_jsonable_python(default, fallback=repr)
            if info.description:
                entry["description"] = info.description
            params[field] = entry
        entry = {"name": name, "kind": t.kind, "plugin": catalogue.plugin_of[name], "doc": t.doc, "params": params}
        listing.append({**entry, "help": t.help} if t.help.strip() != t.doc.strip() else entry)
    return {"types": listing, "failed_plugins": catalogue.failures, "slow_plugins": catalogue.slow_imports()}


def _field_type(info: FieldInfo, reference: RefTo | ValueRef | LossRef | None) -> str:
    """What a spec writes for the field: ``component (encoder)``, ``value``, ``'elbo' | 'iwae'``, ``list[int]``, …"""
    if isinstance(reference, RefTo):
        single = f"component ({' | '.join(reference.kinds)})"
        return f"list[{single}]" if get_origin(info.annotation) in (list, tuple) else single
    if isinstance(reference, ValueRef):
        return "value"
    if isinstance(reference, LossRef):
        return "loss name"
    return _type_text(info.annotation)


def _type_text(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_text(args[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = annotation.model_fields
        if "type" in fields:
            return " | ".join(get_args(fields["type"].annotation))  # a tagged entry, by its tag
        return "{" + ", ".join(fields) + "}"  # nested settings, by their keys
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _type_text(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def select(listing: dict[str, Any], names: Sequence[str] = ()) -> dict[str, Any]:
    """The listing of the named types and of every type of the named kinds (everything without ``names``).

    Raises ``ValueError`` for an unknown name, suggesting the closest type or kind.
    """
    by_name = {t["name"]: t for t in listing["types"]}
    for name in names:
        if name not in by_name and name not in KINDS:
            raise ValueError(f"no type or kind {name!r}{suggest(name, [*by_name, *KINDS])}{failed_plugins_note(listing['failed_plugins'])}")
    if not names:
        return listing
    chosen = [t for t in listing["types"] if t["name"] in names or t["kind"] in names]
    return {**listing, "types": chosen}


class _PipedConsole(Console):
    """Lets a closed pipe (``| head``) reach the command line, which ends quietly (rich's own answer is exit code 1)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def render(listing: dict[str, Any], names: Sequence[str] = (), file: TextIO | None = None) -> None:
    """The overview (no ``names``), one kind (a kind's name), or the named types' parameters, on ``file`` (stdout).

    Raises ``ValueError`` for an unknown name, suggesting the closest type or kind.
    """
    console = _PipedConsole(file=file)
    select(listing, names)  # checks the names
    by_name = {t["name"]: t for t in listing["types"]}
    kinds = [n for n in names if n in KINDS] or ([] if names else list(KINDS))
    for kind in kinds:
        _overview(console, kind, [t for t in listing["types"] if t["kind"] == kind])
    for name in names:
        if name in by_name:
            _details(console, by_name[name])
    for plugin, error in listing["failed_plugins"].items():
        console.print(f"[red]plugin {plugin!r}:[/red] {escape(str(error))}")
    for plugin, seconds in listing["slow_plugins"].items():
        console.print(f"[yellow]plugin {plugin!r}[/yellow] took {seconds:.1f} s to import, which every command pays: import heavy libraries where they are used")


def _overview(console: Console, kind: str, entries: list[dict[str, Any]]) -> None:
    if not entries:
        return
    table = Table(title=f"{kind} types", title_justify="left")
    table.add_column("type", no_wrap=True)  # names to type in a spec: never cut, however narrow the terminal
    table.add_column("plugin", no_wrap=True, style="dim")
    table.add_column("description")
    for t in entries:
        table.add_row(t["name"], t["plugin"], escape(t["doc"]))
    console.print(table)


def _details(console: Console, t: dict[str, Any]) -> None:
    first, *rest = [" ".join(p.split()) for p in t.get("help", t["doc"]).split("\n\n")]  # paragraphs, rewrapped to the terminal
    console.print(f"[bold]{t['name']}[/bold] ({t['kind']}, plugin {t['plugin']!r}): {escape(first)}")
    for paragraph in rest:
        console.print(escape(paragraph), highlight=False)
    table = Table()
    table.add_column("parameter", no_wrap=True)
    for column in ("type", "default", "description"):
        table.add_column(column)
    for field, p in t["params"].items():
        default = "required" if p.get("required") else json.dumps(p.get("default"), ensure_ascii=False)  # as a spec writes it
        table.add_row(field, escape(p["type"]), escape(default), escape(p.get("description", "")))
    console.print(table)
