import json

import pytest
import torch
from safetensors.torch import save_file

from maas.engine.llm.loader import load_lm
from maas.errors import ModelFormatError, UnsupportedModelError
from maas.formats import open_model_files
from tests.conftest import byte_tokenizer
from tests.gguf_util import tiny_model


def save_hf(d, model, model_type="llama"):
    d.mkdir(exist_ok=True)
    c = model.config
    cfg = {**c.to_hf(), "model_type": model_type, "eos_token_id": 256}
    (d / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    byte_tokenizer().hf.save(str(d / "tokenizer.json"))
    tc = {
        "eos_token": "<eos>",
        "chat_template": "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}",
    }
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    return d


def test_hf_directory_loads_exactly(tmp_path):
    model = tiny_model()
    d = save_hf(tmp_path / "m", model)
    lm = load_lm(d, device="cpu", dtype="float32")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids), model(ids))
    assert lm.tokenizer.eos_token_ids == [256]
    assert lm.tokenizer.decode(lm.tokenizer.encode("héllo")) == "héllo"
    assert lm.chat_template.render([{"role": "user", "content": "x"}]) == "<user>x"


def test_corrupt_safetensors_and_bad_config(tmp_path):
    d = save_hf(tmp_path / "m", tiny_model())
    blob = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(blob[:50])
    with pytest.raises(ModelFormatError, match="corrupt or truncated"):
        open_model_files(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="config.json"):
        open_model_files(d)


def test_unsupported_model_type_names_it(tmp_path):
    d = save_hf(tmp_path / "m", tiny_model(), model_type="mamba")
    with pytest.raises(UnsupportedModelError, match="mamba"):
        open_model_files(d)
