"""Fixtures of the gRPC tests: one background loop, three servers over one pool, a client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import tritonclient.grpc as tc

from tests.unit.server.grpc_harness import Loop, Servers


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def servers(loop: Loop) -> Iterator[Servers]:
    s = Servers(loop)
    yield s
    for srv in s.servers.values():
        loop.run(srv.stop(0))
    s.pool.shutdown()


@pytest.fixture(scope="module")
def client(servers: Servers) -> Iterator[tc.InferenceServerClient]:
    c = servers.client()
    yield c
    c.close()
