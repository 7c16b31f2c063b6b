"""Tensors over anonymous memory mappings: zero pages committed 4 KiB at a time as they are written (or, asked
for, advised into 2 MiB huge pages), which madvise can later give back.

    buf, t = anonymous((slots, n_kv, max_len, head_dim), torch.float16)   # the KV cache's slots
    buf, t = anonymous((nbytes,), torch.uint8, huge=True)                 # the block weights' arena
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import mmap
import warnings

import torch


def anonymous(
    shape: tuple[int, ...], dtype: torch.dtype, huge: bool = False
) -> tuple[mmap.mmap, torch.Tensor]:
    """A private anonymous mapping and a `shape` tensor of `dtype` over it (zeros); `huge` advises it into
    huge pages. The tensor keeps the mapping alive."""
    buf = mmap.mmap(-1, max(1, math.prod(shape) * dtype.itemsize), flags=mmap.MAP_PRIVATE)
    if huge and hasattr(mmap, "MADV_HUGEPAGE"):
        buf.madvise(mmap.MADV_HUGEPAGE)
    with warnings.catch_warnings():  # torch warns that frombuffer shares the writable buffer: it should
        warnings.simplefilter("ignore", UserWarning)
        return buf, torch.frombuffer(buf, dtype=dtype).view(shape)


def trim_heap() -> None:
    """Give the C heap's free memory back to the system (glibc's malloc_trim; nothing elsewhere). Loading a model
    frees large temporaries (a file's tensors once repacked) that the heap would otherwise keep resident."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
