"""Progress of a sweep on stderr: a tqdm bar on a terminal, a plain line every ~10% otherwise.

The CLI opens a session (``with session("sweep", enabled)``); the sweep says what it plans
(``plan(groups, rows_per_group)``: a (dtype, variant) group runs at most that many rows) and
reports each row (``row(note)``) and each finished group (``group_done()``), from any thread: groups
that run at once (``verify.sweep`` runs two on two cores) are counted apart. A group that stops
early (the sweep stops once the floor is passed) jumps the count to the group's end, so the bar
is exact at every group boundary and an upper estimate inside one. Outside a session (library
use, notebooks) these calls do nothing. tqdm redraws its bar with carriage returns, which reads as
garbage in a log file, hence the plain lines when stderr is not a terminal.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time

_current: "_Progress | None" = None


class _Progress:
    def __init__(self, desc: str, stream):
        self.desc, self.stream = desc, stream
        self.groups, self.per_group = 1, 1
        self.done_groups, self.in_groups = 0, {}     # rows so far of the group each thread runs
        self.lock = threading.Lock()
        self.bar = None
        self.start = time.monotonic()
        self.printed = -1                       # the last tenth printed (plain mode)

    @property
    def total(self) -> int:
        return self.groups * self.per_group

    @property
    def count(self) -> int:
        return self.done_groups * self.per_group + sum(min(k, self.per_group - 1) for k in self.in_groups.values())

    def plan(self, groups: int, per_group: int) -> None:
        self.groups, self.per_group = max(groups, 1), max(per_group, 1)
        self.done_groups, self.in_groups = 0, {}
        if self.stream.isatty():
            from tqdm import tqdm
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(total=self.total, desc=self.desc, unit="row", file=self.stream, leave=False,
                            dynamic_ncols=True)

    def _show(self, note: str) -> None:
        if self.bar is not None:
            self.bar.n = self.count
            self.bar.set_postfix_str(note, refresh=False)
            self.bar.refresh()
            return
        tenth = 10 * self.count // self.total
        if tenth > self.printed:
            self.printed = tenth
            print(f"{self.desc}: {10 * tenth:3d}% ({self.count}/{self.total} rows at most, "
                  f"{time.monotonic() - self.start:.0f} s){': ' + note if note else ''}",
                  file=self.stream, flush=True)

    def row(self, note: str) -> None:
        with self.lock:
            me = threading.get_ident()
            self.in_groups[me] = self.in_groups.get(me, 0) + 1
            self._show(note)

    def group_done(self) -> None:
        with self.lock:
            self.done_groups = min(self.done_groups + 1, self.groups)
            self.in_groups.pop(threading.get_ident(), None)
            self._show("")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def session(desc: str, enabled: bool = True, stream=None):
    global _current
    if not enabled:
        yield
        return
    _current = _Progress(desc, stream or sys.stderr)
    try:
        yield _current
    finally:
        _current.close()
        _current = None


def plan(groups: int, per_group: int) -> None:
    if _current is not None:
        _current.plan(groups, per_group)


def row(note: str = "") -> None:
    if _current is not None:
        _current.row(note)


def group_done() -> None:
    if _current is not None:
        _current.group_done()
