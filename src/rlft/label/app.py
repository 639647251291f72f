"""The labeling web app (Flask, server-rendered pages, a few lines of inline JS for the keys).

Every request opens its own ``Store`` (SQLite connections are per thread). ``_guard`` runs first
and is the one place access is decided: the login page is the only one without a session; every
POST carries a CSRF token, compared in constant time with the session's (the login form's with a
cookie set when the form was served: the double-submit pattern, as no session exists yet); the
admin pages need an admin. Cookies are HttpOnly and SameSite=Strict, and a Content-Security-Policy
with a per-response nonce lets only the page's own inline script and style run.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from rlft.label import auth
from rlft.label.store import SESSION_SECONDS, Conflict, Store

TEMPLATES = Path(__file__).resolve().parent.parent / "assets" / "label" / "templates"
COOKIE, LOGIN_COOKIE = "rlft_session", "rlft_login_csrf"
MAX_REQUEST_BYTES = 16 * 1024   # a judgement form is well under 1 KB; anything near this is not one
MAX_REASON = 500
MAX_NAME, MAX_TOKEN = 64, 256
SIDE_CHOICES = {"A": "left", "B": "right", "tie": "tie", "both_bad": "both_bad", "skip": "skip"}
PUBLIC = {"login"}


def create_app(db: str | Path, *, secure_cookies: bool = False) -> Any:
    """The Flask app over the database ``db`` (created if missing). ``secure_cookies``: send the
    session cookie over HTTPS only (behind a TLS proxy)."""
    from flask import Flask

    Store(db).close()
    app = Flask(__name__, template_folder=str(TEMPLATES))
    app.config.update(RLFT_DB=str(db), MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES, RLFT_SECURE=secure_cookies)
    _hooks(app)
    _labeling_routes(app)
    _admin_routes(app)
    return app


def error(status: int, message: str) -> Any:
    from flask import render_template

    return render_template("error.html", status=status, message=message), status


def _hooks(app: Any) -> None:
    from flask import g, redirect, request, url_for
    from werkzeug.exceptions import HTTPException

    @app.before_request
    def _guard():
        g.nonce = secrets.token_urlsafe(16)
        g.store = Store(app.config["RLFT_DB"], create=False)
        g.session = g.store.session(request.cookies.get(COOKIE))
        if request.endpoint in PUBLIC:
            if request.method == "POST" and not auth.same(request.form.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
                return error(403, "The login form has expired or its CSRF token is wrong: reload the page and log in again.")
            return None
        if g.session is None:
            if request.method == "GET":
                return redirect(url_for("login"))
            return error(401, "Not logged in (no session, or it expired): log in and try again.")
        if request.method == "POST" and not auth.same(request.form.get("csrf"), g.session.csrf):
            return error(403, "CSRF token missing or wrong: reload the page and submit again.")
        if (request.endpoint or "").startswith("admin") and not g.session.annotator.admin:
            return error(403, "Only an admin may open this page.")
        return None

    @app.teardown_request
    def _close(_exc):
        store = g.pop("store", None)
        if store is not None:
            store.close()

    @app.after_request
    def _headers(response):
        nonce = g.get("nonce", "")
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc):
        if exc.code == 413:
            return error(413, f"Request too large: at most {MAX_REQUEST_BYTES} bytes.")
        return error(exc.code or 500, exc.description or exc.name)


def _labeling_routes(app: Any) -> None:
    from flask import g, make_response, redirect, render_template, request, url_for

    @app.route("/login", methods=["GET", "POST"])
    def login():
        if request.method == "POST":
            name, token = request.form.get("name", ""), request.form.get("token", "")
            if len(name) > MAX_NAME or len(token) > MAX_TOKEN:
                return error(400, f"Name or token too long (at most {MAX_NAME} and {MAX_TOKEN} characters).")
            got = g.store.login(name, token)
            if got is not None:
                response = redirect(url_for("label"), code=303)
                response.set_cookie(COOKIE, got[0], max_age=SESSION_SECONDS, httponly=True, samesite="Strict",
                                    secure=app.config["RLFT_SECURE"])
                response.delete_cookie(LOGIN_COOKIE)
                return response
        # Reuse the form's token while its cookie lives: a second GET (the browser's favicon request
        # lands here too) must not invalidate a login form already on screen.
        csrf = request.cookies.get(LOGIN_COOKIE, "")
        csrf = csrf if 32 <= len(csrf) <= 64 else auth.new_csrf()
        failed = request.method == "POST"
        response = make_response(render_template("login.html", csrf=csrf, failed=failed), 401 if failed else 200)
        response.set_cookie(LOGIN_COOKIE, csrf, httponly=True, samesite="Strict", secure=app.config["RLFT_SECURE"])
        return response

    @app.post("/logout")
    def logout():
        g.store.logout(request.cookies.get(COOKIE, ""))
        response = redirect(url_for("login"), code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/")
    def index():
        return redirect(url_for("label"))

    @app.get("/label")
    def label():
        item = g.store.next_item(g.session.annotator.id)
        return _item_page(item) if item is not None else render_template("done.html", progress=_progress())

    @app.get("/label/<int:item_id>")
    def label_item(item_id: int):
        item = g.store.item_for(g.session.annotator.id, item_id)
        if item is None:
            return error(404, f"Item {item_id} is not in your queue.")
        return _item_page(item, notice="Your last judgement was undone." if request.args.get("undone") else "")

    @app.post("/judge")
    def judge():
        me, form = g.session.annotator.id, request.form
        try:
            item_id = int(form.get("item", ""))
        except ValueError:
            return error(400, f"Malformed item id {form.get('item', '')[:20]!r}: expected a number.")
        side = SIDE_CHOICES.get(form.get("choice", ""))
        if side is None:
            return error(400, f"Unknown choice {form.get('choice', '')[:20]!r}; one of {', '.join(SIDE_CHOICES)}.")
        reason = form.get("reason", "").strip()
        if len(reason) > MAX_REASON:
            return error(400, f"The reason is {len(reason)} characters; at most {MAX_REASON}.")
        left = g.store.left_side(me, item_id)
        choice = {"left": left, "right": "b" if left == "a" else "a"}.get(side, side)
        try:
            g.store.judge(me, item_id, choice, reason)
        except Conflict as err:
            return error(409, f"Item {item_id}: {err}.")
        return redirect(url_for("label"), code=303)

    @app.post("/undo")
    def undo():
        item_id = g.store.undo(g.session.annotator.id)
        if item_id is None:
            return redirect(url_for("label"), code=303)
        return redirect(url_for("label_item", item_id=item_id, undone=1), code=303)


def _progress() -> tuple[int, int]:
    from flask import g

    return g.store.progress(g.session.annotator.id)


def _item_page(item: Any, notice: str = "") -> Any:
    from flask import g, render_template

    left_side = g.store.left_side(g.session.annotator.id, item.id)
    left, right = (item.a, item.b) if left_side == "a" else (item.b, item.a)
    return render_template("label.html", item=item, left=left, right=right, progress=_progress(), notice=notice,
                           max_reason=MAX_REASON)


def _admin_routes(app: Any) -> None:
    from flask import Response, g, render_template, request

    from rlft.data.loading import jsonl_text
    from rlft.label.agreement import summarize
    from rlft.label.export import preference_rows

    def page(status: int = 200, **extra: Any) -> Any:
        judgements = g.store.judgements()
        summary = summarize(judgements, [a.name for a in g.store.annotators()])
        admins = {a.name for a in g.store.annotators() if a.admin}
        return render_template("admin.html", summary=summary, counts=g.store.counts(), k=g.store.k, admins=admins,
                               recent=judgements[::-1][:100], **extra), status

    @app.get("/admin")
    def admin():
        return page()

    @app.post("/admin/annotators")
    def admin_add_annotator():
        name = request.form.get("name", "")
        try:
            token = g.store.add_annotator(name, admin=request.form.get("admin") == "1")
        except ValueError as err:
            return page(400, problem=str(err))
        return page(new_name=name.strip(), new_token=token)

    @app.get("/admin/export.jsonl")
    def admin_export():
        return Response(jsonl_text(preference_rows(g.store.judgements())), mimetype="application/x-ndjson",
                        headers={"Content-Disposition": "attachment; filename=preferences.jsonl"})
