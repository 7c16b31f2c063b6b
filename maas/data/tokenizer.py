"""The tokenizer of a model named or pathed on the command line or in a training config, with the special
tokens a trained model must carry on (for `maas data prepare` and `maas train`)."""

from __future__ import annotations

from typing import Any

from maas.text.tokenizer import Tokenizer


def model_tokenizer(ref: str) -> tuple[str, Tokenizer, int | None]:
    """(API name, tokenizer, the model's context length or None) of a registered, built-in or local model."""
    from maas.formats.detect import open_model_files
    from maas.store.locate import resolve

    name, path = resolve(ref)
    files = open_model_files(path)
    context = files.config.get("max_position_embeddings") if isinstance(files.config, dict) else None
    return name, Tokenizer.from_source(files.tokenizer), context


def special_tokens(tok: Tokenizer) -> dict[str, Any]:
    """Its bos / eos tokens, whether it adds BOS, and its chat template (the fields it has)."""
    src = tok.source
    config = {"bos_token": src.bos_token, "eos_token": src.eos_token, "add_bos_token": src.add_bos_token,
              "chat_template": src.chat_template}  # fmt: skip
    return {k: v for k, v in config.items() if v is not None}
