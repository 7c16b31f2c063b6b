"""Structured-output grammars from request fields (JSON schema, regex, choices, Lark/GBNF), checked at the
door: llguidance grammars that the engine turns into per-token masks.

A grammar that llguidance cannot honour in full (an unimplemented schema keyword, a bad regex, an
unsatisfiable schema) is an InvalidRequestError naming the field, never a partly constrained answer.
"""

from __future__ import annotations

import json
from typing import Any

from llguidance import LLMatcher
from llguidance.gbnf_to_lark import gbnf_to_lark

from maas.errors import InvalidRequestError

# JSON as json.dumps writes it: one space after ',' and ':' and nowhere else. Flexible whitespace lets a
# small model pad forever with newlines inside an object and never close it.
_JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
MAX_GRAMMAR_CHARS = 200_000


def _checked(grammar: str, param: str) -> str:
    err = LLMatcher.validate_grammar(grammar)
    if err:
        raise InvalidRequestError(f"{param}: {err.strip()}", param=param, code="invalid_grammar")
    return grammar


def _size_ok(text: str, param: str) -> None:
    if len(text) > MAX_GRAMMAR_CHARS:
        raise InvalidRequestError(f"{param} is longer than {MAX_GRAMMAR_CHARS} characters", param=param)


def json_schema_grammar(schema: Any, param: str) -> str:
    """A grammar for JSON that validates against `schema` (a JSON Schema object)."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise InvalidRequestError(f"{param} is not valid JSON: {e}", param=param) from None
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{param} must be a JSON Schema object", param=param)
    text = json.dumps(schema)
    _size_ok(text, param)
    try:
        grammar = LLMatcher.grammar_from_json_schema(text, defaults=_JSON_OPTIONS)  # type: ignore[arg-type]
    except ValueError as e:
        raise InvalidRequestError(f"{param}: {e}", param=param) from None
    return _checked(grammar, param)


def json_object_grammar() -> str:
    """Any JSON object (response_format {"type": "json_object"})."""
    return json_schema_grammar({"type": "object"}, "response_format")


def regex_grammar(pattern: Any, param: str) -> str:
    """Text matching `pattern` in full (Rust regex syntax, as vLLM's and llguidance's)."""
    if not isinstance(pattern, str) or not pattern:
        raise InvalidRequestError(f"{param} must be a non-empty string", param=param)
    _size_ok(pattern, param)
    return _checked(LLMatcher.grammar_from_regex(pattern), param)


def choice_grammar(choices: Any, param: str) -> str:
    """Exactly one of `choices`."""
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise InvalidRequestError(f"{param} must be a non-empty list of non-empty strings", param=param)
    _size_ok("".join(choices), param)
    alternatives = " | ".join(json.dumps(c, ensure_ascii=False) for c in dict.fromkeys(choices))
    return _checked(LLMatcher.grammar_from_lark(f"start: {alternatives}"), param)


def ebnf_grammar(source: Any, param: str) -> str:
    """A grammar in GBNF (llama.cpp's, rules with `::=`, starting at `root`) or Lark (starting at `start`)."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidRequestError(f"{param} must be a non-empty string", param=param)
    _size_ok(source, param)
    if "::=" in source:
        try:
            source = gbnf_to_lark(source)
        except Exception as e:  # the converter raises bare exceptions on syntax it cannot read
            raise InvalidRequestError(
                f"{param}: not a GBNF grammar maas can read: {e}", param=param
            ) from None
    return _checked(LLMatcher.grammar_from_lark(source), param)


def _lit(text: str) -> list[str]:
    return [json.dumps(text)] if text else []


def tool_call_grammar(
    schemas: list[dict[str, Any]],
    call: tuple[str, str],
    sep: str,
    repeat: int,
    outer: tuple[str, str],
    param: str,
) -> str:
    """Tool calls: outer[0], one call (call[0], a JSON value matching one of `schemas`, call[1]), up to
    `repeat` more each after `sep`, outer[1]; a trailing line break is allowed where calls are lines."""
    values = " | ".join(f"%json {json.dumps({**s, 'x-guidance': _JSON_OPTIONS})}" for s in schemas)
    more = f" ({json.dumps(sep)} call){{0,{repeat}}}" if repeat > 0 else ""
    end = ' "\\n"?' if sep == "\n" and not outer[1] else ""
    start = " ".join([*_lit(outer[0]), f"call{more}", *_lit(outer[1])])
    lark = (
        f"start: {start}{end}\ncall: {' '.join([*_lit(call[0]), 'value', *_lit(call[1])])}\nvalue: {values}\n"
    )
    _size_ok(lark, param)
    return _checked(LLMatcher.grammar_from_lark(lark), param)
