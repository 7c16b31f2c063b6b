"""Fast JSON bodies for large responses (embeddings): orjson when installed, else the stdlib."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson

    def dumps(obj: Any) -> bytes:
        """Serialize to UTF-8 JSON bytes."""
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - orjson is a dependency; this is the fallback

    def dumps(obj: Any) -> bytes:
        """Serialize to UTF-8 JSON bytes."""
        return json.dumps(obj, separators=(",", ":")).encode()
