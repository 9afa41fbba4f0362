-- What operators did to rooms through the admin API: who, what, to which room and session,
-- with what outcome. Written with its `admin.action` outbox event in one transaction.

CREATE TABLE audit_log (
    id       TEXT PRIMARY KEY,          -- UUIDv7: ordered by time
    at       BIGINT NOT NULL,           -- unix ms
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    room_id  TEXT NOT NULL,
    target   TEXT,
    detail   TEXT NOT NULL              -- JSON object
);

CREATE INDEX audit_log_room ON audit_log (room_id, id);
