"""The order's durable ledger: one SQLite file per order, one writer, every slot's state.

The ledger is how a run survives Ctrl-C, ``kill -9``, a power cut or a restarted ComfyUI without
losing or duplicating an image. The runner records its *intent* before each side effect: a slot's
prompt id is written (and fsynced) before the prompt is POSTed, and a slot is marked done only
after its files are on disk and checked. After a crash, the slots left ``SUBMITTED`` are exactly
those whose fate the server knows: the runner looks their deterministic prompt ids up in the
server's history and queue, and collects, waits for, or resubmits each one.

The file lives in the order's output folder (``<output>/.comfyline/ledger.sqlite3``). It is in WAL
mode with ``synchronous=FULL`` (and ``fullfsync`` on macOS), so a committed transaction survives
power loss, and every write is one short ``BEGIN IMMEDIATE`` transaction on the single writer
connection. A second runner is kept out by an exclusive lock on a lock file next to the database
(:mod:`comfyline.lock`: ``flock`` on Linux and macOS, ``msvcrt.locking`` on Windows); the
operating system releases it when the holder dies, however it dies, so a crash never leaves a
stale lock behind.

``read_status(path)`` reads the ledger without the lock, for ``comfyline status`` while a runner
is active.

Example::

    with Ledger.open(folder / ".comfyline" / "ledger.sqlite3", order.id, fingerprint) as ledger:
        ledger.ensure_slots(plan(order))
        for slot in ledger.pending():
            attempt = slot.attempt + 1
            prompt_id = slot_prompt_id(order.id, slot.index, attempt)
            ledger.mark_submitted(slot.index, prompt_id, attempt)   # before the POST
            ...
            ledger.mark_done(slot.index, files, sha256s, seconds)    # after files are checked
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from comfyline import lock
from comfyline.disk import full_disk_sqlite_error
from comfyline.errors import LedgerError, OrderLocked

SCHEMA_VERSION = 3
"""2: per-slot file stem, title, keywords, backend, image sizes, wall time and checkpoint; a
per-ledger run nonce in the prompt ids. 3: each slot's place in the order (prompt, repeat),
whether the simulator made it, its history (re-rolls, images set aside); the order's revisions.
An older ledger is migrated when opened."""
LEDGER_DIR = ".comfyline"
LEDGER_FILE = "ledger.sqlite3"

PROMPT_ID_NAMESPACE = uuid.UUID("5b0e6c1e-4f0a-5d1c-9a63-636f6d66796c")
"""The uuid5 namespace of comfyline's prompt ids. Never change it: running ledgers depend on it."""


REROLL_REASONS = ("reroll", "qc")
"""History reasons that give a slot a new seed: a re-roll asked for, and a replacement of an
image that failed the quality checks (``qc.replace``)."""


def ledger_path(output_dir: Path) -> Path:
    """Where the ledger of the order whose images go to ``output_dir`` lives."""
    return output_dir / LEDGER_DIR / LEDGER_FILE


def slot_prompt_id(order_id: str, index: int, attempt: int, nonce: str = "") -> str:
    """The prompt id of a slot's attempt: the same for the same (order, slot, attempt, nonce),
    always.

    The runner sends it with the prompt, so after a crash it can find the prompt again in the
    server's queue or history. ``nonce`` is the ledger's own random value (``Ledger.nonce``):
    two ledgers of one order id (a new output root, another project) never share prompt ids on
    a server, so one never collects the other's images. Ledgers made before the nonce existed
    use ``""`` and keep their ids.
    """
    name = f"{order_id}/{index}/{attempt}" + (f"/{nonce}" if nonce else "")
    return str(uuid.uuid5(PROMPT_ID_NAMESPACE, name))


class OrderState(StrEnum):
    """The life cycle of an order, stored in its ledger and shown by ``comfyline status``.

    ``new → validated → queued → running → completed | partial | failed | cancelled``; an
    unfinished order (partial, failed, cancelled, or running when its runner died) goes back to
    ``queued`` when it is run again, and so does a completed one that grew or has images to
    re-roll. A new revision starts at ``new``. Legal moves are in :data:`ORDER_TRANSITIONS`.
    """

    NEW = "new"  # the ledger exists, nothing checked yet
    VALIDATED = "validated"  # the order file passed validation and its slots are planned
    QUEUED = "queued"  # ready to run, waiting for a backend
    RUNNING = "running"  # a runner is working on it
    COMPLETED = "completed"  # every slot is done (running it again does nothing unless it grew)
    PARTIAL = "partial"  # the run ended with some slots done and some failed
    FAILED = "failed"  # the run ended and no slot is done
    CANCELLED = "cancelled"  # stopped by the user (Ctrl-C) or the guard; resumable


ORDER_TRANSITIONS: Mapping[OrderState, frozenset[OrderState]] = {
    OrderState.NEW: frozenset({OrderState.VALIDATED}),
    OrderState.VALIDATED: frozenset({OrderState.QUEUED}),
    OrderState.QUEUED: frozenset({OrderState.RUNNING, OrderState.CANCELLED}),
    # QUEUED again: the runner died (SIGKILL, power loss) and a new one picks the order up.
    OrderState.RUNNING: frozenset(
        {
            OrderState.COMPLETED,
            OrderState.PARTIAL,
            OrderState.FAILED,
            OrderState.CANCELLED,
            OrderState.QUEUED,
        }
    ),
    # QUEUED again: the order grew, or some of its images are to be made again (re-roll).
    OrderState.COMPLETED: frozenset({OrderState.QUEUED}),
    OrderState.PARTIAL: frozenset({OrderState.QUEUED}),
    OrderState.FAILED: frozenset({OrderState.QUEUED}),
    OrderState.CANCELLED: frozenset({OrderState.QUEUED}),
}


def can_transition(old: OrderState, new: OrderState) -> bool:
    """Whether an order may move from ``old`` to ``new`` (see :data:`ORDER_TRANSITIONS`)."""
    return new in ORDER_TRANSITIONS[old]


class SlotState(StrEnum):
    """The life of one image slot. Legal moves are in ``SLOT_TRANSITIONS``."""

    PLANNED = "planned"  # recorded; not sent (or sent and lost by a restarted server)
    SUBMITTED = "submitted"  # prompt id recorded; the POST may or may not have reached the server
    DONE = "done"  # files written, checked and their sha256 recorded (final)
    FAILED = "failed"  # the last attempt failed, its error recorded; may be retried


SLOT_TRANSITIONS: Mapping[SlotState, frozenset[SlotState]] = {
    SlotState.PLANNED: frozenset({SlotState.SUBMITTED}),
    # PLANNED again: the server lost the prompt (restarted); resubmit as the next attempt.
    SlotState.SUBMITTED: frozenset({SlotState.DONE, SlotState.FAILED, SlotState.PLANNED}),
    SlotState.DONE: frozenset(),
    # SUBMITTED: retried at once; PLANNED: put back for a later run (e.g. resuming a partial one).
    SlotState.FAILED: frozenset({SlotState.SUBMITTED, SlotState.PLANNED}),
}


class PlannedSlot(Protocol):
    """What ``ensure_slots`` needs of a planned slot (``comfyline.orders.Slot`` fits)."""

    @property
    def index(self) -> int: ...
    @property
    def key(self) -> str: ...
    @property
    def prompt(self) -> str: ...
    @property
    def negative(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def params(self) -> Any: ...


@dataclass(frozen=True)
class SlotError:
    """Why a slot's last attempt failed: the exception's class name, message and node, if any."""

    type: str
    message: str
    node: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> SlotError:
        """Read type, message and the failing node (``node_id``, as on ComfyError) off ``exc``."""
        node = getattr(exc, "node_id", None)
        return cls(type(exc).__name__, str(exc), None if node is None else str(node))


@dataclass(frozen=True)
class SlotRecord:
    """One slot as the ledger holds it. ``attempt`` is the number of its latest submission
    (0: never sent); ``updated`` is a Unix time, the moment of its latest change."""

    index: int
    key: str
    prompt: str
    negative: str
    seed: int
    params: dict[str, Any]
    state: SlotState
    prompt_id: str | None
    attempt: int
    files: tuple[str, ...]
    sha256s: tuple[str, ...]
    seconds: float | None
    error: SlotError | None
    updated: float
    made_with: dict[str, Any] | None = None
    """The parameters the images were made with, where they differ from ``params`` (the run
    stepped down after an out-of-memory error)."""
    stem: str = ""
    """The file name (without ``.png``) the plan gave the slot."""
    title: str | None = None
    keywords: tuple[str, ...] = ()
    backend: str | None = None
    """The server the latest attempt went to (its name or URL)."""
    sizes: tuple[tuple[int, int], ...] = ()
    """Each file's real pixel size (width, height), as decoded."""
    wall_seconds: float | None = None
    """Our own clock, from the POST to the checked result (``seconds`` is the server's)."""
    checkpoint: str | None = None
    """The checkpoint the images were made with."""
    qc: tuple[dict[str, Any], ...] = ()
    """The quality checks of each file (``QcResult.to_json()``): flags, measures, hash."""
    review: str | None = None
    """The user's decision: ``approved``, ``rejected``, or None (not reviewed)."""
    prompt_index: int | None = None
    repeat: int | None = None
    """The slot's place in the order: which prompt, which of its images (None: not recorded
    by a ledger from before schema 3)."""
    simulated: bool | None = None
    """Whether comfyline's simulator made the images (None: not recorded)."""
    history: tuple[dict[str, Any], ...] = ()
    """Earlier images of the slot, set aside: ``{"reason": "reroll" | "qc" | "simulated",
    "files", "sha256s", "moved_to", "seed", "new_seed", "generation", "backend", "at"}`` (and
    ``"flags"``, per file, for ``qc``), oldest first."""

    @property
    def generation(self) -> int:
        """How many times the slot was re-rolled, by hand or to replace an image that failed
        the quality checks (0: its first seed)."""
        return sum(1 for h in self.history if h.get("reason") in REROLL_REASONS)

    @property
    def flagged(self) -> bool:
        """Whether an image of the slot failed a quality check (any flag in its ``qc``)."""
        return any(check.get("flags") for check in self.qc)


@dataclass(frozen=True)
class RevisionRecord:
    """An earlier revision of the order, kept: its number, why it ended, its images' folder
    (relative to the output folder), how many images it made, and where its ledger and report
    were archived."""

    number: int
    reason: str
    folder: str
    images: int
    archive: str
    started: float
    ended: float


@dataclass(frozen=True)
class SlotCounts:
    """How many slots are in each state."""

    planned: int = 0
    submitted: int = 0
    done: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.planned + self.submitted + self.done + self.failed


@dataclass(frozen=True)
class LedgerEvent:
    """One line of the order's log: a slot's move, or a guard event (``kind`` ``guard.*``)."""

    at: float
    kind: str
    index: int | None
    attempt: int | None
    prompt_id: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class Reading:
    """One sensor reading during the run; ``images_done`` is counted by the ledger when stored."""

    at: float
    temperature_c: float | None
    power_w: float | None
    vram_free_mb: float | None
    vram_total_mb: float | None
    images_done: int
    note: str


@dataclass(frozen=True)
class OrderRecord:
    """The order's row: identity, state, and what must stay the same across runs."""

    order_id: str
    fingerprint: str
    state: OrderState
    seed_base: int | None
    created: float
    updated: float
    comfyline_version: str


@dataclass(frozen=True)
class OrderStatus:
    """What ``comfyline status`` shows. ``runner_pid`` is set while a runner holds the order."""

    path: Path
    order: OrderRecord
    counts: SlotCounts
    runner_pid: int | None
    runner_started: str | None

    @property
    def running(self) -> bool:
        return self.runner_pid is not None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS "order" (
    id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    seed_base TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    comfyline_version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS slot (
    idx INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    prompt TEXT NOT NULL,
    negative TEXT NOT NULL,
    seed TEXT NOT NULL, -- text: ComfyUI seeds reach 2**64 - 1, past SQLite's INTEGER
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    prompt_id TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    files TEXT NOT NULL DEFAULT '[]',
    sha256s TEXT NOT NULL DEFAULT '[]',
    seconds REAL,
    error TEXT,
    updated REAL NOT NULL,
    made_with TEXT, -- the parameters it was made with, when they differ from params (step down)
    stem TEXT NOT NULL DEFAULT '',
    title TEXT,
    keywords TEXT NOT NULL DEFAULT '[]',
    backend TEXT,
    sizes TEXT NOT NULL DEFAULT '[]',
    wall_seconds REAL,
    checkpoint TEXT,
    qc TEXT, -- the quality checks of its images (JSON list, one per file)
    review TEXT, -- approved | rejected | NULL (not reviewed)
    prompt_index INTEGER,
    repeat INTEGER,
    simulated INTEGER, -- 1: made by comfyline's simulator, 0: by a real ComfyUI
    history TEXT NOT NULL DEFAULT '[]' -- earlier images set aside (re-roll, simulator)
);
CREATE TABLE IF NOT EXISTS revision (
    n INTEGER PRIMARY KEY,
    reason TEXT NOT NULL,
    folder TEXT NOT NULL,
    images INTEGER NOT NULL,
    archive TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS slot_state ON slot (state, idx);
CREATE TABLE IF NOT EXISTS event (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    slot_idx INTEGER,
    attempt INTEGER,
    prompt_id TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS reading (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    temperature_c REAL,
    power_w REAL,
    vram_free_mb REAL,
    vram_total_mb REAL,
    images_done INTEGER NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
"""

_SLOT_COLUMNS = (
    "idx, key, prompt, negative, seed, params, state, prompt_id, attempt, files, sha256s, "
    "seconds, error, updated, made_with, stem, title, keywords, backend, sizes, wall_seconds, "
    "checkpoint, qc, review, prompt_index, repeat, simulated, history"
)
_ADDED_COLUMNS = (
    ("stem", "TEXT NOT NULL DEFAULT ''"),
    ("title", "TEXT"),
    ("keywords", "TEXT NOT NULL DEFAULT '[]'"),
    ("backend", "TEXT"),
    ("sizes", "TEXT NOT NULL DEFAULT '[]'"),
    ("wall_seconds", "REAL"),
    ("checkpoint", "TEXT"),
    ("qc", "TEXT"),
    ("review", "TEXT"),
    ("prompt_index", "INTEGER"),
    ("repeat", "INTEGER"),
    ("simulated", "INTEGER"),
    ("history", "TEXT NOT NULL DEFAULT '[]'"),
)
"""Columns schemas 2 and 3 added to ``slot``: an older ledger gets them when it is opened."""


class _LedgerFile:
    """One order's ledger file: its one connection, the runner's lock, the schema, and the
    write transaction every change goes through (the base of :class:`Ledger`)."""

    def __init__(
        self,
        path: Path,
        order_id: str,
        conn: sqlite3.Connection,
        lock_fd: int,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self.order_id = order_id
        self._conn = conn
        self._lock_fd: int | None = lock_fd
        self._clock = clock
        # Sensor readings wait here for the next write (see record_reading).
        self._readings: list[tuple[Any, ...]] = []

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        order_id: str,
        fingerprint: str | None,
        *,
        comfyline_version: str = "",
        clock: Callable[[], float] = time.time,
    ) -> Self:
        """Open (or create) the ledger at ``path`` for ``order_id`` and take the runner's lock.

        Raises :class:`OrderLocked` when another runner holds it, and :class:`LedgerError` when
        the ledger belongs to another order, or the order changed (another ``fingerprint``) since
        its first run. ``fingerprint`` None: no check (the runner settles an edited order with
        :mod:`comfyline.revisions`: it grows, shrinks, or starts a new revision).
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"cannot create the ledger's folder {path.parent}: {exc}") from exc
        lock_fd = _take_lock(_lock_path(path), order_id)
        try:
            conn = _connect(path)
        except BaseException:
            lock.release(lock_fd)
            raise
        ledger = cls(path, order_id, conn, lock_fd, clock)
        try:
            ledger._init(fingerprint, comfyline_version)
        except BaseException:
            ledger.close()
            raise
        return ledger

    def close(self) -> None:
        """Close the database and release the lock. Safe to call twice."""
        if self._lock_fd is None:
            return
        try:
            self._write_readings()
            self._conn.close()
        finally:
            lock.release(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _init(self, fingerprint: str | None, comfyline_version: str) -> None:
        with self._write() as cur:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
            fresh = cur.execute('SELECT count(*) FROM "order"').fetchone()[0] == 0
            cur.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            version = int(
                cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
            )
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"the ledger {self.path} was written by a newer comfyline (ledger schema "
                    f"{version}, this one reads {SCHEMA_VERSION}); upgrade comfyline to resume"
                )
            _migrate(cur)
            if fresh:
                # A new ledger's prompt ids are its own (see slot_prompt_id); an old one keeps
                # the ids its prompts were sent with.
                cur.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('run_nonce', ?)",
                    (uuid.uuid4().hex[:16],),
                )
            row = cur.execute("SELECT value FROM meta WHERE key = 'run_nonce'").fetchone()
            self.nonce: str = row[0] if row else ""
            row = cur.execute('SELECT id, fingerprint FROM "order"').fetchone()
            if row is None:
                now = self._clock()
                cur.execute(
                    'INSERT INTO "order" VALUES (?, ?, ?, NULL, ?, ?, ?)',
                    (
                        self.order_id,
                        fingerprint or "",
                        OrderState.NEW.value,
                        now,
                        now,
                        comfyline_version,
                    ),
                )
                return
            if fingerprint is None:  # the caller settles edits itself (comfyline.revisions)
                fingerprint = row[1]
            if row[1] != fingerprint and row[0] == self.order_id and _never_sent(cur):
                # Nothing was ever sent (a pre-flight failed, the user fixed the order): the
                # edit costs nothing, so the order starts over with its new content.
                cur.execute("DELETE FROM slot")
                cur.execute('UPDATE "order" SET fingerprint = ?, seed_base = NULL', (fingerprint,))
                self._event(cur, "order.edited", detail={"from": row[1], "to": fingerprint})
                return
        self._check_identity(row[0], row[1], fingerprint)

    def _check_identity(self, stored_id: str, stored_fp: str, fingerprint: str) -> None:
        if stored_id != self.order_id:
            raise LedgerError(
                f"the ledger {self.path} belongs to order {stored_id!r}, not {self.order_id!r}; "
                "give each order its own output folder"
            )
        if stored_fp != fingerprint:
            raise LedgerError(
                f"order {self.order_id!r} was edited after it started: its ledger {self.path} "
                f"was made for fingerprint {stored_fp[:16]}, the order and its files now give "
                f"{fingerprint[:16]}. Undo the edit to resume the run, or give the order a new id "
                f"(or delete {self.path.parent}) to start it over"
            )

    # -- internals -----------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One short write transaction; sqlite3 errors become LedgerError."""
        if self._lock_fd is None:
            raise LedgerError(f"the ledger {self.path} is closed")
        try:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                flushed = self._flush_readings(cur)
                yield cur
            except BaseException:
                self._conn.rollback()
                raise
            self._conn.commit()
            del self._readings[:flushed]
        except sqlite3.Error as exc:
            if (full := full_disk_sqlite_error(exc, self.path)) is not None:
                raise full from exc
            raise LedgerError(f"cannot write the ledger {self.path}: {exc}") from exc

    def _write_readings(self) -> None:
        if self._readings:
            with self._write():
                pass  # every write transaction starts with the readings kept so far

    def _flush_readings(self, cur: sqlite3.Cursor) -> int:
        """Insert the readings kept so far; how many (forgotten once the transaction commits)."""
        if not self._readings:
            return 0
        cur.executemany(
            "INSERT INTO reading (at, temperature_c, power_w, vram_free_mb, vram_total_mb, "
            "images_done, note) SELECT ?, ?, ?, ?, ?, count(*), ? FROM slot WHERE state = ?",
            [(*r, SlotState.DONE.value) for r in self._readings],
        )
        return len(self._readings)

    def _get(self, cur: sqlite3.Cursor, index: int) -> SlotRecord:
        row = cur.execute(f"SELECT {_SLOT_COLUMNS} FROM slot WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise LedgerError(f"order {self.order_id!r} has no slot {index} in {self.path}")
        return _slot_record(row)

    def _move(self, cur: sqlite3.Cursor, index: int, to: SlotState) -> SlotRecord:
        slot = self._get(cur, index)
        if to not in SLOT_TRANSITIONS[slot.state]:
            allowed = ", ".join(sorted(SLOT_TRANSITIONS[slot.state])) or "none (final)"
            raise LedgerError(
                f"slot {index} of order {self.order_id!r} cannot go from {slot.state} to {to} "
                f"(from {slot.state}: {allowed})"
            )
        return slot

    def _event(
        self,
        cur: sqlite3.Cursor,
        kind: str,
        index: int | None = None,
        attempt: int | None = None,
        prompt_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        cur.execute(
            "INSERT INTO event (at, kind, slot_idx, attempt, prompt_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (self._clock(), kind, index, attempt, prompt_id, json.dumps(dict(detail or {}))),
        )


class _LedgerReads(_LedgerFile):
    """Queries on the ledger's one connection: they see every write committed before them."""

    # -- order -------------------------------------------------------------------------

    def order(self) -> OrderRecord:
        """The order's row."""
        return _read_order(self._conn, self.path)

    # -- slots ---------------------------------------------------------------------------

    def slot(self, index: int) -> SlotRecord:
        """One slot; :class:`LedgerError` if there is no slot ``index``."""
        row = self._conn.execute(
            f"SELECT {_SLOT_COLUMNS} FROM slot WHERE idx = ?", (index,)
        ).fetchone()
        if row is None:
            raise LedgerError(f"order {self.order_id!r} has no slot {index} in {self.path}")
        return _slot_record(row)

    def slots(self, state: SlotState | None = None) -> list[SlotRecord]:
        """All slots (or those in ``state``), by index."""
        return list(self.iter_slots(state))

    def iter_slots(self, state: SlotState | None = None) -> Iterator[SlotRecord]:
        """All slots (or those in ``state``), by index, read lazily (for big orders)."""
        return _iter_slots(self._conn, state)

    def pending(self) -> list[SlotRecord]:
        """Slots still to send (``PLANNED``), by index."""
        return self.slots(SlotState.PLANNED)

    def submitted(self) -> list[SlotRecord]:
        """Slots sent and not settled: in flight when the last run stopped, to reconcile."""
        return self.slots(SlotState.SUBMITTED)

    def failed(self) -> list[SlotRecord]:
        """Slots whose last attempt failed."""
        return self.slots(SlotState.FAILED)

    def counts(self) -> SlotCounts:
        """How many slots are in each state."""
        return _counts(self._conn)

    # -- log -----------------------------------------------------------------------------

    def events(self, kind_prefix: str = "") -> list[LedgerEvent]:
        """The log, oldest first; only kinds starting with ``kind_prefix`` if given."""
        rows = self._conn.execute(
            "SELECT at, kind, slot_idx, attempt, prompt_id, detail FROM event "
            "WHERE substr(kind, 1, ?) = ? ORDER BY id",
            (len(kind_prefix), kind_prefix),
        ).fetchall()
        return [LedgerEvent(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    def readings(self) -> list[Reading]:
        """The sensor readings, oldest first (those not yet written are written now)."""
        self._write_readings()
        rows = self._conn.execute(
            "SELECT at, temperature_c, power_w, vram_free_mb, vram_total_mb, images_done, note "
            "FROM reading ORDER BY id"
        ).fetchall()
        return [Reading(*r) for r in rows]

    def summary(self) -> OrderStatus:
        """The order's row and slot counts (``runner_pid`` is this process)."""
        _, started = _read_holder(self._lock_fd) if self._lock_fd is not None else (None, None)
        return OrderStatus(self.path, self.order(), self.counts(), os.getpid(), started)


class _LedgerRevisions(_LedgerReads):
    """The order's history: slots dropped when it shrank, images set aside to be made again,
    and its revisions (see :mod:`comfyline.revisions`)."""

    def drop_slots(self, indexes: Iterable[int], reason: str) -> list[int]:
        """Remove the slots ``indexes`` that are not done (the order shrank); a done slot is
        never removed. Returns the indexes removed."""
        dropped: list[int] = []
        with self._write() as cur:
            for index in indexes:
                slot = self._get(cur, index)
                if slot.state is SlotState.DONE:
                    continue
                cur.execute("DELETE FROM slot WHERE idx = ?", (index,))
                detail = {"reason": reason, "state": slot.state.value}
                self._event(cur, "slot.dropped", index, slot.attempt, slot.prompt_id, detail)
                dropped.append(index)
        return dropped

    def reopen(
        self,
        index: int,
        *,
        reason: str,
        moved_to: Sequence[str],
        seed: int | None = None,
        stem: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> SlotRecord:
        """Put a done (or failed) slot back to be made again, its images set aside: a re-roll
        (``reason`` ``reroll``, a new ``seed`` and ``stem``) or a simulator's images in a real
        run (``simulated``). Records the intent (old files, their hashes, where they go) before
        any file moves: :func:`comfyline.revisions.settle_moves` moves them, now or after a
        crash. The review decision and quality checks of the old images are dropped;
        ``detail`` adds keys to the history entry (a QC replacement's ``flags``)."""
        with self._write() as cur:
            slot = self._get(cur, index)
            if slot.state not in (SlotState.DONE, SlotState.FAILED):
                raise LedgerError(
                    f"slot {index} of order {self.order_id!r} is {slot.state}: only a made (or "
                    "failed) image can be made again"
                )
            entry = {
                "reason": reason,
                "files": list(slot.files),
                "sha256s": list(slot.sha256s),
                "moved_to": list(moved_to) if slot.state is SlotState.DONE else [],
                "seed": slot.seed,
                "new_seed": slot.seed if seed is None else int(seed),
                "generation": slot.generation + (reason in REROLL_REASONS),
                "backend": slot.backend,
                "simulated": slot.simulated,
                "at": self._clock(),
                **(detail or {}),
            }
            cur.execute(
                "UPDATE slot SET state = ?, seed = ?, stem = ?, files = '[]', sha256s = '[]', "
                "sizes = '[]', qc = NULL, review = NULL, error = NULL, simulated = NULL, "
                "history = ?, updated = ? WHERE idx = ?",
                (
                    SlotState.PLANNED.value,
                    str(entry["new_seed"]),
                    slot.stem if stem is None else stem,
                    json.dumps([*slot.history, entry]),
                    self._clock(),
                    index,
                ),
            )
            self._event(cur, f"slot.{reason}", index, slot.attempt, slot.prompt_id, entry)
            return self._get(cur, index)

    # -- revisions -----------------------------------------------------------------------

    def copy_to(self, path: Path) -> None:
        """A consistent copy of the ledger at ``path`` (``VACUUM INTO`` a temp file, renamed)."""
        temp = path.with_name(path.name + ".part")
        try:
            temp.unlink(missing_ok=True)
            self._conn.execute("VACUUM INTO ?", (str(temp),))
            os.replace(temp, path)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot copy the ledger {self.path} to {path}: {exc}") from exc

    def identity(self) -> dict[str, str] | None:
        """What the order's images are, field by field (hashes), as recorded; None in a ledger
        from before revisions were recorded."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
        return dict(json.loads(row[0])) if row else None

    def revision(self) -> int:
        """The order's current revision: 1 until an edit changed what its images are."""
        return _revision(self._conn)

    def revisions(self) -> list[RevisionRecord]:
        """The earlier revisions, oldest first."""
        return _revisions(self._conn)

    def set_identity(self, fingerprint: str, identity: Mapping[str, str]) -> None:
        """Record what the order's images are (its fingerprint and the field hashes)."""
        with self._write() as cur:
            cur.execute('UPDATE "order" SET fingerprint = ?', (fingerprint,))
            cur.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('identity', ?)",
                (json.dumps(dict(identity), sort_keys=True),),
            )

    def restart(self, fingerprint: str, identity: Mapping[str, str]) -> None:
        """Start the order over with new content when nothing of it was ever sent."""
        with self._write() as cur:
            if not _never_sent(cur):
                raise LedgerError(f"order {self.order_id!r} has sent prompts: it cannot restart")
            cur.execute("DELETE FROM slot")
            cur.execute('UPDATE "order" SET fingerprint = ?, seed_base = NULL', (fingerprint,))
            cur.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('identity', ?)",
                (json.dumps(dict(identity), sort_keys=True),),
            )
            self._event(cur, "order.edited", detail={"to": fingerprint})

    def start_revision(
        self,
        fingerprint: str,
        identity: Mapping[str, str],
        *,
        reason: str,
        folder: str,
        archive: str,
    ) -> int:
        """End the current revision and start the next, in one transaction: the old one is
        listed (``folder`` its images, ``archive`` where its ledger was copied before), its
        slots, log and readings leave this ledger, the order starts afresh with a new prompt-id
        nonce. Returns the new revision's number."""
        with self._write() as cur:
            number = _revision(cur.connection)
            images = cur.execute(
                "SELECT coalesce(sum(json_array_length(files)), 0) FROM slot WHERE state = ?",
                (SlotState.DONE.value,),
            ).fetchone()[0]
            started = cur.execute('SELECT created FROM "order"').fetchone()[0]
            ended = self._clock()
            cur.execute(
                "INSERT OR REPLACE INTO revision VALUES (?, ?, ?, ?, ?, ?, ?)",
                (number, reason, folder, int(images), archive, started, ended),
            )
            for table in ("slot", "event", "reading"):
                cur.execute(f"DELETE FROM {table}")
            cur.execute(
                'UPDATE "order" SET fingerprint = ?, seed_base = NULL, state = ?, created = ?, '
                "updated = ?",
                (fingerprint, OrderState.NEW.value, ended, ended),
            )
            for key, value in (
                ("identity", json.dumps(dict(identity), sort_keys=True)),
                ("revision", str(number + 1)),
                ("run_nonce", uuid.uuid4().hex[:16]),
            ):
                cur.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            self._event(cur, "order.revision", detail={"revision": number + 1, "reason": reason})
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'run_nonce'").fetchone()
        self.nonce = row[0]
        return number + 1


class Ledger(_LedgerRevisions):
    """The single writer of one order's ledger. Open it with :meth:`Ledger.open`.

    Every method that changes state commits before it returns, so what it recorded survives a
    crash the instant after.
    """

    # -- order -------------------------------------------------------------------------

    def set_order_state(self, state: OrderState) -> None:
        """Record the order's next life-cycle state; setting the current one again does nothing.

        Raises :class:`LedgerError` for a move ``ORDER_TRANSITIONS`` does not allow.
        """
        new = OrderState(state)
        with self._write() as cur:
            old = OrderState(cur.execute('SELECT state FROM "order"').fetchone()[0])
            if old is new:
                return
            if not can_transition(old, new):
                raise LedgerError(
                    f"order {self.order_id!r} cannot go from {old} to {new}; "
                    "an unfinished order is queued again before it runs"
                )
            cur.execute('UPDATE "order" SET state = ?, updated = ?', (new.value, self._clock()))
            self._event(cur, "order." + new.value, detail={"from": old.value})

    def ensure_seed_base(self, candidate: int) -> int:
        """The order's recorded seed base; ``candidate`` is recorded and returned if none is.

        An order with random seeds draws ``candidate`` once; every later run gets the same one.
        """
        with self._write() as cur:
            row = cur.execute('SELECT seed_base FROM "order"').fetchone()
            if row[0] is not None:
                return int(row[0])
            cur.execute(
                'UPDATE "order" SET seed_base = ?, updated = ?', (str(candidate), self._clock())
            )
        return candidate

    # -- slots ---------------------------------------------------------------------------

    def ensure_slots(self, slots: Iterable[PlannedSlot]) -> int:
        """Record the planned slots not yet recorded; check those recorded against the record.

        Returns how many slots were inserted (0 on a resumed run; the new ones when the order
        grew). Raises :class:`LedgerError` when a recorded slot now plans other content (same
        fingerprint, different plan: a bug, or a comfyline upgrade that plans differently).
        Slots recorded but not planned any more stay: :meth:`drop_slots` settles them.
        """
        slots = list(slots)
        rows = {int(s.index): _slot_row(s) for s in slots}
        with self._write() as cur:
            stored = {
                int(r[0]): r
                for r in cur.execute("SELECT idx, key, prompt, negative, seed, params FROM slot")
            }
            for index in sorted(rows.keys() & stored.keys()):
                self._check_slot(_comparable(rows[index]), _comparable(stored[index]))
            now = self._clock()
            new = [rows[i] for i in sorted(rows.keys() - stored.keys())]
            keys = {r[1]: i for i, r in stored.items()}
            for row in new:
                if row[1] in keys:
                    raise LedgerError(
                        f"order {self.order_id!r}: new slot {row[0]} plans the key {row[1]!r} "
                        f"that slot {keys[row[1]]} of its ledger {self.path} already has (a "
                        "plan whose slots moved: a bug, or a comfyline upgrade); delete "
                        f"{self.path.parent} to start over"
                    )
            cur.executemany(
                "INSERT INTO slot (idx, key, prompt, negative, seed, params, state, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(*r, SlotState.PLANNED.value, now) for r in new],
            )
            if new and stored:
                self._event(cur, "order.grown", detail={"slots": [r[0] for r in new]})
            # Sale data and file names may be filled in later (a ledger from before they were
            # recorded): they describe the slot, they do not change what it makes.
            cur.executemany(
                "UPDATE slot SET stem = ?, title = ?, keywords = ? WHERE idx = ?",
                [_sale_row(s) for s in slots],
            )
            cur.executemany(
                "UPDATE slot SET prompt_index = ?, repeat = ? WHERE idx = ? AND "
                "(prompt_index IS NULL OR repeat IS NULL)",
                [
                    (getattr(s, "prompt_index", None), getattr(s, "repeat", None), int(s.index))
                    for s in slots
                ],
            )
        return len(new)

    def _check_slot(self, new: tuple[Any, ...], old: tuple[Any, ...]) -> None:
        names = ("index", "key", "prompt", "negative", "seed", "params")
        for name, a, b in zip(names, new, old, strict=True):
            if a != b and name != "key":  # the key holds the file name, which may change
                raise LedgerError(
                    f"order {self.order_id!r}: slot {old[0]} now plans {name} {a!r} but its "
                    f"ledger {self.path} recorded {b!r}; resume with the comfyline version "
                    f"that started it, or delete {self.path.parent} to start over"
                )

    def mark_submitted(
        self, index: int, prompt_id: str, attempt: int, backend: str | None = None
    ) -> None:
        """Record that attempt ``attempt`` of slot ``index`` is about to be sent as ``prompt_id``
        (to ``backend``, its name or URL).

        Call it BEFORE the POST. ``attempt`` must be the slot's ``attempt + 1``.
        """
        with self._write() as cur:
            slot = self._move(cur, index, SlotState.SUBMITTED)
            if attempt != slot.attempt + 1:
                raise LedgerError(
                    f"slot {index} of order {self.order_id!r}: attempt {attempt} submitted, "
                    f"but the next attempt is {slot.attempt + 1}"
                )
            cur.execute(
                "UPDATE slot SET state = ?, prompt_id = ?, attempt = ?, error = NULL, updated = ?, "
                "backend = ? WHERE idx = ?",
                (SlotState.SUBMITTED.value, prompt_id, attempt, self._clock(), backend, index),
            )
            detail = {"backend": backend} if backend else None
            self._event(cur, "submitted", index, attempt, prompt_id, detail)

    def record_prompt_id(self, index: int, prompt_id: str) -> None:
        """Replace a submitted slot's prompt id with the one the server chose (servers that
        ignore a client's prompt id). Call it before waiting for the prompt."""
        with self._write() as cur:
            slot = self._get(cur, index)
            if slot.state is not SlotState.SUBMITTED:
                raise LedgerError(
                    f"slot {index} of order {self.order_id!r} is {slot.state}, not submitted; "
                    "only a submitted slot's prompt id can change"
                )
            cur.execute("UPDATE slot SET prompt_id = ? WHERE idx = ?", (prompt_id, index))
            self._event(cur, "prompt_id", index, slot.attempt, prompt_id)

    def mark_done(
        self,
        index: int,
        files: Sequence[str],
        sha256s: Sequence[str],
        seconds: float,
        made_with: Mapping[str, Any] | None = None,
        *,
        sizes: Sequence[tuple[int, int]] = (),
        wall_seconds: float | None = None,
        checkpoint: str | None = None,
        qc: Sequence[Mapping[str, Any]] = (),
        simulated: bool | None = None,
    ) -> None:
        """Record that slot ``index`` is finished: its files (paths relative to the output
        folder) are written, checked, and have these sha256s. Call it after they are on disk.
        ``made_with``: the parameters used, when they differ from the planned ones; ``sizes``
        each file's real pixel size; ``seconds`` the server's time, ``wall_seconds`` ours;
        ``simulated`` whether comfyline's simulator made them."""
        if len(files) != len(sha256s) or not files:
            raise LedgerError(
                f"slot {index} of order {self.order_id!r}: mark_done needs one sha256 per file and "
                f"at least one file, got {len(files)} file(s) and {len(sha256s)} sha256(s)"
            )
        with self._write() as cur:
            slot = self._move(cur, index, SlotState.DONE)
            cur.execute(
                "UPDATE slot SET state = ?, files = ?, sha256s = ?, seconds = ?, error = NULL, "
                "updated = ?, made_with = ?, sizes = ?, wall_seconds = ?, checkpoint = ?, "
                "qc = ?, simulated = ? WHERE idx = ?",
                (
                    SlotState.DONE.value,
                    json.dumps(list(files)),
                    json.dumps(list(sha256s)),
                    seconds,
                    self._clock(),
                    json.dumps(dict(made_with)) if made_with is not None else None,
                    json.dumps([list(size) for size in sizes]),
                    wall_seconds,
                    checkpoint,
                    json.dumps([dict(q) for q in qc]) if qc else None,
                    None if simulated is None else int(simulated),
                    index,
                ),
            )
            self._event(cur, "done", index, slot.attempt, slot.prompt_id, {"files": list(files)})

    def mark_failed(self, index: int, error: BaseException | SlotError) -> None:
        """Record that the current attempt of slot ``index`` failed, and why."""
        err = error if isinstance(error, SlotError) else SlotError.from_exception(error)
        detail = {"type": err.type, "message": err.message, "node": err.node}
        with self._write() as cur:
            slot = self._move(cur, index, SlotState.FAILED)
            cur.execute(
                "UPDATE slot SET state = ?, error = ?, updated = ? WHERE idx = ?",
                (SlotState.FAILED.value, json.dumps(detail), self._clock(), index),
            )
            self._event(cur, "failed", index, slot.attempt, slot.prompt_id, detail)

    def requeue(self, index: int, reason: str = "") -> None:
        """Put a submitted or failed slot back to ``PLANNED``; it is sent next as attempt + 1.

        For a prompt the server lost (it restarted), or a failed slot retried in a later run.
        """
        with self._write() as cur:
            slot = self._move(cur, index, SlotState.PLANNED)
            cur.execute(
                "UPDATE slot SET state = ?, updated = ? WHERE idx = ?",
                (SlotState.PLANNED.value, self._clock(), index),
            )
            self._event(cur, "requeued", index, slot.attempt, slot.prompt_id, {"reason": reason})

    # -- log -----------------------------------------------------------------------------

    def record_event(
        self,
        kind: str,
        *,
        index: int | None = None,
        attempt: int | None = None,
        prompt_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Add a line to the order's log. Guard events use kinds ``guard.hold``, ``guard.free``,
        ``guard.step_down`` (detail ``{"from": ..., "to": ...}``), ``guard.cleanup``,
        ``guard.stop``; the report lists every ``guard.*`` event."""
        with self._write() as cur:
            self._event(cur, kind, index, attempt, prompt_id, dict(detail or {}))

    def record_reading(
        self,
        *,
        temperature_c: float | None = None,
        power_w: float | None = None,
        vram_free_mb: float | None = None,
        vram_total_mb: float | None = None,
        note: str = "",
    ) -> None:
        """Store one sensor reading, with the number of images done at this moment.

        It is written with the ledger's next change (the next prompt's submission, at most a
        prompt later) or when the ledger closes, not in a transaction of its own: a reading is
        worth no disk sync of its own per image, and a kill -9 loses at most the last one."""
        self._readings.append(
            (self._clock(), temperature_c, power_w, vram_free_mb, vram_total_mb, note)
        )


def read_status(path: Path) -> OrderStatus:
    """Read an order's ledger without taking the runner's lock (works while a runner is active).

    Raises :class:`LedgerError` if there is no ledger at ``path`` or it cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise LedgerError(f"no ledger at {path}: the order has not been run yet")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot open the ledger {path}: {exc}") from exc
    try:
        conn.execute("BEGIN")  # one snapshot for the order row and the counts
        order, counts = _read_order(conn, path), _counts(conn)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc}") from exc
    finally:
        conn.close()
    pid, started = _lock_holder(_lock_path(path))
    return OrderStatus(path, order, counts, pid, started)


# -- helpers -------------------------------------------------------------------------------


def read_slots(path: Path) -> list[SlotRecord]:
    """Every slot of the ledger at ``path``, read without the runner's lock."""
    conn = _read_only(path)
    try:
        return list(_iter_slots(conn, None))
    finally:
        conn.close()


def record_review(path: Path, indexes: Sequence[int], decision: str | None) -> list[int]:
    """Record the user's ``decision`` (``approved``, ``rejected``, or None to undo) for the
    done slots ``indexes``, in one short transaction of its own: a review may happen while a
    runner holds the order (SQLite serialises the two writers). Returns the indexes changed.
    """
    if decision not in (None, "approved", "rejected"):
        raise LedgerError(f"a review decision is approved, rejected or none, not {decision!r}")
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        try:
            conn.execute("BEGIN IMMEDIATE")
            states = dict(conn.execute("SELECT idx, state FROM slot").fetchall())
            for index in indexes:
                if states.get(index) != SlotState.DONE.value:
                    conn.rollback()
                    raise LedgerError(
                        f"slot {index} in {path} is {states.get(index, 'unknown')}: only made "
                        "images can be reviewed"
                    )
            conn.executemany(
                "UPDATE slot SET review = ? WHERE idx = ?", [(decision, i) for i in indexes]
            )
            conn.executemany(
                "INSERT INTO event (at, kind, slot_idx, detail) VALUES (?, ?, ?, '{}')",
                [(time.time(), f"review.{decision or 'undone'}", i) for i in indexes],
            )
            conn.commit()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot record the review in {path}: {exc}") from exc
    return list(indexes)


def _read_only(path: Path) -> sqlite3.Connection:
    if not Path(path).is_file():
        raise LedgerError(f"no ledger at {path}: the order has not been run yet")
    try:
        return sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot open the ledger {path}: {exc}") from exc


def _lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def _take_lock(lock_path: Path, order_id: str) -> int:
    """Take the exclusive runner lock; write our pid and start time into it for the message
    another runner gets."""
    try:
        fd = lock.try_lock(lock_path)
    except OSError as exc:
        raise LedgerError(f"cannot lock the ledger's lock file {lock_path}: {exc}") from exc
    if fd is None:
        raise OrderLocked(
            f"order {order_id} is already being run by {_describe_holder(lock_path)}; "
            "wait for it or stop it"
        )
    started = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        lock.write_note(fd, json.dumps({"pid": os.getpid(), "started": started}).encode())
    except OSError as exc:
        lock.release(fd)
        raise LedgerError(f"cannot write the ledger's lock file {lock_path}: {exc}") from exc
    return fd


def _read_holder(fd: int) -> tuple[int | None, str | None]:
    try:
        return _parse_holder(lock.read_note(fd))
    except OSError:
        return None, None


def _parse_holder(note: bytes) -> tuple[int | None, str | None]:
    try:
        data = json.loads(note or b"{}")
        return int(data["pid"]), str(data["started"])
    except (ValueError, KeyError, TypeError):
        return None, None  # the holder has not written it yet


def _describe_holder(lock_path: Path) -> str:
    try:  # the note lies outside the locked range on every platform: readable while held
        note = lock_path.read_bytes()[: lock.NOTE_MAX_BYTES]
    except OSError:
        note = b""
    pid, started = _parse_holder(note)
    if pid is None:
        return "another process"
    return f"process {pid} (started {started})"


def _lock_holder(lock_path: Path) -> tuple[int | None, str | None]:
    """Who holds the runner lock: (pid, start time); (-1, None) when a holder has not said who
    it is yet; (None, None) when nobody holds it."""
    try:
        note = lock.holder_note(lock_path)
    except OSError as exc:
        raise LedgerError(f"cannot read the ledger's lock file {lock_path}: {exc}") from exc
    if note is None:
        return None, None
    pid, started = _parse_holder(note)
    return (pid or -1), started


def _connect(path: Path) -> sqlite3.Connection:
    try:
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
        conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        # WAL: a reader (comfyline status) never blocks the writer. Where WAL cannot be used (a
        # file system without shared memory, such as some network shares), SQLite keeps its
        # rollback journal, which is as durable.
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: sync the log at every commit, so a committed slot survives power loss.
        conn.execute("PRAGMA synchronous=FULL")
        # macOS: fsync leaves the data in the drive's cache; F_FULLFSYNC flushes it through.
        # (Ignored on Linux and Windows, where a sync already reaches the disk.)
        conn.execute("PRAGMA fullfsync=ON")
        return conn
    except sqlite3.Error as exc:
        raise LedgerError(
            f"cannot open the ledger {path}: {exc}; if the file is damaged, move it away "
            "to start the order over"
        ) from exc


def _migrate(cur: sqlite3.Cursor) -> None:
    """Bring an older ledger to this schema: add the slot columns it lacks, keep every row."""
    have = {row[1] for row in cur.execute("PRAGMA table_info(slot)")}
    for name, kind in _ADDED_COLUMNS:
        if name not in have:
            cur.execute(f"ALTER TABLE slot ADD COLUMN {name} {kind}")
    cur.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))


def _revision(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
    return int(row[0]) if row else 1


def _revisions(conn: sqlite3.Connection) -> list[RevisionRecord]:
    try:
        rows = conn.execute(
            "SELECT n, reason, folder, images, archive, started, ended FROM revision ORDER BY n"
        ).fetchall()
    except sqlite3.OperationalError:  # a ledger from before revisions (read-only: no table)
        return []
    return [RevisionRecord(*row) for row in rows]


def read_revisions(path: Path) -> tuple[int, list[RevisionRecord]]:
    """The current revision of the ledger at ``path`` and the earlier ones (without the lock)."""
    conn = _read_only(path)
    try:
        try:
            return _revision(conn), _revisions(conn)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read the ledger {path}: {exc}") from exc
    finally:
        conn.close()


def read_identity(path: Path) -> dict[str, str] | None:
    """The field hashes the ledger at ``path`` recorded (see :meth:`Ledger.identity`)."""
    conn = _read_only(path)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
        return dict(json.loads(row[0])) if row else None
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc}") from exc
    finally:
        conn.close()


def _never_sent(cur: sqlite3.Cursor) -> bool:
    return bool(cur.execute("SELECT count(*) FROM slot WHERE attempt > 0").fetchone()[0] == 0)


def _params_json(params: Any) -> str:
    if hasattr(params, "model_dump"):
        params = params.model_dump(mode="json")
    return json.dumps(dict(params), sort_keys=True)


def _slot_row(slot: PlannedSlot) -> tuple[Any, ...]:
    return (
        int(slot.index),
        str(slot.key),
        str(slot.prompt),
        str(slot.negative),
        str(int(slot.seed)),
        _params_json(slot.params),
    )


def _sale_row(slot: PlannedSlot) -> tuple[Any, ...]:
    # File stem, title and keywords: recorded when the planned slot has them (orders' do).
    stem, title = getattr(slot, "stem", ""), getattr(slot, "title", None)
    keywords = list(getattr(slot, "keywords", ()))
    return (str(stem), title, json.dumps(keywords), int(slot.index))


def _comparable(row: Sequence[Any]) -> tuple[Any, ...]:
    """A planned or stored slot row with its seed as a number, for comparing and messages."""
    return (*row[:4], int(row[4]), row[5])


def _slot_record(row: Sequence[Any]) -> SlotRecord:
    error = json.loads(row[12]) if row[12] else None
    return SlotRecord(
        index=row[0],
        key=row[1],
        prompt=row[2],
        negative=row[3],
        seed=int(row[4]),
        params=json.loads(row[5]),
        state=SlotState(row[6]),
        prompt_id=row[7],
        attempt=row[8],
        files=tuple(json.loads(row[9])),
        sha256s=tuple(json.loads(row[10])),
        seconds=row[11],
        error=SlotError(**error) if error else None,
        updated=row[13],
        made_with=json.loads(row[14]) if row[14] else None,
        stem=row[15],
        title=row[16],
        keywords=tuple(json.loads(row[17])),
        backend=row[18],
        sizes=tuple((int(w), int(h)) for w, h in json.loads(row[19])),
        wall_seconds=row[20],
        checkpoint=row[21],
        qc=tuple(json.loads(row[22])) if row[22] else (),
        review=row[23],
        prompt_index=row[24],
        repeat=row[25],
        simulated=None if row[26] is None else bool(row[26]),
        history=tuple(json.loads(row[27] or "[]")),
    )


def _iter_slots(conn: sqlite3.Connection, state: SlotState | None) -> Iterator[SlotRecord]:
    try:
        if state is None:
            cur = conn.execute(f"SELECT {_SLOT_COLUMNS} FROM slot ORDER BY idx")
        else:
            sql = f"SELECT {_SLOT_COLUMNS} FROM slot WHERE state = ? ORDER BY idx"
            cur = conn.execute(sql, (SlotState(state).value,))
        for row in cur:
            yield _slot_record(row)
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot read the ledger's slots: {exc}") from exc


def _counts(conn: sqlite3.Connection) -> SlotCounts:
    rows = conn.execute("SELECT state, count(*) FROM slot GROUP BY state").fetchall()
    return SlotCounts(**{SlotState(s).name.lower(): n for s, n in rows})


def _read_order(conn: sqlite3.Connection, path: Path) -> OrderRecord:
    try:
        row = conn.execute(
            "SELECT id, fingerprint, state, seed_base, created, updated, comfyline_version "
            'FROM "order"'
        ).fetchone()
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc}") from exc
    if row is None:
        raise LedgerError(f"the ledger {path} holds no order; delete it to start over")
    seed_base = None if row[3] is None else int(row[3])
    return OrderRecord(row[0], row[1], OrderState(row[2]), seed_base, row[4], row[5], row[6])


@dataclass(frozen=True)
class Activity:
    """What a ledger says about its runs, for ``comfyline status`` and the web page: when each
    run started and ended, the recent finishing times, the last temperature, the servers."""

    runs: tuple[tuple[float, float | None], ...]
    """(start, end) of each run; end None for the run going on, or one that was killed."""
    last_event_at: float | None
    recent_done_at: tuple[float, ...]
    """When the latest slots (up to 20) were done, oldest first."""
    last_temperature_c: float | None
    servers: tuple[str, ...]


def read_activity(path: Path) -> Activity:
    """Read a ledger's :class:`Activity` without the runner's lock (cheap on big orders)."""
    conn = _read_only(path)
    try:
        conn.execute("BEGIN")
        marks = conn.execute(
            "SELECT at, kind FROM event WHERE kind IN ('run.start', 'run.end') ORDER BY id"
        ).fetchall()
        last = conn.execute("SELECT max(at) FROM event").fetchone()[0]
        done = conn.execute(
            "SELECT at FROM event WHERE kind = 'done' ORDER BY id DESC LIMIT 20"
        ).fetchall()
        temp = conn.execute(
            "SELECT temperature_c FROM reading WHERE temperature_c IS NOT NULL "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        servers = conn.execute(
            "SELECT DISTINCT backend FROM slot WHERE backend IS NOT NULL ORDER BY backend"
        ).fetchall()
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc}") from exc
    finally:
        conn.close()
    runs: list[tuple[float, float | None]] = []
    for at, kind in marks:
        if kind == "run.start":
            runs.append((at, None))
        elif runs and runs[-1][1] is None:
            runs[-1] = (runs[-1][0], at)
    return Activity(
        runs=tuple(runs),
        last_event_at=last,
        recent_done_at=tuple(sorted(r[0] for r in done)),
        last_temperature_c=temp[0] if temp else None,
        servers=tuple(s[0] for s in servers),
    )


@dataclass(frozen=True)
class BackendActivity:
    """One server as a ledger knows it, for ``comfyline status``: its health as the latest run
    saw it (``up``, ``lost``, ``stopped on heat``, ``left out``), the images it made for the
    order, its server seconds per image and its card's latest temperature."""

    name: str
    health: str
    images: int
    seconds_per_image: float | None
    temperature_c: float | None


def read_backends(path: Path) -> tuple[BackendActivity, ...]:
    """Each server of the order's latest run (and any that made its images), read without the
    runner's lock."""
    conn = _read_only(path)
    try:
        conn.execute("BEGIN")
        start = conn.execute(
            "SELECT id, detail FROM event WHERE kind = 'run.start' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        made = conn.execute(
            "SELECT backend, sum(json_array_length(files)), sum(seconds) FROM slot "
            "WHERE state = 'done' AND backend IS NOT NULL GROUP BY backend"
        ).fetchall()
        health = conn.execute(
            "SELECT kind, detail FROM event WHERE kind LIKE 'backend.%' AND id > ? ORDER BY id",
            (start[0] if start else 0,),
        ).fetchall()
        temps = conn.execute(
            "SELECT note, temperature_c FROM reading WHERE id IN (SELECT max(id) FROM reading "
            "WHERE temperature_c IS NOT NULL GROUP BY note)"
        ).fetchall()
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc}") from exc
    finally:
        conn.close()
    listed = json.loads(start[1]).get("backends") or () if start else ()
    names = [str(b.get("name")) for b in listed]
    names += [row[0] for row in made if row[0] not in names]
    states = {"backend.lost": "lost", "backend.back": "up", "backend.left_out": "left out"}
    states["backend.stopped_on_heat"] = "stopped on heat"
    last: dict[str, str] = {}
    for kind, detail in health:
        if kind in states:
            last[str(json.loads(detail).get("backend"))] = states[kind]
    images = {row[0]: (int(row[1] or 0), float(row[2] or 0.0)) for row in made}
    temperature = dict(temps)
    return tuple(
        BackendActivity(
            name=name,
            health=last.get(name, "up"),
            images=images.get(name, (0, 0.0))[0],
            seconds_per_image=(
                images[name][1] / images[name][0] if images.get(name, (0,))[0] else None
            ),
            temperature_c=temperature.get(name),
        )
        for name in names
    )


class LedgerReader:
    """A read-only view of a ledger, without the runner's lock (for the web dashboard, which
    watches an order while a runner writes it). Rows carry their ``id`` so a reader can ask
    for what came after the last one it saw.

    >>> with LedgerReader.open(ledger_path(out)) as view:  # doctest: +SKIP
    ...     new = view.events(after=last_id)
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    @classmethod
    def open(cls, path: Path) -> LedgerReader:
        """Open the ledger at ``path`` read-only; :class:`LedgerError` if there is none."""
        path = Path(path)
        if not path.is_file():
            raise LedgerError(f"no ledger at {path}: the order has not been run yet")
        try:
            uri = f"{path.resolve().as_uri()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=10, check_same_thread=False)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {path}: {exc}") from exc
        return cls(path, conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self) -> int:
        """Changes whenever another connection commits (``PRAGMA data_version``): a cheap
        "anything new?" before the real queries."""
        return int(self._query("PRAGMA data_version", ())[0][0])

    def counts(self) -> SlotCounts:
        try:
            return _counts(self._conn)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read the ledger {self.path}: {exc}") from exc

    def events(self, *, after: int = 0, limit: int = 1000) -> list[tuple[int, LedgerEvent]]:
        """Log lines with an id above ``after``, oldest first, at most ``limit``."""
        rows = self._query(
            "SELECT id, at, kind, slot_idx, attempt, prompt_id, detail FROM event "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        )
        return [(r[0], LedgerEvent(r[1], r[2], r[3], r[4], r[5], json.loads(r[6]))) for r in rows]

    def latest_events(
        self, *, limit: int = 200, skip_kinds: Sequence[str] = ()
    ) -> list[tuple[int, LedgerEvent]]:
        """The newest ``limit`` log lines whose kind is not in ``skip_kinds``, oldest first."""
        marks = ", ".join("?" for _ in skip_kinds) or "NULL"
        rows = self._query(
            "SELECT id, at, kind, slot_idx, attempt, prompt_id, detail FROM event "
            f"WHERE kind NOT IN ({marks}) ORDER BY id DESC LIMIT ?",
            (*skip_kinds, limit),
        )
        return [(r[0], LedgerEvent(r[1], r[2], r[3], r[4], r[5], json.loads(r[6]))) for r in rows][
            ::-1
        ]

    def last_event_id(self) -> int:
        return int(self._query("SELECT coalesce(max(id), 0) FROM event", ())[0][0])

    def last_reading_id(self) -> int:
        return int(self._query("SELECT coalesce(max(id), 0) FROM reading", ())[0][0])

    def readings(self, *, after: int = 0, limit: int = 5000) -> list[tuple[int, Reading]]:
        """Sensor readings with an id above ``after``, oldest first, at most ``limit``."""
        rows = self._query(
            "SELECT id, at, temperature_c, power_w, vram_free_mb, vram_total_mb, images_done, "
            "note FROM reading WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        )
        return [(r[0], Reading(*r[1:])) for r in rows]

    def slot(self, index: int) -> SlotRecord:
        """One slot; :class:`LedgerError` if there is no slot ``index``."""
        rows = self._query(f"SELECT {_SLOT_COLUMNS} FROM slot WHERE idx = ?", (index,))
        if not rows:
            raise LedgerError(f"the ledger {self.path} has no slot {index}")
        return _slot_record(rows[0])

    def done_slots(
        self, *, offset: int = 0, limit: int = 100, newest_first: bool = False
    ) -> list[SlotRecord]:
        """Done slots by index (or newest first), one page of them."""
        order = "updated DESC, idx DESC" if newest_first else "idx"
        rows = self._query(
            f"SELECT {_SLOT_COLUMNS} FROM slot WHERE state = ? ORDER BY {order} LIMIT ? OFFSET ?",
            (SlotState.DONE.value, limit, offset),
        )
        return [_slot_record(r) for r in rows]

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read the ledger {self.path}: {exc}") from exc
