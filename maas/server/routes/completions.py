"""POST /v1/completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from maas.engine.llm.request import request_id
from maas.engine.llm.sampling_params import SamplingParams
from maas.errors import InvalidRequestError
from maas.server.deps import Models
from maas.server.pool import Lease
from maas.server.protocol import CompletionRequest
from maas.server.serving import Job, run_job

router = APIRouter()


@router.post("/v1/completions", summary="Text completion (OpenAI-compatible)")
async def completions(body: CompletionRequest, request: Request, models: Models) -> Any:
    """Continue a prompt (text or token ids); streams as SSE when `stream` is true."""
    params = body.sampling_params()  # bad parameters fail before a model is loaded for them
    return await run_job(models, body.model, request, lambda lease: _job(body, params, lease))


def _job(body: CompletionRequest, params: SamplingParams, lease: Lease) -> Job:
    m = lease.model
    eng = m.llm()
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) != 1:
            raise InvalidRequestError(
                "batched prompts are not supported; send one prompt per request", param="prompt"
            )
        prompt = prompt[0]
    if isinstance(prompt, str):
        ids = eng.tokenizer.encode(prompt, add_special_tokens=True)
        text = prompt
    else:
        ids = list(prompt)  # type: ignore[arg-type]
        text = eng.tokenizer.decode(ids) if body.echo else ""
    params = params.with_(max_tokens=eng.check_prompt(len(ids), params.max_tokens, "prompt"))
    job = Job(
        "text",
        m.name,
        eng,
        ids,
        params,
        body.stream,
        body.include_usage,
        text if body.echo else "",
        lease=lease,
        id=request_id("cmpl"),
    )
    return job
