"""Who is calling, for every transport (OpenAI HTTP, v2 HTTP, v2 gRPC): the API-key check, the
rate-limit key, and the accounting of refused and served requests.

The HTTP Gateway authenticates once and leaves the Caller in the request's scope state; the gRPC
service authenticates each call from its metadata. Both then charge the same limiter and metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from maas.errors import MaasError, ModelNotFoundError
from maas.server.auth import KeyRing
from maas.server.metrics import Metrics
from maas.server.ratelimit import RateLimiter


@dataclass(frozen=True)
class Caller:
    """One authenticated caller: its API key's id (None without keys), address, and admin right."""

    key_id: str | None
    address: str
    admin: bool = False

    @property
    def client(self) -> str:
        """The rate-limit key: the API key's id, else the remote address."""
        return f"key:{self.key_id}" if self.key_id else f"addr:{self.address}"

    @staticmethod
    def of_scope(scope: Mapping[str, object]) -> Caller:
        """The caller the Gateway left in an ASGI scope (an anonymous one from its address if none)."""
        state = scope.get("state")
        found = state.get("caller") if isinstance(state, dict) else None
        if isinstance(found, Caller):
            return found
        client = scope.get("client")
        host = client[0] if isinstance(client, (tuple, list)) and client else "?"
        return Caller(None, str(host))


def reason_of(e: MaasError) -> str:
    """The `reason` label of a refused request."""
    return e.code if isinstance(e.code, str) else e.kind


class Callers:
    """API keys, per-client rate limits and request accounting, shared by every transport."""

    def __init__(self, keys: KeyRing, limiter: RateLimiter, metrics: Metrics):
        self.keys, self.limiter, self.metrics = keys, limiter, metrics

    def authenticate(self, authorization: str | None, address: str, required: bool = True) -> Caller | None:
        """The caller sending `authorization` (`Bearer KEY`) from `address`; None when keys are set,
        the call needs one (`required`) and the header carries none of them."""
        if not (required and self.keys.enabled):
            return Caller(None, address)
        key_id, admin = self.keys.check(authorization)
        return Caller(key_id, address, admin) if key_id is not None else None

    @property
    def limited(self) -> bool:
        """True when a rate limit is set."""
        return self.limiter.enabled

    def admit(self, caller: Caller) -> None:
        """Count one request against the caller's limits (OverloadedError, a 429, when over one)."""
        if self.limiter.enabled:
            self.limiter.admit(caller.client)

    def spent(self, caller: Caller, tokens: int) -> None:
        """Charge the tokens a request used to the caller's window."""
        self.limiter.spent(caller.client, tokens)

    def rejected(self, model: str, e: MaasError) -> None:
        """Count a request refused with `e` (no series per unknown model name: the label set stays bounded)."""
        label = "" if isinstance(e, ModelNotFoundError) else model
        self.metrics.rejected.labels(label, reason_of(e)).inc()

    def served(self, model: str, seconds: float) -> None:
        """Observe a tensor-model (v2) request answered in `seconds`."""
        self.metrics.infer_latency.labels(model).observe(seconds)
