"""The BERT encoder and pooling against Hugging Face transformers on a tiny random model."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, normalizers, pre_tokenizers, processors

from maas.engine.embedding.embedder import Embedder
from maas.engine.embedding.engine import EmbeddingEngine
from maas.errors import ContextLengthError, InvalidRequestError, MaasError

WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "far", "away", "and", "then"],
]


def save_encoder(d, pooling: str = "mean", normalize: bool = True, max_seq_length: int = 12):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40,
    )  # fmt: skip
    hf = transformers.BertModel(cfg, add_pooling_layer=True).eval()
    hf.save_pretrained(d, safe_serialization=True)
    tok = HFTokenizer(models.WordPiece({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.add_special_tokens(WORDS[:5])
    tok.save(str(d / "tokenizer.json"))
    mods = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]  # fmt: skip
    if normalize:
        mods.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
    (d / "modules.json").write_text(json.dumps(mods))
    (d / "1_Pooling").mkdir()
    key = {
        "mean": "pooling_mode_mean_tokens",
        "cls": "pooling_mode_cls_token",
        "max": "pooling_mode_max_tokens",
    }
    (d / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, key[pooling]: True})
    )
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return hf, tok


def reference(hf, tok, texts, pooling, normalize):
    out = []
    for t in texts:
        ids = torch.tensor([tok.encode(t).ids])
        with torch.no_grad():
            h = hf(input_ids=ids).last_hidden_state[0]
        v = {"mean": h.mean(0), "cls": h[0], "max": h.max(0).values}[pooling]
        out.append(torch.nn.functional.normalize(v, dim=0) if normalize else v)
    return torch.stack(out)


TEXTS = ["the cat sat on the mat", "a dog ran", "then the cat ran far away and the dog sat", "cat"]


@pytest.mark.parametrize("pooling,normalize", [("mean", True), ("cls", False), ("max", True)])
def test_matches_transformers_in_any_batch(tmp_path, pooling, normalize):
    hf, tok = save_encoder(tmp_path, pooling, normalize, max_seq_length=32)
    e = Embedder(tmp_path, weights="float32")
    ref = reference(hf, tok, TEXTS, pooling, normalize)
    batched = e.embed_texts(TEXTS, batch_size=4)  # laid end to end together
    alone = torch.cat([e.embed_texts([t]) for t in TEXTS])
    torch.testing.assert_close(batched, ref, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(alone, ref, atol=2e-5, rtol=1e-4)
    fp16 = Embedder(tmp_path)  # "auto": float16 weights for small batches (all of these)
    cos = torch.nn.functional.cosine_similarity(fp16.embed_texts(TEXTS, batch_size=4), ref)
    assert cos.min() >= 0.99999
    if normalize:
        torch.testing.assert_close(batched.norm(dim=1), torch.ones(len(TEXTS)))


def test_too_long_inputs_are_refused_or_truncated(tmp_path):
    hf, tok = save_encoder(tmp_path, max_seq_length=6)
    e = Embedder(tmp_path)
    long = "the cat sat on the mat and the dog ran far away"
    with pytest.raises(ContextLengthError, match="at most 6"):
        e.tokenize([long])
    ids = e.tokenize([long], truncate=True)[0]
    assert len(ids) == 6 and ids[0] == 2 and ids[-1] == 3  # [CLS] ... [SEP] kept
    with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
        e.fit([2, 999, 3], truncate=False)
    with pytest.raises(InvalidRequestError, match="unknown embedding weights 'int3'"):
        Embedder(tmp_path, weights="int3")
    if not torch.cuda.is_available():
        with pytest.raises(MaasError, match="CUDA is not available"):
            Embedder(tmp_path, device="cuda")


def test_batcher_packs_concurrent_requests_and_routes_results(tmp_path):
    save_encoder(tmp_path, max_seq_length=32)
    e = Embedder(tmp_path, weights="float32")
    engine = EmbeddingEngine(e, max_batch_size=8, max_wait_s=0.05)
    seqs = e.tokenize(TEXTS * 4)

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(engine.embed([s]) for s in seqs))

    try:
        outs = asyncio.run(main())
        want = e.embed_texts(TEXTS * 4).numpy()
        np.testing.assert_allclose(np.concatenate(outs), want, atol=2e-5)
        assert engine.stats_.batches < len(seqs)  # batching happened
        assert max(engine.stats_.batch_sizes) <= 8
        short = asyncio.run(engine.embed(seqs[:2], dimensions=8))
        assert short.shape == (2, 8) and np.allclose(np.linalg.norm(short, axis=1), 1, atol=1e-5)
    finally:
        engine.shutdown()
    assert not engine.alive
