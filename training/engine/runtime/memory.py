"""Keep freed memory in the process so the training loop's big tensors do not page-fault every step.

glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh ``mmap`` pages and returns
freed heap tops to the OS; every step then re-faults the logits, the embedding gradient and the retained
activations page by page, which on a 2-core machine costs about a tenth of a DPO step.  With mmap off and
trimming off, a step reuses the previous step's memory.  The price: the process keeps its peak heap until
it exits, which a training process (a CLI run or a worker's job) does anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache

import torch

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


@cache
def retain_freed_memory() -> bool:
    """Ask glibc to serve every allocation from the heap and never trim it; False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def own_trainable_weights(model: torch.nn.Module) -> None:
    """Copy every trainable CPU parameter into the process's own memory.

    Weights loaded from safetensors are views of a private map of the file, so the first optimizer step
    copies them a 4 KiB page at a time (a copy-on-write fault each, about 2 s for 135M fp32 weights here);
    one copy up front costs a fraction of that.  Tied parameters stay tied (each is copied once).
    """
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad and param.device.type == "cpu":
                param.data = param.data.clone()
