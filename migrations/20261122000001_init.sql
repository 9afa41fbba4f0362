-- Switchboard's operational schema. Portable SQL: the same file runs on SQLite and PostgreSQL.
-- Times are unix milliseconds (BIGINT); ids are text; JSON is stored as text.

CREATE TABLE rooms (
    id               TEXT PRIMARY KEY,
    created_at       BIGINT NOT NULL,
    created_by       TEXT,
    max_participants BIGINT NOT NULL,
    invitees         TEXT,                     -- JSON array of user ids; NULL = open to every token holder
    call_status      TEXT NOT NULL DEFAULT 'not_started',
    current_call_id  TEXT
);

CREATE TABLE call_sessions (
    id         TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL REFERENCES rooms (id),
    status     TEXT NOT NULL,                  -- waiting | active | ended
    created_at BIGINT NOT NULL,
    active_at  BIGINT,
    ended_at   BIGINT,
    end_reason TEXT
);
CREATE INDEX call_sessions_room ON call_sessions (room_id, created_at);

-- One row per peer session (a participant's stay in a room).
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,             -- the peer id
    room_id      TEXT NOT NULL REFERENCES rooms (id),
    call_id      TEXT,
    user_id      TEXT NOT NULL,
    display_name TEXT NOT NULL,
    node_id      TEXT NOT NULL,
    conn_id      TEXT NOT NULL,
    media        TEXT NOT NULL,                -- JSON media state
    joined_at    BIGINT NOT NULL,
    left_at      BIGINT,
    leave_reason TEXT
);
CREATE INDEX sessions_room_open ON sessions (room_id, left_at);
CREATE INDEX sessions_user_room ON sessions (user_id, room_id);
CREATE INDEX sessions_node_open ON sessions (node_id, left_at);

CREATE TABLE chat_messages (
    id           TEXT PRIMARY KEY,
    room_id      TEXT NOT NULL REFERENCES rooms (id),
    seq          BIGINT NOT NULL,
    peer_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    display_name TEXT NOT NULL,
    text         TEXT NOT NULL,
    sent_at      BIGINT NOT NULL,
    UNIQUE (room_id, seq)
);

-- Transactional outbox: written with the change it records, published later.
CREATE TABLE events (
    id           TEXT PRIMARY KEY,             -- UUIDv7: sorts by creation time; the idempotency key
    kind         TEXT NOT NULL,
    room_id      TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX events_unpublished ON events (published_at, id);
