"""The registry under real processes: concurrent importers, and an import killed half-way."""

import json
import os
import signal
import subprocess
import sys
import time

from maas.store.builtin import builtin_path
from maas.store.registry import Registry

MAAS = [sys.executable, "-m", "maas.cli.main"]


def test_two_concurrent_importers_leave_a_consistent_catalog(tmp_path, catalog_url):
    env = {**os.environ, "MAAS_HOME": str(tmp_path / "home"), "MAAS_DATABASE_URL": catalog_url}
    gguf = str(builtin_path("smollm2-135m-instruct"))
    procs = [
        subprocess.Popen(
            [*MAAS, "models", "import", gguf, "--name", f"m{i}:v1"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    listed = json.loads(
        subprocess.run([*MAAS, "models", "list", "--json"], env=env, capture_output=True, text=True).stdout
    )
    assert sorted(f"{m['name']}:{m['tag']}" for m in listed) == ["m0:v1", "m1:v1"]
    reg = Registry(home=tmp_path / "home", database_url=catalog_url)
    assert len(reg.blobs.digests()) == 1 and all(ok for *_, ok in reg.verify())


def test_import_killed_midway_leaves_store_consistent_and_can_be_redone(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "MAAS_HOME": str(home)}
    big = tmp_path / "big.gguf"
    src = builtin_path("smollm2-135m-instruct").read_bytes()
    big.write_bytes(src + b"\0" * (400 << 20))  # a slow enough copy to kill in the middle
    p = subprocess.Popen([*MAAS, "models", "import", str(big), "--name", "big"], env=env)
    blobs = home / "blobs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(f.name.startswith(".tmp-") for f in blobs.glob(".tmp-*")):
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    reg = Registry(home=home)
    assert reg.list_models() == []
    assert reg.blobs.digests() == []  # no half blob under a real name
    reg.gc()  # removes the leftover temporary file
    assert not list(blobs.glob(".tmp-*"))
    info = reg.import_path(big, "big")
    assert info.size == big.stat().st_size and all(ok for *_, ok in reg.verify("big"))


def _tagger(home: str, url: str, k: int, errors) -> None:  # type: ignore[no-untyped-def]
    reg = Registry(home=home, database_url=url)
    for i in range(12):
        try:
            reg.tag("base", f"alias:t{i}")
            reg.tag("other", f"alias:t{(i + k) % 12}")
        except Exception as e:  # collected and asserted on by the parent
            errors.put(f"{type(e).__name__}: {e}")


def test_concurrent_taggers_never_fail_and_leave_one_row_per_tag(tmp_path, catalog_url):
    import multiprocessing as mp

    from tests.gguf_util import tiny_model, write_gguf

    home = str(tmp_path / "home")
    reg = Registry(home=home, database_url=catalog_url)
    reg.import_path(write_gguf(tmp_path / "a.gguf", tiny_model(seed=0)), "base")
    reg.import_path(write_gguf(tmp_path / "b.gguf", tiny_model(seed=1)), "other")
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_tagger, args=(home, catalog_url, k, errors)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    assert errors.empty(), errors.get()
    tags = [f"{i.name}:{i.tag}" for i in reg.list_models()]
    assert len(tags) == len(set(tags)) == 14  # base, other, alias:t0..t11
    assert {i.version for i in reg.list_models()} <= {reg.show("base").version, reg.show("other").version}
