-- Cluster-wide singletons (the outbox publisher): at most one node holds a live lease on a
-- name. As with rooms, the epoch rises with every new holder and fences the holder's writes;
-- expires_at is unix ms on the database's clock.

CREATE TABLE service_leases (
    name       TEXT PRIMARY KEY,
    node_id    TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
