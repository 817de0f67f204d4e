"""The import rules of DESIGN.md, checked on the source: layers import downward only, and plugins use the public API."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: compose_gen's layers, lowest first; a module may import its own layer and those before it.
LAYERS = ["core", "registry", "spec", "compiler", "runtime", "testing", "api", "cli"]
#: What a plugin may import from: the packages whose ``__all__`` is the public API.
PUBLIC = {"compose_gen", "compose_gen.core", "compose_gen.registry"}


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every absolute import in ``path``, at any depth (function-level ones too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, []) for alias in node.names)
    return found


def layer_of(module: str) -> str | None:
    """The layer ``module`` belongs to; the package itself re-exports the api, the top but for the CLI."""
    parts = module.split(".")
    if parts[0] != "compose_gen":
        return None
    return parts[1] if len(parts) > 1 else "api"


def package_modules() -> list[Path]:
    return [p for p in sorted((ROOT / "compose_gen").rglob("*.py")) if layer_of(".".join(p.relative_to(ROOT).with_suffix("").parts))]


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_compose_gen_imports_point_downward_and_never_at_plugins(path: Path) -> None:
    own = layer_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
    if own not in LAYERS:  # __main__ runs the CLI
        return
    for line, module, _ in imports(path):
        assert not module.startswith("compose_gen_plugins"), f"{path}:{line} imports {module}"
        target = layer_of(module)
        if target in LAYERS:
            assert LAYERS.index(target) <= LAYERS.index(own), f"{path}:{line}: layer {own} imports {module}, a layer above it"


@pytest.mark.parametrize(
    "path", sorted([*(ROOT / "plugins").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]), ids=lambda p: str(p.relative_to(ROOT))
)
def test_plugins_use_only_the_public_api(path: Path) -> None:
    for line, module, names in imports(path):
        if module.split(".")[0] != "compose_gen":
            continue
        assert module in PUBLIC, f"{path}:{line} imports {module}; plugins import from {', '.join(sorted(PUBLIC))}"
        public = set(importlib.import_module(module).__all__)
        assert set(names) <= public, f"{path}:{line} imports {sorted(set(names) - public)}, not in {module}.__all__"
