-- Liveness is one lease per node: cluster_nodes gets the node's lease (a term, rising with
-- every new process and every lapse, and its expiry on the database's clock), renewed a few
-- times a second. A room's ownership row names the node and the term it was taken under, and
-- is written only when the room changes hands: it is live while expires_at > 0 (0 once
-- released) and its node's lease at that term is live. A cordoned node (set by an operator)
-- takes no new rooms and keeps those it has.

ALTER TABLE cluster_nodes ADD COLUMN term BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cluster_nodes ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE room_leases ADD COLUMN node_term BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cluster_nodes ADD COLUMN cordoned BIGINT NOT NULL DEFAULT 0;
