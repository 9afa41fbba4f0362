-- Webhooks from the outbox. An endpoint gets every event written after it was registered
-- (of its kinds); one delivery row per (endpoint, event), sent in event order per endpoint,
-- retried with backoff until it succeeds or its retry window closes (status 'dead': the dead
-- letter). Each attempt is kept for operators.

ALTER TABLE events ADD COLUMN webhooks_at BIGINT;
CREATE INDEX events_webhooks ON events (webhooks_at, id);

CREATE TABLE webhook_endpoints (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    secret          TEXT NOT NULL,           -- whsec_<base64>; never returned after creation
    events          TEXT,                    -- JSON array of kinds; NULL: every kind
    source          TEXT NOT NULL,           -- 'api' or 'config'
    created_at      BIGINT NOT NULL,
    disabled_at     BIGINT,
    disabled_reason TEXT
);

CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        TEXT NOT NULL,
    status          TEXT NOT NULL,           -- pending, delivered, dead
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, status, event_id);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    status_code BIGINT,
    error       TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
