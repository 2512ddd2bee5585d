"""Exponential backoff with jitter, for retrying DataPlaneAPI and gobgpd."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential backoff with jitter, reset on success."""

    first: float = 0.5
    cap: float = 30.0
    current: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    def next(self) -> float:
        self.current = self.first if self.current == 0 else min(self.cap, self.current * 2)
        return self.current * self.rng.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.current = 0.0
