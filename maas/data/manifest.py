"""The manifest of a prepared dataset: written last and whole (the dataset exists once it does), read by
`maas data show` and by training."""

from __future__ import annotations

import json
from typing import Any

from maas.errors import InvalidRequestError

NAME = "manifest.json"
FORMAT = "maas-tokens/1"


def url_of(out: str) -> str:
    """The manifest's URL in a dataset directory or URL."""
    return f"{out.rstrip('/')}/{NAME}"


def exists(out: str) -> bool:
    """Whether `out` holds a complete dataset."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url_of(out))
    return bool(fs.exists(path))


def read(out: str) -> dict[str, Any]:
    """A dataset's manifest (a clear error where there is none or it is not one)."""
    import fsspec

    try:
        with fsspec.open(url_of(out), "rb") as f:
            manifest = json.loads(f.read())
    except FileNotFoundError:
        raise InvalidRequestError(f"{out!r} holds no prepared dataset (no {NAME})") from None
    except (OSError, ValueError) as e:
        raise InvalidRequestError(f"cannot read the manifest of {out!r}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidRequestError(f"{url_of(out)} is not a maas dataset manifest ({FORMAT})")
    return manifest


def write(out: str, manifest: dict[str, Any]) -> None:
    """Write the manifest whole: a local file through a rename, an object store in one put."""
    import fsspec

    data = json.dumps(manifest, indent=2).encode("utf-8")
    fs, path = fsspec.core.url_to_fs(url_of(out))
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        tmp = path + ".tmp"
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    else:
        with fs.open(path, "wb") as f:
            f.write(data)
