"""Tool calling on the chat route: check `tools` / `tool_choice` and the conversation's tool messages,
render them through the model's template (or maas's own tool prompt when the template has no tools),
pick the output parser, and build the grammar that enforces `required` and named choices.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from maas.errors import InvalidRequestError
from maas.text import grammar
from maas.text.tool_calls import HermesParser, ToolParser, parser_for_template, parser_named

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


@dataclass(frozen=True)
class ToolRequest:
    """A request's tools as the template and the parser need them."""

    tools: list[dict[str, Any]]  # OpenAI's [{"type": "function", "function": {...}}], checked
    choice: str  # "auto" | "required" | "named"
    named: str | None = None
    parallel: bool = True

    def function(self, name: str) -> dict[str, Any]:
        """The function entry of a tool."""
        return next(t["function"] for t in self.tools if t["function"]["name"] == name)


def check_tools(tools: Any, tool_choice: Any, parallel: Any) -> ToolRequest | None:
    """The request's tool settings, or None when no tool may be called (no tools, or tool_choice none)."""
    if tool_choice is not None and not tools:
        if tool_choice == "none":
            return None
        raise _bad("tool_choice needs tools", "tool_choice")
    if not tools:
        return None
    if not isinstance(tools, list):
        raise _bad("tools must be a list", "tools")
    if len(tools) > 128:
        raise _bad("at most 128 tools", "tools")
    seen: set[str] = set()
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type", "function") != "function":
            raise _bad('each tool must be {"type": "function", "function": {...}}', f"tools[{i}].type")
        fn = t.get("function")
        if not isinstance(fn, dict):
            raise _bad("a tool needs a function object", f"tools[{i}].function")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise _bad(
                "a function needs a name of 1-64 letters, digits, '_', '.' or '-'",
                f"tools[{i}].function.name",
            )
        if name in seen:
            raise _bad(f"two tools are named {name!r}", f"tools[{i}].function.name")
        seen.add(name)
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise _bad("parameters must be a JSON Schema object", f"tools[{i}].function.parameters")
        grammar.json_schema_grammar(params, f"tools[{i}].function.parameters")  # a schema we can enforce
    if parallel is not None and not isinstance(parallel, bool):
        raise _bad("parallel_tool_calls must be a boolean", "parallel_tool_calls")
    par = True if parallel is None else parallel
    checked = [{"type": "function", "function": t["function"]} for t in tools]
    if tool_choice in (None, "auto"):
        return ToolRequest(checked, "auto", parallel=par)
    if tool_choice == "none":
        return None
    if tool_choice == "required":
        return ToolRequest(checked, "required", parallel=par)
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if tool_choice.get("type") != "function" or not isinstance(name, str):
            raise _bad('tool_choice must be "none", "auto", "required" or {"type": "function", '
                       '"function": {"name": ...}}', "tool_choice")  # fmt: skip
        if name not in seen:
            raise _bad(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
        return ToolRequest(checked, "named", name, par)
    raise _bad('tool_choice must be "none", "auto", "required" or a named function', "tool_choice")


def check_messages(messages: list[dict[str, Any]]) -> None:
    """Tool calls and tool results in the conversation are well formed (400s naming the field)."""
    for i, m in enumerate(messages):
        role = m["role"]
        calls = m.get("tool_calls")
        if role == "tool" and not m.get("tool_call_id"):
            raise _bad("a tool message needs the tool_call_id it answers", f"messages[{i}].tool_call_id")
        if m.get("content") is None and not (role == "assistant" and calls):
            raise _bad(f"a {role} message needs content", f"messages[{i}].content")
        if calls and role != "assistant":
            raise _bad("only assistant messages carry tool_calls", f"messages[{i}].tool_calls")
        for j, c in enumerate(calls or []):
            fn = c.get("function") if isinstance(c, dict) else None
            where = f"messages[{i}].tool_calls[{j}]"
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise _bad("a tool call needs a function with a name", f"{where}.function.name")
            args = fn.get("arguments", "{}")
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    raise _bad("arguments must be a JSON object", f"{where}.function.arguments") from None
            if not isinstance(args, dict):
                raise _bad("arguments must be a JSON object", f"{where}.function.arguments")


def template_messages(messages: list[dict[str, Any]], renders_tools: bool) -> list[dict[str, Any]]:
    """Messages as chat templates take them: a call's arguments as an object (Hugging Face's convention).
    For a template without tools, in the format maas's tool prompt teaches: calls as a JSON list in
    <tool_call> tags, results as user turns in <tool_response> tags."""
    out: list[dict[str, Any]] = []
    for m in messages:
        calls = m.get("tool_calls")
        if m["role"] == "tool" and not renders_tools:
            out.append(
                {"role": "user", "content": f"<tool_response>\n{m.get('content', '')}\n</tool_response>"}
            )
            continue
        if not calls:
            out.append(m)
            continue
        fixed = []
        for c in calls:
            fn = dict(c["function"])
            if isinstance(fn.get("arguments"), str):
                fn["arguments"] = json.loads(fn["arguments"] or "{}")
            fixed.append({**c, "type": "function", "function": fn})
        if renders_tools:
            out.append({**m, "tool_calls": fixed})
            continue
        listed = ", ".join(
            json.dumps(
                {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}, ensure_ascii=False
            )
            for c in fixed
        )
        prefix = f"{m['content']}\n" if m.get("content") else ""
        out.append({"role": "assistant", "content": f"{prefix}<tool_call>[{listed}]</tool_call>"})
    return out


_PROMPT = """You can call functions to answer the question. The functions you have, as JSON schemas:
<tools>{tools}</tools>
To call functions, answer with nothing but a JSON list of calls inside tool_call tags, giving each call's \
function name and its arguments with the right types:
<tool_call>[{{"name": "function_name", "arguments": {{"argument1": "value1"}}}}]</tool_call>
If none of the functions helps, answer the question in plain words instead."""


def with_tool_prompt(messages: list[dict[str, Any]], req: ToolRequest) -> list[dict[str, Any]]:
    """For templates that render no tools: the tools and the call format in the system message."""
    listing = json.dumps([t["function"] for t in req.tools], ensure_ascii=False)
    prompt = _PROMPT.format(tools=listing)
    if messages and messages[0]["role"] in ("system", "developer"):
        first = messages[0]
        return [{**first, "content": f"{prompt}\n\n{first['content']}"}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


def pick_parser(template_source: str, option: str, renders_tools: bool) -> ToolParser:
    """`--tool-parser` when set, else the template's format (Hermes tags for maas's own tool prompt)."""
    if option != "auto":
        return parser_named(option)
    return parser_for_template(template_source) if renders_tools else HermesParser()


def _call_schema(fn: dict[str, Any], args_key: str) -> dict[str, Any]:
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": fn["name"]}, args_key: params},
        "required": ["name", args_key],
        "additionalProperties": False,
    }


MAX_PARALLEL_CALLS = 8


def forced_call_grammar(req: ToolRequest, parser: ToolParser, own_prompt: bool) -> str | None:
    """The grammar of an answer that is only tool calls (`required`, or the named function), else None.
    `own_prompt`: the model was shown maas's tool prompt (calls as one JSON list in <tool_call> tags)."""
    if req.choice == "auto":
        return None
    names: list[str] = [t["function"]["name"] for t in req.tools]
    if req.choice == "named" and req.named is not None:
        names = [req.named]
    args_key = "parameters" if parser.name == "llama3_json" else "arguments"
    schemas = [_call_schema(req.function(n), args_key) for n in names]
    repeat = MAX_PARALLEL_CALLS - 1 if req.parallel else 0
    if own_prompt:
        return grammar.tool_call_grammar(
            schemas, ("", ""), ", ", repeat, ("<tool_call>[", "]</tool_call>"), "tools"
        )
    if parser.marker:  # one call per <tool_call> block, a block per line
        call = ("<tool_call>\n", "\n</tool_call>")
        return grammar.tool_call_grammar(schemas, call, "\n", repeat, ("", ""), "tools")
    if parser.name == "llama3_json":
        return grammar.tool_call_grammar(schemas, ("", ""), "; ", repeat, ("", ""), "tools")
    return grammar.tool_call_grammar(schemas, ("", ""), ", ", repeat, ("[", "]"), "tools")
