"""A sequence being generated, and what a caller sees of it (`RequestOutput`)."""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from maas.engine.llm.sampling_params import SamplingParams


class Status(enum.Enum):
    """Where a sequence is in its life."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    """One prompt and its growing output; the scheduler's unit of work."""

    seq_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    max_tokens: int
    arrival: float = field(default_factory=time.monotonic)
    output_token_ids: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    slot: int = -1  # the cache slot it writes to while running (engine.kv_cache)
    finish_reason: str | None = None
    num_preemptions: int = 0
    first_token_time: float | None = None
    first_scheduled: float | None = None  # monotonic time it first ran (queue time = this - arrival)
    matcher: Any = None  # the grammar matcher of a guided request (engine.guided)

    @property
    def num_tokens(self) -> int:
        """Prompt plus output tokens."""
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        """Prompt tokens."""
        return len(self.prompt_token_ids)

    def token_ids(self, start: int, end: int) -> list[int]:
        """Tokens [start, end) of prompt + output."""
        p = len(self.prompt_token_ids)
        if end <= p:
            return self.prompt_token_ids[start:end]
        if start >= p:
            return self.output_token_ids[start - p : end - p]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - p]

    @property
    def finished(self) -> bool:
        """True once a stop condition hit or the request was aborted."""
        return self.status is Status.FINISHED


@dataclass
class TokenLogprob:
    """The chosen token's logprob and the top alternatives at that position."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class RequestOutput:
    """What one engine step produced for one request: a text delta and, at the end, the totals."""

    request_id: str
    text: str  # new text since the previous output
    token_ids: list[int]  # new token ids since the previous output
    finished: bool
    finish_reason: str | None
    num_prompt_tokens: int
    num_output_tokens: int
    logprobs: list[TokenLogprob] = field(default_factory=list)
    queue_time: float | None = None  # seconds between arrival and first scheduling


def request_id(prefix: str = "req") -> str:
    """A fresh unique request id."""
    return f"{prefix}-{uuid.uuid4().hex}"
