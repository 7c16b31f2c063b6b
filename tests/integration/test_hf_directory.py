"""An HF-style directory (safetensors + tokenizer.json + tokenizer_config.json) serves like the GGUF."""

import json

import torch
from safetensors.torch import save_file

from maas.engine.llm.engine import Engine, EngineConfig
from maas.engine.llm.loader import load_lm
from maas.engine.llm.sampling_params import SamplingParams
from maas.store.builtin import builtin_path


def test_hf_directory_answers_like_the_gguf(tmp_path):
    gguf = load_lm(builtin_path("smollm2-135m-instruct"), device="cpu", dtype="float32")
    d = tmp_path / "smollm2-hf"
    d.mkdir()
    cfg = dict(gguf.files.config, model_type="llama", eos_token_id=gguf.tokenizer.eos_token_ids)
    (d / "config.json").write_text(json.dumps(cfg))
    state = {k: v.contiguous() for k, v in gguf.model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(d / "model.safetensors"))
    gguf.tokenizer.hf.save(str(d / "tokenizer.json"))
    tc = {
        "chat_template": gguf.chat_template.source,
        "eos_token": gguf.tokenizer.eos_token,
        "bos_token": gguf.tokenizer.bos_token,
    }
    (d / "tokenizer_config.json").write_text(json.dumps(tc))

    hf = load_lm(d, device="cpu", dtype="float32")
    ids = gguf.tokenizer.encode(gguf.chat_template.render([{"role": "user", "content": "Name a fruit."}]))
    assert hf.tokenizer.encode(hf.chat_template.render([{"role": "user", "content": "Name a fruit."}])) == ids
    with torch.no_grad():
        torch.testing.assert_close(hf.model(torch.tensor([ids])), gguf.model(torch.tensor([ids])))

    params = SamplingParams(temperature=0, max_tokens=24)
    a = Engine.from_path(d, EngineConfig(max_model_len=256, max_num_seqs=2)).generate([ids], params)
    b = Engine.from_path(
        builtin_path("smollm2-135m-instruct"), EngineConfig(max_model_len=256, max_num_seqs=2)
    ).generate([ids], params)
    assert a == b and a[0]
