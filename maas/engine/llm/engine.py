"""The synchronous engine: `step()` = schedule, run, update, then the output stage (engine/llm/output.py).

from maas.engine.llm.engine import Engine, EngineConfig
eng = Engine.from_path("model.gguf", EngineConfig())
print(eng.generate(["Hello"], SamplingParams(temperature=0, max_tokens=8)))
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from maas.engine.device import pick_device
from maas.engine.llm.guided import GrammarCompiler, consume
from maas.engine.llm.limits import check_prompt, check_token_ids
from maas.engine.llm.loader import LoadedLM, load_lm, pick_kv_dtype
from maas.engine.llm.model_runner import ModelRunner
from maas.engine.llm.output import OutputProcessor
from maas.engine.llm.request import RequestOutput, Sequence, Status, TokenLogprob
from maas.engine.llm.sampling_params import SamplingParams
from maas.engine.llm.scheduler import Scheduler
from maas.errors import InvalidRequestError, UnsupportedModelError
from maas.kernels import blocks
from maas.kernels.linear import pack_linears
from maas.kernels.mapped import trim_heap

log = logging.getLogger("maas.engine")


@dataclass(frozen=True)
class EngineConfig:
    """Capacity limits fixed at start-up."""

    max_num_seqs: int = 32
    max_model_len: int = 2048
    kv_cache_tokens: int = 0  # 0: max_num_seqs * max_model_len, at most 32768
    max_num_batched_tokens: int = 256
    block_size: int = 16
    device: str = "auto"
    dtype: str = "auto"
    weights: str = "auto"  # CPU: file | float32 | float16 | q8 | int8; auto: file (GGUF) or q8
    threads: int = 0  # CPU threads for torch in the engine's process; 0 = torch's default
    prefix_caching: bool = True  # reuse the KV of prompt prefixes seen before
    fused_decode: bool = True  # decode rows through the native decoder where the model allows it
    prefix_cache_tokens: int = 4096  # what the prefix cache may hold (memory of its own, committed as used)
    kv_cache_dtype: str = "auto"  # auto: float16 where the native decoder runs, else the model's dtype
    activations: str = "auto"  # GGUF block layers: int16 (auto where the CPU can) or float32


class Engine:
    """Continuous-batching LLM engine. Not thread-safe: the async front drives it from one thread."""

    def __init__(self, lm: LoadedLM, config: EngineConfig):
        self.lm = lm
        self.tokenizer = lm.tokenizer
        ctx = lm.config.max_position_embeddings
        max_len = min(config.max_model_len, ctx) if config.max_model_len else ctx
        cache_tokens = config.kv_cache_tokens or min(config.max_num_seqs * max_len, 32768)
        cache_tokens = max(cache_tokens, max_len)
        num_blocks = -(-cache_tokens // config.block_size)
        self.config = config
        self.max_model_len = max_len
        caching = config.prefix_caching and config.prefix_cache_tokens >= config.block_size
        pool = min(config.prefix_cache_tokens // config.block_size, num_blocks) if caching else 0
        self.scheduler = Scheduler(
            config.max_num_seqs, config.max_num_batched_tokens, max_len, num_blocks, config.block_size, pool
        )
        self.runner = ModelRunner(
            lm.model, config.max_num_seqs, max_len, lm.device, lm.dtype, pool, config.block_size,
            config.fused_decode, pick_kv_dtype(config.kv_cache_dtype),
        )  # fmt: skip
        self.eos_ids = frozenset(self.tokenizer.eos_token_ids)
        self.grammars = GrammarCompiler(self.tokenizer, lm.config.vocab_size)
        self._seqs: dict[str, Sequence] = {}
        self.output = OutputProcessor(self.tokenizer, self.eos_ids, self.scheduler.finish)
        log.info(
            "engine: max_num_seqs=%d max_model_len=%d kv budget=%d tokens, %s cache %.0f MiB reserved "
            "(committed as used) chunk=%d prefix cache %s",
            config.max_num_seqs,
            max_len,
            num_blocks * config.block_size,
            str(self.runner.cache.k[0].dtype).removeprefix("torch."),
            self.runner.cache.num_bytes / 2**20,
            config.max_num_batched_tokens,
            f"{pool * config.block_size} tokens" if caching else "off",
        )

    @classmethod
    def from_path(cls, path: str | Path, config: EngineConfig | None = None) -> Engine:
        """Load a model file and build an engine for it."""
        config = config or EngineConfig()
        if config.activations not in ("auto", "int16", "float32"):
            raise UnsupportedModelError(f"unknown activations {config.activations!r} (auto, int16, float32)")
        on_cpu = pick_device(config.device).type == "cpu"  # the native kernels are built only there
        if not on_cpu and config.weights != "auto":
            raise UnsupportedModelError(
                f"--weights {config.weights} applies on the CPU; on a GPU weights load in the model's dtype (--dtype)"
            )
        if config.activations == "int16" and (not on_cpu or blocks.integer_kernel() is None):
            raise UnsupportedModelError(
                "--activations int16 needs the CPU, the native integer kernel and AVX-512 VNNI"
            )
        if config.threads:
            torch.set_num_threads(config.threads)
        # GGUF block formats run as stored (exact values) where the native kernel builds
        keep = config.weights == "file" or (
            config.weights == "auto" and on_cpu and blocks.native() is not None
        )
        lm = load_lm(path, config.device, config.dtype, blocks=keep)
        lm.model.fuse_projections()
        stored = blocks.pack(lm.model, integer=config.activations != "float32")
        if stored:
            if lm.files.release is not None:
                lm.files.release()  # the weights were copied out of the file's pages
            log.info("%.0f MiB of weights kept in the file's block formats", stored / 2**20)
            trim_heap()  # the file's tensors, freed once repacked
        elif lm.device.type == "cpu" and lm.dtype == torch.float32:
            mode = config.weights
            if mode in ("auto", "file"):  # the native 8-bit kernel where it builds, else fbgemm's fp16
                from maas.kernels.q8_linear import native

                mode = "q8" if native() is not None else "float16"
            if mode != "float32":
                pack_linears(lm.model, mode)
                log.info("linear weights packed as %s for the CPU", mode)
        return cls(lm, config)

    # -- requests ------------------------------------------------------------------------------

    def check_prompt(self, prompt_len: int, max_tokens: int | None, param: str = "messages") -> int:
        """Validate the length budget; return the effective max_tokens."""
        return check_prompt(prompt_len, max_tokens, self.max_model_len, param)

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Queue a request (n must be 1 here; the async front fans out n > 1)."""
        if request_id in self._seqs:
            raise InvalidRequestError(f"duplicate request id {request_id!r}")
        check_token_ids(prompt_token_ids, self.lm.config.vocab_size)
        max_tokens = self.check_prompt(len(prompt_token_ids), params.max_tokens, "prompt")
        seq = Sequence(request_id, list(prompt_token_ids), params, max_tokens)
        if params.guide is not None:
            seq.matcher = self.grammars.matcher(params.guide)
        self._seqs[request_id] = seq
        self.output.add(seq)
        self.scheduler.add(seq)

    def abort_request(self, request_id: str) -> None:
        """Stop a request now and free its cache."""
        seq = self._seqs.pop(request_id, None)
        self.output.drop(request_id)
        if seq is not None:
            self.scheduler.finish(seq, "abort")
            self.runner.release(request_id)
            self._settle()

    def request_ids(self) -> list[str]:
        """The requests waiting or running."""
        return list(self._seqs)

    def has_unfinished(self) -> bool:
        """True while requests wait or run."""
        return self.scheduler.has_unfinished()

    def stats(self) -> dict[str, float]:
        """Running / waiting counts, KV-cache usage and prefix-cache counters (what /health reports)."""
        return {
            "running": self.num_running,
            "waiting": self.num_waiting,
            **self.scheduler.cache_stats(),
        }

    @property
    def num_running(self) -> int:
        """Sequences in the running batch."""
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        """Sequences queued."""
        return len(self.scheduler.waiting)

    # -- the loop -------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """One round: schedule -> run (forward and sample) -> update (tokens, stops, grammars) -> output
        (text deltas); outputs for requests that produced something."""
        batch = self.scheduler.schedule()
        if not batch:
            return []
        stepped: list[tuple[Sequence, TokenLogprob | None, bool]] = [
            (seq, None, False) for seq in batch.finished
        ]
        if batch.items:
            out = self.runner.run(batch)
            touched = self.scheduler.update(batch, out.tokens, self.eos_ids)
            lp_by_seq = {
                id(it.seq): lp for it, lp in zip(batch.items, out.logprobs, strict=True) if lp is not None
            }
            now = time.monotonic()
            for seq in touched:
                # a guided sequence whose grammar is complete stops here, not one token later
                if (
                    seq.matcher is not None
                    and consume(seq.matcher, seq.output_token_ids[-1])
                    and not seq.finished
                ):
                    self.scheduler.finish(seq, "stop")
                if seq.first_token_time is None:
                    seq.first_token_time = now
                stepped.append((seq, lp_by_seq.get(id(seq)), True))
        results = []
        for seq, lp, new_token in stepped:
            r = self.output.emit(seq, lp, new_token)
            if r is not None:
                results.append(r)
            if seq.finished:
                self._seqs.pop(seq.seq_id, None)
                self.runner.release(seq.seq_id)
        self._settle()
        return results

    def _settle(self) -> None:
        """Sequences that ended: their blocks into the prefix cache and their slots' memory back now, not
        at the next step (there may be none for a while)."""
        self.runner.settle(*self.scheduler.take_cache_work())

    def generate(self, prompts: list[str | list[int]], params: SamplingParams) -> list[str]:
        """Run prompts to completion (text or token ids); return the texts in order."""
        ids = [f"gen-{time.monotonic_ns()}-{i}" for i in range(len(prompts))]
        for rid, p in zip(ids, prompts, strict=True):
            toks = self.tokenizer.encode(p) if isinstance(p, str) else p
            self.add_request(rid, toks, params)
        texts = dict.fromkeys(ids, "")
        while self.has_unfinished():
            for o in self.step():
                texts[o.request_id] += o.text
        return [texts[i] for i in ids]


__all__ = ["Engine", "EngineConfig", "Status"]
