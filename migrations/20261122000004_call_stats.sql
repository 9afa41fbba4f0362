-- Connection quality samples clients report (`stats`), with the score the server gave them.

CREATE TABLE call_stats (
    id               TEXT PRIMARY KEY,
    room_id          TEXT NOT NULL,
    peer_id          TEXT NOT NULL,
    sampled_at       BIGINT NOT NULL,          -- the client's report timestamp, unix ms
    received_at      BIGINT NOT NULL,          -- server clock, unix ms
    rtt_ms           DOUBLE PRECISION NOT NULL,
    fraction_lost    DOUBLE PRECISION NOT NULL,
    jitter_ms        DOUBLE PRECISION NOT NULL,
    outgoing_kbps    DOUBLE PRECISION,
    r_factor         DOUBLE PRECISION NOT NULL,
    level            TEXT NOT NULL
);
CREATE INDEX call_stats_peer ON call_stats (peer_id, sampled_at);
