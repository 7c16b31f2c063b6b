"""Per-client rate limits over a sliding minute: requests/min and tokens/min.

The client is the API key's id when keys are set, else the remote address. Requests are counted
when admitted, tokens (prompt + completion) when a request ends; a client over either limit gets
429 with the seconds until its window frees up.
"""

from __future__ import annotations

import time
from collections import deque

from maas.errors import OverloadedError


class RateLimiter:
    """Sliding 60-second windows per client (0 = no limit)."""

    def __init__(self, requests_per_min: int = 0, tokens_per_min: int = 0, window_s: float = 60.0):
        self.rpm, self.tpm, self.window = requests_per_min, tokens_per_min, window_s
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, deque[tuple[float, int]]] = {}

    @property
    def enabled(self) -> bool:
        """True when any limit is set."""
        return bool(self.rpm or self.tpm)

    def _trim(self, client: str, now: float) -> tuple[deque[float], deque[tuple[float, int]]]:
        reqs = self._requests.setdefault(client, deque())
        toks = self._tokens.setdefault(client, deque())
        while reqs and reqs[0] <= now - self.window:
            reqs.popleft()
        while toks and toks[0][0] <= now - self.window:
            toks.popleft()
        return reqs, toks

    def admit(self, client: str) -> None:
        """Count a request, or raise OverloadedError (429) when the client is over a limit."""
        now = time.monotonic()
        reqs, toks = self._trim(client, now)
        if self.rpm and len(reqs) >= self.rpm:
            raise OverloadedError(
                f"rate limit: {self.rpm} requests per minute; retry in {reqs[0] + self.window - now:.0f} s",
                code="rate_limit_requests",
            )
        if self.tpm and sum(n for _, n in toks) >= self.tpm:
            raise OverloadedError(
                f"rate limit: {self.tpm} tokens per minute; retry in {toks[0][0] + self.window - now:.0f} s",
                code="rate_limit_tokens",
            )
        reqs.append(now)

    def spent(self, client: str, tokens: int) -> None:
        """Charge `tokens` to the client's window."""
        if self.tpm and tokens > 0:
            self._tokens.setdefault(client, deque()).append((time.monotonic(), tokens))
