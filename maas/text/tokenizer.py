"""A thin wrapper over HF `tokenizers`, built from tokenizer.json or GGUF metadata."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from maas.errors import ModelFormatError, UnsupportedModelError
from maas.formats.base import TokenizerSource

# llama.cpp's `tokenizer.ggml.pre` names -> the split regex its merges were learned with.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLITS = {
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}
# Pre-tokenizers that split every digit on its own before GPT-2's byte-level regex.
_DIGIT_SPLITTERS = {"smollm", "starcoder", "refact", "jais", "codeshell"}


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _gguf_pre_tokenizer(pre: str | None) -> Any:
    if pre in _SPLITS:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGIT_SPLITTERS:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    return byte_level


_SPACE = "\u2581"  # SentencePiece's visible space


def _add_token_types(
    tk: HFTokenizer, tokens: list[str], types: list[int], usable: Callable[[str], bool] = lambda t: True
) -> None:
    """GGUF token types: control tokens (3) become special tokens, user-defined ones (4) added tokens."""
    control = [AddedToken(t, special=True, normalized=False)
               for t, ty in zip(tokens, types, strict=False) if ty == 3 and usable(t)]  # fmt: skip
    user = [
        AddedToken(t, special=False, normalized=False)
        for t, ty in zip(tokens, types, strict=False)
        if ty == 4
    ]
    if control:
        tk.add_special_tokens(control)
    if user:
        tk.add_tokens(user)


def _sentencepiece_from_gguf(fields: dict[str, Any]) -> HFTokenizer:
    """A SentencePiece BPE vocabulary (`tokenizer.ggml.model = llama`: Llama 2, Mistral) as HF tokenizers
    builds it from the SentencePiece model: merges from every split of a piece into two pieces, ranked by
    the merged piece's score; byte fallback; spaces shown as U+2581 and, unless add_space_prefix is false
    (Gemma), one prepended."""
    tokens: list[str] = list(fields["tokens"])
    scores = list(fields.get("scores") or [0.0] * len(tokens))
    types = list(fields.get("token_type") or [1] * len(tokens))
    vocab = {t: i for i, t in enumerate(tokens)}
    merges: list[tuple[str, str, float]] = []
    for piece, i in vocab.items():
        local = [
            (piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab
        ]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges += [(a, b, float(scores[i])) for a, b in local]
    merges.sort(key=lambda m: m[2], reverse=True)  # stable: ties keep the vocabulary's order
    unk = next((t for t, ty in zip(tokens, types, strict=False) if ty == 2), None)
    try:
        tk = HFTokenizer(
            models.BPE(vocab=vocab, merges=[(a, b) for a, b, _ in merges], unk_token=unk, fuse_unk=True,
                       byte_fallback=True)
        )  # fmt: skip
    except Exception as e:  # tokenizers raises a bare Exception on inconsistent vocab/merges
        raise ModelFormatError(f"the GGUF vocabulary is inconsistent: {e}") from None
    steps: list[Any] = [normalizers.Replace(" ", _SPACE)]
    decode: list[Any] = [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if fields.get("add_space_prefix", True):  # Llama 2: a space is prepended, and stripped when decoding
        steps.insert(0, normalizers.Prepend(_SPACE))
        decode.append(decoders.Strip(" ", 1, 0))
    tk.normalizer = normalizers.Sequence(steps)
    tk.decoder = decoders.Sequence(decode)
    _add_token_types(tk, tokens, types)
    return tk


def tokenizer_from_gguf(fields: dict[str, Any]) -> HFTokenizer:
    """Build the tokenizer from GGUF `tokenizer.ggml.*` fields: byte-level BPE (`gpt2`) or SentencePiece
    BPE (`llama`)."""
    kind = fields.get("model")
    if kind == "llama":
        return _sentencepiece_from_gguf(fields)
    if kind != "gpt2":
        raise UnsupportedModelError(
            f"GGUF tokenizer model {kind!r} is not supported (supported: 'gpt2' byte-level BPE, 'llama' "
            "SentencePiece BPE); serve the HF directory with tokenizer.json instead"
        )
    alphabet = _bytes_to_unicode()
    letters = set(alphabet.values())
    tokens: list[str] = list(fields["tokens"])
    vocab = {
        (t if set(t) <= letters else "".join(alphabet[b] for b in t.encode("utf-8"))): i
        for i, t in enumerate(tokens)
    }
    merges = [tuple(m.split(" ", 1)) for m in fields.get("merges") or []]
    try:
        tk = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    except Exception as e:  # tokenizers raises a bare Exception on inconsistent vocab/merges
        raise ModelFormatError(f"the GGUF vocabulary is inconsistent: {e}") from None
    tk.pre_tokenizer = _gguf_pre_tokenizer(fields.get("pre"))
    tk.decoder = decoders.ByteLevel()
    _add_token_types(tk, tokens, list(fields.get("token_type") or []), lambda t: set(t) <= letters)
    return tk


class Tokenizer:
    """Text <-> token ids, plus the special tokens an engine needs (bos, eos/stop ids)."""

    def __init__(self, hf: HFTokenizer, source: TokenizerSource):
        self.hf = hf
        self.source = source
        self.bos_token = source.bos_token
        self.eos_token = source.eos_token
        self.bos_token_id = hf.token_to_id(source.bos_token) if source.bos_token else None
        eos = list(source.eos_token_ids)
        if source.eos_token and (i := hf.token_to_id(source.eos_token)) is not None and i not in eos:
            eos.append(i)
        self.eos_token_ids: list[int] = eos
        self.add_bos = source.add_bos_token and self.bos_token_id is not None
        self.vocab_size = hf.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_source(cls, source: TokenizerSource) -> Tokenizer:
        """Build from a tokenizer.json path or GGUF fields."""
        if source.tokenizer_json is not None:
            hf = HFTokenizer.from_file(str(source.tokenizer_json))
            hf.no_padding()
            hf.no_truncation()
        elif source.gguf_fields is not None:
            hf = tokenizer_from_gguf(source.gguf_fields)
        else:
            raise UnsupportedModelError("the model has no tokenizer (no tokenizer.json, no GGUF vocabulary)")
        return cls(hf, source)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; with add_special_tokens, a BOS where the model wants one."""
        ids: list[int] = self.hf.encode(text, add_special_tokens=False).ids
        bos = self.bos_token_id
        if add_special_tokens and self.add_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of many texts with the tokenizer's own template (e.g. BERT's [CLS] ... [SEP])."""
        if len(texts) == 1:  # no thread pool for one text
            return [self.hf.encode(texts[0], add_special_tokens=True).ids]
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=True)]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`."""
        return str(self.hf.decode(ids, skip_special_tokens=skip_special_tokens))

    def id_to_token(self, i: int) -> str:
        """The vocabulary string of one id (for logprobs)."""
        return self.hf.id_to_token(i) or ""
