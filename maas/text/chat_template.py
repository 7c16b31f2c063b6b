"""Render a model's own jinja chat template in a sandbox."""

from __future__ import annotations

import datetime
import json
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from maas.errors import InvalidRequestError, ModelFormatError

# ChatML, used when a model ships no template of its own.
DEFAULT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise(message: str) -> None:
    raise InvalidRequestError(f"chat template refused the conversation: {message}", param="messages")


@lru_cache(maxsize=16)
def _compile(source: str) -> Any:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(
        x, indent=indent, ensure_ascii=ensure_ascii
    )
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except TemplateError as e:
        raise ModelFormatError(f"the model's chat template does not compile: {e}") from None


def _flatten_content(content: Any) -> Any:
    """OpenAI content parts [{"type": "text", "text": ...}] -> one string."""
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") == "text":
                parts.append(str(p.get("text", "")))
            else:
                raise InvalidRequestError("only text content parts are supported", param="messages")
        return "".join(parts)
    return "" if content is None else content


class ChatTemplate:
    """A compiled chat template plus the special tokens it may refer to."""

    def __init__(self, source: str | None, bos_token: str | None = None, eos_token: str | None = None):
        self.source = source or DEFAULT_TEMPLATE
        self.bos_token = bos_token or ""
        self.eos_token = eos_token or ""
        self._template = _compile(self.source)
        self.renders_tools = "tools" in self.source  # the template lays out tool definitions itself

    def render(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> str:
        """The prompt text for a conversation."""
        msgs = [{**m, "content": _flatten_content(m.get("content"))} for m in messages]
        try:
            return str(
                self._template.render(
                    messages=msgs,
                    add_generation_prompt=add_generation_prompt,
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                    tools=tools,
                    **extra,
                )
            )
        except InvalidRequestError:
            raise
        except TemplateError as e:
            raise InvalidRequestError(f"cannot render the chat template: {e}", param="messages") from None
