-- Cluster members as the database knows them: a node claims its id at start and beats while
-- it lives, so a second process with the same id is refused while the first is alive.

CREATE TABLE cluster_nodes (
    node_id      TEXT PRIMARY KEY,
    incarnation  TEXT NOT NULL,               -- random per process start
    cluster_addr TEXT NOT NULL,
    http_addr    TEXT NOT NULL,
    beats        BIGINT NOT NULL,             -- rises with every heartbeat of the owner
    seen_at      BIGINT NOT NULL              -- unix ms of the last beat
);
