"""The `rlft label` subcommands; cli's table calls ``add_options`` and ``run`` (argparse only here,
so `rlft --help` stays cheap).

    serve          run the web app over a database, importing a candidates file first if given
    add-annotator  create an account and print its invite token (the first admin comes from here)
    export         write the preference JSONL (prompt, chosen, rejected, tie, annotator)
    sample         write a candidates file from one model (two samples) or two (greedy each)
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Callable

from rlft.errors import RlftError

_ACTIONS = {
    "serve": "Serve the labeling app over --db (created if missing); --items imports a candidates JSONL first.",
    "add-annotator": "Create an annotator (--admin: an admin) and print their invite token, shown only once.",
    "export": "Write the judgements as preference JSONL: prompt, chosen, rejected, tie, annotator.",
    "sample": "Write a candidates JSONL for a split's prompts: two samples of model.name_or_path, "
              "or one greedy completion each of model.name_or_path and --model-b.",
}


def add_options(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="label_action", metavar="ACTION", required=True)
    for action, text in _ACTIONS.items():
        q = sub.add_parser(action, help=text, description=text)
        if action == "sample":
            q.add_argument("args", nargs="*", metavar="[CONFIG.yaml] [section.key=value ...]",
                           help="an optional YAML config file, then dotted overrides (`rlft --help` lists them)")
            q.add_argument("--out", required=True, help="the candidates JSONL to write")
            q.add_argument("--model-b", help="a second model or checkpoint to compare with model.name_or_path")
            q.add_argument("--split", default="validation", choices=["train", "validation", "test"])
            q.add_argument("--max-prompts", type=int, default=None, help="use only the first N prompts")
            continue
        q.add_argument("--db", required=True, help="the labeling database (SQLite)")
        if action == "serve":
            q.add_argument("--items", help="a candidates JSONL to import first (items already there are kept)")
            q.add_argument("--k", type=int, default=None, help="annotators per item (stored; default 3)")
            q.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
            q.add_argument("--port", type=int, default=8400)
            q.add_argument("--secure-cookies", action="store_true", help="HTTPS-only cookies (behind a TLS proxy)")
        elif action == "add-annotator":
            q.add_argument("name")
            q.add_argument("--admin", action="store_true", help="may see agreement, add annotators and export")
        elif action == "export":
            q.add_argument("--out", required=True, help="the preference JSONL to write")


def run(ns: argparse.Namespace, generate: Callable[..., list[list[str]]]) -> int:
    """Run ``ns.label_action``; ``generate`` is ``rlft.api.generate``, for ``sample``."""
    if ns.label_action == "sample":
        return _sample(ns, generate)
    return {"serve": _serve, "add-annotator": _add_annotator, "export": _export}[ns.label_action](ns)


def _store(path: str, create: bool = True):
    from rlft.label.store import Store

    try:
        return Store(path, create=create)
    except FileNotFoundError as err:
        raise RlftError(str(err)) from None


def _add_annotator(ns: argparse.Namespace) -> int:
    store = _store(ns.db)
    try:
        token = store.add_annotator(ns.name, admin=ns.admin)
    except ValueError as err:
        raise RlftError(str(err)) from None
    finally:
        store.close()
    print(f"{'admin' if ns.admin else 'annotator'} {ns.name.strip()!r}: invite token {token}")
    print("(shown once; the database keeps only its hash)")
    return 0


def _export(ns: argparse.Namespace) -> int:
    from rlft.label.export import export

    store = _store(ns.db, create=False)
    try:
        print(f"{ns.out}: {export(store, ns.out)} preference pairs")
    finally:
        store.close()
    return 0


def _sample(ns: argparse.Namespace, generate: Callable[..., list[list[str]]]) -> int:
    from rlft.config import load_args
    from rlft.label.sources import sample_candidates

    if ns.max_prompts is not None and ns.max_prompts < 1:
        raise RlftError(f"--max-prompts must be >= 1, got {ns.max_prompts}")
    print(sample_candidates(load_args(ns.args), ns.out, generate, model_b=ns.model_b, split=ns.split,
                            max_prompts=ns.max_prompts))
    return 0


def _serve(ns: argparse.Namespace) -> int:
    from werkzeug.serving import make_server

    from rlft.label.app import create_app
    from rlft.label.sources import load_candidates

    store = _store(ns.db)
    try:
        if ns.k is not None:
            if ns.k < 1:
                raise RlftError(f"--k must be >= 1, got {ns.k}")
            store.set_k(ns.k)
        if ns.items:
            items, same = load_candidates(ns.items)
            added, kept = store.add_items(items)
            print(f"{ns.items}: {added} items added, {kept} already there, {same} skipped (identical completions)")
        if not store.annotators():
            raise RlftError(f"{ns.db}: no accounts yet; create an admin first: "
                            f"rlft label add-annotator --db {ns.db} --admin NAME")
    finally:
        store.close()
    if not _loopback(ns.host):
        print(f"warning: listening on {ns.host}: plain HTTP, reachable from other machines; put it behind TLS "
              "and pass --secure-cookies", file=sys.stderr)
    server = make_server(ns.host, ns.port, create_app(ns.db, secure_cookies=ns.secure_cookies), threaded=True)
    print(f"rlft label: serving {ns.db} on http://{ns.host}:{server.port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
