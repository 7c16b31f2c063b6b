"""`maas data prepare` from and to s3:// URLs on a local S3 API (moto's server, started here on loopback),
and training streams the dataset from there."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import free_port

WIKI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wikitext-2"
MAAS = [sys.executable, "-m", "maas.cli.main"]


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A moto S3 server on a free port; the environment that points fsspec (s3fs) at it."""
    pytest.importorskip("s3fs", reason="s3fs is not installed")
    pytest.importorskip("moto", reason="moto is not installed")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline and proc.poll() is None, "moto did not start"
            time.sleep(0.2)
    env = {"FSSPEC_S3_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    yield env
    proc.terminate()
    proc.wait(timeout=10)


def test_prepare_from_and_to_s3_and_show(
    s3: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fsspec.config
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3["FSSPEC_S3_ENDPOINT_URL"], key="test", secret="test")
    fs.mkdir("corpora")
    fs.put(str(WIKI / "valid.txt"), "corpora/wiki/valid.txt")
    env = {**os.environ, **s3}
    args = ["data", "prepare", "s3://corpora/wiki/*.txt", "--tokenizer", "smollm2-135m-instruct",
            "--block-size", "128", "--val-fraction", "0.1", "--out", "s3://datasets/wiki"]  # fmt: skip
    r = subprocess.run([*MAAS, *args], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    local = subprocess.run([*MAAS, *args[:-1], str(tmp_path / "local")], capture_output=True, text=True,
                           env=env, timeout=300)  # fmt: skip
    assert local.returncode == 0, local.stderr
    shown = subprocess.run([*MAAS, "data", "show", "s3://datasets/wiki"], capture_output=True, text=True,
                           env=env, timeout=120)  # fmt: skip
    digest = [ln for ln in shown.stdout.splitlines() if ln.startswith("digest")]
    assert digest and digest[0] in local.stdout, (shown.stdout, local.stdout)
    assert fs.exists("datasets/wiki/manifest.json") and fs.exists("datasets/wiki/train-00000.bin")

    from maas.data.blocks import windows
    from maas.data.manifest import read

    # this process reads the blocks through fsspec too (its configuration was read at import)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3["FSSPEC_S3_ENDPOINT_URL"], "key": "test",
                                                   "secret": "test"})  # fmt: skip
    m = read("s3://datasets/wiki")
    x, y = windows("s3://datasets/wiki", "train", m["splits"]["train"], 128, m["dtype"])
    lm = read(str(tmp_path / "local"))
    lx, _ = windows(str(tmp_path / "local"), "train", lm["splits"]["train"], 128, lm["dtype"])
    assert (x[[0, 5, len(x) - 1]] == lx[[0, 5, len(lx) - 1]]).all()
    assert (y[[3]][0, :-1] == x[[3]][0, 1:]).all()


def test_spark_prepares_from_and_to_s3_with_the_drivers_settings(
    s3: dict[str, str], spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The executors get the driver's fsspec settings (here: the endpoint and keys) with the plan."""
    import fsspec.config
    import s3fs

    from maas.data.prepare import PrepareOptions, prepare

    fs = s3fs.S3FileSystem(endpoint_url=s3["FSSPEC_S3_ENDPOINT_URL"], key="test", secret="test")
    if not fs.exists("corpora2"):
        fs.mkdir("corpora2")
    fs.put(str(WIKI / "test.txt"), "corpora2/test.txt")
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3["FSSPEC_S3_ENDPOINT_URL"], "key": "test",
                                                   "secret": "test"})  # fmt: skip
    opts = {"tokenizer": "smollm2-135m-instruct", "block_size": 128, "val_fraction": 0.1, "dedup": "near"}
    remote = prepare(PrepareOptions(("s3://corpora2/test.txt",), "s3://datasets/spark", engine="spark",
                                    partitions=3, **opts))  # type: ignore[arg-type]  # fmt: skip
    local = prepare(PrepareOptions((str(WIKI / "test.txt"),), str(tmp_path / "local"), **opts))  # type: ignore[arg-type]
    assert (remote["tokens"], remote["blocks"], remote["digest"]) == (
        local["tokens"],
        local["blocks"],
        local["digest"],
    )
    assert fs.exists("datasets/spark/manifest.json") and not fs.exists("datasets/spark/_pieces")
