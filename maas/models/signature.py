"""A model's signature: its named input and output tensors (datatype, shape with -1 for any size),
and the class labels of its scores; checks request tensors against it before they reach the model.

sig = Signature.from_dict({"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
                           "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 10]}]})
sig.check({"input": np.zeros((2, 1, 8, 8), np.float32)})   # InvalidRequestError naming the input otherwise
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maas.errors import InvalidRequestError, ModelFormatError

# Open Inference Protocol datatypes -> numpy dtypes (BYTES: object arrays of bytes).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_BY_DTYPE = {v: k for k, v in DATATYPES.items()}


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The protocol datatype of a numpy dtype (InvalidRequestError when there is none)."""
    if dtype.kind in ("S", "U"):
        return "BYTES"
    try:
        return _BY_DTYPE[np.dtype(dtype)]
    except KeyError:
        raise InvalidRequestError(f"no Open Inference Protocol datatype for numpy {dtype}") from None


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: datatype and shape (-1 where any size goes; the first axis is the batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    allow_nan: bool = False  # NaN / inf refused in float inputs unless the model says otherwise

    def as_dict(self) -> dict[str, Any]:
        """The protocol's tensor metadata."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TensorSpec:
        """From tensor metadata (as_dict's form); ValueError for an unknown datatype or a bad shape."""
        name, dt, shape = str(d["name"]), str(d["datatype"]), d["shape"]
        if dt not in DATATYPES:
            raise ValueError(f"tensor {name!r}: datatype {dt!r} is not one of {', '.join(DATATYPES)}")
        if not isinstance(shape, list) or not all(isinstance(x, int) and x >= -1 for x in shape):
            raise ValueError(f"tensor {name!r}: shape must be a list of sizes (-1 for any size)")
        return TensorSpec(name, dt, tuple(shape), bool(d.get("allow_nan", False)))


@dataclass(frozen=True)
class Signature:
    """Inputs, outputs and class labels of a servable tensor model."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...] | None = None  # class names, in the order of the score columns
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # e.g. CSV column names

    @property
    def batched(self) -> bool:
        """True when every input and output has a variable first (batch) axis."""
        return all(t.shape and t.shape[0] == -1 for t in (*self.inputs, *self.outputs))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in config.json and in the registry)."""
        d: dict[str, Any] = {
            "inputs": [t.as_dict() | ({"allow_nan": True} if t.allow_nan else {}) for t in self.inputs],
            "outputs": [t.as_dict() for t in self.outputs],
        }
        if self.labels is not None:
            d["labels"] = list(self.labels)
        d.update(self.extra)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Signature:
        """From as_dict's form."""
        extra = {k: v for k, v in d.items() if k not in ("inputs", "outputs", "labels")}
        labels = d.get("labels")
        return Signature(tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
                         tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
                         tuple(str(x) for x in labels) if labels is not None else None, extra)  # fmt: skip

    def input(self, name: str) -> TensorSpec:
        """The input called `name` (InvalidRequestError naming the known ones otherwise)."""
        for t in self.inputs:
            if t.name == name:
                return t
        raise InvalidRequestError(
            f"unknown input {name!r}; this model takes {', '.join(t.name for t in self.inputs)}", param=name
        )

    def output_names(self, wanted: list[str] | None) -> list[str]:
        """The outputs to return: `wanted` (each checked) or all of them."""
        known = [t.name for t in self.outputs]
        for n in wanted or []:
            if n not in known:
                raise InvalidRequestError(
                    f"unknown output {n!r}; this model gives {', '.join(known)}", param=n
                )
        return list(wanted) if wanted else known

    def check(self, arrays: dict[str, np.ndarray], max_batch: int | None = None) -> None:
        """Every input present once with its datatype and shape, finite floats, one batch size."""
        missing = [t.name for t in self.inputs if t.name not in arrays]
        for name in arrays:
            self.input(name)
        if missing:
            raise InvalidRequestError(f"missing input {missing[0]!r}", param=missing[0])
        batch = None
        for t in self.inputs:
            a = arrays[t.name]
            got = datatype_of(a.dtype)
            if got != t.datatype:
                raise InvalidRequestError(
                    f"input {t.name!r} has datatype {got}; this model takes {t.datatype}", param=t.name
                )
            if len(a.shape) != len(t.shape) or any(
                w not in (-1, g) for w, g in zip(t.shape, a.shape, strict=True)
            ):
                raise InvalidRequestError(
                    f"input {t.name!r} has shape {list(a.shape)}; this model takes {list(t.shape)} (-1: any size)",
                    param=t.name,
                )
            if self.batched:
                if batch is not None and a.shape[0] != batch:
                    raise InvalidRequestError(
                        f"input {t.name!r} has batch size {a.shape[0]}, another input {batch}", param=t.name
                    )
                batch = a.shape[0]
                if batch == 0:
                    raise InvalidRequestError(f"input {t.name!r} has an empty batch", param=t.name)
                if max_batch is not None and batch > max_batch:
                    raise InvalidRequestError(
                        f"input {t.name!r} has batch size {batch}; this model takes at most {max_batch} "
                        "rows a request",
                        param=t.name,
                    )
            if a.dtype.kind == "f" and not t.allow_nan and not np.isfinite(a).all():
                raise InvalidRequestError(f"input {t.name!r} holds NaN or infinite values", param=t.name)
            vocab = self.extra.get("vocab_size")
            if vocab and a.dtype.kind in "iu" and a.size and (a.min() < 0 or a.max() >= vocab):
                raise InvalidRequestError(
                    f"input {t.name!r} holds token ids outside the vocabulary (0..{vocab - 1})", param=t.name
                )


def parse_signature(d: Any, where: str) -> Signature:
    """A signature recorded in a file (config.json, --signature); ModelFormatError naming `where`."""
    try:
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        return Signature.from_dict(d)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFormatError(f"{where}: not a valid signature ({type(e).__name__}: {e})") from None


def classifier_signature(
    input_shape: tuple[int, ...], labels: list[str], extra: dict[str, Any] | None = None
) -> Signature:
    """A classifier taking FP32 `input` rows of `input_shape` and giving FP32 class `scores`."""
    return Signature(
        (TensorSpec("input", "FP32", (-1, *input_shape)),),
        (TensorSpec("scores", "FP32", (-1, len(labels))),),
        tuple(labels),
        dict(extra or {}),
    )


def exported_signature(meta: dict[str, Any]) -> Signature | None:
    """The signature of a `maas-<arch>` directory's config.json (written by `maas train`): its own
    `signature` entry, else derived from the training data it records (older exports)."""
    if "signature" in meta:
        return parse_signature(meta["signature"], "config.json")
    if meta.get("task") == "classify" and "input_shape" in meta and meta.get("num_classes"):
        labels = meta.get("labels") or [str(i) for i in range(int(meta["num_classes"]))]
        return classifier_signature(tuple(int(x) for x in meta["input_shape"]), [str(x) for x in labels])
    if meta.get("architecture") == "rnn-lm" and meta.get("vocab_size"):
        vocab = int(meta["vocab_size"])
        return Signature(
            (TensorSpec("input_ids", "INT64", (-1, -1)),),
            (TensorSpec("logits", "FP32", (-1, -1, vocab)),),
            extra={"vocab_size": vocab},
        )
    return None
