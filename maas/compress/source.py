"""The model a compression method starts from: found by what a user typed, its files opened on demand.

source = open_source("smollm2-135m-instruct")   # a registry ref, a built-in name or a path
source.kind, source.path, source.files           # "llm", its local files, ModelFiles (LMs, encoders)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from maas.errors import InvalidRequestError
from maas.models.families import KINDS, Kind
from maas.store.locate import Located, local_path, locate

if TYPE_CHECKING:
    from maas.formats import ModelFiles


@dataclass
class Source:
    """A model found for compression: where it came from, its kind and its local path."""

    found: Located
    path: Path
    _files: ModelFiles | None = field(default=None, repr=False)

    @property
    def kind(self) -> Kind:
        """llm, embedding or tensor (the family table's kind)."""
        kind = next((k for k in KINDS if k == self.found.kind), None)
        if kind is None:
            raise InvalidRequestError(f"{self.found.source!r} is a model of unknown kind {self.found.kind!r}")
        return kind

    @property
    def files(self) -> ModelFiles:
        """The LM's or encoder's files, opened once (config, lazy tensors, tokenizer)."""
        if self._files is None:
            if self.kind == "tensor":
                raise InvalidRequestError(
                    f"{self.found.source!r} is a tensor model: it has no LM or encoder files"
                )
            from maas.formats import open_model_files

            self._files = open_model_files(self.path)
        return self._files

    @property
    def parent_ref(self) -> str | None:
        """The registry reference the result descends from (None for a plain path)."""
        return self.found.source if self.found.origin == "registry" else None

    def require_registry(self) -> str:
        """The registry reference (tensor models are compressed from the registry, where their lineage is)."""
        if self.parent_ref is None:
            raise InvalidRequestError(
                f"{self.found.source!r}: tensor models are compressed from the registry (`maas models import` it first)"
            )
        return self.parent_ref

    @property
    def ref(self) -> tuple[str, str]:
        """(name, tag) results are named after: the registry's, or the file's stem and `latest`."""
        from maas.store.registry import parse_ref

        return parse_ref(self.found.source) if self.parent_ref else (self.found.name, "latest")


def open_source(name: str) -> Source:
    """Find a model by what a user typed (built-ins are imported into the registry first, so that results
    have a parent to point at)."""
    from maas.store.builtin import ensure_builtins_imported

    ensure_builtins_imported()
    found = locate(name)
    return Source(found, local_path(found))
