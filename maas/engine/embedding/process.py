"""An encoder's forward passes in a child process (`maas serve --embed-process`).

Isolation: a crash in the encoder's process cannot take the server down, and its forward passes
never wait on the server's GIL (in one process, every torch op gives the GIL up and must win it
back from the event loop). It is the CPU, not the GIL, that the two share, so it
is not the default (docs/benchmarks.md). The server keeps the tokenizer
(EncoderInputs) and sends batches of token ids down a pipe; vectors come back.
One caller at a time (the batcher's worker thread). If the child dies, `embed` raises
EngineDeadError and `alive` turns False.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
from pathlib import Path
from typing import Any

import torch

from maas.engine.child import load_in_child, resident_bytes, spawn_and_wait
from maas.engine.embedding.embedder import EncoderInputs, check_weights
from maas.errors import EngineDeadError

log = logging.getLogger("maas.engine")


def _worker_main(path: str, threads: int, weights: str, device: str, conn: Any, log_level: int) -> None:
    """Child process: load the encoder, then answer batches until the pipe closes."""
    from maas.engine.embedding.embedder import Embedder

    e = load_in_child(lambda: Embedder(path, threads, weights, device), conn, log_level)
    if e is None:
        return
    conn.send(("ready", e.memory_bytes()))
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        try:
            conn.send(("ok", e.embed(batch).numpy()))
        except Exception as err:  # this batch fails; the worker goes on
            logging.getLogger("maas.engine").exception("embedding batch failed")
            conn.send(("error", f"{type(err).__name__}: {err}"))


class EmbedderProcess(EncoderInputs):
    """Embedder's interface (tokenize, fit, embed) with the model in a child process."""

    def __init__(
        self,
        path: str | Path,
        threads: int = 0,
        weights: str = "auto",
        device: str = "cpu",
        load_timeout: float = 300.0,
    ):
        check_weights(weights)
        super().__init__(path)  # metadata only: a bad directory fails here, before a process starts
        self._conn, child = mp.get_context("spawn").Pipe(duplex=True)
        self._proc, weights_bytes = spawn_and_wait(
            _worker_main,
            (str(path), threads, weights, device, child, logging.getLogger().getEffectiveLevel()),
            "maas-embedder",
            self._conn,
            [child],
            load_timeout,
            "embedding",
        )
        self._weights_bytes = int(weights_bytes)

    @property
    def alive(self) -> bool:
        """True while the child process runs."""
        return self._proc.is_alive()

    def _recv(self) -> tuple[str, Any]:
        try:
            msg: tuple[str, Any] = self._conn.recv()
        except (EOFError, OSError):
            raise EngineDeadError(f"the embedding process exited (code {self._proc.exitcode})") from None
        return msg

    def embed(self, batch: list[list[int]]) -> torch.Tensor:
        """(B, dim) float32 sentence vectors, in the order given (blocks until the child answers)."""
        try:
            self._conn.send(batch)
        except (OSError, ValueError):
            raise EngineDeadError(
                f"the embedding process is not running (code {self._proc.exitcode})"
            ) from None
        kind, value = self._recv()
        if kind != "ok":
            raise RuntimeError(value)
        return torch.from_numpy(value)

    def memory_bytes(self) -> int:
        """Resident memory of the child process (its weights if it has exited)."""
        rss = resident_bytes(self._proc)
        return self._weights_bytes if rss is None else rss

    def close(self) -> None:
        """Stop the child process."""
        if self._proc.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(None)
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
        self._conn.close()
