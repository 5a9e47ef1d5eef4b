"""AppTest: a run .zip uploaded on the Compare page is imported and compared; a finished run offers downloads."""

from __future__ import annotations

from apphelpers import as_read, new_app

from medcls.config import DataConfig, TrainConfig
from medcls.jobs.execute import execute_run
from medcls.runs.portable import export_run_zip
from medcls.runs.store import RunStore


def test_a_run_zip_is_imported_from_the_compare_page_and_offers_downloads(app_env, tiny_dataset, tmp_path):
    elsewhere = RunStore(tmp_path / "elsewhere")
    cfg = TrainConfig(data=DataConfig(source=str(tiny_dataset))).with_options(image_size=32, epochs=1, batch_size=8,
                                                                              precision="fp32")
    run_id = elsewhere.create(cfg)
    assert execute_run(elsewhere, run_id).state == "finished"
    data = export_run_zip(elsewhere, run_id)

    at = new_app().run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception and any("No tested runs yet" in i.value for i in at.info)
    at.file_uploader(key="run_import").upload("bad.zip", b"not a zip", "application/zip").run()
    assert any("Import refused: bad.zip: not a valid .zip file." == as_read(e.value) for e in at.error)
    at.file_uploader(key="run_import").upload(f"{run_id}.zip", data, "application/zip").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    store = RunStore(app_env / "runs")
    assert store.list_ids() == [run_id]
    at.run()
    assert at.multiselect(key="compare_runs").value == [run_id]  # listed and compared like a run of its own
    assert any("Imported as" in s.value for s in at.success)
    assert store.list_ids() == [run_id]  # a rerun does not import the same upload twice
    labels = [b.proto.label for b in at.get("download_button")]
    assert "⬇ Model for Python (TorchScript + predict.py)" in labels and "⬇ This run (.zip for another medcls)" in labels
