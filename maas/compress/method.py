"""The compression contract: a method is one object with a name, the model kinds it applies to, a frozen
dataclass of options, and one verb, `apply`, that turns a source model into a `Result` (config, tensors,
report). The table of methods and the pipeline that runs one are methods.py; output.py stores results.

    m = find("prune", "wanda", "llm")
    result = m.apply(open_source("tiny:base"), m.options(calibration=Path("valid.txt")))
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

import torch

from maas.compress.source import Source
from maas.errors import InvalidRequestError
from maas.models.families import Kind

if TYPE_CHECKING:
    from maas.store.registry import VersionInfo

Verb = Literal["quantize", "prune", "distill"]  # the command, and the registry's `operation`
OptionsT = TypeVar("OptionsT", bound="Options")


@dataclass(frozen=True)
class Options:
    """What a user chose for one method (each method has its own frozen subclass); fields are named like
    the command line's flags (`calibration_tokens` is `--calibration-tokens`)."""


@dataclass(frozen=True)
class Result:
    """What a method made: the new model's config.json and tensors, and the report its lineage records."""

    config: dict[str, object]
    tensors: dict[str, torch.Tensor]
    report: dict[str, object]  # the version's `parameters`: method, settings, data digests, counts
    tag: str  # the default tag of the new version (`name:tag`)
    files: dict[str, bytes] = field(default_factory=dict)  # other files (an ONNX graph), by name
    metrics: dict[str, object] = field(default_factory=dict)
    # set when the method's own machinery stored the result already (distill: the training run registers
    # its student with the training lineage); then there is nothing left to save
    registered: VersionInfo | None = None


class Method(ABC):
    """One compression method: `name`, the `kinds` of model it applies to, its `options_type`, and `apply`."""

    def __init__(
        self, name: str, verb: Verb, kinds: tuple[Kind, ...], options_type: type[Options], about: str
    ):
        self.name, self.verb, self.kinds, self.options_type, self.about = (
            name,
            verb,
            kinds,
            options_type,
            about,
        )

    @abstractmethod
    def apply(self, source: Source, options: Options) -> Result:
        """Compress `source` as `options` say."""

    def unused(self, given: Mapping[str, object]) -> list[str]:
        """The names in `given` (None and False count as not given) that are not among the options."""
        names = {f.name for f in dataclasses.fields(self.options_type)}
        return [k for k, v in given.items() if v is not None and v is not False and k not in names]

    def options(self, **given: object) -> Options:
        """The method's options from named values (None: the default); one it has no use for is refused."""
        unused = self.unused(given)
        if unused:
            raise InvalidRequestError(f"{self.name} takes no {flags(unused)}")
        names = {f.name for f in dataclasses.fields(self.options_type)}
        return self.options_type(**{k: v for k, v in given.items() if k in names and v is not None})

    def __repr__(self) -> str:
        return f"<{self.verb} method {self.name} for {'/'.join(self.kinds)}>"


def flags(names: list[str]) -> str:
    """Option names as the command line spells them: --calibration-tokens."""
    return ", ".join("--" + n.replace("_", "-") for n in names)


def expect(options: Options, kind: type[OptionsT]) -> OptionsT:
    """`options` as the method's own options type (a method handed another method's options is a bug)."""
    if not isinstance(options, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(options).__name__}")
    return options
