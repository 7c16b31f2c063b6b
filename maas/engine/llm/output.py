"""The engine's output stage: sampled tokens -> what a caller sees (text deltas, stop strings, logprobs).

Runs after each step's update, outside schedule -> run -> update: it detokenizes incrementally, holds
back text that may be the start of a stop string, and cuts the text at a stop string (then the sequence
is finished through `finish`). Tool-call parsing reads this text in the server (maas.text.tool_calls).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from maas.engine.llm.request import RequestOutput, Sequence, TokenLogprob
from maas.text.detokenizer import IncrementalDetokenizer, held_back
from maas.text.tokenizer import Tokenizer


@dataclass
class _TextState:
    """Per-request text bookkeeping: detokenizer and stop-string hold-back."""

    detok: IncrementalDetokenizer
    text: str = ""
    emitted: int = 0
    pending_ids: list[int] = field(default_factory=list)
    pending_lps: list[TokenLogprob] = field(default_factory=list)


class OutputProcessor:
    """Text state for every live request; `emit` turns a sequence's new token into a RequestOutput."""

    def __init__(
        self, tokenizer: Tokenizer, eos_ids: frozenset[int], finish: Callable[[Sequence, str], None]
    ):
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.finish = finish  # ends a sequence that hit a stop string
        self._text: dict[str, _TextState] = {}

    def add(self, seq: Sequence) -> None:
        """Start following a request."""
        self._text[seq.seq_id] = _TextState(
            IncrementalDetokenizer(self.tokenizer, seq.params.skip_special_tokens)
        )

    def drop(self, seq_id: str) -> None:
        """Stop following a request (finished or aborted)."""
        self._text.pop(seq_id, None)

    def emit(self, seq: Sequence, lp: TokenLogprob | None, new_token: bool = True) -> RequestOutput | None:
        """The output for a sequence's latest token (None while text is held back); a finished
        sequence's last output, after which it is forgotten."""
        st = self._text.get(seq.seq_id)
        if st is None:
            return None
        p = seq.params
        if new_token:
            tok = seq.output_token_ids[-1]
            is_stop_token = seq.finish_reason == "stop" and (tok in p.stop_token_ids or tok in self.eos_ids)
            if not is_stop_token:
                st.text += st.detok.add(tok)
                st.pending_ids.append(tok)
                if lp is not None:
                    st.pending_lps.append(lp)
        if seq.finished:
            st.text += st.detok.flush()
        limit = len(st.text)
        if p.stop:
            hit = min(
                ((i, s) for s in p.stop if (i := st.text.find(s, max(0, st.emitted - len(s)))) >= 0),
                default=None,
            )
            if hit is not None:
                i, s = hit
                limit = i + len(s) if p.include_stop_str_in_output else i
                st.text = st.text[:limit]
                if not seq.finished:
                    self.finish(seq, "stop")
            elif not seq.finished:
                limit = len(st.text) - held_back(st.text, p.stop)
        delta = st.text[st.emitted : limit]
        if not delta and not seq.finished and not st.pending_lps:
            return None
        st.emitted = max(st.emitted, limit)
        out = RequestOutput(
            request_id=seq.seq_id,
            text=delta,
            token_ids=st.pending_ids,
            finished=seq.finished,
            finish_reason=seq.finish_reason,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_output_tokens=len(seq.output_token_ids),
            logprobs=st.pending_lps,
            queue_time=None if seq.first_scheduled is None else seq.first_scheduled - seq.arrival,
        )
        st.pending_ids, st.pending_lps = [], []
        if seq.finished:
            self.drop(seq.seq_id)
        return out
