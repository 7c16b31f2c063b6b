"""What a server hosts: model specs (servable) and served models (loaded)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from maas.engine.protocol import EmbeddingClient, LLMClient, ModelEngine, TensorClient
    from maas.models.families import Kind


@dataclass(frozen=True)
class ModelSpec:
    """A model the server can load: its API name, kind, and where it comes from."""

    name: str
    kind: Kind
    origin: str  # "path" | "registry" | "builtin"
    source: str  # the path given on the command line, the registry name:tag, or the built-in name
    estimate: int = 1 << 30  # bytes expected once loaded (before it has been measured)


@dataclass
class ServedModel:
    """A loaded model behind an API name; `llm()`, `embedding()`, `tensor()` give its engine's contract."""

    name: str
    kind: Kind
    engine: ModelEngine
    created: int = field(default_factory=lambda: int(time.time()))
    owned_by: str = "maas"

    def llm(self) -> LLMClient:
        """The engine of an LLM (the pool hands a route only models of the kind it asked for)."""
        assert self.kind == "llm", self.kind
        return cast("LLMClient", self.engine)

    def embedding(self) -> EmbeddingClient:
        """The engine of an embedding model."""
        assert self.kind == "embedding", self.kind
        return cast("EmbeddingClient", self.engine)

    def tensor(self) -> TensorClient:
        """The engine of a tensor model."""
        assert self.kind == "tensor", self.kind
        return cast("TensorClient", self.engine)

    def memory(self) -> int | None:
        """Resident bytes the model takes (its engine process), when measurable."""
        return self.engine.memory_bytes()
