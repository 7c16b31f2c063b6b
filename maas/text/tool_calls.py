"""Tool calls in model output: the formats of the families maas serves, parsed whole or as a stream.

- `hermes`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (Qwen 2.5/3, Hermes,
  SmolLM2's list form `<tool_call>[{...}, ...]</tool_call>`), text around them is content.
- `llama3_json`: the whole answer is `{"name": ..., "parameters": {...}}` (several joined by `;`), after an
  optional `<|python_tag|>` (Llama 3.1/3.2).
- `json`: the whole answer is a JSON call object, a list of them, or `{"tool_calls": [...]}`.

A stream emits content until a call may start, then holds the rest; at the end the whole text is parsed
with the same function as a non-streamed answer, so streamed calls reassemble to the same calls.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from maas.errors import InvalidRequestError
from maas.text.detokenizer import held_back


@dataclass(frozen=True)
class ToolCall:
    """One parsed call: the function's name and its arguments as JSON text."""

    name: str
    arguments: str
    id: str = field(default_factory=lambda: "call_" + secrets.token_hex(12))

    def as_openai(self) -> dict[str, Any]:
        """The `tool_calls` entry of an OpenAI message."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def _calls_from(value: Any) -> list[ToolCall] | None:
    """Calls from a decoded JSON value (an object or a list of objects with a name), else None."""
    items = value if isinstance(value, list) else [value]
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        items = value["tool_calls"]
    calls = []
    for it in items:
        if isinstance(it, dict) and isinstance(it.get("function"), dict):
            it = it["function"]
        if not isinstance(it, dict) or not isinstance(it.get("name"), str):
            return None
        args = it.get("arguments", it.get("parameters", {}))
        if isinstance(args, str):  # some models write the arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return None
        if not isinstance(args, dict):
            return None
        calls.append(ToolCall(it["name"], json.dumps(args, ensure_ascii=False)))
    return calls or None


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


_HERMES = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
PYTHON_TAG = "<|python_tag|>"


class ToolParser:
    """One output format: `parse` a whole answer; `may_start` says where a stream must stop emitting."""

    name = "json"
    marker = ""  # text that opens a call anywhere in the answer ("" = only a whole-answer call)

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """(content, calls) of a whole answer; content is None when only calls remain."""
        body = text.strip()
        if body.startswith(PYTHON_TAG):
            body = body[len(PYTHON_TAG) :].strip()
        calls = _calls_from(_load(body)) if body[:1] in ("{", "[") else None
        if calls is None and ";" in body and body[:1] == "{":
            parts = [_calls_from(_load(p)) for p in body.split(";")]
            calls = [c for p in parts for c in p] if all(parts) else None  # type: ignore[union-attr]
        return (None, calls) if calls else (text, [])


class Llama3JsonParser(ToolParser):
    """Llama 3.1/3.2: `{"name": ..., "parameters": ...}` answers."""

    name = "llama3_json"


class HermesParser(ToolParser):
    """`<tool_call>...</tool_call>` blocks anywhere in the answer."""

    name = "hermes"
    marker = "<tool_call>"

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        calls: list[ToolCall] = []
        kept: list[str] = []
        pos = 0
        for m in _HERMES.finditer(text):
            found = _calls_from(_load(m.group(1).strip()))
            if found is None:
                continue
            calls += found
            kept.append(text[pos : m.start()])
            pos = m.end()
        if not calls:
            return text, []
        content = ("".join(kept) + text[pos:]).strip()
        return content or None, calls


PARSERS: dict[str, type[ToolParser]] = {p.name: p for p in (HermesParser, Llama3JsonParser, ToolParser)}


def parser_named(name: str) -> ToolParser:
    """A parser by name (`--tool-parser`)."""
    cls = PARSERS.get(name)
    if cls is None:
        raise InvalidRequestError(f"unknown tool parser {name!r} (known: {', '.join(sorted(PARSERS))})")
    return cls()


def parser_for_template(source: str) -> ToolParser:
    """The format a chat template teaches: Hermes tags, Llama 3's JSON, else Hermes tags (what maas's own
    tool prompt asks for when the template renders no tools)."""
    if "<|python_tag|>" in source or "ipython" in source:
        return Llama3JsonParser()
    return HermesParser()


class ToolStream:
    """Feed a streamed answer's text deltas; get the content to emit now, and the calls at the end."""

    def __init__(self, parser: ToolParser):
        self.parser = parser
        self.text = ""
        self.emitted = 0  # characters of text already sent as content
        self.holding = False  # a call may have started: send nothing more until the end

    def feed(self, delta: str) -> str:
        """Content that is safe to send now."""
        self.text += delta
        if self.holding:
            return ""
        p = self.parser
        if not p.marker:  # a whole-answer format: decided by the first visible character
            head = self.text.lstrip()
            if not head:
                return ""
            if head[0] in "{[<":
                self.holding = True
                return ""
            return self._send(len(self.text))
        i = self.text.find(p.marker, self.emitted)
        if i >= 0:
            self.holding = True
            return self._send(len(self.text[:i].rstrip()))
        keep = len(self.text) - held_back(self.text, (p.marker,))
        return self._send(len(self.text[:keep].rstrip()))

    def _send(self, upto: int) -> str:
        out = self.text[self.emitted : upto] if upto > self.emitted else ""
        self.emitted = max(self.emitted, upto)
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(the content not yet sent, the calls): together with what was sent, the whole answer's parse."""
        content, calls = self.parser.parse(self.text)
        if not calls:
            return self.text[self.emitted :], []
        sent = self.text[: self.emitted].strip()
        rest = content or ""
        return (rest[len(sent) :] if rest.startswith(sent) else ""), calls
