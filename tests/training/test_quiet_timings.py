"""Quiet timings: a probe that had every core is remembered on disk, and recalled with decoding as it stands now."""

from __future__ import annotations

import pytest

from medcls.config import TrainConfig
from medcls.data import load_dataset
from medcls.data.cache import decode_dataset
from medcls.training import quiet_timings
from medcls.training.estimate import Costs, probe_config
from medcls.training.hardware import usable_cores
from medcls.training.quiet_timings import QUIET_FILE, recall_quiet, remember_quiet


def costs(**changes) -> Costs:
    base = dict(threads=usable_cores(), precision="fp32", step_s=0.2, eval_image_s=0.004, first_epoch_extra_s=0.5,
                feature_image_s=0.0, embed_image_s=0.002, start_s=4.0, data_s=0.1, decode_image_s=0.01,
                bootstrap_s=0.05, channels=1, others_cores=0.0)
    return Costs(**{**base, **changes})


@pytest.fixture
def run(isolated_env, split_dataset):
    """A config on a small dataset, its listing, and an empty cache folder (isolated_env's)."""
    cfg = TrainConfig().with_options(image_size=32, source=str(split_dataset))
    return cfg, load_dataset(cfg.data)


def test_a_measurement_with_every_core_is_recalled_as_it_was_measured(run):
    cfg, spec = run
    assert recall_quiet(cfg, spec) is None  # nothing measured yet
    assert remember_quiet(cfg, costs(), now=1000.0)
    quiet = recall_quiet(cfg, spec)
    assert quiet.costs == costs() and quiet.measured_at == 1000.0
    # What a step costs does not depend on the learning rate or the epochs: the same measurement serves.
    assert recall_quiet(cfg.with_options(lr=0.01, epochs=7), spec).costs == costs()
    assert recall_quiet(probe_config(cfg), spec).costs == costs()  # the app remembers the probe's own config
    assert recall_quiet(cfg.with_options(image_size=64), spec) is None  # another size: never measured


def test_a_measurement_beside_another_load_is_not_kept(run, monkeypatch):
    cfg, spec = run
    monkeypatch.setattr(quiet_timings, "usable_cores", lambda: 2)
    assert not remember_quiet(cfg, costs(threads=1))
    assert recall_quiet(cfg, spec) is None
    # Every thread, but another process (the app's standby worker starting) kept a core busy while it timed.
    assert not remember_quiet(cfg, costs(threads=2, others_cores=0.9))
    assert recall_quiet(cfg, spec) is None
    assert remember_quiet(cfg, costs(threads=2, others_cores=0.1))  # a browser's redraw now and then
    assert recall_quiet(cfg, spec) is not None


def test_another_cpu_does_not_recall_this_ones_timings(run, monkeypatch):
    cfg, spec = run
    remember_quiet(cfg, costs())
    monkeypatch.setattr(quiet_timings, "cpu_name", lambda: "another CPU")
    assert recall_quiet(cfg, spec) is None


def test_decoding_is_counted_as_the_cache_stands_when_recalled(run):
    cfg, spec = run
    remember_quiet(cfg, costs(decode_image_s=0.01))  # measured before the images were decoded
    assert recall_quiet(cfg, spec).costs.decode_image_s == 0.01
    decode_dataset(spec, 32, cfg.data.color)          # a run decodes them (and leaves them in the disk cache)
    assert recall_quiet(cfg, spec).costs.decode_image_s == 0.0
    # Measured while they were cached: whether they still are decides, and when not, decoding was never timed.
    other = cfg.with_options(image_size=40)
    remember_quiet(other, costs(decode_image_s=0.0))
    assert recall_quiet(other, spec) is None


def test_the_newest_measurements_are_kept_and_a_broken_file_starts_again(run, monkeypatch):
    cfg, spec = run
    monkeypatch.setattr(quiet_timings, "MAX_REMEMBERED", 2)
    for size, when in ((32, 3.0), (40, 1.0), (48, 2.0)):
        remember_quiet(cfg.with_options(image_size=size), costs(decode_image_s=0.01), now=when)
    assert recall_quiet(cfg.with_options(image_size=40), spec) is None  # the oldest went
    assert recall_quiet(cfg, spec).measured_at == 3.0
    path = quiet_timings.cache_dir() / QUIET_FILE
    path.write_text("[1, 2")
    assert recall_quiet(cfg, spec) is None
    assert remember_quiet(cfg, costs()) and recall_quiet(cfg, spec).costs == costs()
