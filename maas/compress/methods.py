"""The table of compression methods: one row per (name, model kinds). The commands read their --method
choices here, and a name is validated here, once, against the model's kind.

    find("quantize", "gptq", "llm")       # the GPTQ method object
    names("prune")                        # ("magnitude", "wanda", "2:4", "structured")
    info = compress("quantize", "smollm2-135m-instruct", "gptq", calibration=Path("valid.txt"))
"""

from __future__ import annotations

from collections.abc import Mapping

from maas.compress.awq import AWQ
from maas.compress.conv_channels import ConvChannels
from maas.compress.distill import Distill
from maas.compress.gptq import GPTQ
from maas.compress.method import Method, Options, Verb, flags
from maas.compress.output import save_version
from maas.compress.prune import MagnitudeOptions, TwoFourOptions, Unstructured, WandaOptions
from maas.compress.quantize import Cast, RoundToNearest
from maas.compress.source import open_source
from maas.compress.structured import Structured
from maas.compress.tensor import TensorQuantize
from maas.errors import InvalidRequestError
from maas.models.families import KINDS, Kind
from maas.store.registry import VersionInfo, parse_ref

METHODS: tuple[Method, ...] = (
    RoundToNearest("int8", 8, "int8 codes, one scale per group (symmetric, round to nearest)"),
    RoundToNearest("int4", 4, "int4 codes, a scale and a min per group (round to nearest)"),
    GPTQ(),
    AWQ(),
    Cast("float32"),
    Cast("float16"),
    Cast("bfloat16"),
    TensorQuantize("int8", 8),
    TensorQuantize("int4", 4),
    Unstructured("magnitude", MagnitudeOptions, "zero the smallest |W| of each layer"),
    Unstructured("wanda", WandaOptions, "zero the smallest |W| x input norm of each output row"),
    Unstructured("2:4", TwoFourOptions, "zero 2 of every 4 consecutive weights"),
    Structured(),
    ConvChannels(),
    Distill(),
)


def names(verb: Verb) -> tuple[str, ...]:
    """The method names of one command, in the table's order."""
    return tuple(dict.fromkeys(m.name for m in METHODS if m.verb == verb))


def find(verb: Verb, name: str, kind: Kind) -> Method:
    """The method `name` of command `verb` for a model of `kind`; an unknown name, or one that does not
    apply to the kind, is refused with the choices."""
    rows = [m for m in METHODS if m.verb == verb and m.name == name]
    if not rows:
        raise InvalidRequestError(f"unknown {verb} method {name!r} (choose from {', '.join(names(verb))})")
    for m in rows:
        if kind in m.kinds:
            return m
    kinds = [k for k in KINDS if any(k in m.kinds for m in rows)]
    fitting = [m.name for m in METHODS if m.verb == verb and kind in m.kinds]
    raise InvalidRequestError(
        f"{verb} method {name!r} applies to {' and '.join(kinds)} models, not {kind} models"
        + (f" (for those: {', '.join(fitting)})" if fitting else "")
    )


def options(method: Method, given: Mapping[str, object]) -> Options:
    """`method`'s options from `given`; a value it has no use for is refused, naming the methods that take it."""
    unused = method.unused(given)
    if unused:
        extra = {k: given[k] for k in unused}
        takers = [m.name for m in METHODS if m.verb == method.verb and set(m.kinds) & set(method.kinds)
                  and not m.unused(extra)]  # fmt: skip
        hint = (
            f" ({', '.join(dict.fromkeys(takers))} {'does' if len(takers) == 1 else 'do'})" if takers else ""
        )
        raise InvalidRequestError(f"{method.name} takes no {flags(unused)}{hint}")
    return method.options(**given)


def compress(
    verb: Verb, model: str, method: str, name: str | None = None,
    services: Mapping[str, object] | None = None, **given: object,
) -> VersionInfo:  # fmt: skip
    """The whole pipeline: find `model` (a registry ref, a built-in name or a path) and the method for its
    kind, build the method's options from `given` (refusing what it has no use for) and from `services`
    (what the caller wires in, e.g. the training loop: taken where the options have a field of that name),
    apply it, and store the result as a registry version named `name` (default `<model name>:<tag>`)."""
    if name is not None:
        parse_ref(name)  # a bad name fails before the work
    source = open_source(model)
    chosen = find(verb, method, source.kind)
    wired = {k: v for k, v in (services or {}).items() if not chosen.unused({k: v})}
    result = chosen.apply(source, options(chosen, {**given, **wired}))
    return result.registered or save_version(source, result, verb, name)
