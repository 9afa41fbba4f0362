-- People waiting in a lobby to be paired. One row per (lobby, user): a person waits once per
-- lobby. `gone_at` (unix ms) is set when the waiting connection closed: the row is not paired
-- while gone, and a `lobby_join` of the same user within the grace period takes it back with
-- its place in the queue. `position` orders the queue (arrival order: the pairing transactions
-- of a lobby run one at a time, so it is a strict order even within one millisecond).

CREATE TABLE lobby_queue (
    lobby       TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    conn_id     TEXT NOT NULL,
    tags        TEXT NOT NULL,
    enqueued_at BIGINT NOT NULL,
    position    BIGINT NOT NULL,
    gone_at     BIGINT,
    PRIMARY KEY (lobby, user_id)
);

CREATE INDEX lobby_queue_order ON lobby_queue (lobby, position);
