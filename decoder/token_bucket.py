"""A token bucket: at most ``burst`` at once, ``rate_per_s`` sustained.

The control socket takes one token per request it carries out (decoder/control.py). Pure
arithmetic on an injected clock, so it is tested without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate_per_s > 0 or burst < 1:
            raise ValueError("a token bucket needs rate_per_s > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)  # full at start: an operator's first requests are never refused
        self._at = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        return self._tokens

    def take(self) -> bool:
        """One token if there is one (True), else False and nothing changes."""
        if self._refill() >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until the next token is due (0.0 if one is there now)."""
        return max(0.0, (1.0 - self._refill()) / self.rate_per_s)
