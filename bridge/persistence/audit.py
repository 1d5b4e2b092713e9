"""A hash-chained, content-free audit trail: who did what, when, to which engagement.

Each row names its actor by a keyed hash of the Matrix id (:func:`actor_ref`),
never the id itself, so a line survives a client's erasure without naming
anyone, while the operator can still find every line of a given user by
computing the same reference. ``detail`` holds a short code (an outcome, a risk
level, a reference) and nothing else: the pattern leaves no room for text.

Every row carries ``hash = HMAC(key, prev_hash | seq | at | actor | action |
engagement_id | detail)``. The key derives from the sealing key, so without it
nobody can rewrite a row and recompute the chain. The last ``(seq, hash)`` is
also kept in ``audit_head``: removing the newest row leaves the head pointing
past the end, which :func:`verify` reports like any other break.

What a chain cannot catch: someone with write access to the file who removes
newer rows *and* rewinds the head to an older row. Detecting that needs a copy
of the head outside the database (a backup, the log); the bridge logs the
sequence number of every append for that reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass

from e2ecounsel.store import Database

log = logging.getLogger(__name__)

#: ``prev_hash`` of the first row.
GENESIS = "0" * 64
#: Actors that are roles, not people; stored as they are. Everyone else is a
#: Matrix id and stored only as :func:`actor_ref`.
ROLE_ACTORS = frozenset({"operator", "bridge", "system"})
#: Hex digits of an actor reference (128 bits).
REF_LENGTH = 32

_ACTION_RE = re.compile(r"[a-z][a-z0-9_.-]{0,47}")
_DETAIL_RE = re.compile(r"[a-z0-9_.:-]{0,64}")
_USER_ID_RE = re.compile(r"@[^:\s]+:\S+")


@dataclass(frozen=True)
class AuditLine:
    """One row as stored (``actor`` is a role or an :func:`actor_ref`)."""

    seq: int
    at: str
    actor: str
    action: str
    engagement_id: int | None
    detail: str


@dataclass(frozen=True)
class AuditReport:
    """The result of :func:`verify`; ``first_bad_seq`` and ``problem`` are set when not ok."""

    ok: bool
    rows: int
    first_bad_seq: int | None = None
    problem: str | None = None


def actor_ref(key: bytes, user_id: str) -> str:
    """The stored stand-in for a Matrix id: same id, same reference; no way back without the key."""
    mac = hmac.new(key, b"actor\x00" + user_id.encode(), hashlib.sha256)
    return mac.hexdigest()[:REF_LENGTH]


def stored_actor(key: bytes, actor: str) -> str:
    """What the ``actor`` column holds for ``actor``: a role as is, a Matrix id as its reference.

    Anything else is refused, so a pseudonym or a name can never land in the
    column by mistake.
    """
    if actor in ROLE_ACTORS:
        return actor
    if _USER_ID_RE.fullmatch(actor):
        return actor_ref(key, actor)
    raise ValueError(
        "an audit actor is a Matrix user id or one of " + ", ".join(sorted(ROLE_ACTORS))
    )


def check_detail(detail: str) -> str:
    """``detail`` if it is a short code; ValueError otherwise (no free text in the audit)."""
    if not _DETAIL_RE.fullmatch(detail):
        raise ValueError("an audit detail is a short code: a-z, 0-9, '_', '.', ':', '-', up to 64")
    return detail


def _row_hash(
    key: bytes,
    prev_hash: str,
    seq: int,
    at: str,
    actor: str,
    action: str,
    engagement_id: int | None,
    detail: str,
) -> str:
    # JSON gives an unambiguous encoding: no field can bleed into the next.
    message = json.dumps(
        [prev_hash, seq, at, actor, action, engagement_id, detail],
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


async def append(
    db: Database,
    key: bytes,
    *,
    actor: str,
    action: str,
    engagement_id: int | None = None,
    detail: str = "",
    at: str,
) -> int:
    """Add one line to the chain and return its sequence number.

    Runs in its own transaction, or as a savepoint of the caller's, so the line
    commits (or rolls back) together with the change it records.
    """
    if not _ACTION_RE.fullmatch(action):
        raise ValueError("an audit action is a short code such as 'counselor.add'")
    detail = check_detail(detail)
    stored = stored_actor(key, actor)
    async with db.transaction():
        head = await db.fetchone("SELECT seq, hash FROM audit_head WHERE id = 1")
        prev_seq, prev_hash = (int(head["seq"]), str(head["hash"])) if head else (0, GENESIS)
        seq = prev_seq + 1
        digest = _row_hash(key, prev_hash, seq, at, stored, action, engagement_id, detail)
        await db.execute(
            "INSERT INTO audit (seq, at, actor, action, engagement_id, detail, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, at, stored, action, engagement_id, detail, prev_hash, digest),
        )
        await db.execute(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (seq, digest),
        )
    log.info("audit line %d: %s", seq, action)
    return seq


async def lines(
    db: Database, *, actor: str | None = None, engagement_id: int | None = None
) -> list[AuditLine]:
    """Stored lines in order, optionally only those of one stored actor or one engagement.

    ``actor`` is the stored form (a role or an :func:`actor_ref`).
    """
    rows = await db.fetchall(
        "SELECT seq, at, actor, action, engagement_id, detail FROM audit "
        "WHERE (CAST(:actor AS TEXT) IS NULL OR actor = :actor) "
        "AND (CAST(:eng AS BIGINT) IS NULL OR engagement_id = :eng) ORDER BY seq",
        {"actor": actor, "eng": engagement_id},
    )
    return [
        AuditLine(
            int(r["seq"]),
            str(r["at"]),
            str(r["actor"]),
            str(r["action"]),
            None if r["engagement_id"] is None else int(r["engagement_id"]),
            str(r["detail"]),
        )
        for r in rows
    ]


async def verify(db: Database, key: bytes) -> AuditReport:
    """Walk the chain; report the first row that was changed, removed or moved.

    Sequence numbers must run 1, 2, 3, … without a gap; each row must point at
    the hash of the one before and carry the hash of its own fields; the head
    must name the last row. A reordered row fails the hash check because the
    sequence number is part of what is hashed.
    """
    rows = await db.fetchall(
        "SELECT seq, at, actor, action, engagement_id, detail, prev_hash, hash "
        "FROM audit ORDER BY seq"
    )
    head = await db.fetchone("SELECT seq, hash FROM audit_head WHERE id = 1")
    expected_seq, prev_hash = 1, GENESIS
    for row in rows:
        seq = int(row["seq"])
        if seq != expected_seq:
            return AuditReport(False, len(rows), expected_seq, f"row {expected_seq} is missing")
        if row["prev_hash"] != prev_hash:
            return AuditReport(
                False, len(rows), seq, "does not follow the row before (removed or moved)"
            )
        engagement = row["engagement_id"]
        digest = _row_hash(
            key,
            prev_hash,
            seq,
            str(row["at"]),
            str(row["actor"]),
            str(row["action"]),
            None if engagement is None else int(engagement),
            str(row["detail"]),
        )
        if not hmac.compare_digest(digest, str(row["hash"])):
            return AuditReport(False, len(rows), seq, "was changed after it was written")
        expected_seq, prev_hash = seq + 1, digest
    last_seq = expected_seq - 1
    if head is None:
        if rows:
            return AuditReport(False, len(rows), last_seq, "the chain head is missing")
        return AuditReport(True, 0)
    if int(head["seq"]) != last_seq:
        if int(head["seq"]) > last_seq:
            return AuditReport(
                False, len(rows), last_seq + 1, f"row {last_seq + 1} (the newest) is missing"
            )
        return AuditReport(False, len(rows), int(head["seq"]) + 1, "the chain head was rewound")
    if not hmac.compare_digest(str(head["hash"]), prev_hash):
        return AuditReport(False, len(rows), last_seq, "the chain head does not match")
    return AuditReport(True, len(rows))
