"""The native builds: named by what they are made from, built at install, only loaded at run time."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from maas.kernels import native
from maas.kernels.build import build_all
from maas.kernels.native import BUILDS, Build, load


@pytest.fixture
def csrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of csrc/ the test may edit, as the one the builds are made from."""
    copy = tmp_path / "csrc"
    shutil.copytree(native.CSRC, copy)
    monkeypatch.setattr(native, "CSRC", copy)
    return copy


def test_a_changed_source_or_header_is_a_new_build(csrc: Path) -> None:
    b = BUILDS["maas_q8_linear"]
    before = b.module
    (csrc / "q8_linear.cpp").write_text((csrc / "q8_linear.cpp").read_text() + "\n// changed\n")
    after_source = b.module
    (csrc / "vec_math.h").write_text((csrc / "vec_math.h").read_text() + "\n// changed\n")
    assert len({before, after_source, b.module}) == 3
    assert b.module.startswith("maas_q8_linear_")


def test_other_flags_are_another_build() -> None:
    b = BUILDS["maas_q8_linear"]
    assert Build(b.name, b.sources, b.cflags + ("-DX",), b.needs).module != b.module


def test_a_missing_build_is_the_reference_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MAAS_KERNELS_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_warned", set())
    with caplog.at_level(logging.WARNING, "maas.kernels"):
        assert load(BUILDS["maas_q8_linear"]) is None
        assert load(BUILDS["maas_q8_linear"]) is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "maas kernels build" in warnings[0]
    assert not any(tmp_path.iterdir()), "loading must never build"


def test_a_damaged_build_is_the_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAAS_KERNELS_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_warned", set())
    b = BUILDS["maas_q8_linear"]
    b.path().parent.mkdir(parents=True)
    b.path().write_bytes(b"not a shared library")
    assert load(b) is None


def test_no_native_turns_every_kernel_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAAS_NO_NATIVE", "1")
    assert all(load(b) is None for b in BUILDS.values())


def test_the_install_built_every_build_this_cpu_runs() -> None:
    """`make install` ran `maas kernels build`: each build for this CPU is there and loads."""
    if native.compiler() is not None:
        pytest.skip(f"this machine cannot build them: {native.compiler()}")
    runnable = [b for b in BUILDS.values() if b.runs_here()]
    if not runnable:
        pytest.skip("this CPU runs none of the builds")
    for b in runnable:
        assert b.path().exists(), f"{b.name} was not built at install ({b.path()})"
        assert load(b) is not None


def test_without_a_compiler_the_build_says_so_and_fails_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAAS_KERNELS_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")
    said: list[str] = []
    outcomes = build_all(say=said.append)
    assert outcomes and all(o.state == "skipped" for o in outcomes)
    assert any("no C++ compiler" in s and "torch reference" in s for s in said)
    assert not any(tmp_path.iterdir())
