"""API keys: `Authorization: Bearer KEY` on /v1 and /admin when keys are configured.

Keys are compared in constant time and never logged; logs and metrics see a key id (the first
8 hex digits of its SHA-256). Admin endpoints need an admin key.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field


def key_id(key: str) -> str:
    """A loggable id for a key (never the key)."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class KeyRing:
    """User and admin keys (an admin key is also a user key)."""

    user: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()
    protect_metrics: bool = False
    _digests: tuple[tuple[bytes, bool], ...] = field(default=(), repr=False)

    @classmethod
    def build(cls, user: list[str], admin: list[str], protect_metrics: bool = False) -> KeyRing:
        """From lists of keys (blank entries dropped)."""
        u = tuple(k.strip() for k in user if k.strip())
        a = tuple(k.strip() for k in admin if k.strip())
        digests = tuple((hashlib.sha256(k.encode()).digest(), False) for k in u)
        digests += tuple((hashlib.sha256(k.encode()).digest(), True) for k in a)
        return cls(u, a, protect_metrics, digests)

    @property
    def enabled(self) -> bool:
        """True when any key is configured."""
        return bool(self._digests)

    def check(self, header: str | None) -> tuple[str | None, bool]:
        """(key id, is admin) for a valid `Bearer KEY` header, (None, False) otherwise.

        Every configured key is compared (constant time each), so timing does not tell which
        key came close.
        """
        if not header or not header.lower().startswith("bearer "):
            return None, False
        given = hashlib.sha256(header[7:].strip().encode()).digest()
        found, admin = False, False
        for digest, is_admin in self._digests:
            if hmac.compare_digest(given, digest):
                found, admin = True, admin or is_admin
        return (key_id(header[7:].strip()), admin) if found else (None, False)


def read_key_file(path: str) -> tuple[list[str], list[str]]:
    """Keys from a file: one per line; `admin:KEY` marks an admin key; `#` comments."""
    user, admin = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("admin:"):
                admin.append(line[6:])
            else:
                user.append(line)
    return user, admin
