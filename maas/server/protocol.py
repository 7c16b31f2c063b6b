"""Request schemas of the OpenAI API (plus vLLM's sampling extras), validated by pydantic."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from maas.engine.llm.sampling_params import SamplingParams
from maas.errors import InvalidRequestError
from maas.server.tools import ToolRequest, check_messages, check_tools
from maas.text import grammar

Number = float

# Sampling used where a request leaves a field out: llama.cpp server's and Ollama's habit rather
# than OpenAI's temperature 1.0, which makes small local models ramble.
DEFAULTS = {"temperature": 0.7, "top_p": 0.95, "min_p": 0.05}


class _Base(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Request(BaseModel):
    """A request body: unknown fields are kept (model_extra) so that those that would change the answer
    can be refused; the rest are ignored, as OpenAI does."""

    model_config = ConfigDict(extra="allow")


class StreamOptions(_Base):
    """`stream_options`."""

    include_usage: StrictBool = False


class ContentPart(_Base):
    """A part of a message's content; only text is supported."""

    type: str
    text: str | None = None


class ChatMessage(_Base):
    """One message of a conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None


# Fields that would change the answer and that maas does not honour: a 400 naming the field, never a 200
# the client takes for what it asked (function_call "none" is what happens anyway).
_NOT_YET = ("functions", "function_call", "audio")


def _response_format_guide(fmt: Any) -> str | None:
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise InvalidRequestError('response_format must be an object with a "type"', param="response_format")
    kind = fmt["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return grammar.json_object_grammar()
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise InvalidRequestError(
                'response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}',
                param="response_format.json_schema",
            )
        return grammar.json_schema_grammar(spec["schema"], "response_format.json_schema.schema")
    raise InvalidRequestError(
        f"response_format type {kind!r} is not supported (text, json_object, json_schema)",
        param="response_format.type",
    )


# vLLM's structured-output fields, each -> its grammar builder
_GUIDED = {
    "guided_json": grammar.json_schema_grammar,
    "guided_regex": grammar.regex_grammar,
    "guided_choice": grammar.choice_grammar,
    "guided_grammar": grammar.ebnf_grammar,
}


def output_guide(body: BaseModel) -> str | None:
    """The grammar a request's output must follow (response_format or a guided_* field), or None."""
    extra = body.model_extra or {}
    asked = [k for k in ("response_format", *_GUIDED) if extra.get(k) is not None]
    if len(asked) > 1:
        raise InvalidRequestError(f"give at most one of {', '.join(asked)}", param=asked[1])
    if not asked:
        return None
    name = asked[0]
    if name == "response_format":
        return _response_format_guide(extra[name])
    return _GUIDED[name](extra[name], name)


def _refuse_unsupported(body: BaseModel) -> None:
    extra = body.model_extra or {}
    for name in _NOT_YET:
        value = extra.get(name)
        if value in (None, [], {}) or (name == "function_call" and value == "none"):
            continue
        hint = " (use tools and tool_choice)" if name.startswith("function") else ""
        raise InvalidRequestError(f"{name} is not supported{hint}", param=name)
    modalities = extra.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise InvalidRequestError("only the text modality is supported", param="modalities")


class _SamplingFields(_Request):
    """Fields shared by chat and completions."""

    model: str
    n: StrictInt = 1
    temperature: Number | None = None
    top_p: Number | None = None
    max_tokens: StrictInt | None = None
    stop: str | list[str] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    presence_penalty: Number = 0.0
    frequency_penalty: Number = 0.0
    seed: StrictInt | None = None
    user: str | None = None
    logit_bias: dict[str, float] | None = None
    # vLLM extras
    top_k: StrictInt = 0
    min_p: Number | None = None
    repetition_penalty: Number = 1.0
    stop_token_ids: list[StrictInt] | None = None
    ignore_eos: StrictBool = False
    skip_special_tokens: StrictBool = True
    include_stop_str_in_output: StrictBool = False

    @property
    def include_usage(self) -> bool:
        """A final usage chunk is wanted (streaming with stream_options.include_usage)."""
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def _sampling(self, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
        _refuse_unsupported(self)
        if self.logit_bias:
            raise InvalidRequestError("logit_bias is not supported", param="logit_bias")
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            n=self.n,
            max_tokens=max_tokens,
            temperature=DEFAULTS["temperature"] if self.temperature is None else self.temperature,
            top_p=DEFAULTS["top_p"] if self.top_p is None else self.top_p,
            top_k=self.top_k,
            min_p=DEFAULTS["min_p"] if self.min_p is None else self.min_p,
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=self.repetition_penalty,
            stop=tuple(stop),
            stop_token_ids=tuple(self.stop_token_ids or ()),
            ignore_eos=self.ignore_eos,
            logprobs=logprobs,
            skip_special_tokens=self.skip_special_tokens,
            include_stop_str_in_output=self.include_stop_str_in_output,
            guide=output_guide(self),
        )


class ChatCompletionRequest(_SamplingFields):
    """POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: StrictInt | None = None
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = None
    add_generation_prompt: StrictBool = True
    chat_template_kwargs: dict[str, Any] | None = None

    def model_post_init(self, _context: Any) -> None:
        check_messages([m.model_dump(exclude_none=True) for m in self.messages])

    def tool_request(self, guided: bool) -> ToolRequest | None:
        """The tools the model may call (None: no tools, or tool_choice none); `guided`: the request
        already constrains its output (response_format, guided_*)."""
        extra = self.model_extra or {}
        req = check_tools(extra.get("tools"), extra.get("tool_choice"), extra.get("parallel_tool_calls"))
        if req is not None and req.choice != "auto" and guided:
            raise InvalidRequestError(
                "tool_choice required or a named function cannot be combined with response_format or guided_*",
                param="tool_choice",
            )
        return req

    def sampling_params(self) -> SamplingParams:
        """The engine's view of this request."""
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequestError("top_logprobs requires logprobs=true", param="top_logprobs")
        lp = (self.top_logprobs or 0) if self.logprobs else None
        mt = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        return self._sampling(mt, lp)


class CompletionRequest(_SamplingFields):
    """POST /v1/completions."""

    prompt: str | list[str] | list[StrictInt] | list[list[StrictInt]]
    echo: StrictBool = False
    logprobs: StrictInt | None = None
    suffix: str | None = None
    best_of: StrictInt | None = None

    def sampling_params(self) -> SamplingParams:
        """The engine's view of this request (OpenAI's default max_tokens for completions is 16)."""
        if self.suffix:
            raise InvalidRequestError("suffix is not supported", param="suffix")
        if self.best_of is not None and self.best_of != self.n:
            raise InvalidRequestError("best_of other than n is not supported", param="best_of")
        return self._sampling(16 if self.max_tokens is None else self.max_tokens, self.logprobs)


MAX_EMBEDDING_INPUTS = 2048


class EmbeddingRequest(_Base):
    """POST /v1/embeddings (OpenAI's fields, plus `truncate` as TEI has it)."""

    model: str
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None
    user: str | None = None
    truncate: StrictBool = False

    def texts_or_ids(self) -> tuple[list[str] | None, list[list[int]] | None]:
        """(texts, None) or (None, token-id lists); empty or oversized inputs are a 400."""
        x = self.input
        if isinstance(x, str):
            x = [x]
        if not isinstance(x, list) or not (
            all(isinstance(t, str) for t in x)
            or all(_is_id(t) for t in x)
            or all(isinstance(s, list) and all(_is_id(t) for t in s) for s in x)
        ):
            raise InvalidRequestError(
                "input must be a string, a list of strings, a list of token ids, or a list of token-id lists",
                param="input",
            )
        if not x:
            raise InvalidRequestError("input must not be empty", param="input")
        if len(x) > MAX_EMBEDDING_INPUTS:
            raise InvalidRequestError(
                f"at most {MAX_EMBEDDING_INPUTS} inputs per request, got {len(x)}", param="input"
            )
        if isinstance(x[0], str):
            texts = [str(t) for t in x]
            if any(not t for t in texts):
                raise InvalidRequestError("input strings must not be empty", param="input")
            return texts, None
        if isinstance(x[0], int):
            return None, [[int(i) for i in x]]  # type: ignore[arg-type]
        ids = [list(s) for s in x]  # type: ignore[arg-type]
        if any(not s for s in ids):
            raise InvalidRequestError("token-id inputs must not be empty", param="input")
        return None, ids


def _is_id(t: Any) -> bool:
    return isinstance(t, int) and not isinstance(t, bool)


class TokenizeRequest(_Base):
    """POST /tokenize: `prompt` (as /v1/completions) or `messages` (as /v1/chat/completions)."""

    model: str
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    add_generation_prompt: StrictBool = True
    chat_template_kwargs: dict[str, Any] | None = None
    add_special_tokens: StrictBool = True
    return_token_strs: StrictBool = False
    tools: list[Any] | None = None  # rendered with `messages`, as /v1/chat/completions would

    def model_post_init(self, _context: Any) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise InvalidRequestError("give exactly one of prompt and messages", param="prompt")
        if self.messages is not None:
            check_messages([m.model_dump(exclude_none=True) for m in self.messages])


class DetokenizeRequest(_Base):
    """POST /detokenize."""

    model: str
    tokens: list[StrictInt]
