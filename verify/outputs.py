"""The files ``python -m verify`` writes: checked before any work, written whole or not at all.

    check_outputs({"--json": path, ...}, force)   every rule below, before the sweep starts; raises
                                                   ``OutputError`` (one line naming the option)
    write_atomic(path, write)                     ``write(tmp)`` into a hidden file beside ``path``,
                                                   then one rename: a failed or interrupted run
                                                   leaves no half-written file
    json_text(document)                           strict JSON: NaN and +-inf become null

The rules (docs/verify-cli.md): a path is a file name, never "" or a folder; its folder exists and
can be written to; an image's format is read from its suffix (.png, .pdf, .svg), never appended
(``--plot out/adir`` is refused, not written to ``out/adir.png``); an existing file is overwritten
only with ``--force``; two outputs never share one path.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

IMAGE_FORMATS = (".png", ".pdf", ".svg")


class OutputError(ValueError):
    pass


def check_outputs(paths: dict[str, str | None], force: bool) -> None:
    """``paths``: option -> path or None (not requested). Images are every option but ``--json``."""
    seen: dict[str, str] = {}
    for flag, path in paths.items():
        if path is None:
            continue
        check_path(flag, path, force, image=flag != "--json")
        key = os.path.realpath(path)
        if key in seen:
            raise OutputError(f"argument {flag}: {path!r} is also the path given to {seen[key]}; "
                              "give each output its own file")
        seen[key] = flag


def check_path(flag: str, path: str, force: bool, image: bool) -> None:
    if not path.strip():
        raise OutputError(f"argument {flag}: expected a file path, got {path!r}")
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        raise OutputError(f"argument {flag}: {path!r} is a folder; expected a file path inside it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"argument {flag}: the folder {folder!r} of {path!r} does not exist; create it first")
    suffix = os.path.splitext(path)[1].lower()
    if image and suffix not in IMAGE_FORMATS:
        raise OutputError(f"argument {flag}: expected a file name ending in {', '.join(IMAGE_FORMATS)} "
                          f"(the format is read from it), got {path!r}")
    if os.path.lexists(path):
        if not os.path.isfile(path):
            raise OutputError(f"argument {flag}: {path!r} exists and is not a regular file")
        if not force:
            raise OutputError(f"argument {flag}: {path!r} exists; pass --force to overwrite it")
        probe = lambda: open(path, "ab").close()          # opens for writing, changes nothing
    else:
        def probe():
            open(path, "xb").close()
            os.remove(path)
    try:
        probe()
        with open(_partial(path), "xb"):                  # the rename's source must be creatable too
            pass
        os.remove(_partial(path))
    except OSError as e:
        raise OutputError(f"argument {flag}: cannot write {path!r}: {e.strerror or e}") from None


def _partial(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{os.getpid()}.partial{os.path.splitext(name)[1]}")


def write_atomic(path: str, write) -> None:
    """``write(tmp_path)`` then rename onto ``path``; the temporary file keeps the suffix (formats)."""
    tmp = _partial(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def clean(x):
    """JSON-ready: numpy scalars and arrays as Python values, non-finite floats as None."""
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    return x


def json_text(document) -> str:
    return json.dumps(clean(document), indent=1, allow_nan=False)
