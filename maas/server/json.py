"""Fast JSON bodies for large responses (embeddings)."""

from __future__ import annotations

from typing import Any

import orjson


def dumps(obj: Any) -> bytes:
    """Serialize to UTF-8 JSON bytes."""
    return orjson.dumps(obj)
