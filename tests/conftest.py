"""Shared fixtures: a tiny random Llama with a byte-level tokenizer (no files, fast)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator

import pytest
import torch
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from maas.engine.llm.engine import Engine, EngineConfig
from maas.engine.llm.loader import LoadedLM
from maas.engine.llm.sampling_params import SamplingParams
from maas.formats.base import ModelFiles, TokenizerSource
from maas.models.llama import LlamaConfig, LlamaForCausalLM
from maas.text.chat_template import ChatTemplate
from maas.text.tokenizer import Tokenizer, _bytes_to_unicode

EOS = "<eos>"

# Tests (and the servers they start) keep their registry out of the user's ~/.maas.
os.environ.setdefault("MAAS_HOME", tempfile.mkdtemp(prefix="maas-test-home-"))
os.environ.setdefault("MAAS_AUTO_IMPORT_BUILTINS", "0")  # tests that want the import turn it on


def hf_greedy(model, ids: list[int], n: int) -> list[int]:
    """Greedy decoding with a transformers model and its own KV cache, not stopping at EOS."""
    out: list[int] = []
    past = None
    x = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(n):
            r = model(x, past_key_values=past, use_cache=True)
            past = r.past_key_values
            t = int(r.logits[0, -1].argmax())
            out.append(t)
            x = torch.tensor([[t]])
    return out


def engine_greedy(engine: Engine, ids: list[int], n: int) -> list[int]:
    """n greedy tokens from `engine` for one prompt run alone (not stopping at EOS)."""
    engine.add_request(
        f"greedy-{uuid.uuid4().hex}", ids, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
    )
    got: list[int] = []
    while engine.has_unfinished():
        for o in engine.step():
            got += o.token_ids
    return got


def byte_tokenizer() -> Tokenizer:
    """One token per byte (ids 0..255) plus <eos> = 256: emoji split over several tokens."""
    chars = _bytes_to_unicode()
    vocab = {chars[b]: b for b in range(256)}
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([EOS])
    return Tokenizer(hf, TokenizerSource(eos_token=EOS))


def tiny_lm(seed: int = 0, **cfg: object) -> LoadedLM:
    """A random tiny decoder with the byte tokenizer."""
    torch.manual_seed(seed)
    config = LlamaConfig.tiny(vocab_size=264, tie_word_embeddings=False, **cfg)  # type: ignore[arg-type]
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # sharper logits so that greedy decoding is not a coin toss
        model.lm_head.weight.mul_(8.0)
    model.eval().requires_grad_(False)
    tok = byte_tokenizer()
    files = ModelFiles(
        path=__import__("pathlib").Path("tiny"),
        format="test",
        architecture="llama",
        config={},
        iter_tensors=lambda: iter(()),
        tokenizer=tok.source,
    )
    return LoadedLM(files, config, model, tok, ChatTemplate(None), torch.device("cpu"), torch.float32)


@pytest.fixture
def lm() -> LoadedLM:
    """A fresh tiny model."""
    return tiny_lm()


def make_engine(lm: LoadedLM, **kw: object) -> Engine:
    """An engine over `lm` with small limits (overridable)."""
    base: dict[str, object] = dict(
        max_num_seqs=8, max_model_len=256, kv_cache_tokens=2048, max_num_batched_tokens=64
    )
    base.update(kw)
    return Engine(lm, EngineConfig(**base))  # type: ignore[arg-type]


def reference_greedy(lm: LoadedLM, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding by full recompute with plain causal attention (no cache)."""
    ids = list(prompt)
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = lm.model(torch.tensor([ids]))[0, -1]
            t = int(logits.argmax())
            out.append(t)
            ids.append(t)
    return out


# Catalog URLs: SQLite always; PostgreSQL too when MAAS_TEST_DATABASE_URL names a server (`make test` starts one).
PG = os.environ.get("MAAS_TEST_DATABASE_URL", "")


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request, tmp_path) -> Iterator[str]:
    """A fresh, empty catalog database of each kind (one PostgreSQL database per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    if not PG:
        pytest.skip("PostgreSQL: MAAS_TEST_DATABASE_URL not set (`make test` starts a server when it can)")
    name = f"maas_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
