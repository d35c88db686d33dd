"""The one registry of what ``python -m verify NAME`` can run: the builtins and the installed plug-ins.

    register(entry)        add an ``Algorithm`` or a ``Command`` (``interface``) under ``entry.name``
    get(name)              the entry (ValueError naming the known names otherwise)
    names()                every name: builtins in ``BUILTINS`` order, then plug-ins by name
    algorithms()           {name: Algorithm}, the temperature-sweep entries only
    problems()             {name: one-line message} for plug-ins that failed to load (and were left out)

Every entry is found the same way, by an entry point ``NAME = "module:attribute"``: the builtins by
the table ``BUILTINS`` below, a separate installed package by the entry-point group ``GROUP``
(``verify.algorithms``) in its own metadata::

    [project.entry-points."verify.algorithms"]
    richardson = "my_package.richardson:ALGORITHM"

The attribute is an ``Algorithm`` or a ``Command`` whose ``name`` equals the entry point's name.
Loading is lazy (the first call of ``get``/``names``/...), so importing this module imports no
algorithm, and no algorithm module imports this one: there is no import cycle. A plug-in that fails
to import, holds something else, disagrees about its name or reuses a taken name is left out with a
one-line message naming the entry point (``problems()``; the CLI prints each as a warning, or as the
error when that name is asked for); the builtins are never affected.
"""
from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points

from .interface import Algorithm, Command, Entry

GROUP = "verify.algorithms"

# The builtins, in the order ``--help`` lists them: a new builtin is one line here (its module imports
# ``verify.interface``, never this module or another algorithm module).
BUILTINS: dict[str, str] = {
    "gd": "verify.algorithms:GD",
    "newton": "verify.algorithms:NEWTON",
    "copy": "verify.algorithms_representation:COPY",
    "representation": "verify.algorithms_representation:REPRESENTATION",
    "ar": "verify.algorithms_representation:AR",
    "decoder-gd": "verify.algorithms_decoder:DECODER_GD",
    "cot": "verify.algorithms_decoder:COT",
    "linear-gd": "verify.linear_gd:LINEAR_GD",
    "halting": "verify.halting:HALTING",
    "subleq": "verify.subleq:SUBLEQ",
    "bfs": "verify.graphs:BFS",
    "dfs": "verify.graphs:DFS",
    "dijkstra": "verify.graphs:DIJKSTRA",
    "symbolic": "verify.commands:SYMBOLIC",
}

_entries: dict[str, Entry] = {}
_origin: dict[str, str] = {}          # name -> "builtin" / "entry point NAME = VALUE" / "register()"
_problems: dict[str, str] = {}
_loaded = False


def _describe(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" (from {dist.metadata['Name']})" if dist is not None and dist.metadata["Name"] else ""
    return f"entry point {ep.name} = {ep.value!r} in group {GROUP!r}{where}"


def check_entry(entry: object) -> str | None:
    """Why ``entry`` is not an Algorithm or Command (None when it is one)."""
    if not isinstance(entry, (Algorithm, Command)):
        return (f"expected a verify.interface.Algorithm or Command, got {type(entry).__module__}."
                f"{type(entry).__qualname__}")
    if not (isinstance(entry.name, str) and entry.name and not entry.name.startswith("-")
            and entry.name.strip() == entry.name and " " not in entry.name):
        return f"name={entry.name!r} is invalid: expected a non-empty word not starting with '-'"
    if not isinstance(entry.summary, str):
        return f"summary={entry.summary!r} is invalid: expected a one-line string"
    return None


def register(entry: Entry, replace: bool = False) -> Entry:
    """Add ``entry`` under ``entry.name`` (after the builtins and installed plug-ins are loaded).
    A taken name is an error unless ``replace``. Returns the entry."""
    _load()
    why = check_entry(entry)
    if why:
        raise ValueError(f"register: {why}")
    if entry.name in _entries and not replace:
        raise ValueError(f"register: name={entry.name!r} is taken (by {_origin[entry.name]}); "
                         "pass replace=True to replace it")
    _entries[entry.name] = entry
    _origin[entry.name] = "register()"
    _problems.pop(entry.name, None)
    return entry


def unregister(name: str) -> None:
    """Remove an entry added by ``register`` (tests; scripts that register temporarily)."""
    _load()
    if _origin.get(name) != "register()":
        raise ValueError(f"unregister: name={name!r} was not added by register() (known: {', '.join(_entries)})")
    del _entries[name], _origin[name]


def _add(ep: EntryPoint, builtin: bool) -> None:
    try:
        entry = ep.load()
    except Exception as e:                                     # a broken plug-in never breaks the rest
        if builtin:
            raise
        why = f"failed to load: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
    else:
        why = check_entry(entry)
        if why is None and entry.name != ep.name:
            why = f"holds an entry named {entry.name!r}; the entry point's name must be the same"
        if why is None and ep.name in _entries:
            why = f"the name {ep.name!r} is taken by {_origin[ep.name]}"
    if why is None:
        _entries[ep.name] = entry
        _origin[ep.name] = "builtin" if builtin else _describe(ep)
    elif builtin:
        raise TypeError(f"builtin {ep.name} = {ep.value!r}: {why}")
    else:
        _problems[ep.name] = f"{_describe(ep)}: {why}; left out"


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _entries.clear(), _origin.clear(), _problems.clear()
    for name, value in BUILTINS.items():
        _add(EntryPoint(name, value, GROUP), builtin=True)
    plugins = sorted(entry_points(group=GROUP), key=lambda ep: ep.name)
    seen: set[tuple[str, str]] = set()
    for ep in plugins:
        if (ep.name, ep.value) in seen or BUILTINS.get(ep.name) == ep.value:
            continue           # the same distribution found twice on sys.path, or a builtin declared again
        seen.add((ep.name, ep.value))
        _add(ep, builtin=False)
    _loaded = True          # only now: a builtin that fails to load raises on every call, not once


def get(name: str) -> Entry:
    _load()
    if name not in _entries:
        why = f" ({_problems[name]})" if name in _problems else ""   # a plug-in of that name failed
        raise ValueError(f"name={name!r} is invalid{why}: expected one of {', '.join(_entries)}")
    return _entries[name]


def names() -> tuple[str, ...]:
    _load()
    return tuple(_entries)


def entries() -> dict[str, Entry]:
    _load()
    return dict(_entries)


def algorithms() -> dict[str, Algorithm]:
    """The temperature-sweep entries, in ``names()`` order."""
    _load()
    return {k: v for k, v in _entries.items() if isinstance(v, Algorithm)}


def origin(name: str) -> str:
    """Where an entry came from: "builtin", "register()" or the entry point (value, distribution)."""
    get(name)
    return _origin[name]


def problems() -> dict[str, str]:
    _load()
    return dict(_problems)


def load(value: str) -> Entry:
    """The entry at "module:attribute" (what an entry point holds), checked; for scripts and tests."""
    module, _, attr = value.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    why = check_entry(obj)
    if why:
        raise ValueError(f"{value!r}: {why}")
    return obj
