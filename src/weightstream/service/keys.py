"""API keys: created once, shown once, stored only as a hash, checked in constant time.

A key reads ``ws_<key id>_<secret>``: the key id (12 hex digits) names the row, the secret is
32 random bytes (:func:`secrets.token_urlsafe`). The table ``api_keys`` holds the id, the
SHA-256 of the whole key, the scopes, a label and the creation and revocation times: never the
key itself. A plain SHA-256 is enough here because the key is random with 256 bits of
entropy, so there is nothing to guess that a slow hash (scrypt, bcrypt) would protect, and a
check costs a microsecond instead of tens of milliseconds per request. The comparison of the
hashes is :func:`hmac.compare_digest`; a key whose id is unknown is compared against a dummy
hash all the same, so the time taken does not say which ids exist.

Scopes are ``read`` (the GET routes) and ``write`` (readings, recovery).

Storage: the same SQLite file as the store, in its own table, through this module's own
connection (``CREATE TABLE IF NOT EXISTS``; every write one short ``BEGIN IMMEDIATE``
transaction). The database must already be a weightstream database: :func:`open_keys` opens it
with :class:`~weightstream.store.sqlite.SQLiteStore` first, which refuses a foreign or corrupt
file and creates and migrates a new one, so this module never writes into a file that is not
ours. The store's own tables are never touched.

A server keeps verified keys for ``cache_s`` seconds (default 1): a key revoked with
``weightstream keys revoke`` stops working within that time, without a database read per
request.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Final

from weightstream.clock import SYSTEM_CLOCK, Clock
from weightstream.errors import StorageError, StoreBusyError
from weightstream.model import from_micros, to_micros

__all__ = [
    "Scope",
    "ApiKey",
    "CreatedKey",
    "KeyStore",
    "open_keys",
    "KEY_PATTERN",
]


class Scope(StrEnum):
    """What a key may do."""

    READ = "read"
    WRITE = "write"


#: The shape of a key: ``ws_`` + 12 hex digits + ``_`` + the secret.
KEY_PATTERN: Final = re.compile(r"ws_([0-9a-f]{12})_([A-Za-z0-9_-]{32,128})")

_SCOPE_NAMES: Final = frozenset(s.value for s in Scope)
_DUMMY_HASH: Final = hashlib.sha256(b"no such key").hexdigest()

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    label       TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
)
"""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key's public facts (never the key)."""

    key_id: str
    scopes: frozenset[Scope]
    label: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: ``secret`` is the whole key, shown once and stored nowhere."""

    key: ApiKey
    secret: str


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_scopes(text: Iterable[str]) -> frozenset[Scope]:
    """Scopes from their names; an unknown name is a ``ValueError`` naming it."""
    out: set[Scope] = set()
    for name in text:
        name = name.strip().lower()
        if not name:
            continue
        try:
            out.add(Scope(name))
        except ValueError:
            raise ValueError(
                f"unknown scope {name!r} (expected {', '.join(s.value for s in Scope)})"
            ) from None
    if not out:
        raise ValueError("a key needs at least one scope")
    return frozenset(out)


class KeyStore:
    """The ``api_keys`` table of one SQLite file, through its own connection.

    Safe to share between threads (one lock around the connection).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock = SYSTEM_CLOCK,
        busy_timeout_ms: int = 5000,
        cache_s: float = 1.0,
    ) -> None:
        self.path = str(path)
        self.clock = clock
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, tuple[str, frozenset[Scope]] | None]] = {}
        try:
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._write(lambda c: c.execute(_SCHEMA))
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the key table in {self.path}: {exc}") from None

    # -- writes (each one short BEGIN IMMEDIATE transaction) ------------------------------

    def _write(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise _typed(exc) from None
            try:
                fn(c)
                c.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    c.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _typed(exc) from None
                raise

    def create(self, scopes: Iterable[Scope], label: str = "") -> CreatedKey:
        """A new key with ``scopes``; the returned ``secret`` is the only copy of the key."""
        scope_set = frozenset(scopes)
        if not scope_set:
            raise ValueError("a key needs at least one scope")
        key_id = secrets.token_hex(6)
        secret = f"ws_{key_id}_{secrets.token_urlsafe(32)}"
        now = self.clock.now()
        scope_text = ",".join(sorted(s.value for s in scope_set))
        self._write(
            lambda c: c.execute(
                "INSERT INTO api_keys (key_id, key_hash, scopes, label, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key_id, _hash(secret), scope_text, label, to_micros(now)),
            )
        )
        return CreatedKey(ApiKey(key_id, scope_set, label, now, None), secret)

    def revoke(self, key_id: str) -> bool:
        """Revoke a key by its id. False if no active key has that id."""
        found: list[int] = []
        now = to_micros(self.clock.now())

        def run(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (now, key_id),
            )
            found.append(cur.rowcount)

        self._write(run)
        with self._lock:
            self._cache.pop(key_id, None)
        return found[0] == 1

    # -- reads ----------------------------------------------------------------------------

    def list(self) -> list[ApiKey]:
        """Every key, oldest first (revoked ones too)."""
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT key_id, scopes, label, created_at, revoked_at FROM api_keys "
                    "ORDER BY created_at, key_id"
                ).fetchall()
            except sqlite3.Error as exc:
                raise _typed(exc) from None
        return [
            ApiKey(
                key_id,
                frozenset(Scope(s) for s in scopes.split(",") if s in _SCOPE_NAMES),
                label,
                from_micros(created),
                None if revoked is None else from_micros(revoked),
            )
            for key_id, scopes, label, created, revoked in rows
        ]

    def verify(self, presented: str) -> frozenset[Scope] | None:
        """The scopes of an active key equal to ``presented``; None for any other text."""
        match = KEY_PATTERN.fullmatch(presented)
        key_id = match.group(1) if match else ""
        entry = self._lookup(key_id) if match else None
        stored_hash, scopes = entry if entry is not None else (_DUMMY_HASH, frozenset())
        ok = hmac.compare_digest(stored_hash, _hash(presented))
        return scopes if ok and entry is not None else None

    def _lookup(self, key_id: str) -> tuple[str, frozenset[Scope]] | None:
        now = self.clock.monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
            if cached is not None and now - cached[0] < self.cache_s:
                return cached[1]
            try:
                row = self._conn.execute(
                    "SELECT key_hash, scopes FROM api_keys WHERE key_id = ? AND revoked_at IS NULL",
                    (key_id,),
                ).fetchone()
            except sqlite3.Error:
                return None  # a key that cannot be checked is not accepted
            entry = None
            if row is not None:
                entry = (str(row[0]), parse_scopes(str(row[1]).split(",")))
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = (now, entry)
            return entry

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _typed(exc: sqlite3.Error) -> StorageError:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return StoreBusyError(f"the key table is locked by another writer: {exc}")
    return StorageError(f"the key table failed: {exc}")


def open_keys(db: str | Path, *, create: bool = True, clock: Clock = SYSTEM_CLOCK) -> KeyStore:
    """The key table of weightstream database ``db``, checked to be ours first.

    The database is opened (and, with ``create``, created and migrated) by
    :class:`~weightstream.store.sqlite.SQLiteStore`, which refuses a foreign, corrupt or unsafe
    file with :class:`~weightstream.errors.StoreOpenError`; only then is the key table opened.
    """
    from weightstream.store.sqlite import SQLiteStore

    SQLiteStore(db, create=create, clock=clock).close()
    return KeyStore(db, clock=clock)
