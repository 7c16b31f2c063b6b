"""The caller identity every transport shares: API keys, the rate-limit key, refused-request accounting."""

from __future__ import annotations

import pytest

from maas.errors import InvalidRequestError, ModelNotFoundError, OverloadedError
from maas.server.auth import KeyRing, key_id
from maas.server.caller import Caller, Callers
from maas.server.metrics import Metrics
from maas.server.ratelimit import RateLimiter


def callers(keys: KeyRing, rpm: int = 0) -> Callers:
    return Callers(keys, RateLimiter(requests_per_min=rpm), Metrics(lambda: []))


def test_without_keys_everyone_is_an_address() -> None:
    c = callers(KeyRing()).authenticate(None, "10.0.0.1")
    assert c == Caller(None, "10.0.0.1") and c.client == "addr:10.0.0.1"


def test_with_keys_a_call_that_needs_one_is_refused_without_it() -> None:
    cs = callers(KeyRing.build(["user"], ["boss"]))
    assert cs.authenticate(None, "h") is None and cs.authenticate("Bearer wrong", "h") is None
    assert cs.authenticate(None, "h", required=False) == Caller(None, "h")  # health stays open
    user = cs.authenticate("Bearer user", "h")
    assert user is not None and not user.admin and user.client == f"key:{key_id('user')}"
    boss = cs.authenticate("Bearer boss", "h")
    assert boss is not None and boss.admin


def test_rate_limits_are_per_client() -> None:
    cs = callers(KeyRing(), rpm=1)
    a, b = Caller("k1", "h"), Caller(None, "h")
    cs.admit(a)
    cs.admit(b)
    with pytest.raises(OverloadedError, match="rate limit"):
        cs.admit(Caller("k1", "elsewhere"))  # the same key from another address


def test_the_caller_the_gateway_left_in_the_scope() -> None:
    c = Caller("k", "h")
    assert Caller.of_scope({"state": {"caller": c}, "client": ("x", 1)}) is c
    assert Caller.of_scope({"state": {}, "client": ("1.2.3.4", 5)}) == Caller(None, "1.2.3.4")
    assert Caller.of_scope({}) == Caller(None, "?")


def test_refused_requests_are_counted_without_a_series_per_unknown_name() -> None:
    cs = callers(KeyRing())
    cs.rejected("clf", InvalidRequestError("bad"))
    cs.rejected("typo-1", ModelNotFoundError("no such model"))
    text = cs.metrics.render().decode()
    assert 'maas:requests_rejected_total{model="clf",reason="invalid_request_error"} 1.0' in text
    assert 'maas:requests_rejected_total{model="",reason="model_not_found"} 1.0' in text
    assert "typo-1" not in text
