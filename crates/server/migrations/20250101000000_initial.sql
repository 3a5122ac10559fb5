-- Schema of camwire-server. Every statement runs unchanged on SQLite and PostgreSQL:
-- ids are TEXT UUIDs made by the server, times are BIGINT unix seconds and IPv4
-- addresses are BIGINT (the address as an unsigned 32-bit number), so that the
-- lowest free address is a plain MIN().

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    display_name TEXT NOT NULL,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT users_username_unique UNIQUE (username),
    CONSTRAINT users_role_check CHECK (role IN ('user', 'admin'))
);

-- One row per signed-in device. The access token is stored only as its SHA-256 hex.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    token_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    CONSTRAINT sessions_token_hash_unique UNIQUE (token_hash)
);

CREATE INDEX sessions_user_id_index ON sessions (user_id);

-- One WireGuard peer per session. The unique constraints are what guarantees that no
-- address and no public key is ever held twice, also across several server replicas.
CREATE TABLE peers (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    public_key TEXT NOT NULL,
    address BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT peers_session_id_unique UNIQUE (session_id),
    CONSTRAINT peers_public_key_unique UNIQUE (public_key),
    CONSTRAINT peers_address_unique UNIQUE (address)
);

CREATE INDEX peers_user_id_index ON peers (user_id);

-- The configured pool; a single row with id 1.
CREATE TABLE address_pool (
    id INTEGER PRIMARY KEY,
    cidr TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    CONSTRAINT address_pool_single_row CHECK (id = 1)
);

-- Every client address of the pool that no peer holds. Allocation deletes the minimum
-- row, so it costs one index lookup however full the pool is.
CREATE TABLE free_addresses (
    address BIGINT PRIMARY KEY
);

-- Peers whose removal from the live WireGuard back end failed at sign-out, although
-- the database side was freed. A sweeper retries them.
CREATE TABLE pending_removals (
    id TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    address BIGINT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
