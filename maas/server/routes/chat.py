"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from maas.engine.llm.sampling_params import SamplingParams
from maas.engine.protocol import LLMClient
from maas.server.deps import Models
from maas.server.pool import Lease
from maas.server.protocol import ChatCompletionRequest, ChatMessage
from maas.server.serving import Job, run_job
from maas.server.tools import (
    ToolRequest,
    forced_call_grammar,
    pick_parser,
    template_messages,
    with_tool_prompt,
)

router = APIRouter()


@router.post("/v1/chat/completions", summary="Chat completion (OpenAI-compatible)")
async def chat_completions(body: ChatCompletionRequest, request: Request, models: Models) -> Any:
    """Answer a conversation with the model's chat template; streams as SSE when `stream` is true."""
    params = body.sampling_params()  # bad parameters fail before a model is loaded for them
    tools = body.tool_request(guided=params.guide is not None)
    parser_option = request.app.state.options.tool_parser
    return await run_job(
        models, body.model, request, lambda lease: _job(body, params, tools, parser_option, lease)
    )


def render_chat(
    eng: LLMClient,
    messages: list[ChatMessage],
    add_generation_prompt: bool,
    kwargs: dict[str, Any] | None,
    tools: ToolRequest | None = None,
) -> str:
    """The prompt text a conversation becomes through the model's chat template (with the tools: the
    template's own layout, or maas's tool prompt for a template that has none)."""
    template = eng.chat_template
    dumped = template_messages(
        [msg.model_dump(exclude_none=True) for msg in messages], template.renders_tools
    )
    if tools is not None and not template.renders_tools:
        dumped = with_tool_prompt(dumped, tools)
    listed = tools.tools if tools is not None and template.renders_tools else None
    return template.render(
        dumped, add_generation_prompt=add_generation_prompt, tools=listed, **(kwargs or {})
    )


def _job(
    body: ChatCompletionRequest,
    params: SamplingParams,
    tools: ToolRequest | None,
    parser_option: str,
    lease: Lease,
) -> Job:
    m = lease.model
    eng = m.llm()
    prompt = render_chat(eng, body.messages, body.add_generation_prompt, body.chat_template_kwargs, tools)
    ids = eng.tokenizer.encode(prompt, add_special_tokens=True)
    params = params.with_(max_tokens=eng.check_prompt(len(ids), params.max_tokens, "messages"))
    parser = None
    if tools is not None:
        parser = pick_parser(eng.chat_template.source, parser_option, eng.chat_template.renders_tools)
        forced = forced_call_grammar(tools, parser, own_prompt=not eng.chat_template.renders_tools)
        if forced is not None:
            params = params.with_(guide=forced)
    job = Job("chat", m.name, eng, ids, params, body.stream, body.include_usage, lease=lease)
    job.tool_parser = parser
    job.tool_choice = tools.choice if tools is not None else None
    return job
