"""The curriculum of Yang et al. 2024 (after Garg et al. 2022): a tiny schedule per quantity.

Each quantity starts at ``start`` and grows by ``inc`` every ``interval`` steps until ``end``. The state
is a pure function of the step, so a resumed run needs only the step to continue the curriculum.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    start: int
    end: int
    inc: int = 1
    interval: int = 1000

    def __post_init__(self) -> None:
        for name in ("start", "end", "inc", "interval"):
            v = getattr(self, name)
            low = 1 if name == "interval" else 0
            if not (isinstance(v, int) and v >= low):
                raise ValueError(f"{name}={v!r} is invalid: expected an integer >= {low}")
        if self.start > self.end:
            raise ValueError(f"start={self.start!r} is invalid: expected start <= end={self.end}")

    def at(self, step: int) -> int:
        return min(self.end, self.start + self.inc * (step // self.interval))

    @classmethod
    def fixed(cls, value: int) -> "Schedule":
        return cls(value, value, 0, 1)


@dataclass(frozen=True)
class Curriculum:
    dims: Schedule     # active input dimensions (regression tasks)
    points: Schedule   # in-context samples N
    loops: Schedule    # maximal loop count T of Eq. 3 (0 for the standard transformer)

    def at(self, step: int) -> dict[str, int]:
        return {"dims": self.dims.at(step), "points": self.points.at(step), "loops": self.loops.at(step)}


def yang_curriculum(d: int, N: int, T: int, enabled: bool = True, interval: int = 2000,
                    loop_interval: int = 500) -> Curriculum:
    """Yang et al.'s defaults: dims 5 -> d (+1), points 11 -> N (+2) every ``interval`` steps;
    loops 1 -> T (+1) every ``loop_interval`` steps. Disabled: everything at its final value."""
    if not enabled:
        return Curriculum(Schedule.fixed(d), Schedule.fixed(N), Schedule.fixed(T))
    return Curriculum(Schedule(min(5, d), d, 1, interval), Schedule(min(11, N), N, 2, interval),
                      Schedule(min(1, T), T, 1, loop_interval))
