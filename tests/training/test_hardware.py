"""CPU settings: threads and the allocator setting that training processes use."""

from __future__ import annotations

import ctypes
import platform
import sys

import pytest
import torch

from medcls.models import create_model
from medcls.training.hardware import configure_threads, keep_freed_memory


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


def test_auto_precision_measures_once_and_remembers_the_answer(monkeypatch):
    import medcls.training.hardware as hardware

    model = create_model("small_cnn", num_classes=2, image_size=32, in_channels=1)
    sample = lambda: (torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 0, 1]))  # noqa: E731
    assert hardware.resolve_precision("fp32", model, sample, "k") == "fp32"
    monkeypatch.setattr(hardware, "bf16_supported", lambda: False)
    assert hardware.resolve_precision("auto", model, sample, "k") == "fp32"
    monkeypatch.setattr(hardware, "bf16_supported", lambda: True)
    timings = {False: 1.0, True: 0.5}  # bf16 twice as fast
    monkeypatch.setattr(hardware, "time_train_steps", lambda m, x, y, bf16, **kw: timings[bf16])
    assert hardware.resolve_precision("auto", model, sample, "k") == "bf16"

    def must_not_measure(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(hardware, "time_train_steps", must_not_measure)
    assert hardware.resolve_precision("auto", model, sample, "k") == "bf16"  # remembered on disk
    timings[True] = 0.95  # not clearly faster: stay with fp32
    monkeypatch.setattr(hardware, "time_train_steps", lambda m, x, y, bf16, **kw: timings[bf16])
    assert hardware.resolve_precision("auto", model, sample, "other key") == "fp32"



def test_timing_train_steps_leaves_the_weights_unchanged():
    from medcls.training.hardware import time_train_steps

    model = create_model("small_cnn", num_classes=2, image_size=32, in_channels=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = time_train_steps(model, torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 0, 1]), bf16=False, steps=2)
    assert seconds > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
