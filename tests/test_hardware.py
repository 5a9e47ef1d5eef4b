"""CPU settings: threads and the allocator setting that training processes use."""

from __future__ import annotations

import ctypes
import platform
import sys

import pytest
import torch

from medcls.hardware import configure_threads, keep_freed_memory


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo() -> _MallInfo2:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2()


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="the setting is for glibc's malloc")
def test_activation_sized_buffers_stay_in_the_heap_after_they_are_freed():
    assert keep_freed_memory() is True
    size = 64 * 2**20  # above glibc's default threshold for a fresh kernel mapping per allocation
    before = _mallinfo()
    buffer = torch.empty(size // 4)
    during = _mallinfo()
    assert during.hblkhd - before.hblkhd < size, "a 64 MB buffer was mapped from the kernel, not the heap"
    del buffer
    after = _mallinfo()
    # Freed, the block stays with the process for the next step instead of being unmapped and re-faulted.
    assert after.arena >= during.arena and after.fordblks >= size
    assert keep_freed_memory() is True  # idempotent


def test_configure_threads_sets_and_reports_the_count():
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
