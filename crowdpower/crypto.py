"""Encryption at rest of secrets (OAuth tokens), with rotatable keys.

``ENCRYPTION_KEYS`` lists keys newest first: the first encrypts, every one decrypts
(``MultiFernet``), and the key derived from ``SECRET_KEY`` always decrypts too, so
values written before the list existed stay readable. A key is a Fernet key or any
long random string (hashed into one). ``crowdpower rotate-encryption`` re-encrypts
every stored value with the first key; then old keys can be dropped. A value no key
can decrypt reads as None (the connection must be made again), never an error.
"""

from __future__ import annotations

import base64
import hashlib
import logging

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app
from sqlalchemy import Text, select, type_coerce, update
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)


def _fernet_of(key: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except ValueError:
        digest = hashlib.sha256(b"crowdpower-encryption:" + key.encode()).digest()
        return Fernet(base64.urlsafe_b64encode(digest))


def _fernet() -> MultiFernet:
    config = current_app.config
    cached = config.get("_CROWDPOWER_FERNET")
    keys = tuple(config.get("ENCRYPTION_KEYS") or ())
    if cached is None or cached[0] != (keys, config["SECRET_KEY"]):
        fernets = [_fernet_of(k) for k in keys] + [_fernet_of(config["SECRET_KEY"])]
        cached = ((keys, config["SECRET_KEY"]), MultiFernet(fernets))
        config["_CROWDPOWER_FERNET"] = cached
    return cached[1]


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("stored secret cannot be decrypted with the configured keys") from exc


def rotate(token: str) -> str:
    """``token`` re-encrypted with the first key (raises ``InvalidToken`` if unreadable)."""
    return _fernet().rotate(token.encode()).decode()


class EncryptedText(TypeDecorator):
    """A text column stored encrypted; plaintext only in memory. Never repr'd."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else encrypt(value)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        try:
            return decrypt(value)
        except ValueError:
            log.warning("a stored secret cannot be decrypted (keys changed?); reading it as "
                        "empty: reconnect, or restore the old key in ENCRYPTION_KEYS")
            return None


def encrypted_columns(metadata) -> list[tuple]:
    """(table, primary key column, encrypted column) of every encrypted column."""
    found = []
    for table in metadata.sorted_tables:
        pk = list(table.primary_key.columns)
        for column in table.columns:
            if isinstance(column.type, EncryptedText) and len(pk) == 1:
                found.append((table, pk[0], column))
    return found


def reencrypt_all(session, metadata) -> dict[str, int]:
    """Re-encrypt every stored secret with the first key; counts per column
    (``unreadable`` ones are left as they are)."""
    counts: dict[str, int] = {"unreadable": 0}
    for table, pk, column in encrypted_columns(metadata):
        raw = type_coerce(column, Text)
        rows = session.execute(select(pk, raw).where(column.isnot(None))).all()
        done = 0
        for row_id, token in rows:
            try:
                fresh = rotate(token)
            except InvalidToken:
                counts["unreadable"] += 1
                continue
            # Compare-and-set: a value rewritten meanwhile (an OAuth refresh token
            # rotated by a worker) is newer than ours and must not be overwritten.
            written = session.execute(update(table).where(pk == row_id, raw == token)
                                      .values({column.name: type_coerce(fresh, Text)}))
            done += written.rowcount
        counts[f"{table.name}.{column.name}"] = done
    session.commit()
    return counts
