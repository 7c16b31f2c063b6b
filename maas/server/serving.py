"""Turn engine streams into OpenAI chat/completion responses, streamed (SSE) or whole."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from maas.engine.llm.request import RequestOutput, TokenLogprob, request_id
from maas.engine.llm.sampling_params import SamplingParams
from maas.engine.protocol import LLMClient
from maas.errors import MaasError, OverloadedError, RequestTimeoutError
from maas.server.caller import Caller, Callers
from maas.server.errors import error_body, status_of
from maas.server.metrics import RequestTimer
from maas.server.pool import Lease, ModelPool
from maas.text.tool_calls import ToolCall, ToolParser, ToolStream


@dataclass
class Job:
    """One validated generation request, ready to run."""

    kind: str  # "chat" | "text"
    model: str
    engine: LLMClient
    prompt_ids: list[int]
    params: SamplingParams
    stream: bool
    include_usage: bool
    echo_text: str = ""
    lease: Lease | None = None  # held on the model until the response is complete
    timer: RequestTimer | None = None
    state: Any = None  # the request's scope state (access log fields)
    admitted: Callable[[], None] | None = None  # undoes admission when the job ends
    charge: Callable[[int], None] | None = None  # tokens used, for tokens/min limits
    deadline: float | None = None  # monotonic time after which the request is aborted
    tool_parser: ToolParser | None = None  # set when the model may call tools: reads calls from the text
    tool_choice: str | None = None  # "auto" | "required" | "named"
    id: str = field(default_factory=lambda: request_id("chatcmpl"))
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class _Choice:
    text: str = ""
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    completion_tokens: int = 0


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


class Formatter:
    """Builds response bodies for one job (chat or text completion)."""

    def __init__(self, job: Job):
        self.job = job
        self.decode: Callable[[int], str] = lambda t: job.engine.tokenizer.decode(
            [t], skip_special_tokens=False
        )
        self._offsets: dict[int, int] = {}

    def chat_logprobs(self, lps: list[TokenLogprob]) -> dict[str, Any]:
        def entry(tid: int, lp: float) -> dict[str, Any]:
            s = self.decode(tid)
            return {"token": s, "logprob": lp, "bytes": list(s.encode("utf-8"))}

        return {
            "content": [
                {**entry(t.token_id, t.logprob), "top_logprobs": [entry(i, v) for i, v in t.top]} for t in lps
            ]
        }

    def text_logprobs(self, index: int, lps: list[TokenLogprob]) -> dict[str, Any]:
        tokens, offsets = [], []
        off = self._offsets.get(index, len(self.job.echo_text))
        for t in lps:
            s = self.decode(t.token_id)
            tokens.append(s)
            offsets.append(off)
            off += len(s)
        self._offsets[index] = off
        return {
            "tokens": tokens,
            "token_logprobs": [t.logprob for t in lps],
            "top_logprobs": [{self.decode(i): v for i, v in t.top} for t in lps],
            "text_offset": offsets,
        }

    def logprobs(self, index: int, lps: list[TokenLogprob]) -> dict[str, Any] | None:
        if self.job.params.logprobs is None:
            return None
        return self.chat_logprobs(lps) if self.job.kind == "chat" else self.text_logprobs(index, lps)

    def usage(self, prompt: int, completion: int) -> dict[str, int]:
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        j = self.job
        obj = "chat.completion.chunk" if j.kind == "chat" else "text_completion"
        body: dict[str, Any] = {
            "id": j.id,
            "object": obj,
            "created": j.created,
            "model": j.model,
            "choices": choices,
        }
        if j.include_usage:
            body["usage"] = usage
        return body


async def _stream(job: Job) -> AsyncIterator[str]:
    f = Formatter(job)
    n_prompt = len(job.prompt_ids)
    completion = [0] * job.params.n
    reasons: list[str | None] = [None] * job.params.n
    gen: AsyncGenerator[tuple[int, RequestOutput], None] | None = None
    try:
        gen = job.engine.generate(job.id, job.prompt_ids, job.params)
        if job.kind == "chat":
            for i in range(job.params.n):
                delta = {"role": "assistant", "content": ""}
                yield _sse(f.chunk([{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}]))
        elif job.echo_text:
            for i in range(job.params.n):
                yield _sse(
                    f.chunk([{"index": i, "text": job.echo_text, "logprobs": None, "finish_reason": None}])
                )
        tool_streams = [ToolStream(job.tool_parser) for _ in range(job.params.n)] if job.tool_parser else None
        async for idx, out in _within_deadline(job, gen):
            completion[idx] = out.num_output_tokens
            _observe(job, out)
            lp = f.logprobs(idx, out.logprobs)
            reason = out.finish_reason
            if tool_streams is not None:
                text = tool_streams[idx].feed(out.text)
                if out.finished:
                    rest, calls = tool_streams[idx].finish()
                    text += rest
                    reason = _reason(job, reason, calls)
                    if text:
                        yield _sse(f.chunk([{"index": idx, "delta": {"content": text}, "logprobs": lp,
                                             "finish_reason": None}]))  # fmt: skip
                        text, lp = "", None
                    for chunk in _tool_call_chunks(f, idx, calls):
                        yield chunk
                if not text and lp is None and not out.finished:
                    continue  # content held back: a call may be starting
                delta = {"content": text} if text else {}
                choice = {"index": idx, "delta": delta, "logprobs": lp, "finish_reason": reason}
            elif job.kind == "chat":
                delta = {"content": out.text} if out.text or not out.finished else {}
                choice = {"index": idx, "delta": delta, "logprobs": lp, "finish_reason": reason}
            else:
                choice = {"index": idx, "text": out.text, "logprobs": lp, "finish_reason": reason}
            if out.finished:
                reasons[idx] = reason
            yield _sse(f.chunk([choice]))
        if job.include_usage:
            body = f.chunk([], f.usage(n_prompt * job.params.n, sum(completion)))
            yield _sse(body)
    except MaasError as e:
        yield _sse(error_body(e.message, e.kind, e.param, e.code))
    finally:
        if gen is not None:
            await gen.aclose()
        _finish(job, n_prompt * job.params.n, sum(completion), reasons)
        _release(job)
    yield "data: [DONE]\n\n"


def _reason(job: Job, reason: str | None, calls: list[ToolCall]) -> str | None:
    """OpenAI's finish reason: tool_calls when the model chose to call (not for a named function)."""
    return "tool_calls" if calls and reason == "stop" and job.tool_choice != "named" else reason


def _tool_call_chunks(f: Formatter, idx: int, calls: list[ToolCall]) -> list[str]:
    """Each call as OpenAI streams it: id, type and name first, then the arguments."""
    out = []
    for k, c in enumerate(calls):
        head = {"index": k, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": ""}}
        args = {"index": k, "function": {"arguments": c.arguments}}
        for part in (head, args):
            delta = {"tool_calls": [part]}
            out.append(
                _sse(f.chunk([{"index": idx, "delta": delta, "logprobs": None, "finish_reason": None}]))
            )
    return out


async def _within_deadline(
    job: Job, gen: AsyncGenerator[tuple[int, RequestOutput], None]
) -> AsyncIterator[tuple[int, RequestOutput]]:
    """The engine's outputs until the request's deadline (then RequestTimeoutError; closing the
    generator aborts the request in the engine)."""
    if job.deadline is None:
        async for item in gen:
            yield item
        return
    while True:
        remaining = job.deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            item = await asyncio.wait_for(gen.__anext__(), remaining)
        except StopAsyncIteration:
            return
        except TimeoutError:
            await gen.aclose()
            raise RequestTimeoutError(
                "the request ran past the server's request timeout and was stopped"
            ) from None
        yield item


def _observe(job: Job, out: RequestOutput) -> None:
    if job.timer is not None:
        job.timer.output(len(out.token_ids), out.queue_time)


def _finish(job: Job, prompt: int, completion: int, reasons: list[str | None]) -> None:
    if job.timer is not None:
        job.timer.finish(prompt, completion, reasons[0] if reasons and all(reasons) else None)
        job.timer = None
    if job.state is not None:
        job.state.prompt_tokens, job.state.completion_tokens = prompt, completion
    if job.charge is not None:
        job.charge(prompt + completion)
        job.charge = None


def _release(job: Job) -> None:
    if job.admitted is not None:
        job.admitted()
        job.admitted = None
    if job.lease is not None:
        job.lease.release()


async def _collect(job: Job) -> dict[str, Any]:
    choices = [_Choice() for _ in range(job.params.n)]
    n_prompt = len(job.prompt_ids)
    try:
        async for idx, out in _within_deadline(job, job.engine.generate(job.id, job.prompt_ids, job.params)):
            _observe(job, out)
            _add(choices[idx], out)
    finally:
        _finish(job, n_prompt * job.params.n, sum(c.completion_tokens for c in choices),
                [c.finish_reason for c in choices])  # fmt: skip
    return _whole_body(job, choices)


def _add(c: _Choice, out: RequestOutput) -> None:
    c.text += out.text
    c.logprobs += out.logprobs
    c.completion_tokens = out.num_output_tokens
    if out.finished:
        c.finish_reason = out.finish_reason


def _whole_body(job: Job, choices: list[_Choice]) -> dict[str, Any]:
    n_prompt = len(job.prompt_ids)
    f = Formatter(job)
    usage = f.usage(n_prompt * job.params.n, sum(c.completion_tokens for c in choices))
    if job.kind == "chat":
        return {
            "id": job.id,
            "object": "chat.completion",
            "created": job.created,
            "model": job.model,
            "choices": [_whole_choice(job, f, i, c) for i, c in enumerate(choices)],
            "usage": usage,
        }
    return {
        "id": job.id,
        "object": "text_completion",
        "created": job.created,
        "model": job.model,
        "choices": [
            {
                "index": i,
                "text": job.echo_text + c.text,
                "logprobs": f.logprobs(i, c.logprobs),
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(choices)
        ],
        "usage": usage,
    }


def _whole_choice(job: Job, f: Formatter, i: int, c: _Choice) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": c.text}
    reason = c.finish_reason
    if job.tool_parser is not None:
        content, calls = job.tool_parser.parse(c.text)
        message["content"] = content
        if calls:
            message["tool_calls"] = [call.as_openai() for call in calls]
        reason = _reason(job, reason, calls)
    return {"index": i, "message": message, "logprobs": f.logprobs(i, c.logprobs), "finish_reason": reason}


def _admit(job: Job, request: Request) -> None:
    """Rate limits, then the bounded queue: at most max_num_seqs + max_queued_requests jobs per model."""
    app = request.app
    callers: Callers | None = getattr(app.state, "callers", None)
    if callers is not None and callers.limited:
        caller = Caller.of_scope(request.scope)
        callers.admit(caller)
        job.charge = lambda n: callers.spent(caller, n)
    flights: dict[int, int] = app.state.in_flight
    key = id(job.engine)
    limit = job.engine.max_num_seqs + app.state.options.max_queued_requests
    if flights.get(key, 0) >= limit:
        raise OverloadedError(
            f"model {job.model!r} has {limit} requests running or queued; retry shortly", code="queue_full"
        )
    flights[key] = flights.get(key, 0) + 1

    def done() -> None:
        flights[key] -= 1

    job.admitted = done


async def respond(job: Job, request: Request) -> Any:
    """Run a job: an SSE stream (client disconnect cancels it) or one JSON body."""
    try:
        _admit(job, request)
    except MaasError:
        _release(job)
        raise
    request.state.model = job.model
    job.state = request.state
    metrics = getattr(request.app.state, "metrics", None)
    job.timer = metrics.timer(job.model) if metrics is not None else None
    timeout = request.app.state.options.request_timeout_s
    job.deadline = time.monotonic() + timeout if timeout > 0 else None
    if job.stream:
        return StreamingResponse(
            _stream(job),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(_release, job),  # also when the stream never started
        )
    try:
        return await _respond_whole(job, request)
    finally:
        _release(job)


async def _respond_whole(job: Job, request: Request) -> Any:
    task = asyncio.ensure_future(_collect(job))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                break
            if await request.is_disconnected():
                task.cancel()
                return JSONResponse(error_body("client disconnected", "client_closed"), status_code=499)
    except asyncio.CancelledError:
        task.cancel()
        raise
    try:
        return task.result()
    except MaasError as e:
        return JSONResponse(error_body(e.message, e.kind, e.param, e.code), status_code=status_of(e))


async def run_job(models: ModelPool, model: str, request: Request, build: Callable[[Lease], Job]) -> Any:
    """Lease the model, build the job on it (validation may fail: the lease is returned), respond."""
    lease = await models.acquire(model, "llm")
    try:
        job = build(lease)
    except BaseException:
        lease.release()
        raise
    return await respond(job, request)
