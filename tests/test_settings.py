"""Settings: who can reach the server decides which folders it reads and how messages name them."""

from __future__ import annotations

import pytest

from medcls import settings
from medcls.settings import PathNotAllowedError, check_allowed_path


@pytest.mark.parametrize("address,loopback", [("127.0.0.1", True), ("127.0.1.1", True), ("::1", True),
                                              ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                              ("", False), (None, False), ("::", False), ("192.168.1.5", False),
                                              ("example.org", False)])
def test_only_loopback_addresses_count_as_local(address, loopback):
    assert settings.is_loopback(address) is loopback


def test_a_server_listening_beyond_loopback_reads_only_uploads(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCLS_DATA_DIR", str(tmp_path / "data"))
    outside = tmp_path / "usr-share"
    outside.mkdir()
    assert check_allowed_path(outside) == outside.resolve()  # a local server: any folder
    assert settings.mark_exposed("127.0.0.1") is False and settings.allowed_data_roots() == []
    assert settings.mark_exposed("0.0.0.0") is True
    assert settings.exposed()
    with pytest.raises(PathNotAllowedError, match="datasets come from uploads only"):
        check_allowed_path(outside)
    upload = tmp_path / "data" / "uploads" / "set-123"
    upload.mkdir(parents=True)
    assert check_allowed_path(upload) == upload.resolve()
    assert settings.mark_exposed("127.0.0.1") is True  # once exposed (e.g. set by the operator), it stays so


def test_the_operator_can_allow_server_folders_or_list_data_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCLS_EXPOSED", "1")
    data = tmp_path / "datasets"
    data.mkdir()
    with pytest.raises(PathNotAllowedError):
        check_allowed_path(data)
    monkeypatch.setenv("MEDCLS_DATA_ROOTS", str(data))
    assert check_allowed_path(data / "busi") == (data / "busi").resolve()
    monkeypatch.delenv("MEDCLS_DATA_ROOTS")
    monkeypatch.setenv("MEDCLS_ALLOW_SERVER_FOLDERS", "1")
    assert settings.allowed_data_roots() == [] and check_allowed_path(data) == data.resolve()


def test_messages_on_an_exposed_server_name_folders_by_their_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCLS_RUNS_DIR", str(tmp_path / "srv" / "runs"))
    monkeypatch.setenv("MEDCLS_DATA_DIR", str(tmp_path / "srv" / "data"))
    text = (f"Run 'x' does not exist in {tmp_path}/srv/runs. {tmp_path}/srv/data/uploads/set-1/benign/a.png: "
            "unreadable; also /usr/share/pixmaps/debian-logo.png")
    assert settings.redact_paths(text) == text  # a local server: full paths help the person at the machine
    monkeypatch.setenv("MEDCLS_EXPOSED", "1")
    shown = settings.redact_paths(text)
    assert str(tmp_path) not in shown and "/usr/share" not in shown
    assert "RUNS_DIR." in shown and "DATA_DIR/uploads/set-1/benign/a.png" in shown and "…/debian-logo.png" in shown
    assert settings.describe_folder(tmp_path / "srv" / "runs" / "r1") == "RUNS_DIR/r1"


def test_a_folder_that_is_a_loop_of_links_is_refused_with_a_message(tmp_path):
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(PathNotAllowedError, match="loop of symbolic links"):
        check_allowed_path(tmp_path / "loop")


def test_the_upload_quota_is_a_setting(monkeypatch):
    assert settings.upload_quota_mb() == 2048
    monkeypatch.setenv("MEDCLS_UPLOAD_QUOTA_MB", "500")
    assert settings.upload_quota_mb() == 500
    monkeypatch.setenv("MEDCLS_UPLOAD_QUOTA_MB", "lots")
    with pytest.raises(settings.SettingsError, match="MEDCLS_UPLOAD_QUOTA_MB"):
        settings.upload_quota_mb()


def test_the_standby_training_process_is_on_unless_turned_off(monkeypatch):
    monkeypatch.delenv("MEDCLS_STANDBY_WORKER", raising=False)
    assert settings.standby_worker() is True
    for off in ("0", "off", "False"):
        monkeypatch.setenv("MEDCLS_STANDBY_WORKER", off)
        assert settings.standby_worker() is False
    monkeypatch.setenv("MEDCLS_STANDBY_WORKER", "sometimes")
    with pytest.raises(settings.SettingsError, match="MEDCLS_STANDBY_WORKER='sometimes'.*1 or 0"):
        settings.standby_worker()
