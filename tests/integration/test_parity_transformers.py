"""Our SmolLM2 against Hugging Face transformers' reference implementation on the same GGUF file."""

import pytest
import torch

from maas.engine.llm.engine import Engine, EngineConfig
from maas.engine.llm.loader import load_lm
from maas.kernels import blocks
from maas.store.builtin import builtin_path
from tests.conftest import engine_greedy, hf_greedy

transformers = pytest.importorskip("transformers")

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about autumn leaves."}],
    [{"role": "user", "content": "Explain what a neural network is in simple words."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "List three planets."}],
]


@pytest.fixture(scope="module")
def hf_model():
    path = builtin_path("smollm2-135m-instruct")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    return model.eval()


@pytest.fixture(scope="module")
def ours():
    return load_lm(builtin_path("smollm2-135m-instruct"), device="cpu", dtype="float32")


def prompt_ids(lm, messages):
    return lm.tokenizer.encode(lm.chat_template.render(messages))


def test_logits_match_transformers(hf_model, ours):
    for messages in PROMPTS:
        ids = torch.tensor([prompt_ids(ours, messages)])
        with torch.no_grad():
            ref = hf_model(ids).logits[0]
            got = ours.model(ids)[0]
        err = (got - ref).abs().max().item()
        assert err < 2e-3, err  # logits span about +-30
        assert torch.equal(got.argmax(-1), ref.argmax(-1))


def test_tokenizer_matches_transformers_gguf_tokenizer(ours):
    path = builtin_path("smollm2-135m-instruct")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for text in [
        "Hello world",
        "naïve café 日本語 🙂",
        "  spaces\n\nnew lines\t tabs",
        "<|im_start|>user\nhi<|im_end|>",
    ]:
        assert ours.tokenizer.encode(text) == hf_tok(text)["input_ids"], text


# 20 varied prompts, none of them used to build anything: chat and raw text, several languages, code
GREEDY_PROMPTS: list[list[dict[str, str]] | str] = [
    *PROMPTS,
    [{"role": "user", "content": "Translate to French: The weather is nice today."}],
    [{"role": "user", "content": "Write a Python function that checks whether a number is prime."}],
    [{"role": "user", "content": "¿Cuál es la montaña más alta del mundo?"}],
    [{"role": "user", "content": "Was ist der Unterschied zwischen einem Hund und einer Katze?"}],
    [{"role": "user", "content": "What is 17 times 23? Think step by step."}],
    [
        {"role": "system", "content": "You answer in JSON."},
        {"role": "user", "content": "Give me a user object."},
    ],
    [{"role": "user", "content": "Summarize the plot of Romeo and Juliet in two sentences."}],
    [{"role": "user", "content": "日本の首都はどこですか？"}],
    "The history of the city of Paris begins",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village by the sea,",
    "SELECT name, COUNT(*) FROM orders",
    "Les fleurs du jardin sont",
    "1, 1, 2, 3, 5, 8,",
    "The three laws of thermodynamics state that",
    "#include <stdio.h>\n\nint main(void) {",
]


def greedy_prompt_ids(lm, prompt):
    return lm.tokenizer.encode(prompt) if isinstance(prompt, str) else prompt_ids(lm, prompt)


@pytest.mark.parametrize("weights", ["auto", "float32"])
def test_greedy_32_tokens_identical_to_transformers(hf_model, weights):
    """The default (the file's own Q4_1 / Q8_0 blocks; activations in 16-bit blocks where the CPU has the
    integer kernel) and float32 continue 20 prompts exactly like transformers on the dequantized file."""
    engine = Engine.from_path(
        builtin_path("smollm2-135m-instruct"), EngineConfig(max_model_len=512, weights=weights)
    )
    if weights == "auto" and blocks.integer_kernel() is not None:  # activations in 16-bit blocks
        assert all(m.repacked for m in engine.lm.model.modules() if isinstance(m, blocks.BlockLinear))
    assert len(GREEDY_PROMPTS) == 20
    for prompt in GREEDY_PROMPTS:
        ids = greedy_prompt_ids(engine.lm, prompt)
        ref, got = hf_greedy(hf_model, ids, 32), engine_greedy(engine, ids, 32)
        assert got == ref, (prompt, engine.tokenizer.decode(got), engine.tokenizer.decode(ref))
