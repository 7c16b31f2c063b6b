"""Reading a prepared dataset's split as training windows, streamed from its shards: window i is the block
tokens[i*B : (i+1)*B] and its next-token targets tokens[i*B+1 : (i+1)*B+1] of the split's token stream.
Only the rows asked for are read (positioned reads, no mapping kept), so memory does not grow with the
corpus; any rank reads any rows, so a sampler decides who reads what. With MAAS_DATA_TRACE=DIR each process
appends the rows it reads to DIR/SPLIT-PID.txt (to check which rank read which blocks)."""

from __future__ import annotations

import bisect
import os
from typing import Any

import numpy as np
import torch


class TokenStream:
    """A split's shards as one stream of tokens (local files or any fsspec URL)."""

    def __init__(self, root: str, shards: list[dict[str, Any]], block: int, dtype: str):
        self.root = root.rstrip("/")
        self.paths = [f"{self.root}/{s['path']}" for s in shards]
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.starts = [0]
        for s in shards:
            self.starts.append(self.starts[-1] + int(s["blocks"]) * block)
        self._files: dict[int, Any] = {}
        self.local = "://" not in root or root.startswith("file://")

    def __len__(self) -> int:
        return self.starts[-1]

    def read(self, start: int, n: int) -> np.ndarray:
        """Tokens [start, start + n) of the stream."""
        out = np.empty(n, dtype=self.dtype)
        done = 0
        while done < n:
            s = bisect.bisect_right(self.starts, start + done) - 1
            at = start + done - self.starts[s]
            take = min(n - done, self.starts[s + 1] - self.starts[s] - at)
            out[done : done + take] = self._read(s, at, take)
            done += take
        return out

    def _read(self, shard: int, at: int, n: int) -> np.ndarray:
        item = self.dtype.itemsize
        if self.local:
            fd = self._files.get(shard)
            if fd is None:
                fd = self._files[shard] = os.open(self.paths[shard].removeprefix("file://"), os.O_RDONLY)
            data = os.pread(fd, n * item, at * item)
        else:
            import fsspec

            f = self._files.get(shard)
            if f is None:
                f = self._files[shard] = fsspec.open(self.paths[shard], "rb").open()
            f.seek(at * item)
            data = f.read(n * item)
        return np.frombuffer(data, dtype=self.dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}}


class Windows:
    """Rows of (N, block) token windows of split `name`, read on demand; `shift` 1 gives the targets."""

    def __init__(self, stream: TokenStream, block: int, shift: int, name: str = ""):
        self.stream, self.block, self.shift, self.name = stream, block, shift, name
        self.rows = max(0, (len(stream) - 1) // block)
        self.trace = os.environ.get("MAAS_DATA_TRACE") if shift == 0 else None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.block)

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, idx: Any) -> torch.Tensor:
        rows: list[int]
        if isinstance(idx, slice):
            rows = list(range(*idx.indices(self.rows)))
        elif isinstance(idx, int):
            return self[[idx]][0]
        else:
            rows = np.asarray(idx, dtype=np.int64).reshape(-1).tolist()
        if self.trace:
            with open(os.path.join(self.trace, f"{self.name}-{os.getpid()}.txt"), "a") as f:
                f.write(" ".join(map(str, rows)) + "\n")
        out = np.empty((len(rows), self.block), dtype=np.int64)
        for k, i in enumerate(rows):
            if not 0 <= i < self.rows:
                raise IndexError(f"row {i} of {self.rows}")
            out[k] = self.stream.read(i * self.block + self.shift, self.block)
        return torch.from_numpy(out)


def windows(root: str, name: str, split: dict[str, Any], block: int, dtype: str) -> tuple[Windows, Windows]:
    """(inputs, targets) of split `name` of a manifest."""
    stream = TokenStream(root, split["shards"], block, dtype)
    return Windows(stream, block, 0, name), Windows(stream, block, 1, name)
