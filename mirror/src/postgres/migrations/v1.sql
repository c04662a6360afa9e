-- LiveOps Guard's Postgres mirror, schema version 1.

-- One row per accepted event, append-only; (generation, shard, lsn) is the record's
-- place in the engine's log, so a record is stored at most once.
CREATE TABLE events (
    generation  bigint      NOT NULL,
    shard       int         NOT NULL,
    lsn         bigint      NOT NULL,
    record_id   text        NOT NULL,
    player_id   text        NOT NULL,
    event_type  text        NOT NULL,
    ts          bigint      NOT NULL,
    payload     jsonb       NOT NULL,
    received_at timestamptz NOT NULL,
    flag        text,
    xp_after    bigint,
    UNIQUE (generation, shard, lsn)
);
CREATE INDEX events_player_idx ON events (player_id);

-- Each player's current progression.
CREATE TABLE players (
    player_id  text PRIMARY KEY,
    season     text        NOT NULL,
    xp         bigint      NOT NULL,
    level      bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Fairness decisions: blocks, unblocks, flags.
CREATE TABLE audit (
    record_id text PRIMARY KEY,
    player_id text        NOT NULL,
    kind      text        NOT NULL,
    reason    text        NOT NULL,
    detail    jsonb       NOT NULL,
    at        timestamptz NOT NULL
);
CREATE INDEX audit_player_idx ON audit (player_id, at);

-- Reward claims, one per receipt.
CREATE TABLE reward_receipts (
    receipt_id text PRIMARY KEY,
    player_id  text        NOT NULL,
    item       text        NOT NULL,
    timestamp  bigint      NOT NULL,
    at         timestamptz NOT NULL
);
CREATE INDEX reward_receipts_player_idx ON reward_receipts (player_id);

-- Standings on every SNAPSHOT_CRON tick of each live window ('tick') and the closed
-- period's final standings ('final', once per period).
CREATE TABLE leaderboard_snapshots (
    season      text        NOT NULL,
    window_kind text        NOT NULL,
    period      text        NOT NULL,
    taken_at    timestamptz NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('tick', 'final')),
    rank        int         NOT NULL,
    player_id   text        NOT NULL,
    score       bigint      NOT NULL
);
CREATE UNIQUE INDEX leaderboard_snapshots_tick_key
    ON leaderboard_snapshots (season, window_kind, period, taken_at, rank) WHERE kind = 'tick';
CREATE UNIQUE INDEX leaderboard_snapshots_final_key
    ON leaderboard_snapshots (season, window_kind, period, rank) WHERE kind = 'final';

-- The sink's position per shard, committed with the rows it covers.
CREATE TABLE mirror_cursors (
    generation bigint      NOT NULL,
    shard      int         NOT NULL,
    lsn        bigint      NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (generation, shard)
);

-- Records the engine's log no longer held when the sink came to them.
CREATE TABLE mirror_gaps (
    shard      int         NOT NULL,
    after      text        NOT NULL,
    through    text        NOT NULL,
    reason     text        NOT NULL,
    noticed_at timestamptz NOT NULL,
    UNIQUE (shard, after, through)
);

-- Which shards have closed which window period: the final standings are written once
-- every shard has.
CREATE TABLE mirror_window_closes (
    window_kind   text        NOT NULL,
    next_period   text        NOT NULL,
    shard         int         NOT NULL,
    closed_period text        NOT NULL,
    at            timestamptz NOT NULL,
    PRIMARY KEY (window_kind, next_period, shard)
);

-- The seasonal window's live period as the sink last saw it: a season's close names
-- only the next season.
CREATE TABLE mirror_live_periods (
    window_kind text PRIMARY KEY,
    period      text NOT NULL
);
