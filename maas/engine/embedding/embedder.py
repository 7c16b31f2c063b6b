"""Embedder: an encoder model, its tokenizer and pooling; token ids in, sentence vectors out.

from maas.engine.embedding.embedder import Embedder
e = Embedder("path/to/all-MiniLM-L6-v2")
vectors = e.embed_texts(["a sentence", "another"])      # (2, 384) float32, L2-normalized as the model says
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from maas.engine.device import pick_device
from maas.errors import ContextLengthError, InvalidRequestError, UnsupportedModelError
from maas.formats import open_model_files
from maas.formats.sentence import SentenceConfig, read_sentence_config
from maas.kernels.quantized import convert, prepare, quantization_spec, quantized_bytes
from maas.kernels.small_batch_linear import available, pack_small_batches
from maas.models.bert import BertConfig, BertModel, Packing
from maas.text.tokenizer import Tokenizer

log = logging.getLogger("maas.engine")

WEIGHT_MODES = ("auto", "float32")


def check_weights(weights: str) -> None:
    """A clear error for a weight mode that is not one of WEIGHT_MODES."""
    if weights not in WEIGHT_MODES:
        raise InvalidRequestError(
            f"unknown embedding weights {weights!r} (choose from {', '.join(WEIGHT_MODES)})"
        )


class EncoderInputs:
    """What an encoder takes: its tokenizer, pooling config and limits; texts -> checked token ids.

    Reads only metadata (config.json, tokenizer.json, sentence-transformers files), not weights.
    """

    def __init__(self, path: str | Path):
        files = open_model_files(path)
        if files.architecture != "bert":
            raise UnsupportedModelError(
                f"{str(path)!r} is a {files.architecture} model, not an encoder (embeddings need BERT-family models)"
            )
        self.files = files
        self.config = c = BertConfig.from_hf(files.config)
        self.tokenizer = Tokenizer.from_source(files.tokenizer)
        self.sentence = read_sentence_config(files.path)
        self.name = Path(path).name
        self.dim = c.hidden_size
        self.max_len = min(
            self.sentence.max_seq_length or c.max_position_embeddings, c.max_position_embeddings
        )
        self.vocab_size = c.vocab_size
        self._special = set(self.tokenizer.hf.get_added_tokens_decoder())

    def tokenize(self, texts: list[str], truncate: bool = False, param: str = "input") -> list[list[int]]:
        """Token ids with the model's special tokens; too long -> truncated or ContextLengthError."""
        if self.sentence.do_lower_case:
            texts = [t.lower() for t in texts]
        return [self.fit(ids, truncate, param) for ids in self.tokenizer.encode_batch(texts)]

    def fit(self, ids: list[int], truncate: bool, param: str = "input") -> list[int]:
        """Check one sequence's length and ids; truncation keeps the final special token (e.g. [SEP])."""
        if not ids:
            raise InvalidRequestError("an input has no tokens", param=param)
        if len(ids) > self.max_len:
            if not truncate:
                raise ContextLengthError(
                    f"an input has {len(ids)} tokens; this model takes at most {self.max_len}. "
                    'Shorten it or ask for truncation ("truncate": true in the API, --truncate for `maas embed`).',
                    param=param,
                )
            keep_last = ids[-1] in self._special
            ids = [*ids[: self.max_len - 1], ids[-1]] if keep_last else ids[: self.max_len]
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise InvalidRequestError(
                f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})", param=param
            )
        return ids


class Embedder(EncoderInputs):
    """An encoder in this process: one batch of token-id sequences in, pooled vectors out (no batching policy)."""

    def __init__(self, path: str | Path, threads: int = 0, weights: str = "auto", device: str = "cpu"):
        """Load an HF encoder directory (config.json, safetensors, tokenizer.json, sentence-transformers files).

        `weights` (WEIGHT_MODES, CPU only): small batches (up to 192 tokens) read float16 copies of
        the linear weights ("auto", where fbgemm is available; cosine >= 0.99999 with float32) or
        pre-packed float32 ones ("float32", the same arithmetic as larger batches). `device`: cpu,
        cuda or auto (float32 everywhere).
        """
        check_weights(weights)
        t0 = time.monotonic()
        super().__init__(path)
        self.device = pick_device(device)
        if threads > 0:
            torch.set_num_threads(threads)
        with torch.device("meta"):
            model = BertModel(self.config)
        spec = quantization_spec(self.files.config)
        if spec is not None:
            convert(model, spec)
        model.load_hf_state(dict(self.files.iter_tensors()))
        self.model = model.float().eval().to(self.device)
        prepare(self.model)
        self.model.fuse_qkv()
        small = "float16" if weights == "auto" and available("float16") else "float32"
        if spec is not None:
            small = f"{spec['method']} quantized"
        elif not pack_small_batches(self.model, small):  # not on the CPU, or no kernels for it
            small = "float32 (not pre-packed)"
        log.info(
            "loaded encoder %s on %s (%d layers, dim %d, %s pooling%s, max %d tokens, %s weights for small batches) in %.1fs",
            self.name, self.device, self.config.num_hidden_layers, self.dim, self.sentence.pooling,
            ", normalized" if self.sentence.normalize else "", self.max_len, small, time.monotonic() - t0,
        )  # fmt: skip

    alive = True  # nothing to die separately in-process

    def close(self) -> None:
        """Nothing to stop in-process."""

    def memory_bytes(self) -> int:
        """Bytes of the model's parameters, quantized weights and pre-packed small-batch weights."""
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        packed = sum(getattr(m, "packed_bytes", 0) for m in self.model.modules())
        return params + packed + quantized_bytes(self.model)

    # -- compute -------------------------------------------------------------------------------

    @torch.inference_mode()
    def embed(self, batch: list[list[int]]) -> torch.Tensor:
        """(B, dim) float32 sentence vectors for one batch of token-id lists, in the order given.

        The sequences run laid end to end, longest first (no padding in the dense layers;
        attention pads only within groups of similar length).
        """
        order = sorted(range(len(batch)), key=lambda i: -len(batch[i]))
        seqs = [batch[i] for i in order]
        ids = torch.tensor([t for x in seqs for t in x], dtype=torch.long, device=self.device)
        packing = Packing([len(x) for x in seqs], self.device)
        v = pool(self.model.forward_packed(ids, packing), packing.lengths, self.sentence).cpu()
        out = torch.empty_like(v)
        out[order] = v
        return out

    def embed_texts(self, texts: list[str], batch_size: int = 32, truncate: bool = True) -> torch.Tensor:
        """Vectors for texts in input order (sorted by length inside, batches of `batch_size`)."""
        seqs = self.tokenize(texts, truncate)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        out = torch.empty((len(seqs), self.dim))
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            out[idx] = self.embed([seqs[i] for i in idx])
        return out


def pool(h: torch.Tensor, lengths: list[int], cfg: SentenceConfig) -> torch.Tensor:
    """(N, H) states of sequences laid end to end -> (B, H), L2-normalized when the model says so."""
    lens = torch.tensor(lengths, device=h.device)
    ends = torch.cumsum(lens, 0)
    if cfg.pooling == "cls":
        v = h[ends - lens]
    elif cfg.pooling == "last":
        v = h[ends - 1]
    elif cfg.pooling == "max":
        v = torch.segment_reduce(h, "max", lengths=lens, axis=0)
    else:
        v = torch.segment_reduce(h, "sum", lengths=lens, axis=0)
        n = lens.to(h.dtype)[:, None]
        v = v / (n.sqrt() if cfg.pooling == "mean_sqrt_len" else n)
    if cfg.normalize:
        v = torch.nn.functional.normalize(v, p=2, dim=-1)
    return v.float()
