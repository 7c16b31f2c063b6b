from maas.text.detokenizer import IncrementalDetokenizer
from tests.conftest import byte_tokenizer


def test_streamed_text_never_splits_a_utf8_character():
    tok = byte_tokenizer()
    text = "Grüße 🙂 日本 ok"
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8"))  # one token per byte
    d = IncrementalDetokenizer(tok)
    deltas = [d.add(i) for i in ids]
    deltas.append(d.flush())
    assert "".join(deltas) == text
    assert all("\ufffd" not in x for x in deltas)
    assert "🙂" in deltas  # the emoji arrives whole, after its fourth byte


def test_flush_emits_an_incomplete_tail_as_replacement():
    tok = byte_tokenizer()
    d = IncrementalDetokenizer(tok)
    first_two = "🙂".encode()[:2]
    assert [d.add(b) for b in first_two] == ["", ""]
    assert d.flush() == "\ufffd"


def test_special_tokens_are_skipped():
    tok = byte_tokenizer()
    d = IncrementalDetokenizer(tok)
    out = [d.add(i) for i in [*tok.encode("hi"), 256]]
    assert "".join(out) == "hi"
