"""POST /tokenize and /detokenize (vLLM's shapes): a prompt or a conversation to the token ids a
completion request would send the model, and ids back to text."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from maas.engine.llm.limits import check_token_ids
from maas.server.deps import Models
from maas.server.protocol import DetokenizeRequest, TokenizeRequest
from maas.server.routes.chat import render_chat
from maas.server.tools import check_tools

router = APIRouter()


@router.post("/tokenize", summary="Token ids of a prompt or a conversation")
async def tokenize(body: TokenizeRequest, models: Models) -> dict[str, Any]:
    """{"count", "max_model_len", "tokens"} (and "token_strs" when asked): the ids /v1/completions
    (`prompt`) or /v1/chat/completions (`messages`, rendered by the model's chat template) would run."""
    lease = await models.acquire(body.model, "llm")
    try:
        eng = lease.model.llm()
        if body.messages is not None:
            tools = check_tools(body.tools, None, None)
            text = render_chat(
                eng, body.messages, body.add_generation_prompt, body.chat_template_kwargs, tools
            )
        else:
            text = body.prompt or ""
        ids = eng.tokenizer.encode(text, add_special_tokens=body.add_special_tokens)
        out: dict[str, Any] = {"count": len(ids), "max_model_len": eng.max_model_len, "tokens": ids}
        if body.return_token_strs:
            out["token_strs"] = [eng.tokenizer.decode([i], skip_special_tokens=False) for i in ids]
        return out
    finally:
        lease.release()


@router.post("/detokenize", summary="Text of token ids")
async def detokenize(body: DetokenizeRequest, models: Models) -> dict[str, Any]:
    """{"prompt": text} for `tokens` (special tokens kept); ids outside the vocabulary are a 400."""
    lease = await models.acquire(body.model, "llm")
    try:
        tok = lease.model.llm().tokenizer
        check_token_ids(body.tokens, tok.vocab_size, param="tokens")
        return {"prompt": tok.decode(body.tokens, skip_special_tokens=False)}
    finally:
        lease.release()
