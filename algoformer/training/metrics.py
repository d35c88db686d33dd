"""Metrics rows appended to JSONL or CSV (one fixed column set), flushed after every row.

On resume the rows written after the checkpoint's step are dropped, so the file reads as if the run
had never stopped.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .guards import dumps

COLUMNS = ("step", "kind", "loss", "zero_loss", "T", "points", "dims", "samples_per_s")


class MetricsWriter:
    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path, self.enabled, self._f = Path(path), enabled, None
        self.csv = self.path.suffix == ".csv"

    def truncate_after(self, step: int) -> None:
        rows = [r for r in read_metrics(self.path) if r["step"] <= step] if self.path.exists() else []
        self.path.write_text("")
        self._open()
        for r in rows:
            self.write(**r)

    def _open(self) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._f = open(self.path, "a", newline="")
        if self.csv:
            self._w = csv.DictWriter(self._f, fieldnames=COLUMNS, extrasaction="ignore")
            if new:
                self._w.writeheader()

    def write(self, **row) -> None:
        if not self.enabled:
            return
        if self._f is None:
            self._open()
        row = {k: row.get(k, "") for k in COLUMNS}
        if self.csv:
            self._w.writerow(row)
        else:
            self._f.write(dumps(row) + "\n")                 # NaN / inf as null: valid JSON
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return [{k: _num(v) for k, v in r.items()} for r in rows]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _num(v: str):
    try:
        x = float(v)
    except ValueError:
        return v
    return int(x) if x.is_integer() and "." not in v and "e" not in v.lower() else x if not math.isnan(x) else x
