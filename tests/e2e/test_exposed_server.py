"""A server others can reach does not hand out the server's files (issue 15, item 14), tried in a browser.

The app is started with ``--server.address 0.0.0.0`` and no ``MEDCLS_DATA_ROOTS``, as the probe did; a
visitor types a server folder into the sidebar and gets a refusal instead of its images and paths.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
expect = sync_api.expect

from test_dashboard import wait_idle  # noqa: E402  (after the skip: it imports Playwright)

pytestmark = pytest.mark.e2e


def _listening_on_every_interface(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port and set(address) == {"0"}:
                return True
    return False


def test_a_server_on_every_interface_refuses_server_folders(browser, exposed_server, screenshot_of):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
    from reliability_corpus import assert_fault_message

    assert _listening_on_every_interface(int(exposed_server.url.rsplit(":", 1)[1]))
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=exposed_server.url)
    try:
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        tab.goto("/")
        wait_idle(tab, 90_000)
        tab.locator("[data-testid='stSidebar']").get_by_text("A folder on this server").click()
        wait_idle(tab)
        box = tab.locator(".st-key-data_folder input")
        box.fill("/usr/share")
        box.press("Enter")
        error = tab.locator("[data-testid='stAlertContentError']").filter(has_text="uploads only")
        expect(error).to_be_visible(timeout=60_000)
        assert_fault_message(error.inner_text(), "exposed-server-reads-only-uploads")
        assert tab.locator("[data-testid='stException']").count() == 0
        assert "/usr/share/" not in tab.locator("[data-testid='stMain']").inner_text()  # nothing was listed
        screenshot_of(tab, "exposed-server-refuses-server-folders")
    finally:
        context.close()
