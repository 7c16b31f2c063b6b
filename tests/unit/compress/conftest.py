"""A registry in a temporary MAAS_HOME holding a tiny Llama as `tiny:base` (no built-ins imported)."""

from __future__ import annotations

import pytest

from maas.store.registry import Registry
from tests.gguf_util import tiny_model
from tests.unit.formats.test_hf import save_hf


@pytest.fixture
def tiny_registry(tmp_path, monkeypatch):
    """(registry, the float model stored as tiny:base)."""
    monkeypatch.setenv("MAAS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("maas.store.builtin.ensure_builtins_imported", lambda: None)
    reg = Registry(tmp_path / "home")
    model = tiny_model()
    reg.import_path(save_hf(tmp_path / "src", model), "tiny:base")
    return reg, model
