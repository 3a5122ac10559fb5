-- Lease tracking and change detection for several server replicas.

-- Time of the peer's last completed handshake that any replica saw, in unix seconds;
-- NULL until one is seen. Each replica's sweeper writes what its back end reports, so
-- the lease of a client that uses another replica's endpoint stays alive.
ALTER TABLE peers ADD COLUMN last_handshake_at BIGINT;

-- A counter that every transaction changing `peers` increments. Replicas sharing a
-- SQLite file poll it to learn that another process changed the peers.
CREATE TABLE peer_generation (
    id INTEGER PRIMARY KEY,
    generation BIGINT NOT NULL,
    CONSTRAINT peer_generation_single_row CHECK (id = 1)
);

INSERT INTO peer_generation (id, generation) VALUES (1, 0);

CREATE INDEX sessions_expires_at_index ON sessions (expires_at);
