"""The web app through Flask's test client: sessions, CSRF, who sees what, and clear errors."""

from __future__ import annotations

import html
import json
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import pytest

pytest.importorskip("flask", reason="the label extra is not installed (pip install -e '.[label]')")

from rlft.label.app import COOKIE, LOGIN_COOKIE, MAX_REQUEST_BYTES, create_app  # noqa: E402
from rlft.label.store import Store  # noqa: E402
from tests.label.label_fixtures import BY_PROMPT, csrf_of, make_db  # noqa: E402


@pytest.fixture
def site(tmp_path):
    tokens = make_db(tmp_path / "l.db")
    app = create_app(tmp_path / "l.db")
    return app, tokens, tmp_path / "l.db"


def login(app, name, token):
    client = app.test_client()
    page = client.get("/login")
    response = client.post("/login", data={"name": name, "token": token, "csrf": csrf_of(page.text)})
    assert response.status_code == 303, response.text
    return client


def _page_item(html):
    prompt = re.search(r'<pre id="prompt">(.*?)</pre>', html, re.S).group(1)
    left = re.search(r'<pre id="left">(.*?)</pre>', html, re.S).group(1)
    item_id = int(re.search(r'name="item" value="(\d+)"', html).group(1))
    item = BY_PROMPT[prompt.replace("&amp;", "&")]
    return item_id, item, left


def test_every_page_but_login_needs_a_session(site):
    app, tokens, _ = site
    client = app.test_client()
    for path in ("/", "/label", "/label/1", "/admin", "/admin/export.jsonl", "/nope"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].endswith("/login"), path
    for path in ("/judge", "/undo", "/logout", "/admin/annotators"):
        response = client.post(path, data={"item": "1", "choice": "A", "csrf": "x"})
        assert response.status_code == 401 and "Not logged in" in response.text, path
    assert client.get("/login").status_code == 200


def test_login_is_csrf_protected_and_a_wrong_token_is_refused(site):
    app, tokens, _ = site
    client = app.test_client()
    page = client.get("/login")
    assert client.get_cookie(LOGIN_COOKIE).http_only
    response = client.post("/login", data={"name": "alice", "token": tokens["alice"], "csrf": "forged"})
    assert response.status_code == 403 and "CSRF" in response.text and client.get_cookie(COOKIE) is None
    response = client.post("/login", data={"name": "alice", "token": "wrong", "csrf": csrf_of(page.text)})
    assert response.status_code == 401 and "wrong token" in response.text and client.get_cookie(COOKIE) is None
    client = login(app, "alice", tokens["alice"])
    cookie = client.get_cookie(COOKIE)
    assert cookie.http_only and cookie.same_site == "Strict" and tokens["alice"] not in cookie.value


def test_a_judgement_needs_the_sessions_csrf_token(site):
    app, tokens, db = site
    alice = login(app, "alice", tokens["alice"])
    page = alice.get("/label").text
    item_id = _page_item(page)[0]
    bob = login(app, "bob", tokens["bob"])
    bobs_token = csrf_of(bob.get("/label").text)
    for csrf in (None, "", "x" * 43, bobs_token):         # missing, empty, made up, another session's
        data = {"item": item_id, "choice": "A", **({} if csrf is None else {"csrf": csrf})}
        response = alice.post("/judge", data=data)
        assert response.status_code == 403 and "CSRF token missing or wrong" in response.text
    assert Store(db).judgements() == []
    assert alice.post("/judge", data={"item": item_id, "choice": "A", "csrf": csrf_of(page)}).status_code == 303
    assert len(Store(db).judgements()) == 1


def test_the_choice_is_recorded_for_the_completion_shown_on_that_side(site):
    app, tokens, db = site
    client = login(app, "alice", tokens["alice"])
    seen = []
    for choice in ("A", "B"):
        page = client.get("/label").text
        item_id, item, left = _page_item(page)
        right = item["b"] if left == item["a"] else item["a"]
        client.post("/judge", data={"item": item_id, "choice": choice, "csrf": csrf_of(page), "reason": " why "})
        seen.append((item["prompt"], left if choice == "A" else right))
    rows = client.get("/label")  # the annotator's own pages still work; the export is the admin's
    assert rows.status_code == 200
    admin = login(app, "ada", tokens["ada"])
    export = [json.loads(x) for x in admin.get("/admin/export.jsonl").text.splitlines()]
    assert [(r["prompt"], r["chosen"]) for r in export] == seen
    assert [j.reason for j in Store(db).judgements()] == ["why", "why"]


def test_annotators_see_only_their_own_queue_and_no_admin_pages(site):
    app, tokens, db = site
    store = Store(db)
    store.set_k(1)
    alice = login(app, "alice", tokens["alice"])
    page = alice.get("/label").text
    item_id = _page_item(page)[0]
    alice.post("/judge", data={"item": item_id, "choice": "B", "csrf": csrf_of(page)})
    bob = login(app, "bob", tokens["bob"])
    bob_page = bob.get("/label").text
    assert _page_item(bob_page)[0] != item_id                       # k = 1: it left everyone else's queue
    assert bob.get(f"/label/{item_id}").status_code == 404
    response = bob.post("/judge", data={"item": item_id, "choice": "A", "csrf": csrf_of(bob_page)})
    assert response.status_code == 409 and "not in your queue" in response.text
    bob.post("/undo", data={"csrf": csrf_of(bob_page)})             # undoes bob's own (none), not alice's
    assert [(j.annotator, j.choice) for j in store.judgements()] == [("alice", next(iter(
        {"a", "b"} - {store.left_side(2, item_id)})))]
    for path in ("/admin", "/admin/export.jsonl"):
        assert bob.get(path).status_code == 403
    assert bob.post("/admin/annotators", data={"name": "mallory", "csrf": csrf_of(bob_page)}).status_code == 403
    assert "mallory" not in [a.name for a in store.annotators()]


def test_malformed_or_oversized_input_gets_a_clear_error(site):
    app, tokens, db = site
    client = login(app, "alice", tokens["alice"])
    page = client.get("/label").text
    item_id, csrf = _page_item(page)[0], csrf_of(page)
    cases = [({"item": "abc", "choice": "A"}, 400, "Malformed item id 'abc'"),
             ({"item": item_id, "choice": "left"}, 400, "Unknown choice 'left'; one of A, B, tie, both_bad, skip"),
             ({"item": item_id}, 400, "Unknown choice ''"),
             ({"item": item_id, "choice": "A", "reason": "r" * 501}, 400, "The reason is 501 characters; at most 500"),
             ({"item": 99999, "choice": "A"}, 409, "Item 99999: this item is not in your queue"),
             ({"item": item_id, "choice": "A", "reason": "x" * MAX_REQUEST_BYTES}, 413, "Request too large")]
    for data, status, message in cases:
        response = client.post("/judge", data={**data, "csrf": csrf})
        text = html.unescape(response.text)
        assert response.status_code == status and message in text, (data.get("choice"), text[-400:])
    assert client.get("/label/abc").status_code == 404
    assert client.get("/judge").status_code == 405
    assert Store(db).judgements() == []


def test_admin_page_shows_agreement_and_creates_accounts_whose_token_works(site):
    app, tokens, db = site
    admin = login(app, "ada", tokens["ada"])
    page = admin.get("/admin")
    assert page.status_code == 200 and 'id="alpha">n/a<' in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    response = admin.post("/admin/annotators", data={"name": "carol", "csrf": csrf_of(page.text)})
    token = re.search(r'<span class="token">([^<]+)</span>', response.text).group(1)
    login(app, "carol", token)
    again = admin.post("/admin/annotators", data={"name": "carol", "csrf": csrf_of(page.text)})
    assert again.status_code == 400 and "already exists" in again.text


def _serve(db):
    proc = subprocess.Popen([sys.executable, "-m", "rlft", "label", "serve", "--db", str(db), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert found, line + proc.stderr.read()
    return proc, f"http://127.0.0.1:{found.group(1)}"


def test_killing_the_server_loses_no_acknowledged_judgement(tmp_path):
    tokens = make_db(tmp_path / "l.db")
    proc, base = _serve(tmp_path / "l.db")
    try:
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        post = lambda path, data: opener.open(base + path, urllib.parse.urlencode(data).encode())  # noqa: E731
        page = opener.open(base + "/login").read().decode()
        post("/login", {"name": "alice", "token": tokens["alice"], "csrf": csrf_of(page)})
        page = opener.open(base + "/label").read().decode()
        item_id = _page_item(page)[0]
        assert post("/judge", {"item": item_id, "choice": "tie", "csrf": csrf_of(page)}).status == 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [(j.item_id, j.annotator, j.choice) for j in Store(tmp_path / "l.db").judgements()] == \
        [(item_id, "alice", "tie")]
