"""Grammar-constrained sampling: one llguidance matcher per guided sequence; before sampling, the masks of
all guided rows of a step are computed together (in llguidance's threads) and applied to the logits;
after sampling, each matcher consumes its token.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from maas.errors import InvalidRequestError
from maas.text.tokenizer import Tokenizer


class GrammarCompiler:
    """Builds matchers for one model's vocabulary (the token table is made at the first guided request)."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._lltok: Any = None

    def matcher(self, grammar: str) -> Any:
        """A fresh matcher at the grammar's start; an InvalidRequestError if this vocabulary cannot follow it."""
        import llguidance

        if self._lltok is None:
            self._lltok = llguidance.LLTokenizer(
                self.tokenizer.hf.to_str(), n_vocab=self.vocab_size, eos_token=self.tokenizer.eos_token_ids
            )
        m = llguidance.LLMatcher(self._lltok, grammar, log_level=0)
        if m.is_error():
            raise InvalidRequestError(f"the output grammar cannot be used with this model: {m.get_error()}")
        return m


_executor: Any = None


def apply_masks(logits: torch.Tensor, matchers: list[Any]) -> None:
    """Set to -inf, in place, the logits of every token the row's matcher forbids (rows with None: free)."""
    rows = [i for i, m in enumerate(matchers) if m is not None]
    if not rows:
        return
    V = logits.shape[-1]
    words = (V + 31) // 32
    bits = np.full((len(rows), words), -1, dtype=np.int32)
    if len(rows) == 1:
        matchers[rows[0]].unsafe_compute_mask_ptr(bits.ctypes.data, words * 4)
    else:
        global _executor
        if _executor is None:
            import llguidance

            _executor = llguidance.LLExecutor()
        _executor.unsafe_compute_mask_ptr(
            [(matchers[i], j) for j, i in enumerate(rows)], bits.ctypes.data, words * 4, len(rows)
        )
    allowed = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, :V].astype(bool)
    idx = torch.tensor(rows, device=logits.device)
    forbid = torch.from_numpy(~allowed).to(logits.device)
    logits[idx] = logits[idx].masked_fill(forbid, float("-inf"))


def consume(matcher: Any, token: int) -> bool:
    """Advance a matcher by the sampled token; True when the grammar is complete (nothing may follow)."""
    matcher.consume_token(token)
    return bool(matcher.is_stopped() or matcher.is_error())
