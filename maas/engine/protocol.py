"""The contracts the server relies on, one per model kind: what it may call on a loaded engine.

The LLM engine (engine/llm/client.py's EngineClient, over a thread: ThreadEngine, or a child process:
ProcessEngine; typed messages in engine/llm/messages.py, one step loop in engine/llm/loop.py), the embedding
engine and the tensor engine each satisfy one; the server never reaches past them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:  # the contract itself costs no torch import
    from maas.engine.llm.request import RequestOutput
    from maas.engine.llm.sampling_params import SamplingParams
    from maas.engine.tensor.engine import TensorOptions
    from maas.models.signature import Signature
    from maas.text.chat_template import ChatTemplate
    from maas.text.tokenizer import Tokenizer


class ModelEngine(Protocol):
    """What the pool, /health and metrics need of any loaded model."""

    @property
    def alive(self) -> bool:
        """True while the engine can serve."""
        ...

    def stats(self) -> dict[str, float]:
        """Counters for /health and the metrics gauges."""
        ...

    def memory_bytes(self) -> int | None:
        """Bytes the model takes, when measurable."""
        ...

    def shutdown(self) -> None:
        """Stop the engine (in-flight requests fail)."""
        ...


class LLMClient(ModelEngine, Protocol):
    """A decoder LM: chat template, tokenizer, limits, streamed generation."""

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer."""
        ...

    @property
    def chat_template(self) -> ChatTemplate:
        """The model's chat template."""
        ...

    @property
    def max_num_seqs(self) -> int:
        """Sequences in the running batch at most."""
        ...

    @property
    def max_model_len(self) -> int:
        """The longest prompt + output accepted."""
        ...

    def check_prompt(self, prompt_len: int, max_tokens: int | None, param: str = "messages") -> int:
        """The max_tokens to use (ContextLengthError when the prompt does not fit)."""
        ...

    def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[tuple[int, RequestOutput], None]:
        """Stream (choice index, output) pairs; closing the generator aborts the request."""
        ...


class EncoderTokens(Protocol):
    """An encoder's texts -> token ids, checked against its limits (engine/embedding/embedder.py's EncoderInputs)."""

    def tokenize(self, texts: list[str], truncate: bool = False, param: str = "input") -> list[list[int]]:
        """Token ids with the model's special tokens; too long -> truncated or ContextLengthError."""
        ...

    def fit(self, ids: list[int], truncate: bool, param: str = "input") -> list[int]:
        """Check one sequence's length and ids (truncated when asked)."""
        ...


class EmbeddingClient(ModelEngine, Protocol):
    """An encoder: token-id sequences in, pooled vectors out, batched across requests."""

    dim: int
    max_model_len: int

    @property
    def embedder(self) -> EncoderTokens:
        """The encoder's tokenizer and limits."""
        ...

    on_batch: Callable[[int, list[float]], None] | None

    async def embed(self, seqs: list[list[int]], dimensions: int | None = None) -> np.ndarray:
        """(len(seqs), dimensions or dim) float32 vectors."""
        ...


class TensorClient(ModelEngine, Protocol):
    """A tensor model: named arrays in, named arrays out, checked against its signature, batched."""

    signature: Signature
    platform: str
    max_batch_size: int | None  # rows a request may send (None: the model does not batch)
    options: TensorOptions
    on_batch: Callable[[int, list[float]], None] | None

    async def infer(
        self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The requested outputs (all by default)."""
        ...
