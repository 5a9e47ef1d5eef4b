"""A classroom on one server, in a real browser: two browser contexts are two people.

Each gets its own random identity in a cookie (kept across reloads), runs record who started them, and one
person cannot stop, rename or delete another's run, and is told why; the owner can, with a confirmation
before deleting.
"""

from __future__ import annotations

import re

import pytest
from test_dashboard import changing, open_page, run_name, start_run, wait_idle

from medcls.runs.permissions import browser_identity
from medcls.runs.store import RunStore

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
expect = sync_api.expect

pytestmark = pytest.mark.e2e


def token(context, page) -> str:
    """The browser's identity cookie (the page's script writes it just after the first render)."""
    for _ in range(50):
        value = {c["name"]: c["value"] for c in context.cookies()}.get("medcls_id", "")
        if value:
            return value
        page.wait_for_timeout(200)
    return ""


def set_name(page, name: str) -> None:
    box = page.locator(".st-key-identity_name_input input")
    changing(page, lambda: (box.fill(name), box.press("Enter")))
    expect(page.locator("[data-testid='stSidebar']").get_by_text(f"You are {name}")).to_be_visible()


def test_two_browsers_are_two_people_and_only_the_owner_manages_a_run(front_door, person, screenshot_of):
    server = front_door
    store = RunStore(server.runs_dir)
    alice_context, alice = person("alice")
    bob_context, bob = person("bob")
    open_page(alice, "train")
    set_name(alice, "Alice")
    alice_token = token(alice_context, alice)
    assert len(alice_token) >= 32, "the browser did not keep an identity cookie"
    run_id = start_run(alice, server, epochs=300)
    meta = store.meta(run_id)
    assert meta.owner == browser_identity(alice_token).key and meta.owner_name == "Alice"
    assert alice_token not in meta.owner  # the run records a hash, never the browser's secret

    # Bob: another browser, another identity. He sees Alice's run (everyone sees every run) ...
    open_page(bob, "train")
    bob_token = token(bob_context, bob)
    assert len(bob_token) >= 32 and bob_token != alice_token
    expect(bob.get_by_role("combobox", name="Run to show")).to_have_value(run_name(server, run_id),
                                                                 timeout=30_000)
    why = "Only Alice, who started this run, or an instructor can stop, resume, rename or delete it."
    expect(bob.get_by_text(why)).to_be_visible()
    # ... but cannot stop, rename or delete it.
    expect(bob.locator(f".st-key-stop_{run_id}[data-stale='false'] button").first).to_be_disabled()
    expect(bob.locator(f".st-key-rename_popover_{run_id} button").first).to_be_disabled()
    expect(bob.locator(f".st-key-delete_{run_id} button").first).to_be_disabled()
    screenshot_of(bob, "classroom-someone-elses-run")

    # Alice reloads: the same person (cookie), her name back, her run still hers to stop.
    alice.reload()
    wait_idle(alice, 90_000)
    assert token(alice_context, alice) == alice_token
    expect(alice.locator(".st-key-identity_name_input input")).to_have_value("Alice", timeout=60_000)
    expect(alice.get_by_text("Started by Alice (you)")).to_be_visible(timeout=60_000)
    expect(alice.locator(f".st-key-stop_{run_id}[data-stale='false'] button").first).to_be_enabled(timeout=30_000)

    # A training run cannot be deleted: she stops it first.
    expect(alice.locator(f".st-key-delete_{run_id} button").first).to_be_disabled()
    alice.locator(f".st-key-stop_{run_id}[data-stale='false'] button").first.click()
    expect(alice.locator("[data-testid='stAlert']").filter(has_text="Cancelled").first).to_be_visible(
        timeout=60_000)
    # She renames it; the picker shows the new name at once (the id stays the key).
    wait_idle(alice)
    alice.locator(f".st-key-rename_popover_{run_id} button").first.click(no_wait_after=True)
    box = alice.get_by_label("New name")
    box.fill("Alice's first try")
    changing(alice, lambda: alice.get_by_role("button", name="Save name").click())
    expect(alice.get_by_role("combobox", name="Run to show")).to_have_value("Alice's first try", timeout=30_000)
    assert store.meta(run_id).name == "Alice's first try"

    delete = alice.locator(f".st-key-delete_{run_id} button").first
    expect(delete).to_be_enabled(timeout=30_000)
    delete.click()
    dialog = alice.get_by_role("dialog")
    expect(dialog.get_by_text("This cannot be undone", exact=False)).to_be_visible()
    screenshot_of(alice, "classroom-delete-confirmation")
    dialog.get_by_role("button", name="Delete it").click()
    expect(alice.get_by_text(re.compile("Deleted “Alice's first try”"))).to_be_visible(timeout=30_000)
    wait_idle(alice)
    assert run_id not in store.list_ids()
