import json

import pytest
import torch

from maas.engine.llm.loader import load_lm
from maas.errors import ModelNotFoundError
from maas.store.blobs import BlobStore, CorruptBlobError
from maas.store.registry import Registry
from tests.gguf_util import tiny_model, write_gguf
from tests.unit.formats.test_hf import save_hf


@pytest.fixture
def reg(tmp_path, catalog_url):
    return Registry(home=tmp_path / "home", database_url=catalog_url)


@pytest.fixture
def gguf(tmp_path):
    return write_gguf(tmp_path / "tiny.gguf", tiny_model())


def test_import_list_show_and_load_by_name(reg, gguf):
    info = reg.import_path(gguf, "tiny:q")
    assert (info.name, info.tag, info.family, info.format) == ("tiny", "q", "llama", "gguf")
    assert [f"{i.name}:{i.tag}" for i in reg.list_models()] == ["tiny:q"]
    assert info.files[0]["digest"].startswith("sha256-") and info.size == gguf.stat().st_size
    lm = load_lm(reg.path_for("tiny:q"), device="cpu", dtype="float32")
    ref = load_lm(gguf, device="cpu", dtype="float32")
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids), ref.model(ids))


def test_shared_files_are_stored_once_and_tags_are_aliases(reg, gguf):
    reg.import_path(gguf, "a")
    reg.import_path(gguf, "b:v1", parent="a", operation="quantize")
    assert len(reg.blobs.digests()) == 1
    assert reg.show("b:v1").parent == "a:latest" and reg.show("b:v1").operation == "quantize"
    reg.tag("b:v1", "b:prod")
    assert reg.show("b:prod").version == reg.show("b:v1").version
    assert reg.show("b:prod").tags == ["b:prod", "b:v1"]
    with pytest.raises(ModelNotFoundError, match="b:v1"):
        reg.show("b:nope")
    n = reg.show("b:v1").version  # a version number works where a tag does (v2's /versions/N)
    assert reg.show(f"b:{n}").tags == ["b:prod", "b:v1"] and reg.path_for(f"b:{n}").exists()
    with pytest.raises(ModelNotFoundError):
        reg.show(f"a:{n}")  # version N belongs to another name
    reg.add_metrics("b:prod", {"eval": {"perplexity": 12.5}})
    reg.add_metrics("b:v1", {"other": 1})  # merged, not replaced; seen through every tag
    assert reg.show("b:prod").metrics == {"eval": {"perplexity": 12.5}, "other": 1}


def test_rm_collects_only_unreferenced_blobs(reg, gguf, tmp_path):
    other = write_gguf(tmp_path / "other.gguf", tiny_model(seed=1))
    reg.import_path(gguf, "a")
    reg.import_path(gguf, "b")
    reg.import_path(other, "c")
    assert len(reg.blobs.digests()) == 2
    assert reg.rm("a") == []  # b still uses the blob
    gone = reg.rm("b")
    assert len(gone) == 1 and len(reg.blobs.digests()) == 1
    with pytest.raises(ModelNotFoundError):
        reg.rm("b")


def test_corrupt_blob_is_named_at_load_and_by_verify(reg, gguf):
    info = reg.import_path(gguf, "tiny")
    digest = info.files[0]["digest"]
    path = reg.blobs.local_path(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptBlobError, match=f"tiny:latest.*{digest}"):
        reg.path_for("tiny")
    assert reg.verify() == [("tiny:latest", "tiny.gguf", digest, False)]


def test_interrupted_import_leaves_no_blob_and_can_be_redone(reg, gguf):
    class Boom:
        def update(self, n):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reg.blobs.put_file(gguf, Boom())
    assert reg.blobs.digests() == [] and reg.list_models() == []
    reg.import_path(gguf, "tiny")
    assert reg.verify()[0][3]


def test_hf_directory_import_materialises_a_loadable_directory(reg, tmp_path):
    model = tiny_model()
    d = save_hf(tmp_path / "hf", model)
    reg.import_path(d, "hf-tiny")
    p = reg.path_for("hf-tiny")
    assert json.loads((p / "config.json").read_text())["model_type"] == "llama"
    lm = load_lm(p, device="cpu", dtype="float32")
    with torch.no_grad():
        torch.testing.assert_close(lm.model(torch.tensor([[4, 5]])), model(torch.tensor([[4, 5]])))


def test_memory_filesystem_backend(tmp_path, gguf):
    store = BlobStore("memory://maas-test-blobs")
    d, n = store.put_file(gguf)
    assert store.has(d) and store.verify(d) and n == gguf.stat().st_size
    assert store.digests() == [d] and store.local_path(d) is None
    store.delete(d)
    assert not store.has(d)


def test_builtins_imported_once_and_rm_respected(reg):
    from maas.store.builtin import BUILTINS, import_builtins

    assert sorted(import_builtins(reg)) == sorted(n for n, m in BUILTINS.items() if not m.assembled)
    listed = {i.name: i for i in reg.list_models()}
    assert (
        set(listed) == {n for n, m in BUILTINS.items() if not m.assembled}
        and listed["all-minilm-l6-v2"].family == "bert"
    )
    assert listed["smollm2-135m-instruct"].format == "gguf"
    reg.rm("all-minilm-l6-v2")
    assert import_builtins(reg) == []  # a removed built-in stays removed
    assert import_builtins(reg, force=True) == ["all-minilm-l6-v2"]


def test_models_load_from_a_non_local_store(tmp_path, gguf, catalog_url):
    url = f"memory://maas-remote-{tmp_path.name}"
    reg = Registry(home=tmp_path / "a", database_url=catalog_url, storage_url=url)
    info = reg.import_path(gguf, "tiny:remote")
    assert reg.blobs.local_path(info.files[0]["digest"]) is None
    p = reg.path_for("tiny:remote")  # fetched into the home's cache, checked on the way
    assert p.is_relative_to(tmp_path / "a" / "cache") and p.read_bytes() == gguf.read_bytes()
    assert load_lm(p, device="cpu", dtype="float32").config.num_hidden_layers > 0

    reg.blobs.fs.pipe(reg.blobs._path(info.files[0]["digest"]), b"GGUF not the bytes that were stored")
    other = Registry(home=tmp_path / "b", database_url=catalog_url, storage_url=url)
    with pytest.raises(CorruptBlobError, match="tiny:remote.*does not match its digest"):
        other.path_for("tiny:remote")
    assert not list((tmp_path / "b" / "cache").glob("sha256-*"))  # nothing bad left in the cache


def test_gc_during_an_import_keeps_the_new_blobs(reg, gguf, monkeypatch):
    other = Registry(home=reg.home, database_url=str(reg.engine.url.render_as_string(hide_password=False)))
    real_put = reg.blobs.put_stream
    collected: list[list[str]] = []

    def put_then_gc(fin, progress=None, before_publish=None):
        out = real_put(fin, progress, before_publish)
        collected.append(other.gc())  # another process collecting right after the blob appeared
        return out

    monkeypatch.setattr(reg.blobs, "put_stream", put_then_gc)
    info = reg.import_path(gguf, "tiny:racing")
    assert collected == [[]]  # the blob of the import in progress was not collected
    assert all(ok for *_, ok in reg.verify("tiny:racing")) and info.files
