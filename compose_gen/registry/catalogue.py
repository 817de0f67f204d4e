"""The catalogue: every registered type, built fresh by :func:`make_catalogue`.

There is no global registry.  A catalogue is built from an explicit list of
plugins and, by default, the ``compose_gen`` entry-point group; tests build one
with just the plugins they want.

A broken plugin never stops the others: what goes wrong while it is imported,
registered or asked for its types is recorded in :attr:`Catalogue.failures`
under its name, and specs that do not use it still run.  In particular:

* entry points load first-party (``compose-gen``'s own) before third-party ones,
  and a third-party entry point whose name another distribution's shares is
  loaded as ``"<name> (from <distribution>)"`` and told to rename, so no package
  can knock out another by reusing its name, whichever of them is listed first;
* a plugin passed explicitly that is also an entry point's module (a test
  passing an installed package's plugin beside the installed ones) is registered
  once, under its entry-point name; another that has an entry point's name (a
  test's own ``metrics.py``) is registered as ``"<name> (from <file>)"``, beside
  that entry point's plugin; and a type that two plugins register
  identically (same kind, parameters and build: the same code reached twice) is
  kept once, so neither clashes with itself;
* a type name registered twice keeps its first-party registration (the other
  plugin's is refused, whichever came first); between two other plugins the name
  is set aside, and a spec that uses it is told which plugins to choose between;
* a hook function with a misspelt name, or a plugin with no ``@hookimpl`` at
  all, is reported instead of silently contributing nothing.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import pluggy

from compose_gen.registry import hookspecs
from compose_gen.registry.types import ComponentType

__all__ = ["Catalogue", "failed_plugins_note", "listed", "make_catalogue", "suggest"]

ENTRY_POINT_GROUP = "compose_gen"
#: The distribution whose entry points are the first-party plugins.
FIRST_PARTY = "compose-gen"
#: An entry point that takes longer than this to import is named by `compose-gen plugins`.
SLOW_IMPORT_S = 1.0
#: The package of the first-party plugins (in ``plugins/``), also when a test passes them to :func:`make_catalogue`.
FIRST_PARTY_PACKAGE = "compose_gen_plugins"


@dataclass
class Catalogue:
    """Registered types by name, the plugin that registered each, and what went wrong with which plugin."""

    types: dict[str, ComponentType] = field(default_factory=dict)
    plugin_of: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    #: Type names set aside because several plugins register them, with those plugins.
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    #: First-party type names that third-party plugins register too, with those plugins (whose types are not used).
    shadowed: dict[str, list[str]] = field(default_factory=dict)
    #: ``"<distribution> <version>"`` of each plugin installed through the entry-point group.
    package_of: dict[str, str] = field(default_factory=dict)
    #: Made of the installed plugins alone (``make_catalogue()``), so another process can make the same one.
    installed: bool = False
    #: The source (a package's folder, a module's file) of each third-party plugin that has one.
    source_of: dict[str, str] = field(default_factory=dict)
    #: Seconds each entry point took to import: every command that makes the catalogue pays them.
    import_seconds: dict[str, float] = field(default_factory=dict)

    def slow_imports(self) -> dict[str, float]:
        """The plugins that took longer than :data:`SLOW_IMPORT_S` to import, which `compose-gen plugins` names: a
        plugin that imports a heavy library at its top slows every command, with no word of why."""
        return {name: took for name, took in self.import_seconds.items() if took > SLOW_IMPORT_S}

    def __repr__(self) -> str:
        made = "installed plugins" if self.installed else "plugins of your own"
        return f"<Catalogue of {len(self.types)} types from {len(set(self.plugin_of.values()))} {made}>"

    def provenance(self, type_names: Iterable[str]) -> dict[str, str]:
        """``{type: "plugin '<plugin>' from <distribution> <version>"}`` for the known ``type_names``: what a run records."""
        found = {}
        for name in sorted(set(type_names) & set(self.types)):
            plugin = self.plugin_of[name]
            package = self.package_of.get(plugin)
            found[name] = f"plugin {plugin!r}" + (f" from {package}" if package else "")
        return found

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def get(self, name: str) -> ComponentType:
        return self.types[name]

    def of_kind(self, *kinds: str) -> list[ComponentType]:
        return [t for t in self.types.values() if t.kind in kinds]

    def unknown_type_message(self, name: str, kinds: tuple[str, ...]) -> str:
        """Explain an unknown type name: a conflict between plugins, suggestions, plugins with problems."""
        if name in self.conflicts:
            plugins = " and ".join(map(repr, self.conflicts[name]))
            return f"type {name!r} is registered by two plugins, {plugins}; uninstall or rename one of them"
        candidates = self.of_kind(*kinds)
        key = _normalised(name)
        known_as = [f"{t.name!r}? ({t.aliases[alias]})" for t in candidates for alias in t.aliases if _normalised(alias) == key]
        hint = f"; did you mean {' or '.join(known_as)}" if known_as else suggest(name, [t.name for t in candidates])
        return f"unknown {'/'.join(kinds)} type {name!r}{hint}{failed_plugins_note(self.failures)}"

    def where_raised(self, error: BaseException, type_name: str) -> str:
        """``" (file:line)"``, the innermost line of ``error``'s traceback in the source of the third-party plugin that
        registers ``type_name``: the line its author looks at, which ``IndexError: list index out of range`` alone does
        not tell; "" when no such line raised (first-party types say what went wrong in their messages)."""
        source = self.source_of.get(self.plugin_of.get(type_name, ""))
        if source is None:
            return ""
        frames = _within(traceback.extract_tb(error.__traceback__), source)
        return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""

    def fail(self, plugin: str, problem: str) -> None:
        """Record a problem of ``plugin`` (several are joined)."""
        self.failures[plugin] = f"{self.failures[plugin]}; {problem}" if plugin in self.failures else problem


#: Names other tools (or other types here) use for the spec's own fields, written as :func:`_normalised` writes them:
#: the names meant, each with why, the first one that the place takes suggested.  (Types declare theirs:
#: :attr:`ComponentType.aliases`.)  Spelling alone matched ``features`` to ``context_features`` on a bijector.
SYNONYMS: dict[str, tuple[tuple[str, str], ...]] = {
    "ncritic": (("steps", "a player's optimizer steps per round, n_critic in WGAN terms"),),
    "learningrate": (("lr", "the learning rate"),),
    "features": (("shape", "a bijector's event shape, [D]"),),
    "shape": (("features", "this bijector's event size D"),),
    "infeatures": (("in_shape", "the shape of the examples the critic reads"),),
    "clip": (("clip_grad_norm", "a player clips gradients; weight clipping is the wasserstein loss's clip"),),
}


def _normalised(name: str) -> str:
    """``name`` lower case without ``_`` or ``-``, so that ``n_critic``, ``nCritic`` and ``n-critic`` compare equal."""
    return name.lower().replace("_", "").replace("-", "")


def suggest(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for a well-known synonym or the closest candidate, or an empty string."""
    candidates = list(candidates)
    for meant, why in SYNONYMS.get(_normalised(name), ()):
        if meant in candidates and meant != name:
            return f"; did you mean {meant!r}? ({why})"
    same_but_case = [c for c in candidates if c.lower() == name.lower()]
    close = same_but_case or difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def listed(items: Iterable[object], shown: int = 3) -> str:
    """The first ``shown`` of ``items`` joined by commas, and how many more: ``"a, b, c and 4 more"``, for messages."""
    texts = [str(item) for item in items]
    more = f" and {len(texts) - shown} more" if len(texts) > shown else ""
    return ", ".join(texts[:shown]) + more


def make_catalogue(plugins: Iterable[object] = (), *, entry_points: bool | Literal["first-party"] = True) -> Catalogue:
    """Build a catalogue from ``plugins`` (modules or objects with hook implementations).

    With ``entry_points`` true, every plugin of the ``compose_gen`` entry-point
    group is loaded too (the first-party ones first); with ``"first-party"``,
    only compose_gen's own, so a test sees its plugins beside the built-in
    types and no other installed package.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    catalogue = Catalogue(installed=not plugins and entry_points is True)
    named: list[tuple[str, object]] = [(getattr(p, "__name__", repr(p)), p) for p in plugins]
    first_party: set[str] = set()
    if entry_points:
        loaded = _load_entry_points(catalogue, first_party_only=entry_points == "first-party")
        first_party = {name for name, _, dist in loaded if dist == FIRST_PARTY}
        installed = {id(module): name for name, module, _ in loaded}
        taken = set(installed.values())
        named = [(installed.get(id(plugin)) or _explicit_name(name, plugin, taken), plugin) for name, plugin in named]
        named += [(name, module) for name, module, _ in loaded]
    for name, plugin in named:
        _register(manager, catalogue, name, plugin)
        first = name in first_party or getattr(plugin, "__name__", "").startswith(FIRST_PARTY_PACKAGE + ".")
        if not first and getattr(plugin, "__file__", None):
            catalogue.source_of[name] = _source(plugin.__file__)
    _report_unknown_hooks(manager, catalogue)
    impls = manager.hook.compose_gen_types.get_hookimpls()
    for impl in sorted(impls, key=lambda impl: impl.plugin_name not in first_party):  # first-party types first
        try:
            returned = impl.function()
            iterable = isinstance(returned, Iterable) and not isinstance(returned, (str, bytes, dict))  # not letter by letter
            contributed = list(returned) if iterable else None
        except (Exception, SystemExit) as error:  # a plugin's bug must not stop the others
            catalogue.fail(impl.plugin_name, _describe(error, getattr(impl.plugin, "__file__", None)))
            continue
        if contributed is None:
            catalogue.fail(impl.plugin_name, f"compose_gen_types returned {returned!r}, not a list of ComponentType")
            continue
        for component_type in contributed:
            _add(catalogue, component_type, impl.plugin_name, first_party)
    return catalogue


def _explicit_name(name: str, plugin: object, taken: set[str]) -> str:
    """The name of a plugin passed to :func:`make_catalogue`: its own, unless an entry point has it (a test's own
    ``metrics.py`` beside the first-party ``metrics``), then ``"<name> (from <file>)"``, so that neither knocks the
    other out nor passes for it.  (An installed plugin passed again keeps its entry point's name.)"""
    if name not in taken:
        return name
    return f"{name} (from {getattr(plugin, '__file__', None) or 'make_catalogue'})"


def _load_entry_points(catalogue: Catalogue, first_party_only: bool = False) -> list[tuple[str, object, str]]:
    """``(name, module, distribution)`` of every loadable entry point, first-party first; refusals recorded."""
    points = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda p: _distribution(p) != FIRST_PARTY)
    if first_party_only:
        points = [p for p in points if _distribution(p) == FIRST_PARTY]
    distributions_of: dict[str, list[str]] = {}
    for point in points:
        distributions_of.setdefault(point.name, []).append(_distribution(point))
    loaded: list[tuple[str, object, str]] = []
    for point in points:
        dist, name = _distribution(point), point.name
        others = [other for other in distributions_of[name] if other != dist]
        if others and dist != FIRST_PARTY:  # whichever is listed first, neither knocks the other out
            name = f"{point.name} (from {dist})"
            catalogue.fail(
                name, f"entry point {point.name!r} of {dist!r} has the name of one from {listed(map(repr, others))}: "
                f"loaded as {name!r}; rename it"
            )
        version = getattr(getattr(point, "dist", None), "version", None)
        catalogue.package_of[name] = f"{dist} {version}" if version else dist
        started = time.perf_counter()
        try:
            loaded.append((name, point.load(), dist))
        except (Exception, SystemExit) as error:
            catalogue.fail(name, f"entry point {point.name} = {point.value!r} of {dist}: {_describe(error)}")
        catalogue.import_seconds[name] = time.perf_counter() - started
    return loaded


def _distribution(point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(point, "dist", None)
    return (dist.name if dist is not None else "") or "?"


def _register(manager: pluggy.PluginManager, catalogue: Catalogue, name: str, plugin: object) -> None:
    if manager.is_registered(plugin):
        return
    if manager.get_plugin(name) is not None:
        catalogue.fail(name, f"another plugin is already registered as {name!r}; give this one another name")
        return
    try:
        manager.register(plugin, name=name)
    except pluggy.PluginValidationError as error:  # a malformed hook implementation: said at its definition, not in pluggy
        hook = getattr(plugin, "compose_gen_types", None)
        code = getattr(hook, "__code__", None)
        where = f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
        catalogue.fail(name, f"{type(error).__name__}: {error}{where}")
        return
    except Exception as error:
        catalogue.fail(name, _describe(error))
        return
    if not manager.get_hookcallers(plugin):
        catalogue.fail(name, _no_hooks(plugin))


def _no_hooks(plugin: object) -> str:
    """Why ``plugin`` gave pluggy no hook implementation: an undecorated hook, none at all, or another module of its name."""
    if hasattr(plugin, "compose_gen_types"):
        return "defines no hook implementation; is compose_gen_types decorated with compose_gen.hookimpl?"
    module = getattr(plugin, "__name__", repr(plugin))
    if getattr(plugin, "__file__", None) is None and hasattr(plugin, "__path__"):  # a folder without __init__.py
        folders = ", ".join(map(str, plugin.__path__))
        return (
            f"module {module!r} was imported from {folders}, a folder without __init__.py, not from the installed package: "
            "a folder of that name in the working directory (or elsewhere on sys.path) shadows it; run from another directory"
        )
    return f"module {module!r} ({getattr(plugin, '__file__', 'no file')}) has no compose_gen_types hook"


def _report_unknown_hooks(manager: pluggy.PluginManager, catalogue: Catalogue) -> None:
    """A ``@hookimpl`` function whose name is not a compose_gen hook (pluggy would ignore it)."""
    known = [name for name in vars(manager.hook) if not name.startswith("_") and getattr(manager.hook, name).has_spec()]
    for name, caller in vars(manager.hook).items():
        if name.startswith("_") or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            catalogue.fail(impl.plugin_name, f"unknown hook {name!r}{suggest(name, known)}")


def _add(catalogue: Catalogue, component_type: object, plugin: str, first_party: set[str]) -> None:
    if not isinstance(component_type, ComponentType):
        catalogue.fail(plugin, f"registered {component_type!r}, not a ComponentType")
        return
    name = component_type.name
    if name in catalogue.conflicts:
        catalogue.conflicts[name].append(plugin)
        catalogue.fail(plugin, f"type {name!r} is also registered by {', '.join(map(repr, catalogue.conflicts[name][:-1]))}")
        return
    if name not in catalogue.types:
        catalogue.types[name] = component_type
        catalogue.plugin_of[name] = plugin
        return
    other = catalogue.plugin_of[name]
    if other != plugin and _same_type(catalogue.types[name], component_type):
        return  # the same code reached through two plugins (a test passing an installed package's types)
    if other == plugin:
        catalogue.fail(plugin, f"registers type {name!r} twice")
    elif other in first_party:
        catalogue.fail(plugin, f"type {name!r} is first-party (plugin {other!r}); this plugin's is not used, rename it")
        catalogue.shadowed.setdefault(name, []).append(plugin)
    else:
        del catalogue.types[name], catalogue.plugin_of[name]
        catalogue.conflicts[name] = [other, plugin]
        for each in (other, plugin):
            catalogue.fail(each, f"type {name!r} is registered by both {other!r} and {plugin!r}, so neither is used")


def _same_type(a: ComponentType, b: ComponentType) -> bool:
    return (a.kind, a.params, a.build) == (b.kind, b.params, b.build)


def _describe(error: BaseException, plugin_file: str | None = None) -> str:
    """``Type: message (file:line)``, the line the plugin's author should look at.

    That is the innermost frame in the plugin's own folder when ``plugin_file`` is
    known, else the innermost outside compose_gen and generated or frozen code (a
    ``ComponentType`` that refuses its arguments raises in compose_gen, but the
    plugin's line that made it is the one to fix), else the innermost of all.  A
    ``SyntaxError`` is located where it says, in the file that does not parse.
    """
    if isinstance(error, SyntaxError) and error.filename:
        return f"{type(error).__name__}: {error.msg} ({error.filename}:{error.lineno})"
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if not f.filename.startswith((_PACKAGE, "<"))]  # "<frozen ...>", a dataclass's "<string>"
    if plugin_file is not None:
        own = _within(own, _source(plugin_file)) or own
    frame = (own or frames or [None])[-1]
    return f"{type(error).__name__}: {error}" + (f" ({frame.filename}:{frame.lineno})" if frame else "")


def failed_plugins_note(failures: dict[str, str]) -> str:
    """For an unknown name: the plugins that failed to load, and why, since one of them may be what registers it (a
    suggestion of a known type alone sends its author after a typo that is not there); "" when none failed."""
    if not failures:
        return ""
    reasons = "; ".join(f"{plugin!r}: {problem}" for plugin, problem in sorted(failures.items()))
    return f" (unless it is of a plugin that failed to load, see `compose-gen plugins`: {reasons})"


def _source(plugin_file: str) -> str:
    """Where a plugin's code is, from its ``__file__``: a package's own folder; a module's own file (its folder may be
    site-packages)."""
    mine = Path(plugin_file).resolve()
    return str(mine.parent) + os.sep if mine.name == "__init__.py" else str(mine)


def _within(frames: Iterable[traceback.FrameSummary], source: str) -> list[traceback.FrameSummary]:
    """The ``frames`` whose file is in ``source`` (:func:`_source`)."""
    return [f for f in frames if str(Path(f.filename).resolve()).startswith(source)]


#: compose_gen's own source folder, whose frames are not a plugin's.
_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep
