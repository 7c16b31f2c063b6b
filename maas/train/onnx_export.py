"""Export a registered tensor model to ONNX (dynamic batch axis), check it against torch in ONNX
Runtime, and register it as a new version with lineage.

maas export onnx cnn-digits            # -> cnn-digits:onnx (model.onnx + config.json), served by ORT
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maas.errors import InvalidRequestError, MaasError
from maas.models.exported import load_servable
from maas.models.families import kind_of
from maas.models.signature import DATATYPES, Signature, TensorSpec

log = logging.getLogger("maas.export")

TOLERANCE = 1e-4  # largest |onnx - torch| accepted on the check inputs


@dataclass
class OnnxExport:
    """What `export_onnx` made: the registered version and how close ORT came to torch."""

    info: Any  # store.registry.VersionInfo
    max_abs_diff: float
    opset: int


def example_inputs(sig: Signature, batch: int, seed: int = 0) -> list[torch.Tensor]:
    """Inputs of `batch` rows that fit the signature (other free dimensions: 5)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in sig.inputs:
        shape = [batch if i == 0 and d == -1 else (5 if d == -1 else d) for i, d in enumerate(t.shape)]
        dtype = torch.from_numpy(np.zeros(0, DATATYPES[t.datatype])).dtype
        if dtype.is_floating_point:
            out.append(torch.rand(shape, generator=g).to(dtype))
        else:
            high = int(sig.extra.get("vocab_size", 2)) if t.datatype.startswith(("INT", "UINT")) else 2
            out.append(torch.randint(0, high, shape, generator=g).to(dtype))
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.onnx logs every skipped optional op set; keep the user's terminal readable."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def _dynamic(spec: TensorSpec) -> dict[int, Any]:
    dims: dict[int, Any] = {}
    for i, d in enumerate(spec.shape):
        if d == -1:
            dims[i] = torch.export.Dim("batch" if i == 0 else f"{spec.name}_{i}", min=1, max=1 << 20)
    return dims


def to_onnx(module: torch.nn.Module, sig: Signature, path: Path, opset: int | None = None) -> int:
    """Write `module` as an ONNX graph with the signature's names and free dimensions; the opset."""
    args = tuple(example_inputs(sig, 2))
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            dynamic_shapes=tuple(_dynamic(t) for t in sig.inputs),
            input_names=[t.name for t in sig.inputs],
            output_names=[t.name for t in sig.outputs],
            opset_version=opset,
            verbose=False,
        )
        if program is None:
            raise MaasError("torch.onnx.export returned no program")
        program.save(str(path))
    import onnx

    return int(next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")))


def compare(module: torch.nn.Module, sig: Signature, path: Path) -> float:
    """Largest |ORT - torch| over every output, on inputs of 1, 3 and 17 rows."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for seed, batch in enumerate((1, 3, 17)):
        args = example_inputs(sig, batch, seed)
        with torch.no_grad():
            want = module(*args)
        want = want if isinstance(want, tuple | list) else (want,)
        got = session.run(None, {t.name: a.numpy() for t, a in zip(sig.inputs, args, strict=True)})
        for w, g in zip(want, got, strict=True):
            worst = max(worst, float(np.abs(w.numpy().astype(np.float64) - g.astype(np.float64)).max()))
    return worst


def export_onnx(ref: str, tag: str = "onnx", opset: int | None = None, registry: Any = None) -> OnnxExport:
    """Export the registry model `ref` to ONNX, check it, register it as `name:tag` (parent: ref)."""
    from maas.store.registry import Registry

    reg = registry if registry is not None else Registry()
    info = reg.show(ref)
    if kind_of(info.family) != "tensor" or info.family == "onnx":
        raise InvalidRequestError(
            f"{info.name}:{info.tag} is a {info.family} model; `maas export onnx` exports models `maas train` "
            "made (MLP, CNN, RNN)"
        )
    module, sig = load_servable(reg.path_for(f"{info.name}:{info.tag}"))
    with tempfile.TemporaryDirectory(prefix="maas-onnx-") as tmp:
        d = Path(tmp)
        log.info("exporting %s:%s to ONNX", info.name, info.tag)
        used = to_onnx(module, sig, d / "model.onnx", opset)
        diff = compare(module, sig, d / "model.onnx")
        log.info("ONNX Runtime vs torch: max |diff| %.3g (opset %d)", diff, used)
        if not diff <= TOLERANCE:
            raise MaasError(
                f"the ONNX graph differs from the torch model by {diff:.3g} (> {TOLERANCE}); not registered"
            )
        import json

        meta = {
            "model_type": "onnx",
            "signature": sig.as_dict(),
            "opset": used,
            "source": f"{info.name}:{info.tag}",
        }
        (d / "config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        new = reg.import_path(
            d,
            f"{info.name}:{tag}",
            parent=f"{info.name}:{info.tag}",
            operation="export-onnx",
            metrics={"onnx_max_abs_diff": diff, "onnx_opset": used},
        )
    return OnnxExport(new, diff, used)
