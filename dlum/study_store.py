"""The reading-session store: one SQLite file holding a reader study run in the dashboard.

Follows the reader study of Xu et al. (Breast Cancer Research 2025, DL-UM): each reader reads
every case unaided (session 1), then, after a washout, again with DL-UM's output (session 2),
accepting or rejecting it and optionally asking for the heatmap explanation.

* **File**: ``study.sqlite`` in the folder of ``DLUM_STUDY_DIR`` (:func:`dlum.settings.study_dir`),
  WAL journal, foreign keys on. The schema is versioned by ``PRAGMA user_version``;
  :data:`MIGRATIONS` are applied in order when a file is opened, so an older file is upgraded in
  place (one transaction per step).
* **Codes**: the admin code and each reader's code are stored only as salted scrypt hashes
  (:func:`hash_code`) and compared with :func:`hmac.compare_digest`.
* **No going back**: a read is committed when submitted; triggers refuse any UPDATE or DELETE of
  ``reads``, a UNIQUE constraint refuses a second read of a case in a session, and a reader can
  only submit the next case of their own order.
* **Washout**: session 2 opens ``washout_days`` after the reader's last session-1 read (0 = at
  once, for demos).
* **Order**: each reader's case order in each session is a permutation drawn by
  :func:`case_order` from the study's seed, the reader's name and the session; it is recorded in
  ``case_order``.
* **Isolation**: reader methods take the :class:`Reader` returned by :meth:`StudyStore.sign_in`
  and only ever touch that reader's rows; study-wide views (export, progress of everyone, the
  analysis table) take the :class:`Admin` returned by :meth:`StudyStore.admin_sign_in`.
* **What DL-UM showed**: an aided read records DL-UM's probability, threshold and call as shown
  (:class:`AIOutput`), so acceptance can be analysed against what the reader saw.
* **Export**: :meth:`StudyStore.reads_frame` is a reads table :func:`dlum.readers.read_reads`
  reads; :meth:`StudyStore.load_joined` gives the joined table the Reader Study analysis uses.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import io
import json
import math
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dlum.constants import MODALITIES
from dlum.errors import StudyError

__all__ = [
    "STORE_FILE",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SESSIONS",
    "EXPERIENCE",
    "BIRADS_CHOICES",
    "CALLS",
    "MIN_CODE_LENGTH",
    "Admin",
    "Reader",
    "Status",
    "StudyCase",
    "AIOutput",
    "StudyStore",
    "hash_code",
    "check_code",
    "case_order",
    "default_store",
]

STORE_FILE = "study.sqlite"
UNAIDED, AIDED = "unaided", "aided"
SESSIONS = (UNAIDED, AIDED)
EXPERIENCE = ("junior", "senior")
#: A reader's BI-RADS, stored as given (4a/4b/4c kept).
BIRADS_CHOICES = ("2", "3", "4", "4a", "4b", "4c", "5")
CALLS = ("benign", "malignant")
MIN_CODE_LENGTH = 4
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
#: A secret per store file for this process, handed out as :class:`Admin` once the code is checked.
_ADMIN_TOKENS: dict[str, str] = {}

_NO_CHANGE = """
CREATE TRIGGER reads_never_updated BEFORE UPDATE ON reads
BEGIN SELECT RAISE(ABORT, 'a submitted read cannot be changed'); END;
CREATE TRIGGER reads_never_deleted BEFORE DELETE ON reads
BEGIN SELECT RAISE(ABORT, 'a submitted read cannot be deleted'); END;
"""

#: Schema steps; step i takes a file from user_version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    # 1: study, readers, cases, per-reader order, reads
    """
    CREATE TABLE admin (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        code_hash TEXT NOT NULL,
        created_at TEXT NOT NULL);
    CREATE TABLE study (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        cohort_ref TEXT NOT NULL,
        washout_days REAL NOT NULL CHECK (washout_days >= 0),
        order_seed INTEGER NOT NULL,
        created_at TEXT NOT NULL);
    CREATE TABLE readers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        modality TEXT NOT NULL CHECK (modality IN ('us', 'mg')),
        experience TEXT NOT NULL CHECK (experience IN ('junior', 'senior')),
        code_hash TEXT NOT NULL,
        created_at TEXT NOT NULL);
    CREATE TABLE cases (
        case_id TEXT PRIMARY KEY,
        position INTEGER NOT NULL UNIQUE,
        label INTEGER NOT NULL CHECK (label IN (0, 1)),
        subgroup TEXT NOT NULL,
        us_image TEXT,
        mg_image TEXT,
        info TEXT NOT NULL DEFAULT '{}');
    CREATE TABLE case_order (
        reader_id INTEGER NOT NULL REFERENCES readers(id),
        session TEXT NOT NULL CHECK (session IN ('unaided', 'aided')),
        position INTEGER NOT NULL,
        case_id TEXT NOT NULL REFERENCES cases(case_id),
        PRIMARY KEY (reader_id, session, position),
        UNIQUE (reader_id, session, case_id));
    CREATE TABLE reads (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        reader_id INTEGER NOT NULL REFERENCES readers(id),
        case_id TEXT NOT NULL REFERENCES cases(case_id),
        session TEXT NOT NULL CHECK (session IN ('unaided', 'aided')),
        position INTEGER NOT NULL,
        birads TEXT NOT NULL CHECK (birads IN ('2', '3', '4', '4a', '4b', '4c', '5')),
        call TEXT NOT NULL CHECK (call IN ('benign', 'malignant')),
        confidence INTEGER NOT NULL CHECK (confidence BETWEEN 0 AND 100),
        accepted_ai INTEGER CHECK (accepted_ai IN (0, 1)),
        requested_explanation INTEGER NOT NULL DEFAULT 0 CHECK (requested_explanation IN (0, 1)),
        submitted_at TEXT NOT NULL,
        UNIQUE (reader_id, session, case_id),
        UNIQUE (reader_id, session, position));
    """ + _NO_CHANGE,
    # 2: the time of each explanation request (logged when asked, before the read is submitted)
    """
    ALTER TABLE reads ADD COLUMN explanation_at TEXT;
    CREATE TABLE explanation_requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        reader_id INTEGER NOT NULL REFERENCES readers(id),
        case_id TEXT NOT NULL REFERENCES cases(case_id),
        session TEXT NOT NULL CHECK (session IN ('unaided', 'aided')),
        requested_at TEXT NOT NULL);
    CREATE INDEX explanation_requests_by_read ON explanation_requests (reader_id, session, case_id);
    """,
    # 3: each case's ROI boxes (for the heatmaps), and what DL-UM showed the reader in session 2
    """
    ALTER TABLE cases ADD COLUMN us_box TEXT;
    ALTER TABLE cases ADD COLUMN mg_box TEXT;
    ALTER TABLE reads ADD COLUMN ai_probability REAL
        CHECK (ai_probability IS NULL OR (ai_probability >= 0 AND ai_probability <= 1));
    ALTER TABLE reads ADD COLUMN ai_threshold REAL
        CHECK (ai_threshold IS NULL OR (ai_threshold >= 0 AND ai_threshold <= 1));
    ALTER TABLE reads ADD COLUMN ai_call TEXT CHECK (ai_call IS NULL OR ai_call IN ('benign', 'malignant'));
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


# ------------------------------------------------------------------------------------ codes
def hash_code(code: str) -> str:
    """``scrypt$n$r$p$salt$hash`` of ``code`` with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(code.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt${n}${r}${p}${salt}${digest}".format(**_SCRYPT, salt=salt.hex(), digest=digest.hex())


def check_code(code: str, stored: str) -> bool:
    """Whether ``code`` gives the ``stored`` hash (constant-time comparison)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(str(code).encode("utf-8"), salt=bytes.fromhex(salt), dklen=32,
                             n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


def _check_new_code(code: str, what: str) -> str:
    code = str(code or "")
    if len(code.strip()) < MIN_CODE_LENGTH:
        raise StudyError(f"The {what} code needs at least {MIN_CODE_LENGTH} characters.")
    return code


# ------------------------------------------------------------------------------------ order
def case_order(seed: int, reader: str, session: str, case_ids) -> list[str]:
    """The order in which ``reader`` reads ``case_ids`` in ``session``: a permutation drawn by
    ``numpy.random.default_rng`` from the study seed, the session and the reader's name, so the
    same study gives the same orders, and readers and sessions get different ones."""
    words = np.frombuffer(hashlib.sha256(reader.encode("utf-8")).digest(), dtype=np.uint32)
    rng = np.random.default_rng([int(seed), SESSIONS.index(session), *map(int, words)])
    ids = list(case_ids)
    return [ids[i] for i in rng.permutation(len(ids))]


# ------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class Admin:
    """Proof that the admin code was given (from :meth:`StudyStore.admin_sign_in`)."""

    token: str


@dataclass(frozen=True)
class Reader:
    """A signed-in reader (from :meth:`StudyStore.sign_in`)."""

    id: int
    name: str
    modality: str
    experience: str


@dataclass(frozen=True)
class StudyCase:
    """What a reader may see of a case: never its pathology or subgroup. The boxes
    ``(x0, y0, x1, y1)`` (None: whole image) are the lesion ROIs the heatmaps are computed on."""

    case_id: str
    us_image: str | None
    mg_image: str | None
    info: dict
    us_box: tuple[int, int, int, int] | None = None
    mg_box: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class AIOutput:
    """What DL-UM showed the reader of an aided read: P(malignant), the operating threshold and
    the call (P >= threshold: malignant), recorded with the read."""

    probability: float
    threshold: float
    call: str

    def __post_init__(self) -> None:
        for name in ("probability", "threshold"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
                raise StudyError(f"DL-UM's {name} must be a number in [0, 1], got {value!r}.")
        if self.call not in CALLS:
            raise StudyError("DL-UM's call must be benign or malignant.")


@dataclass(frozen=True)
class Status:
    """Where a reader stands: the open ``session`` (None when finished or waiting for the washout),
    ``done`` of ``total`` reads in it, the ``case_id`` to read next, and when session 2 opens."""

    session: str | None
    done: int
    total: int
    case_id: str | None
    finished: bool
    opens_at: dt.datetime | None
    unaided_done: int
    aided_done: int

    @property
    def waiting(self) -> bool:
        return self.session is None and not self.finished


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def _flag_text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        "true" if int(value) else "false")


# ------------------------------------------------------------------------------------ store
class StudyStore:
    """One study in one SQLite file (see the module docstring). ``clock`` gives the current time
    (UTC-aware; tests pass their own)."""

    def __init__(self, path: str | Path, *, clock: Callable[[], dt.datetime] | None = None):
        self.path = Path(path)
        self.clock = clock or _utc_now

    # ---------------------------------------------------------------- connection and schema
    @property
    def exists(self) -> bool:
        return self.path.is_file()

    @contextlib.contextmanager
    def _db(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if not write and not self.exists:
            raise StudyError("No study has been set up yet.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA foreign_keys = ON")
            con.execute("PRAGMA busy_timeout = 10000")
            self._migrate(con)
            if write:
                con.execute("BEGIN IMMEDIATE")
                try:
                    yield con
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
            else:
                yield con
        finally:
            con.close()

    @staticmethod
    def _migrate(con: sqlite3.Connection) -> None:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StudyError(f"The study file has schema version {version}; this dlum knows up to "
                             f"{SCHEMA_VERSION}. Update dlum to open it.")
        if version == SCHEMA_VERSION:
            return
        if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            con.execute("PRAGMA journal_mode = WAL")
        # Take the write lock, then read the version again: another process opening the same
        # older file may have upgraded it meanwhile, and a step must never run twice.
        con.execute("BEGIN IMMEDIATE")
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            for step in range(version, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[step]):
                    con.execute(statement)
                con.execute(f"PRAGMA user_version = {step + 1}")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def schema_version(self) -> int:
        with self._db() as con:
            return con.execute("PRAGMA user_version").fetchone()[0]

    # ---------------------------------------------------------------- admin
    def has_admin(self) -> bool:
        if not self.exists:
            return False
        with self._db() as con:
            return con.execute("SELECT 1 FROM admin").fetchone() is not None

    def set_admin_code(self, code: str) -> Admin:
        """Set the admin code (first visit only) and sign in as admin."""
        code = _check_new_code(code, "admin")
        with self._db(write=True) as con:
            if con.execute("SELECT 1 FROM admin").fetchone():
                raise StudyError("The admin code is already set.")
            con.execute("INSERT INTO admin (id, code_hash, created_at) VALUES (1, ?, ?)",
                        (hash_code(code), _iso(self.clock())))
        return self._admin()

    def admin_sign_in(self, code: str) -> Admin:
        """The admin, or StudyError for a wrong code."""
        row = None
        if self.exists:
            with self._db() as con:
                row = con.execute("SELECT code_hash FROM admin").fetchone()
        if row is None or not check_code(code, row["code_hash"]):
            raise StudyError("Wrong admin code.")
        return self._admin()

    def _admin(self) -> Admin:
        return Admin(_ADMIN_TOKENS.setdefault(str(self.path.resolve()), secrets.token_hex(16)))

    def _require_admin(self, admin: Admin) -> None:
        token = _ADMIN_TOKENS.get(str(self.path.resolve()))
        if not isinstance(admin, Admin) or token is None or not hmac.compare_digest(admin.token, token):
            raise StudyError("This needs the admin code.")

    # ---------------------------------------------------------------- study set-up
    def study(self) -> dict | None:
        """cohort_ref, washout_days, order_seed, created_at, cases, readers (None: no study)."""
        if not self.exists:
            return None
        with self._db() as con:
            row = con.execute("SELECT * FROM study").fetchone()
            if row is None:
                return None
            out = dict(row)
            out["cases"] = con.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
            out["readers"] = con.execute("SELECT COUNT(*) FROM readers").fetchone()[0]
        return out

    def create_study(self, admin: Admin, cases: pd.DataFrame, *, cohort_ref: str,
                     washout_days: float = 60, seed: int = 0) -> None:
        """Record the study and its cases (``case_id, label`` 0/1, ``subgroup``; optional
        ``us_image, mg_image``, ``us_box, mg_box`` (``(x0, y0, x1, y1)`` or None) and ``info``
        (a dict per case of what readers may see))."""
        self._require_admin(admin)
        washout_days = self._washout(washout_days)
        if cases is None or len(cases) == 0:
            raise StudyError("The cohort has no cases.")
        if cases["case_id"].duplicated().any():
            raise StudyError("The cohort lists a case twice.")
        with self._db(write=True) as con:
            if con.execute("SELECT 1 FROM study").fetchone():
                raise StudyError("A study is already set up in this store.")
            con.execute("INSERT INTO study VALUES (1, ?, ?, ?, ?)",
                        (str(cohort_ref), washout_days, int(seed), _iso(self.clock())))
            for pos, row in enumerate(cases.to_dict("records")):
                con.execute(
                    "INSERT INTO cases (case_id, position, label, subgroup, us_image, mg_image, info, "
                    "us_box, mg_box) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (str(row["case_id"]), pos, int(row["label"]), str(row.get("subgroup") or "undetermined"),
                     _text_or_none(row.get("us_image")), _text_or_none(row.get("mg_image")),
                     json.dumps(row.get("info") or {}, default=str),
                     _box_text(row.get("us_box"), row["case_id"]), _box_text(row.get("mg_box"), row["case_id"])))

    @staticmethod
    def _washout(days) -> float:
        try:
            days = float(days)
        except (TypeError, ValueError):
            raise StudyError(f"Washout {days!r} is not a number of days.") from None
        if not math.isfinite(days) or days < 0:
            raise StudyError("The washout must be 0 days or more.")
        return days

    def set_washout(self, admin: Admin, days: float) -> None:
        """Change the washout (0 opens session 2 at once, for demos)."""
        self._require_admin(admin)
        days = self._washout(days)
        with self._db(write=True) as con:
            con.execute("UPDATE study SET washout_days = ?", (days,))

    def add_reader(self, admin: Admin, name: str, modality: str, experience: str, code: str) -> None:
        """Add a reader and record their case order for both sessions."""
        self._require_admin(admin)
        name = str(name or "").strip()
        if not name:
            raise StudyError("Give the reader a name.")
        if modality not in MODALITIES:
            raise StudyError(f"Modality must be one of {', '.join(MODALITIES)}.")
        if experience not in EXPERIENCE:
            raise StudyError(f"Experience must be one of {', '.join(EXPERIENCE)}.")
        code = _check_new_code(code, "reader")
        with self._db(write=True) as con:
            study = con.execute("SELECT order_seed FROM study").fetchone()
            if study is None:
                raise StudyError("Set up the study before adding readers.")
            if con.execute("SELECT 1 FROM readers WHERE name = ?", (name,)).fetchone():
                raise StudyError(f"There is already a reader named {name!r}.")
            cur = con.execute("INSERT INTO readers (name, modality, experience, code_hash, created_at) "
                              "VALUES (?, ?, ?, ?, ?)",
                              (name, modality, experience, hash_code(code), _iso(self.clock())))
            ids = [r[0] for r in con.execute("SELECT case_id FROM cases ORDER BY position")]
            for session in SESSIONS:
                for pos, case in enumerate(case_order(study["order_seed"], name, session, ids)):
                    con.execute("INSERT INTO case_order VALUES (?, ?, ?, ?)",
                                (cur.lastrowid, session, pos, case))

    def readers(self, admin: Admin) -> pd.DataFrame:
        """Every reader with their progress (admin only)."""
        self._require_admin(admin)
        with self._db() as con:
            return pd.read_sql_query(
                "SELECT r.name AS reader, r.modality, r.experience, "
                "COALESCE(SUM(x.session = 'unaided'), 0) AS unaided_reads, "
                "COALESCE(SUM(x.session = 'aided'), 0) AS aided_reads "
                "FROM readers r LEFT JOIN reads x ON x.reader_id = r.id GROUP BY r.id ORDER BY r.id", con)

    # ---------------------------------------------------------------- reading
    def sign_in(self, name: str, code: str) -> Reader:
        """The reader, or StudyError (same message for an unknown name and a wrong code)."""
        row = None
        if self.exists:
            with self._db() as con:
                row = con.execute("SELECT * FROM readers WHERE name = ?", (str(name).strip(),)).fetchone()
        if row is None or not check_code(code, row["code_hash"]):
            raise StudyError("Unknown reader or wrong code.")
        return Reader(row["id"], row["name"], row["modality"], row["experience"])

    def _status(self, con: sqlite3.Connection, reader: Reader) -> Status:
        study = con.execute("SELECT washout_days FROM study").fetchone()
        total = con.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
        counts = {s: con.execute("SELECT COUNT(*) FROM reads WHERE reader_id = ? AND session = ?",
                                 (reader.id, s)).fetchone()[0] for s in SESSIONS}

        def next_case(session: str) -> str:
            return con.execute("SELECT case_id FROM case_order WHERE reader_id = ? AND session = ? "
                               "AND position = ?", (reader.id, session, counts[session])).fetchone()[0]

        common = dict(total=total, unaided_done=counts[UNAIDED], aided_done=counts[AIDED])
        if counts[UNAIDED] < total:
            return Status(UNAIDED, counts[UNAIDED], case_id=next_case(UNAIDED), finished=False,
                          opens_at=None, **common)
        if counts[AIDED] >= total:
            return Status(None, counts[AIDED], case_id=None, finished=True, opens_at=None, **common)
        ended = con.execute("SELECT MAX(submitted_at) FROM reads WHERE reader_id = ? AND session = ?",
                            (reader.id, UNAIDED)).fetchone()[0]
        opens = dt.datetime.fromisoformat(ended) + dt.timedelta(days=float(study["washout_days"]))
        if counts[AIDED] == 0 and self.clock() < opens:
            return Status(None, 0, case_id=None, finished=False, opens_at=opens, **common)
        return Status(AIDED, counts[AIDED], case_id=next_case(AIDED), finished=False, opens_at=opens,
                      **common)

    def status(self, reader: Reader) -> Status:
        """Where ``reader`` stands (their own reads only)."""
        with self._db() as con:
            return self._status(con, reader)

    def case(self, reader: Reader, case_id: str) -> StudyCase:
        """What ``reader`` may see of their current case."""
        with self._db() as con:
            status = self._status(con, reader)
            if case_id != status.case_id:
                raise StudyError("That is not your current case.")
            row = con.execute("SELECT case_id, us_image, mg_image, info, us_box, mg_box FROM cases "
                              "WHERE case_id = ?", (case_id,)).fetchone()
        return StudyCase(row["case_id"], row["us_image"], row["mg_image"], json.loads(row["info"]),
                         _box_of(row["us_box"]), _box_of(row["mg_box"]))

    def request_explanation(self, reader: Reader, case_id: str) -> dt.datetime:
        """Log that ``reader`` asked for the heatmap explanation of their current (aided) case."""
        now = self.clock()
        with self._db(write=True) as con:
            status = self._status(con, reader)
            if status.session != AIDED or case_id != status.case_id:
                raise StudyError("Explanations are given in the aided session, for the current case.")
            con.execute("INSERT INTO explanation_requests (reader_id, case_id, session, requested_at) "
                        "VALUES (?, ?, ?, ?)", (reader.id, case_id, AIDED, _iso(now)))
        return now

    def explanation_requested(self, reader: Reader, case_id: str) -> bool:
        with self._db() as con:
            return con.execute("SELECT 1 FROM explanation_requests WHERE reader_id = ? AND case_id = ? "
                               "AND session = ?", (reader.id, case_id, AIDED)).fetchone() is not None

    def submit_read(self, reader: Reader, case_id: str, *, birads: str, call: str, confidence: int,
                    accepted_ai: bool | None = None, ai: AIOutput | None = None) -> Status:
        """Commit ``reader``'s read of their current case; returns the new status. ``ai`` is what
        DL-UM showed in session 2 (recorded with the read, for the acceptance analysis).

        Raises StudyError: not the current case (reads are submitted in order, once), a session
        not open, a bad BI-RADS / call / confidence, ``accepted_ai`` or ``ai`` given in session 1."""
        birads = str(birads).strip().lower()
        if birads not in BIRADS_CHOICES:
            raise StudyError(f"BI-RADS must be one of {', '.join(BIRADS_CHOICES)}.")
        if call not in CALLS:
            raise StudyError("The call must be benign or malignant.")
        try:
            confidence = int(confidence)
        except (TypeError, ValueError):
            raise StudyError("Confidence must be a whole number 0-100.") from None
        if not 0 <= confidence <= 100:
            raise StudyError("Confidence must be 0-100.")
        now = self.clock()
        with self._db(write=True) as con:
            status = self._status(con, reader)
            if status.session is None:
                raise StudyError("You have no open session." if status.finished or status.opens_at is None
                                 else f"Session 2 opens on {status.opens_at:%Y-%m-%d %H:%M} UTC.")
            if case_id != status.case_id:
                raise StudyError("That is not your current case: reads are submitted in order, and a "
                                 "submitted read cannot be changed.")
            if status.session == UNAIDED and (accepted_ai is not None or ai is not None):
                raise StudyError("There is no AI suggestion to accept in the unaided session.")
            asked = con.execute("SELECT MIN(requested_at) FROM explanation_requests WHERE reader_id = ? "
                                "AND case_id = ? AND session = ?",
                                (reader.id, case_id, status.session)).fetchone()[0]
            con.execute(
                "INSERT INTO reads (reader_id, case_id, session, position, birads, call, confidence, "
                "accepted_ai, requested_explanation, submitted_at, explanation_at, ai_probability, "
                "ai_threshold, ai_call) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (reader.id, case_id, status.session, status.done, birads, call, confidence,
                 None if accepted_ai is None else int(bool(accepted_ai)), int(asked is not None),
                 _iso(now), asked, None if ai is None else float(ai.probability),
                 None if ai is None else float(ai.threshold), None if ai is None else ai.call))
            return self._status(con, reader)

    def my_reads(self, reader: Reader) -> pd.DataFrame:
        """``reader``'s own reads (never anyone else's)."""
        with self._db() as con:
            return pd.read_sql_query(
                "SELECT case_id, session, position, birads, call, confidence, accepted_ai, "
                "requested_explanation, submitted_at FROM reads WHERE reader_id = ? "
                "ORDER BY session DESC, position", con, params=(reader.id,))

    # ---------------------------------------------------------------- export and analysis
    def reads_frame(self, admin: Admin) -> pd.DataFrame:
        """Every read as a reads table (:data:`dlum.readers.READS_SCHEMA` columns first, then
        ``experience, confidence, position, explanation_at, submitted_at`` and what DL-UM showed:
        ``ai_probability, ai_threshold, ai_call``)."""
        self._require_admin(admin)
        with self._db() as con:
            frame = pd.read_sql_query(
                "SELECT x.case_id, r.name AS reader, r.modality, x.session, x.call, x.birads, "
                "x.accepted_ai, x.requested_explanation, r.experience, x.confidence, x.position, "
                "x.explanation_at, x.submitted_at, x.ai_probability, x.ai_threshold, x.ai_call "
                "FROM reads x JOIN readers r ON r.id = x.reader_id "
                "ORDER BY r.id, x.session DESC, x.position", con)
        frame["accepted_ai"] = [_flag_text(v) for v in frame["accepted_ai"]]
        frame["requested_explanation"] = [
            _flag_text(v) if s == AIDED else "" for v, s in zip(frame["requested_explanation"], frame["session"])]
        return frame

    def cohort_frame(self, admin: Admin) -> pd.DataFrame:
        """``case_id, label, subgroup`` of the study's cases (a :func:`dlum.readers.read_study_cohort` table)."""
        self._require_admin(admin)
        with self._db() as con:
            return pd.read_sql_query("SELECT case_id, label, subgroup FROM cases ORDER BY position", con)

    def load_joined(self, admin: Admin) -> pd.DataFrame:
        """The reads joined with each case's label and subgroup, as the Reader Study page's
        ``load_study`` returns them (via :mod:`dlum.readers`), plus each read's ``confidence`` and
        what DL-UM showed (``ai_probability, ai_threshold, ai_call``)."""
        from dlum import readers as rs

        raw = self.reads_frame(admin)
        reads = rs.read_reads(io.BytesIO(raw.to_csv(index=False).encode()), name="study store reads")
        cohort = rs.read_study_cohort(io.BytesIO(self.cohort_frame(admin).to_csv(index=False).encode()),
                                      name="study store cohort")
        joined = rs.join_reads(reads, cohort)
        conf = raw[["case_id", "reader", "session", "confidence", *_AI_COLUMNS]]
        # read_reads already parses confidence / ai_call: the store's own columns replace them
        joined = joined.drop(columns=[c for c in conf.columns if c in joined.columns
                                      and c not in ("case_id", "reader", "session")])
        out = joined.merge(conf, on=["case_id", "reader", "session"], how="left")
        out.attrs.update(joined.attrs)
        return out


_AI_COLUMNS = ("ai_probability", "ai_threshold", "ai_call")


def _statements(script: str) -> list[str]:
    """The SQL statements of a migration script, split where sqlite3 says a statement is
    complete (so a trigger's body stays whole); ``executescript`` would commit the open
    transaction first, so each statement runs on its own inside it."""
    out, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                out.append(pending.strip())
            pending = ""
    if pending.strip():
        out.append(pending.strip())
    return out


def _box_text(box, case_id) -> str | None:
    """A case's ROI box as stored (JSON list of four whole pixels), None for the whole image."""
    if box is None or (isinstance(box, float) and math.isnan(box)):
        return None
    try:
        values = [int(round(float(v))) for v in box]
    except (TypeError, ValueError):
        raise StudyError(f"Case {case_id}: the box {box!r} is not four numbers.") from None
    if len(values) != 4 or values[2] <= values[0] or values[3] <= values[1] or min(values) < 0:
        raise StudyError(f"Case {case_id}: the box {box!r} is not (x0, y0, x1, y1) with x1 > x0, y1 > y0.")
    return json.dumps(values)


def _box_of(text: str | None) -> tuple[int, int, int, int] | None:
    return None if not text else tuple(json.loads(text))


def _text_or_none(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def default_store(environ=None, **kwargs) -> StudyStore:
    """The store in ``DLUM_STUDY_DIR`` (:func:`dlum.settings.study_dir`)."""
    from dlum.settings import study_dir

    return StudyStore(study_dir(environ) / STORE_FILE, **kwargs)
