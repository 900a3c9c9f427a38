"""What a probe saw, and the clock that times it: shared by every check."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    """What one probe saw."""

    check: str
    outcome: str
    detail: str
    ok: bool
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "ok": self.ok,
            "outcome": self.outcome,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "data": self.data,
        }


class Clock:
    """Measures one probe."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.start
