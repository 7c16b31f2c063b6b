"""The signature a tensor-model directory records in its config.json (`maas export onnx`,
`maas models import --signature`): labels, NaN rules, and shapes a file cannot tell."""

from __future__ import annotations

import json
from pathlib import Path

from maas.errors import ModelFormatError
from maas.models.signature import Signature, parse_signature


def recorded_signature(p: Path) -> Signature | None:
    """The `signature` a model directory's config.json records (`maas export onnx`, `--signature`)."""
    meta = p / "config.json" if p.is_dir() else None
    if meta is None or not meta.exists():
        return None
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8")).get("signature")
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"cannot read {str(meta)!r}: {e}") from None
    return parse_signature(recorded, str(meta)) if recorded is not None else None
