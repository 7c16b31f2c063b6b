"""What a server hosts: model specs (servable) and served models (loaded)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """A model the server can load: its API name, kind, and where it comes from."""

    name: str
    kind: str  # "llm" | "embedding"
    origin: str  # "path" | "registry" | "builtin"
    source: str  # the path given on the command line, the registry name:tag, or the built-in name
    estimate: int = 1 << 30  # bytes expected once loaded (before it has been measured)


@dataclass
class ServedModel:
    """A loaded model behind an API name."""

    name: str
    kind: str
    engine: Any  # AsyncEngine | ProcessEngine for LLMs
    created: int = field(default_factory=lambda: int(time.time()))
    owned_by: str = "maas"

    def memory(self) -> int | None:
        """Resident bytes the model takes (its engine process), when measurable."""
        fn = getattr(self.engine, "memory_bytes", None)
        return fn() if fn is not None else None
