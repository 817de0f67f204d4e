"""The catalogue as a table (``compose-gen plugins``) or as JSON (``--json``)."""

from __future__ import annotations

from typing import Any

from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from compose_gen.registry.catalogue import Catalogue

__all__ = ["describe", "render"]


def describe(catalogue: Catalogue) -> dict[str, Any]:
    """Every type with kind, plugin, doc and parameters (name → type, default), plus failed plugins."""
    types = []
    for name in sorted(catalogue.types, key=lambda n: (catalogue.types[n].kind, n)):
        t = catalogue.types[name]
        params = {}
        for field, info in t.params.model_fields.items():
            entry: dict[str, Any] = {"type": _annotation(info.annotation)}
            if info.is_required():
                entry["required"] = True
            else:
                default = info.get_default(call_default_factory=True)
                entry["default"] = to_jsonable_python(default, fallback=repr)
            if info.description:
                entry["description"] = info.description
            params[field] = entry
        types.append({"name": name, "kind": t.kind, "plugin": catalogue.plugin_of[name], "doc": t.doc, "params": params})
    return {"types": types, "failed_plugins": catalogue.failures}


def _annotation(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "")


def render(listing: dict[str, Any]) -> None:
    console = Console()
    table = Table(title="compose_gen types")
    for column in ("kind", "type", "plugin", "parameters", "description"):
        table.add_column(column)
    for t in listing["types"]:
        params = ", ".join(f"{k}*" if v.get("required") else k for k, v in t["params"].items())
        table.add_row(t["kind"], t["name"], t["plugin"], escape(params), escape(t["doc"]))
    console.print(table)
    for plugin, error in listing["failed_plugins"].items():
        console.print(f"[red]plugin {plugin!r} failed to load:[/red] {error}")
