"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from maas.engine.sampling_params import SamplingParams
from maas.server.deps import Models
from maas.server.pool import Lease
from maas.server.protocol import ChatCompletionRequest
from maas.server.serving import Job, run_job

router = APIRouter()


@router.post("/v1/chat/completions", summary="Chat completion (OpenAI-compatible)")
async def chat_completions(body: ChatCompletionRequest, request: Request, models: Models) -> Any:
    """Answer a conversation with the model's chat template; streams as SSE when `stream` is true."""
    params = body.sampling_params()  # bad parameters fail before a model is loaded for them
    return await run_job(models, body.model, request, lambda lease: _job(body, params, lease))


def _job(body: ChatCompletionRequest, params: SamplingParams, lease: Lease) -> Job:
    m = lease.model
    eng = m.llm()
    messages = [msg.model_dump(exclude_none=True) for msg in body.messages]
    prompt = eng.chat_template.render(
        messages, add_generation_prompt=body.add_generation_prompt, **(body.chat_template_kwargs or {})
    )
    ids = eng.tokenizer.encode(prompt, add_special_tokens=True)
    params = params.with_(max_tokens=eng.check_prompt(len(ids), params.max_tokens, "messages"))
    job = Job("chat", m.name, eng, ids, params, body.stream, body.include_usage, lease=lease)
    return job
