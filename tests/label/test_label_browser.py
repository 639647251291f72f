"""The labeling app in a real browser: headless Chromium driven by Playwright.

Needs the `label` extra and Debian's chromium (/usr/bin/chromium, or $RLFT_CHROMIUM); without
them these tests skip, unless RLFT_REQUIRE_BROWSER=1 (set by .ci/run), when they fail.
RLFT_LABEL_SCREENSHOT=docs/label.png also saves the labeling page as the README shows it.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from rlft.label.store import Store
from tests.label.label_fixtures import BY_PROMPT, ITEMS, make_db

# Debian's chromium on a machine without network or display (see .ci/run): no sandbox as root,
# and no background connections that the closed network would refuse.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    return os.environ.get("RLFT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _need_browser() -> None:
    problem = None
    try:
        import flask  # noqa: F401
        import playwright.sync_api  # noqa: F401
    except ImportError as err:
        problem = f"{err.name} is not installed (pip install -e '.[label]')"
    else:
        if not os.path.exists(chromium()):
            problem = f"no Chromium at {chromium()} (as root: apt-get install -y chromium)"
    if problem is None:
        return
    if os.environ.get("RLFT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"RLFT_REQUIRE_BROWSER=1 but {problem}", pytrace=False)
    pytest.skip(f"browser test: {problem}; RLFT_REQUIRE_BROWSER=1 turns this skip into a failure")


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium(), args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def server(tmp_path):
    from werkzeug.serving import make_server

    from rlft.label.app import create_app

    tokens = make_db(tmp_path / "l.db", k=2)
    srv = make_server("127.0.0.1", 0, create_app(tmp_path / "l.db"), threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.port}", tokens, tmp_path / "l.db"
    srv.shutdown()
    thread.join()


def log_in(browser, base: str, name: str, token: str):
    page = browser.new_context(viewport={"width": 1100, "height": 760}).new_page()
    page.goto(base + "/label")                      # no session: sent to the login page
    assert page.url == base + "/login"
    page.fill("input[name=name]", name)
    page.fill("input[name=token]", token)
    with page.expect_navigation():
        page.click("button[type=submit]:has-text('Log in')")
    assert page.url == base + "/label"
    return page


def press(page, key: str) -> None:
    with page.expect_navigation():
        page.keyboard.press(key)


def shown(page) -> tuple[dict, str, str]:
    """(the item on the page, its left text, its right text)."""
    item, left = BY_PROMPT[page.inner_text("#prompt")], page.inner_text("#left")
    assert {left, page.inner_text("#right")} == {item["a"], item["b"]}
    return item, left, page.inner_text("#right")


def label(page, key: str, reason: str = "") -> tuple[dict, str]:
    """Judge the shown item with ``key``; returns (item, the label stored for it: a, b, tie, ...)."""
    item, left, _ = shown(page)
    if reason:
        page.keyboard.press("r")                    # focus the reason box; typed keys are text there
        page.keyboard.type(reason)
        page.keyboard.press("Escape")
    press(page, key)
    side = {"a": left, "b": item["b"] if left == item["a"] else item["a"]}.get(key)
    stored = {"t": "tie", "x": "both_bad", "s": "skip"}.get(key) or ("a" if side == item["a"] else "b")
    return item, stored


def preference(item: dict, stored: str, who: str) -> dict:
    chosen, rejected = (item["b"], item["a"]) if stored == "b" else (item["a"], item["b"])
    return {"prompt": item["prompt"], "chosen": chosen, "rejected": rejected, "tie": stored == "tie", "annotator": who}


def test_label_by_keyboard_undo_and_see_it_in_the_export_and_on_the_agreement_page(browser, server, tmp_path):
    base, tokens, db = server
    alice = log_in(browser, base, "alice", tokens["alice"])
    assert alice.inner_text("#progress-text") == "0 / 4 judged"
    done = [label(alice, "a")]
    if os.environ.get("RLFT_LABEL_SCREENSHOT"):
        copier = "A" if shown(alice)[1] in alice.inner_text("#prompt") else "B"
        alice.click("#reason")
        alice.keyboard.type(f"{copier} copies the page instead of saying what the command does.")
        alice.set_viewport_size({"width": 1000, "height": 480})
        alice.screenshot(path=os.environ["RLFT_LABEL_SCREENSHOT"], full_page=True)
        alice.fill("#reason", "")
        alice.keyboard.press("Escape")
    done.append(label(alice, "b", reason="too long"))
    undone = label(alice, "t")[0]
    assert alice.inner_text("#progress-text") == "3 / 4 judged"
    press(alice, "u")                                # undo the tie: back to that item, one judgement fewer
    assert shown(alice)[0] == undone and alice.is_visible("#notice")
    assert alice.inner_text("#progress-text") == "2 / 4 judged"
    done += [label(alice, "x"), label(alice, "s")]
    assert alice.is_visible("#done") and alice.get_attribute("#progress", "value") == "4"

    # bob sees his own queue only: no trace of alice's judgements, and his undo cannot touch them
    bob = log_in(browser, base, "bob", tokens["bob"])
    assert bob.inner_text("#progress-text") == "0 / 4 judged" and "too long" not in bob.content()
    press(bob, "u")
    assert bob.url == base + "/label" and shown(bob)[0] == done[0][0]
    bob_done = [label(bob, next(k for k in "ab" if _stores(bob, k) == done[0][1])),   # agrees on item 1
                label(bob, "t")]                                                    # ties item 2
    alices = [(j.item_key, j.choice) for j in Store(db).judgements() if j.annotator == "alice"]
    assert alices == [(item["key"], stored) for item, stored in done]
    bob.goto(base + "/admin")
    assert "Only an admin may open this page." in bob.inner_text("#error-message")

    ada = log_in(browser, base, "ada", tokens["ada"])
    ada.goto(base + "/admin")
    for who, judged in (("alice", done), ("bob", bob_done)):
        row = f"tr[data-annotator={who}]"
        got = {c: int(ada.inner_text(f"{row} td[data-choice={c}]")) for c in ("a", "b", "tie", "both_bad", "skip")}
        assert got == {c: sum(s == c for _, s in judged) for c in got}, who
    # two items with two labels each: (x, x) and (y, tie), y != tie; alpha by hand (see test_label_agreement):
    # x == y gives n = 4, n_x = 3, n_tie = 1, alpha = 1 - 3 * 2 / 6 = 0; x != y gives 1 - 3 * 2 / 10 = 0.4
    assert ada.inner_text("#alpha") == ("0.000" if done[0][1] == done[1][1] else "0.400")
    assert ada.inner_text("tr[data-annotator=alice] td[data-stat=majority]") == "1 / 2 (50%)"
    assert ada.inner_text("tr[data-annotator=alice] td[data-stat=gold]") == "0 / 1"    # rm: gold a, said both bad
    assert "too long" in ada.inner_text("#judgements")
    with ada.expect_download() as download:
        ada.click("#export")
    rows = [json.loads(x) for x in Path(download.value.path()).read_text().splitlines()]
    expected = [preference(item, s, "alice") for item, s in done if s in ("a", "b", "tie")]
    expected += [preference(item, s, "bob") for item, s in bob_done]
    assert sorted(rows, key=json.dumps) == sorted(expected, key=json.dumps)
    assert len(rows) == 4


def _stores(page, key: str) -> str:
    item, left, right = shown(page)
    return "a" if {"a": left, "b": right}[key] == item["a"] else "b"


def test_requests_without_a_session_or_with_a_bad_csrf_token_are_refused(browser, server):
    base, tokens, db = server
    anonymous = browser.new_context().request
    response = anonymous.post(base + "/judge", form={"item": "1", "choice": "A", "csrf": "x"})
    assert response.status == 401 and "Not logged in" in response.text()
    alice = log_in(browser, base, "alice", tokens["alice"])
    alice.evaluate("document.querySelector('#judge input[name=csrf]').value = 'forged'")
    press(alice, "a")
    assert "CSRF token missing or wrong" in alice.inner_text("#error-message")
    alice.go_back()
    alice.fill("#reason", "x" * 20_000)             # the box stops at 500; a forged longer one is refused
    assert len(alice.input_value("#reason")) == 500
    alice.evaluate("document.querySelector('#reason').removeAttribute('maxlength')")
    alice.fill("#reason", "x" * 600)
    alice.keyboard.press("Escape")
    press(alice, "a")
    assert "The reason is 600 characters; at most 500." in alice.inner_text("#error-message")
    assert Store(db).judgements() == [] and len(ITEMS) == 4
