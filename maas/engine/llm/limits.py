"""Request checks that need only numbers (shared by the engine and its out-of-process front)."""

from __future__ import annotations

from maas.errors import ContextLengthError, InvalidRequestError


def check_prompt(prompt_len: int, max_tokens: int | None, limit: int, param: str = "messages") -> int:
    """Validate prompt length + max_tokens against the context `limit`; return the effective max_tokens."""
    if prompt_len == 0:
        raise InvalidRequestError("the prompt is empty", param=param)
    if prompt_len >= limit:
        raise ContextLengthError(
            f"This model's maximum context length is {limit} tokens. However, your prompt has "
            f"{prompt_len} tokens, leaving no room for output. Please shorten the prompt.",
            param=param,
        )
    if max_tokens is None:
        return limit - prompt_len
    if prompt_len + max_tokens > limit:
        raise ContextLengthError(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} for the "
            "completion). Please reduce the prompt or max_tokens.",
            param="max_tokens",
        )
    return max_tokens


def check_token_ids(ids: list[int], vocab_size: int, param: str = "prompt") -> None:
    """Every id must be in the vocabulary."""
    if any(not 0 <= t < vocab_size for t in ids):
        raise InvalidRequestError(f"token ids in {param} must be in [0, {vocab_size})", param=param)
