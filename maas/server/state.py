"""The models a server hosts, by API name."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from maas.engine.async_engine import AsyncEngine
from maas.engine.process_engine import ProcessEngine
from maas.errors import InvalidRequestError, ModelNotFoundError


@dataclass
class ServedModel:
    """A loaded model behind an API name."""

    name: str
    kind: str  # "llm"
    engine: AsyncEngine | ProcessEngine
    created: int = field(default_factory=lambda: int(time.time()))
    owned_by: str = "maas"


class ModelTable:
    """Name -> ServedModel, with errors that say what exists."""

    def __init__(self) -> None:
        self.models: dict[str, ServedModel] = {}

    def add(self, m: ServedModel) -> None:
        """Host a model."""
        self.models[m.name] = m

    def get(self, name: str, kind: str | None = "llm") -> ServedModel:
        """The model named `name`, which must be of `kind` (any kind when None)."""
        m = self.models.get(name)
        if m is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFoundError(f"The model {name!r} does not exist. Models served here: {known}")
        if kind is not None and m.kind != kind:
            raise InvalidRequestError(
                f"model {name!r} is a {m.kind} model, not a {kind} model", param="model"
            )
        return m
