"""Token buckets: at most ``burst`` at once, ``rate_per_s`` sustained.

The control socket takes one token per request it carries out (decoder/control.py), from the
shared bucket and from the client's own. Pure arithmetic on an injected clock, so it is tested
without sleeping.
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


class SharedBuckets:
    """One bucket for everyone plus one per client holding ``client_share`` of it: a request
    needs a token from both, so one flooding client can never take the whole budget and
    another client's requests still get through. At most ``max_clients`` client buckets are
    kept (least recently seen dropped first; a returning client starts with a full one)."""

    def __init__(self, rate_per_s: float, burst: int, client_share: float = 0.5, max_clients: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0.0 < client_share <= 1.0:
            raise ValueError("client_share must be in (0, 1]")
        self.total = TokenBucket(rate_per_s, burst, clock)
        self._client_rate = rate_per_s * client_share
        self._client_burst = max(1, int(burst * client_share))
        self._max_clients = max_clients
        self._clock = clock
        self._clients: dict[bytes, TokenBucket] = {}  # insertion order = least recently seen first

    def take(self, client: bytes) -> bool:
        bucket = self._clients.pop(client, None)
        if bucket is None:
            bucket = TokenBucket(self._client_rate, self._client_burst, self._clock)
            if len(self._clients) >= self._max_clients:
                del self._clients[next(iter(self._clients))]
        self._clients[client] = bucket  # now the most recently seen
        if bucket.wait_s() > 0.0 or self.total.wait_s() > 0.0:
            return False
        return bucket.take() and self.total.take()
