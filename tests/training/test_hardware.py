"""CPU settings: threads and the allocator setting that training processes use."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
from pathlib import Path

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
    monkeypatch.setattr(hardware, "cores_used_by_others", lambda before, after: 0.0)  # a quiet machine
    assert hardware.resolve_precision("fp32", model, sample, "k") == "fp32"
    monkeypatch.setattr(hardware, "bf16_supported", lambda: False)
    assert hardware.resolve_precision("auto", model, sample, "k") == "fp32"
    monkeypatch.setattr(hardware, "bf16_supported", lambda: True)
    timings = {False: 1.0, True: 0.5}  # bf16 twice as fast
    monkeypatch.setattr(hardware, "precision_step_seconds", lambda m, x, y: (timings[False], timings[True]))
    assert hardware.resolve_precision("auto", model, sample, "k") == "bf16"

    def must_not_measure(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(hardware, "precision_step_seconds", must_not_measure)
    assert hardware.resolve_precision("auto", model, sample, "k") == "bf16"  # remembered on disk
    threads = torch.get_num_threads()
    try:  # a worker that starts with another thread count takes the answer measured with this one
        torch.set_num_threads(1 if threads > 1 else 2)
        assert hardware.resolve_precision("auto", model, sample, "k") == "bf16"
    finally:
        torch.set_num_threads(threads)
    timings[True] = 0.95  # not clearly faster: stay with fp32
    monkeypatch.setattr(hardware, "precision_step_seconds", lambda m, x, y: (timings[False], timings[True]))
    assert hardware.resolve_precision("auto", model, sample, "other key") == "fp32"


def test_auto_precision_measured_beside_other_work_is_used_once_and_not_remembered(monkeypatch):
    import medcls.training.hardware as hardware

    model = create_model("small_cnn", num_classes=2, image_size=32, in_channels=1)
    sample = lambda: (torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 0, 1]))  # noqa: E731
    monkeypatch.setattr(hardware, "bf16_supported", lambda: True)
    measured = []
    timings = {False: 0.5, True: 1.0}  # beside two busy processes: noise that makes bf16 look slower

    def timed(m, x, y):
        measured.append(dict(timings))
        return timings[False], timings[True]

    monkeypatch.setattr(hardware, "precision_step_seconds", timed)
    monkeypatch.setattr(hardware, "cores_used_by_others", lambda before, after: 1.8)
    assert hardware.resolve_precision("auto", model, sample, "k") == "fp32"  # this run takes what it measured
    timings.update({False: 1.0, True: 0.5})
    monkeypatch.setattr(hardware, "cores_used_by_others", lambda before, after: 0.1)
    assert hardware.resolve_precision("auto", model, sample, "k") == "bf16"  # measured again, on a quiet machine
    assert len(measured) == 2
    assert hardware.resolve_precision("auto", model, sample, "k") == "bf16" and len(measured) == 2  # remembered



def test_timing_train_steps_leaves_the_weights_and_the_random_stream_unchanged():
    from medcls.training.hardware import train_step_seconds

    model = create_model("small_cnn", num_classes=2, image_size=32, in_channels=1, dropout=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 1, 32, 32)
    rng = torch.get_rng_state()
    seconds = train_step_seconds(model, x, torch.tensor([0, 1, 0, 1]), bf16=False, steps=2)
    assert len(seconds) == 2 and min(seconds) > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(torch.get_rng_state(), rng)  # dropout drew from a forked stream


def test_precision_probe_times_the_formats_in_turns_and_keeps_each_ones_fastest_step(monkeypatch):
    import medcls.training.hardware as hardware

    asked = []
    # Steps slowed by noise (0.9) do not count: each format's fastest step is its own speed.
    step_seconds = [7.0, 7.0, 0.9, 0.4, 0.9, 0.2, 0.5, 0.21]  # the first of each format is untimed

    def fake(model, x, y, formats, optimizer=None):
        asked.append(list(formats))
        return step_seconds[:len(formats)]

    monkeypatch.setattr(hardware, "_step_seconds", fake)
    model = create_model("small_cnn", num_classes=2, image_size=32, in_channels=1)
    assert hardware.precision_step_seconds(model, torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 0, 1])) == (0.5, 0.2)
    assert asked == [[False, True] * 4]  # one untimed step of each, then three rounds in turns


def test_timing_steps_in_turns_leaves_the_weights_and_the_random_stream_unchanged():
    from medcls.training.hardware import precision_step_seconds

    model = create_model("small_cnn", num_classes=2, image_size=32, in_channels=1, dropout=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 1, 32, 32)
    rng = torch.get_rng_state()
    fp32, bf16 = precision_step_seconds(model, x, torch.tensor([0, 1, 0, 1]), rounds=2)
    assert fp32 > 0 and bf16 > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


# --- threads follow the free cores --------------------------------------------------------------------------

def test_threads_follow_the_cores_other_processes_leave_free():
    from medcls.training.hardware import choose_threads

    assert choose_threads(2, others=0.0) == 2
    assert choose_threads(2, others=0.2) == 2      # a little background work: both cores
    assert choose_threads(2, others=0.45) == 2     # a browser's bursts on the same machine: still both cores
    assert choose_threads(2, others=0.7) == 1      # most of a core taken: two threads would wait for it
    assert choose_threads(2, others=0.95) == 1     # one core busy (a long experiment): one thread
    assert choose_threads(2, others=1.9) == 1      # never fewer than one
    assert choose_threads(8, others=3.0) == 5


def test_other_processes_load_is_total_busy_time_minus_our_own():
    from medcls.training.hardware import CpuSample, cores_used_by_others

    before = CpuSample(wall=100.0, busy_total=50.0, own=10.0)
    after = CpuSample(wall=110.0, busy_total=65.0, own=15.0)  # 15 core-s busy in 10 s, 5 of them ours
    assert cores_used_by_others(before, after) == pytest.approx(1.0)
    unknown = CpuSample(wall=110.0, busy_total=float("nan"), own=15.0)
    assert cores_used_by_others(before, unknown) is None  # no /proc/stat: the caller keeps its threads


def test_the_probe_reads_a_burst_as_no_load_and_waits_only_when_the_first_reading_was_busy(monkeypatch):
    from medcls.training import hardware
    from medcls.training.hardware import CpuSample, sustained_others

    monkeypatch.setattr(hardware, "usable_cores", lambda: 2)
    slept = []
    monkeypatch.setattr(hardware.time, "sleep", slept.append)
    since = CpuSample(wall=0.0, busy_total=0.0, own=0.0)

    def readings(*samples):
        it = iter(samples)
        monkeypatch.setattr(hardware, "cpu_sample", lambda: next(it))

    readings(CpuSample(2.0, 2.2, 2.0))  # quiet over the warm-up (0.1 core others): no second reading
    assert sustained_others(since) == pytest.approx(0.1) and not slept
    readings(CpuSample(2.0, 3.8, 2.0), CpuSample(2.0, 3.8, 2.0), CpuSample(3.0, 4.0, 2.2))  # a burst, then quiet
    assert sustained_others(since) == pytest.approx(0.0) and slept
    # A longer burst (headless Chromium opening a page): busy for a second window too, quiet in the third.
    readings(*[CpuSample(2.0, 3.8, 2.0)] * 2, CpuSample(3.0, 4.8, 2.2), CpuSample(3.0, 4.8, 2.2),
             CpuSample(4.0, 4.9, 2.4))
    assert sustained_others(since) == pytest.approx(0.0)
    slept.clear()
    # A run keeps a core through every window: one thread, after three windows at most.
    readings(*[CpuSample(2.0, 3.8, 2.0)] * 2, *[CpuSample(3.0 + i, 4.8 + i, 2.2 + 0.2 * i) for i in range(5)])
    assert sustained_others(since) == pytest.approx(0.8) and len(slept) == 3
    assert hardware.choose_threads(others=0.8) == 1 and hardware.choose_threads(others=0.0) == 2


def test_the_thread_budget_drops_a_thread_for_a_load_that_lasts_and_not_for_a_burst(monkeypatch):
    from medcls.training import callbacks
    from medcls.training.engine import BatchEvent
    from medcls.training.hardware import CpuSample

    # CpuSample(wall, busy core-seconds of the machine, of this process): others = busy - own over the wall time
    samples = iter([CpuSample(0.0, 0.0, 0.0),
                    CpuSample(0.5, 1.0, 0.5),      # half a second: too soon to judge
                    CpuSample(1.0, 2.0, 1.0),      # the first second: others kept 1 core busy (no second before it)
                    CpuSample(2.0, 3.0, 2.0),      # others idle: both threads again at once
                    CpuSample(3.0, 5.0, 3.0),      # others busy for one second: a burst (a browser redrawing)
                    CpuSample(4.0, 7.0, 4.0),      # ... and for a second second: a load, one thread
                    CpuSample(5.0, 8.0, 5.0)])     # others idle: both threads
    budget = callbacks.ThreadBudget(cores=2, sample=lambda: next(samples))
    set_to: list[int] = []
    monkeypatch.setattr(callbacks.torch, "get_num_threads", lambda: set_to[-1] if set_to else 2)
    monkeypatch.setattr(callbacks.torch, "set_num_threads", set_to.append)
    budget.on_fit_start(None)
    expected = [[], [1], [1, 2], [1, 2], [1, 2, 1], [1, 2, 1, 2]]
    for batch in range(1, 7):
        budget.on_batch_end(None, BatchEvent("train", 4, 30, batch, 17, 0.5, 100.0))
        assert set_to == expected[batch - 1], batch
    assert budget.changes == [(4, 1), (4, 2), (4, 1), (4, 2)]


def test_training_processes_find_medcls_and_keep_openmps_default_waits(monkeypatch):
    from medcls.training.hardware import worker_environment

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    env = worker_environment()
    assert "OMP_WAIT_POLICY" not in env  # sleeping waits cost a quiet machine 15-25% (medcls.training.hardware)
    assert str(Path(__file__).resolve().parents[2]) in env["PYTHONPATH"].split(os.pathsep)


def test_a_training_worker_starts_without_importing_torchvision_or_scikit_learn():
    """Both take seconds to import; a worker that trains small_cnn needs neither before its first epoch."""
    code = ("import sys, medcls.jobs.worker, medcls.jobs.execute, medcls.training.pipeline; "
            "print(sorted(m for m in ('torchvision', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip() == "[]"


def test_usable_cores_follow_the_process_affinity():
    """Pinned with taskset (or a container's cpuset) to one core, training uses one thread, not the machine's count."""
    import os

    from medcls.training.hardware import choose_threads, usable_cores

    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("CPU affinity is a Linux feature")
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert usable_cores() == 1
        assert choose_threads(others=0.0) == 1
    finally:
        os.sched_setaffinity(0, before)
    assert usable_cores() == len(before)
