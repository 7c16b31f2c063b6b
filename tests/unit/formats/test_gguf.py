import pytest
import torch

from maas.engine.llm.loader import load_lm
from maas.errors import ModelFormatError, UnsupportedModelError
from maas.formats import open_model_files
from tests.gguf_util import tiny_model, write_gguf

# the worst relative error each format may add to weights
TOL = {"F32": 1e-6, "F16": 1e-3, "BF16": 1e-2, "Q8_0": 2e-2, "Q4_0": 0.2, "Q4_1": 0.2}


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"])
def test_gguf_roundtrip_weights_and_logits(tmp_path, qtype):
    model = tiny_model()
    path = write_gguf(tmp_path / f"m-{qtype}.gguf", model, qtype)
    lm = load_lm(path, device="cpu", dtype="float32")
    ref = model.state_dict()
    for name, t in lm.model.state_dict().items():
        err = (t - ref[name]).abs().max() / ref[name].abs().max()
        assert err <= TOL[qtype], (name, float(err))
    ids = torch.tensor([[1, 2, 3, 40, 50, 60]])
    with torch.no_grad():
        a, b = model(ids), lm.model(ids)
    if qtype == "F32":
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    else:
        assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.9
    assert lm.tokenizer.eos_token_ids == [256]
    assert lm.chat_template.render([{"role": "user", "content": "hi"}]) == "hi"


def test_truncated_gguf_is_refused_with_a_clear_message(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", tiny_model())
    data = path.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelFormatError, match="truncated|corrupt"):
        open_model_files(tmp_path / "cut.gguf")
    (tmp_path / "head.gguf").write_bytes(data[:100])
    with pytest.raises(ModelFormatError, match="corrupt|truncated"):
        open_model_files(tmp_path / "head.gguf")


def test_not_a_model_file(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"hello world")
    with pytest.raises(ModelFormatError, match="neither a GGUF"):
        open_model_files(tmp_path / "x.bin")
    with pytest.raises(ModelFormatError, match="does not exist"):
        open_model_files(tmp_path / "missing.gguf")


def test_unknown_architecture(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", tiny_model(), arch="mamba")
    with pytest.raises(UnsupportedModelError, match="mamba"):
        open_model_files(path)


def test_unsupported_tensor_type_is_named(tmp_path):
    import struct

    path = write_gguf(tmp_path / "m.gguf", tiny_model())
    data = bytearray(path.read_bytes())
    name = b"blk.0.attn_q.weight"
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    (n_dims,) = struct.unpack_from("<I", data, at)
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, 20)  # IQ4_NL: a type maas does not dequantize
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedModelError, match="IQ4_NL"):
        open_model_files(path)


def test_released_file_pages_read_the_same_again(tmp_path):
    """`release` unmaps this process's pages of the file after the weights were copied out; reading a tensor
    afterwards maps them again with the same bytes."""
    path = write_gguf(tmp_path / "m.gguf", tiny_model(), "Q8_0")
    files = open_model_files(path)
    before = {n: t.clone() for n, t in files.iter_tensors()}
    assert files.release is not None
    files.release()
    after = dict(files.iter_tensors())
    assert before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in before)
