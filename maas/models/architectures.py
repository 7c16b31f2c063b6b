"""Build an empty decoder LM for a family of the table (maas.models.families)."""

from __future__ import annotations

from typing import Any

from maas.errors import UnsupportedModelError
from maas.models.decoder import DecoderLM
from maas.models.families import by_name


def build_decoder(family: str, hf_config: dict[str, Any]) -> tuple[Any, DecoderLM]:
    """Config and an empty (meta-device) decoder LM for a family name."""
    import torch

    row = by_name(family)
    if row is None or row.kind != "llm":
        raise UnsupportedModelError(f"no decoder architecture for family {family!r}")
    cfg = row.config_class().from_hf(hf_config, row)
    with torch.device("meta"):
        model = row.module_class()(cfg)
    if not isinstance(model, DecoderLM):
        raise UnsupportedModelError(f"{row.module} does not implement maas.models.decoder.DecoderLM")
    return cfg, model
