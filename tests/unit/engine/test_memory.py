"""After retain_freed_memory, even a 64 MiB tensor comes from the heap (no per-step mmap page faults)."""

import ctypes
import ctypes.util
import sys

import pytest
import torch

from training.engine.runtime.memory import retain_freed_memory


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks")
        + ("uordblks", "fordblks", "keepcost")
    ]


def _mmapped_bytes() -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2().hblkhd


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_big_tensors_come_from_the_heap_and_stay_there():
    assert retain_freed_memory()
    before = _mmapped_bytes()
    big = torch.ones(16 * 2**20)  # 64 MiB: above glibc's largest mmap threshold
    assert _mmapped_bytes() == before
    del big
    again = torch.ones(16 * 2**20)
    assert _mmapped_bytes() == before and float(again.sum()) == 16 * 2**20
