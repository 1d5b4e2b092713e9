"""The bridge's database schema, as an ordered list of migrations.

Sensitive values are sealed columns (BLOB, via ``Database.seal`` with a
``table.column`` context): intake answers, pseudonyms, topics, scores, the
outbox content, survey comments. Identifiers the homeserver already knows
(Matrix user and room ids) stay in clear so rows can be joined and found.

Rules that must hold whatever the code does are constraints here: one open
engagement per client, capacity above zero, known risk levels and outcomes.
"""

from __future__ import annotations

from e2ecounsel.store import Database, MigrationRegistry

MIGRATIONS = MigrationRegistry()

MIGRATIONS.add_sql(
    "core tables: events, outbox, clients, counselors, engagements, audit",
    """
    -- Every event the bridge acted on, so a replayed event changes nothing.
    CREATE TABLE handled_events (
        event_id   TEXT PRIMARY KEY,
        handled_at TEXT NOT NULL
    );

    -- Messages the bridge decided to send. Written in the same transaction as
    -- the state change that caused them; sent afterwards with a deterministic
    -- transaction id, so a crash in between neither loses nor repeats them.
    CREATE TABLE outbox (
        txn_id     TEXT PRIMARY KEY,
        room_id    TEXT NOT NULL,
        content    BLOB NOT NULL,            -- sealed JSON event content
        created_at TEXT NOT NULL,
        sent_at    TEXT,
        event_id   TEXT
    );
    CREATE INDEX outbox_unsent ON outbox(created_at) WHERE sent_at IS NULL;

    CREATE TABLE clients (
        user_id         TEXT PRIMARY KEY,
        dm_room_id      TEXT UNIQUE,
        language        TEXT,
        consent_version TEXT,
        consented_at    TEXT,
        intake          BLOB,                -- sealed JSON IntakeState
        profile         BLOB,                -- sealed JSON: pseudonym, country, topic, scores
        pending         BLOB,                -- sealed JSON: a question waiting for an answer
        created_at      TEXT NOT NULL
    );

    CREATE TABLE counselors (
        user_id       TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        credentials   TEXT NOT NULL,
        languages     TEXT NOT NULL,         -- comma separated codes
        specialties   TEXT NOT NULL,         -- comma separated ids
        capacity      INTEGER NOT NULL CHECK (capacity > 0),
        timezone      TEXT NOT NULL,
        reply_windows TEXT NOT NULL,         -- "09:00,13:00,19:00"
        on_call       INTEGER NOT NULL DEFAULT 0 CHECK (on_call IN (0, 1)),
        active        INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
        case_room_id  TEXT UNIQUE,
        added_at      TEXT NOT NULL
    );

    CREATE TABLE engagements (
        id               INTEGER PRIMARY KEY,
        client_id        TEXT NOT NULL REFERENCES clients(user_id) ON DELETE CASCADE,
        counselor_id     TEXT REFERENCES counselors(user_id),
        room_id          TEXT UNIQUE,
        status           TEXT NOT NULL CHECK (status IN ('waiting', 'active', 'closed')),
        risk             TEXT NOT NULL DEFAULT 'low' CHECK (risk IN ('low', 'medium', 'high')),
        crisis           INTEGER NOT NULL DEFAULT 0 CHECK (crisis IN (0, 1)),
        outcome          TEXT CHECK (outcome IN ('resolved', 'face-to-face', 'continue', 'refer')),
        share_brief      INTEGER NOT NULL DEFAULT 1 CHECK (share_brief IN (0, 1)),
        opened_at        TEXT NOT NULL,
        assigned_at      TEXT,
        closed_at        TEXT,
        last_client_ts   INTEGER,            -- origin_server_ts, ms
        last_counselor_ts INTEGER,
        awaiting_since   INTEGER,
        survey_score     INTEGER CHECK (survey_score BETWEEN 1 AND 5),
        survey_comment   BLOB,               -- sealed
        CHECK (status = 'waiting' OR counselor_id IS NOT NULL OR status = 'closed')
    );
    -- A client has at most one engagement that is not closed.
    CREATE UNIQUE INDEX one_open_engagement ON engagements(client_id) WHERE status != 'closed';
    CREATE INDEX engagements_by_counselor ON engagements(counselor_id, status);

    -- Content-free, hash-chained audit trail. `actor` is a keyed hash of the
    -- Matrix id, so the line survives erasure without naming anyone.
    CREATE TABLE audit (
        seq           INTEGER PRIMARY KEY,
        at            TEXT NOT NULL,
        actor         TEXT NOT NULL,
        action        TEXT NOT NULL,
        engagement_id INTEGER,
        detail        TEXT NOT NULL DEFAULT '',  -- codes only (an outcome, a risk level)
        prev_hash     TEXT NOT NULL,
        hash          TEXT NOT NULL
    );

    -- Rooms the bridge uses for its own purposes.
    CREATE TABLE rooms (
        room_id TEXT PRIMARY KEY,
        kind    TEXT NOT NULL CHECK (kind IN ('dm', 'session', 'case', 'supervisors')),
        user_id TEXT
    );
    """,
)

MIGRATIONS.add_sql(
    "audit chain head and append-only guard; lookup indexes",
    """
    -- The chain's last (seq, hash), kept apart from the rows so that removing
    -- the newest audit row is noticed too: the head would point past the end.
    CREATE TABLE audit_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  INTEGER NOT NULL,
        hash TEXT NOT NULL
    );

    CREATE INDEX engagements_waiting ON engagements(crisis DESC, opened_at)
        WHERE status = 'waiting';
    CREATE INDEX rooms_by_user ON rooms(user_id);
    CREATE INDEX outbox_sent ON outbox(sent_at) WHERE sent_at IS NOT NULL;
    CREATE INDEX handled_events_at ON handled_events(handled_at);
    """,
    # The bridge only ever appends to the audit trail. These guards stop a
    # mistaken UPDATE or DELETE in code; someone editing the database directly
    # is caught by `e2ecounsel audit verify` instead.
    per_dialect={
        "sqlite": """
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN
            SELECT RAISE(ABORT, 'the audit trail is append-only');
        END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN
            SELECT RAISE(ABORT, 'the audit trail is append-only');
        END;
        """,
        "postgresql": """
        CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the audit trail is append-only'
                USING ERRCODE = 'integrity_constraint_violation';
        END $$;
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            FOR EACH ROW EXECUTE FUNCTION audit_append_only();
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            FOR EACH ROW EXECUTE FUNCTION audit_append_only();
        """,
    },
)

# The durable inbox (bridge/persistence/inbox.py): events received but not yet handled.
INBOX_SQL = """
CREATE TABLE inbox (
    seq         INTEGER PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    room_id     TEXT NOT NULL,
    sender      TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    payload     BLOB,                    -- sealed; NULL once handled
    received_at TEXT NOT NULL,
    done_at     TEXT
);
CREATE INDEX inbox_pending ON inbox(room_id, seq) WHERE done_at IS NULL;
"""
MIGRATIONS.add_sql("durable inbox of received events", INBOX_SQL)

# Durable jobs (bridge/persistence/jobs.py, bridge/scheduler.py).
JOBS_SQL = """
CREATE TABLE jobs (
    id         INTEGER PRIMARY KEY,
    key        TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    due_at     TEXT NOT NULL,
    target     TEXT NOT NULL,
    payload    BLOB,
    status     TEXT NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'done', 'skipped', 'folded', 'cancelled')),
    fired_at   TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX jobs_pending ON jobs(due_at, id) WHERE status = 'pending';
"""

# Live-session bookings (bridge/persistence/bookings.py).
BOOKINGS_SQL = """
ALTER TABLE counselors ADD COLUMN availability TEXT NOT NULL DEFAULT '';
ALTER TABLE counselors ADD COLUMN days_off TEXT NOT NULL DEFAULT '';
CREATE TABLE bookings (
    id            INTEGER PRIMARY KEY,
    engagement_id INTEGER NOT NULL REFERENCES engagements(id) ON DELETE CASCADE,
    counselor_id  TEXT NOT NULL REFERENCES counselors(user_id),
    starts_at     TEXT NOT NULL,
    minutes       INTEGER NOT NULL CHECK (minutes > 0),
    status        TEXT NOT NULL DEFAULT 'booked' CHECK (status IN ('booked', 'cancelled')),
    created_at    TEXT NOT NULL,
    cancelled_at  TEXT
);
-- The rule itself: one live booking per counselor and start time.
CREATE UNIQUE INDEX one_booking_per_slot ON bookings(counselor_id, starts_at)
    WHERE status = 'booked';
CREATE INDEX bookings_by_engagement ON bookings(engagement_id, status);
"""

MIGRATIONS.add_sql("durable jobs: reminders, digests, escalations", JOBS_SQL)
MIGRATIONS.add_sql("live-session bookings and counselor availability", BOOKINGS_SQL)

MIGRATIONS.add_sql(
    "outbox by room, for per-room flushing",
    "CREATE INDEX outbox_unsent_by_room ON outbox(room_id, created_at) WHERE sent_at IS NULL;",
)

MIGRATIONS.add_sql(
    "who a queued message is about (erasure finds it); the counselor's closing note",
    """
    -- A keyed hash of the client a message is about (a brief, a booking note
    -- in a counselor's case channel), so erasure can redact it there too.
    ALTER TABLE outbox ADD COLUMN subject TEXT;
    CREATE INDEX outbox_subject ON outbox(subject) WHERE subject IS NOT NULL;
    ALTER TABLE engagements ADD COLUMN close_note BLOB;  -- sealed
    """,
)

MIGRATIONS.add_sql(
    "crisis pages and who took them; the supervisors",
    """
    -- A crisis page: who needs someone now, and who answered it. Content-free:
    -- the reason is a code ("phrase:dm", "command:urgent"), never the words.
    -- taken_by is set once, by a conditional update, so of two people who
    -- take a page at the same moment exactly one gets it.
    CREATE TABLE pages (
        id            INTEGER PRIMARY KEY,
        cause         TEXT NOT NULL UNIQUE,  -- the triggering event: a replay finds its page
        client_id     TEXT NOT NULL,
        engagement_id INTEGER REFERENCES engagements(id) ON DELETE SET NULL,
        reason        TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        taken_by      TEXT,
        taken_at      TEXT,
        room_id       TEXT,                  -- where the taker and the client met
        CHECK ((taken_by IS NULL) = (taken_at IS NULL))
    );
    CREATE INDEX pages_by_client ON pages(client_id);
    CREATE INDEX pages_open ON pages(created_at) WHERE taken_by IS NULL;

    -- Clinical supervisors (`e2ecounsel supervisor add`). The bridge keeps
    -- the supervisors' room's members in line with this table.
    CREATE TABLE supervisors (
        user_id  TEXT PRIMARY KEY,
        name     TEXT NOT NULL,
        added_at TEXT NOT NULL
    );
    """,
)

MIGRATIONS.add_sql(
    "durable follow-ups of a step; rooms being created",
    """
    -- What a step decided to do after its transaction (place a client, open a
    -- room, retire a room, redact and leave after an erasure), written in that
    -- same transaction and retried with back-off until done (bridge/kernel/work.py).
    CREATE TABLE followups (
        id         INTEGER PRIMARY KEY,
        key        TEXT NOT NULL UNIQUE,
        kind       TEXT NOT NULL,
        payload    BLOB,                  -- sealed; NULL once done
        status     TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
        attempts   INTEGER NOT NULL DEFAULT 0,
        next_at    TEXT NOT NULL,
        created_at TEXT NOT NULL,
        done_at    TEXT
    );
    CREATE INDEX followups_pending ON followups(next_at, id) WHERE status = 'pending';
    -- A room the bot is about to create: its purpose ('engagement:<id>',
    -- 'case:<counselor>'), the counselor it is for, when a creation was first
    -- tried and, once known, the room. After a crash, a room whose creation
    -- content names the purpose is found again instead of created twice.
    CREATE TABLE room_requests (
        purpose      TEXT PRIMARY KEY,
        counselor_id TEXT NOT NULL,
        attempted_at TEXT,
        room_id      TEXT
    );
    """,
)

# A follow-up given up on after too many refused attempts (bridge/kernel/work.py)
# is 'failed': it is no longer retried and waits for an operator. `failures`
# counts only the attempts that count towards that (not an unreachable
# homeserver). SQLite cannot change a CHECK constraint in place, so its table
# is rebuilt.
_FOLLOWUPS_MAY_FAIL = {
    "sqlite": """
        CREATE TABLE followups_new (
            id         INTEGER PRIMARY KEY,
            key        TEXT NOT NULL UNIQUE,
            kind       TEXT NOT NULL,
            payload    BLOB,
            status     TEXT NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'done', 'failed')),
            attempts   INTEGER NOT NULL DEFAULT 0,
            next_at    TEXT NOT NULL,
            created_at TEXT NOT NULL,
            done_at    TEXT,
            failures   INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO followups_new
            SELECT id, key, kind, payload, status, attempts, next_at, created_at, done_at, 0
            FROM followups;
        DROP TABLE followups;
        ALTER TABLE followups_new RENAME TO followups;
        CREATE INDEX followups_pending ON followups(next_at, id) WHERE status = 'pending';
        """,
    "postgresql": """
        ALTER TABLE followups ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE followups DROP CONSTRAINT followups_status_check;
        ALTER TABLE followups ADD CONSTRAINT followups_status_check
            CHECK (status IN ('pending', 'done', 'failed'));
        """,
}


@MIGRATIONS.register("follow-ups that kept failing are marked failed")
async def _followups_may_fail(db: Database) -> None:
    await db.execute_script(_FOLLOWUPS_MAY_FAIL[db.dialect], native=True)


MIGRATIONS.add_sql(
    "pruning of operational rows: ids of pruned sends; indexes by finishing time",
    """
    -- A sent message whose outbox row (and sealed copy) was pruned (see
    -- bridge/persistence/pruning.py): only what erasure needs to redact it.
    CREATE TABLE sent_log (
        event_id   TEXT PRIMARY KEY,
        room_id    TEXT NOT NULL,
        subject    TEXT,                     -- as in outbox
        created_at TEXT NOT NULL
    );
    CREATE INDEX sent_log_by_room ON sent_log(room_id, created_at);
    CREATE INDEX sent_log_subject ON sent_log(subject) WHERE subject IS NOT NULL;
    CREATE INDEX inbox_done ON inbox(done_at) WHERE done_at IS NOT NULL;
    CREATE INDEX jobs_finished ON jobs(fired_at) WHERE status != 'pending';
    CREATE INDEX followups_done ON followups(done_at) WHERE status = 'done';
    """,
)
