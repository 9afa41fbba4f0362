-- Snapshots to evidence. A job per snapshot (queued → dispatched → scored → reported, or
-- failed), claimed by one node at a time (a stale claim is taken over); the first snapshot of
-- a subject in a room is its baseline; reports form a chain per room (seq, prev hash).

CREATE TABLE snapshot_jobs (
    id              TEXT PRIMARY KEY,
    room_id         TEXT NOT NULL,
    subject         TEXT NOT NULL,
    requested_by    TEXT NOT NULL,
    origin_node     TEXT NOT NULL,           -- where the snapshot was stored (local evidence)
    idempotency_key TEXT,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    claimed_by      TEXT,
    claimed_at      BIGINT,
    next_attempt_at BIGINT NOT NULL,
    error_code      TEXT,
    last_error      TEXT,
    snapshot_cid    TEXT NOT NULL,
    baseline_cid    TEXT,
    heatmap_cid     TEXT,
    report_id       TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (room_id, requested_by, idempotency_key)
);
CREATE INDEX snapshot_jobs_due ON snapshot_jobs (state, next_attempt_at);

CREATE TABLE snapshot_baselines (
    room_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    cid     TEXT NOT NULL,
    job_id  TEXT NOT NULL,
    PRIMARY KEY (room_id, subject)
);

CREATE TABLE reports (
    id         TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL,
    job_id     TEXT NOT NULL UNIQUE,
    seq        BIGINT NOT NULL,
    body       TEXT NOT NULL,              -- the signed report, JSON
    hash       TEXT NOT NULL,              -- hex SHA-256 of its JCS bytes: the next one chains to it
    created_at BIGINT NOT NULL,
    UNIQUE (room_id, seq)
);

-- Every node's report-signing public key (the key set lists them all).
CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    node_id    TEXT NOT NULL,
    jwk        TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
