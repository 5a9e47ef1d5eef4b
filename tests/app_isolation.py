"""The AppTest set-up shared by tests/app and tests/reliability (a conftest cannot import another's)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import streamlit as st

from medcls.config import TrainConfig
from medcls.training.estimate import Costs, EstimateError, probe_config
from medcls.training.pipeline import build_model, caches_features
from medcls.training.probe import ANSWERED_ERRORS, decode_costs, error_answer

ROOT = Path(__file__).resolve().parents[1]


def stand_in_costs(cfg: TrainConfig, **_settings) -> Costs:
    """What the Train page's timing probe answers, without starting its process.

    Each probe process took 12-20 s in a page test (a third of the page tests' time), and every test's own
    dataset was another probe. The probe runs for real in tests/training/test_estimate.py and behind every
    browser test; a page test only needs an answer of the right shape for its data, so the dataset-dependent
    costs and the channels are measured (in this process, as the probe measures them) and the step costs are
    plausible constants that grow with the image's pixels and the batch."""
    probe = probe_config(cfg)
    try:
        _, data_s, decode_image_s, channels = decode_costs(probe)
        frozen = caches_features(probe, build_model(probe, 2, channels, weights="random"))
    except ANSWERED_ERRORS as exc:  # as measure_costs raises the probe's answer
        raise EstimateError(error_answer(exc)) from None
    pixels = channels * (cfg.image_size / 128) ** 2  # relative to one gray 128 px image
    return Costs(threads=1, precision="fp32", step_s=0.05 * pixels * cfg.batch_size / 32,
                 eval_image_s=0.0005 * pixels, first_epoch_extra_s=0.5, feature_image_s=0.01 * pixels if frozen else 0.0,
                 embed_image_s=0.0005 * pixels, start_s=3.0, data_s=data_s, decode_image_s=decode_image_s,
                 bootstrap_s=0.2, channels=channels, others_cores=0.0)


def isolated_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> Iterator[Path]:
    """Isolated folders for the app; the cached job manager is shut down and cleared afterwards."""
    monkeypatch.setenv("MEDCLS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MEDCLS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEDCLS_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("MEDCLS_WORKER_THREADS", "1")
    monkeypatch.setenv("MEDCLS_DEBUG", "1")  # a page error is raised (after its message), so at.exception shows it
    monkeypatch.chdir(ROOT)
    import app.model_summary

    monkeypatch.setattr(app.model_summary, "measure_costs", stand_in_costs)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path
    from app.manager import manager

    try:
        manager().shutdown(kill=True)
    finally:
        st.cache_resource.clear()
        st.cache_data.clear()


def settle_timings(at, rounds: int = 8) -> None:
    """Redraw ``at`` until no probe beside a training run is pending, as the page's polling fragment would (AppTest
    does not run fragment timers); each pending probe is waited for first."""
    import app.model_summary

    for _ in range(rounds):
        if not any("in the background" in c.value for c in at.caption):
            return
        assert app.model_summary._beside_runs().wait(60), "a probe beside the run did not answer"
        at.run()
    raise AssertionError(f"still timing in the background after {rounds} redraws")
