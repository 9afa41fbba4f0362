-- Room ownership in a cluster: at most one node holds a live lease on a room. The epoch rises
-- with every new owner and fences writes: a write carrying an old epoch is refused.
-- expires_at is unix ms on the database's clock, so node clocks do not matter.

CREATE TABLE room_leases (
    room_id    TEXT PRIMARY KEY,
    node_id    TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
