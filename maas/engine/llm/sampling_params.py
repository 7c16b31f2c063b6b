"""Per-request sampling parameters, validated once at the door."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from maas.errors import InvalidRequestError


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples and when it stops (OpenAI's parameters plus vLLM's extras)."""

    n: int = 1
    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None  # None: off; k >= 0: the chosen token's logprob plus top k
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    guide: str | None = None  # an llguidance grammar the output must match (maas.text.grammar builds it)
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        def bad(param: str, msg: str) -> InvalidRequestError:
            return InvalidRequestError(f"{param} {msg}", param=param, code="invalid_value")

        if not 1 <= self.n <= 128:
            raise bad("n", f"must be between 1 and 128, got {self.n}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise bad("max_tokens", f"must be at least 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0 or self.temperature != self.temperature:
            raise bad("temperature", f"must be between 0 and 2, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.top_k < -1:
            raise bad("top_k", f"must be -1 (off), 0 (off) or positive, got {self.top_k}")
        if not 0.0 <= self.min_p <= 1.0:
            raise bad("min_p", f"must be in [0, 1], got {self.min_p}")
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise bad("presence_penalty", f"must be between -2 and 2, got {self.presence_penalty}")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            raise bad("frequency_penalty", f"must be between -2 and 2, got {self.frequency_penalty}")
        if not 0.0 < self.repetition_penalty <= 2.0:
            raise bad("repetition_penalty", f"must be in (0, 2], got {self.repetition_penalty}")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise bad("logprobs", f"must be between 0 and 20, got {self.logprobs}")
        if self.seed is not None and not -(2**63) <= self.seed < 2**64:
            raise bad("seed", f"must fit in 64 bits, got {self.seed}")
        if self.max_tokens is not None and self.max_tokens >= 2**31:
            raise bad("max_tokens", f"is absurd: {self.max_tokens}")
        if self.top_k >= 2**31:
            raise bad("top_k", f"is absurd: {self.top_k}")
        if len(self.stop_token_ids) > 256 or any(not 0 <= t < 2**31 for t in self.stop_token_ids):
            raise bad("stop_token_ids", "must be at most 256 token ids, each in 0..2**31-1")
        if len(self.stop) > 16 or any(not s for s in self.stop):
            raise bad("stop", "must be at most 16 non-empty strings")

    @property
    def greedy(self) -> bool:
        """True when sampling reduces to argmax."""
        return self.temperature == 0.0 or self.top_k == 1

    def with_(self, **kw: object) -> SamplingParams:
        """A copy with some fields changed (re-validated)."""
        return replace(self, **kw)  # type: ignore[arg-type]
