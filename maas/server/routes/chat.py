"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from maas.engine.protocol import LLMClient
from maas.engine.sampling_params import SamplingParams
from maas.server.deps import Models
from maas.server.pool import Lease
from maas.server.protocol import ChatCompletionRequest, ChatMessage
from maas.server.serving import Job, run_job

router = APIRouter()


@router.post("/v1/chat/completions", summary="Chat completion (OpenAI-compatible)")
async def chat_completions(body: ChatCompletionRequest, request: Request, models: Models) -> Any:
    """Answer a conversation with the model's chat template; streams as SSE when `stream` is true."""
    params = body.sampling_params()  # bad parameters fail before a model is loaded for them
    return await run_job(models, body.model, request, lambda lease: _job(body, params, lease))


def render_chat(
    eng: LLMClient, messages: list[ChatMessage], add_generation_prompt: bool, kwargs: dict[str, Any] | None
) -> str:
    """The prompt text a conversation becomes through the model's chat template."""
    dumped = [msg.model_dump(exclude_none=True) for msg in messages]
    return eng.chat_template.render(dumped, add_generation_prompt=add_generation_prompt, **(kwargs or {}))


def _job(body: ChatCompletionRequest, params: SamplingParams, lease: Lease) -> Job:
    m = lease.model
    eng = m.llm()
    prompt = render_chat(eng, body.messages, body.add_generation_prompt, body.chat_template_kwargs)
    ids = eng.tokenizer.encode(prompt, add_special_tokens=True)
    params = params.with_(max_tokens=eng.check_prompt(len(ids), params.max_tokens, "messages"))
    job = Job("chat", m.name, eng, ids, params, body.stream, body.include_usage, lease=lease)
    return job
