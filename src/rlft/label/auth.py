"""Secrets of the labeling app: invite tokens hashed with scrypt, session ids and CSRF tokens.

Standard library only. An invite token is the annotator's login secret (like an API key); the
database keeps only ``scrypt(token, salt)`` (RFC 7914; n=2**14, r=8, p=1, the cost Python's docs
and OWASP give for interactive logins), so a copy of the database lets no one log in. Session ids
are 256 random bits, so a plain SHA-256 of them is stored (no salt or work factor is needed
against a value that cannot be guessed); the cookie holds the id itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

_N, _R, _P = 2 ** 14, 8, 1
SCHEME = "scrypt"


def new_token() -> str:
    """An invite token (144 random bits, URL-safe text)."""
    return secrets.token_urlsafe(18)


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (hex), for ``verify_secret``."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"{SCHEME}${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored``; compared in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        got = hashlib.scrypt(secret.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def session_key(session_id: str) -> str:
    """What the database stores for a session id."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens; a missing one never matches."""
    return bool(a) and bool(b) and hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
