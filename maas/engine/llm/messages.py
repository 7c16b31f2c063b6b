"""Typed messages between an LLM engine client and its step loop: the same whether the loop runs in a
thread (passed as objects) or in a child process (pickled over pipes).

Commands go to the loop; events come back from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from maas.engine.llm.request import RequestOutput
from maas.engine.llm.sampling_params import SamplingParams


@dataclass(frozen=True)
class Add:
    """Queue a request (one choice: the client fans n out)."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True)
class Abort:
    """Stop a request and free its cache."""

    request_id: str


@dataclass(frozen=True)
class Stop:
    """End the loop."""


Command = Add | Abort | Stop


@dataclass(frozen=True)
class Stepped:
    """What one step produced, and the counters after it."""

    outputs: list[RequestOutput]
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejected:
    """A request the engine refused when it was added: a bad request (400), or an engine bug (503)."""

    request_id: str
    message: str
    param: str | None = None
    internal: bool = False


@dataclass(frozen=True)
class StepFailed:
    """A step raised: these requests were aborted; the loop goes on serving."""

    reason: str
    request_ids: list[str]


@dataclass(frozen=True)
class Exited:
    """The loop is gone (its process died or was stopped): every waiting request fails."""

    reason: str


Event = Stepped | Rejected | StepFailed | Exited
