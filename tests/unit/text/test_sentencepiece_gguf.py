"""A GGUF whose vocabulary is SentencePiece BPE (tokenizer.ggml.model = llama, as llama.cpp writes Llama 2
and Mistral) tokenizes as the SentencePiece library does with the same model."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from maas.formats.gguf import open_gguf
from maas.text.tokenizer import Tokenizer
from tests.gguf_util import tiny_model, write_gguf

spm = pytest.importorskip("sentencepiece")
WIKI = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "wikitext-2" / "test.txt"
TEXTS = [
    "Hello world", " leading space", "two  spaces and\ttab", "naïve café résumé", "你好，世界",
    "emoji 🙂🚀 mix", "def f(x):\n    return x**2  # code", "The 1990s: 12,345.67 %", "Ünïcödé Straße",
    "", "  ", "line1\nline2\n\nline4", "Москва — столица России", "@-@ wikitext @,@ style",
]  # fmt: skip


@pytest.fixture(scope="module")
def sp_and_gguf(tmp_path_factory):
    """A real SentencePiece BPE model trained here on WikiText-2 (Llama's settings: byte fallback, no
    normalization), written into a GGUF the way llama.cpp's converter writes one."""
    lines = [line.strip() for line in WIKI.read_text(encoding="utf-8").splitlines() if line.strip()][:3000]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=1000, model_type="bpe", byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, minloglevel=2,
    )  # fmt: skip
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    n = sp.vocab_size()
    kinds = [
        2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1 for i in range(n)
    ]
    vocab = ([sp.id_to_piece(i) for i in range(n)], [sp.get_score(i) for i in range(n)], kinds)
    path = write_gguf(
        tmp_path_factory.mktemp("spm") / "m.gguf", tiny_model(vocab_size=n), sentencepiece=vocab
    )
    return sp, path


def test_ids_and_text_round_trip_as_sentencepiece(sp_and_gguf):
    sp, path = sp_and_gguf
    tok = Tokenizer.from_source(open_gguf(path).tokenizer)
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == sp.encode(text), text
        assert tok.decode(ids) == text
    assert tok.encode("Hi")[0] == tok.bos_token_id == 1  # the file asks for a BOS
    assert tok.eos_token_ids == [2]


def test_control_tokens_in_text_are_special_as_in_transformers(sp_and_gguf):
    _, path = sp_and_gguf
    tok = Tokenizer.from_source(open_gguf(path).tokenizer)
    ids = tok.encode("<s> hi </s>", add_special_tokens=False)
    assert ids[0] == 1 and ids[-1] == 2
