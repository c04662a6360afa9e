//! The Postgres sink: mirrors the feed into tables operators query with SQL (`DB_URL`).
//!
//! * Accepted events go to the append-only `events` table with binary `COPY` into a
//!   per-connection staging table and one `INSERT ... SELECT ... ON CONFLICT DO NOTHING`,
//!   so a batch of thousands costs a few round trips.
//! * Players' progression (`players`), the audit trail (`audit`), reward claims
//!   (`reward_receipts`) and gaps (`mirror_gaps`) are written in the same transaction,
//!   with the shard's cursor (`mirror_cursors`): a batch is in Postgres entirely, with its
//!   cursor, or not at all, so shipping is exactly once across Postgres outages and
//!   engine restarts.
//! * Leaderboard snapshots (`leaderboard_snapshots`): on every `SNAPSHOT_CRON` tick the
//!   live standings of each window ([`Sink::idle`]), and at each window close, once every
//!   shard has logged it, the closed period's final standings, exactly once.
//! * The schema is versioned ([`SCHEMA_VERSION`], table `liveops_schema`) and migrated
//!   at connect; a newer schema than this binary knows is refused.
//!
//! The client is `tokio-postgres` on the sink's own current-thread runtime; TLS follows
//! libpq's `sslmode` (disable, prefer, require, verify-ca, verify-full) with rustls. The sink connects lazily: a server
//! unreachable at start makes the sink degraded, not the engine's start fail.

mod conninfo;
mod migrations;
mod rows;
mod tls;

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use futures_util::pin_mut;
use liveops_engine::window::WindowKind;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient, Statement, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::feed::{Cursor, FeedItem};
use crate::sink::{Sink, SinkError, SinkStats};
use crate::state::{EngineState, Standings, StateError};

pub use migrations::SCHEMA_VERSION;
use rows::{time_of, Batch, CloseRow};

/// Default of `SNAPSHOT_CRON`: every 15 minutes.
pub const SNAPSHOT_CRON_DEFAULT: &str = "0 */15 * * * *";
/// Default of `SNAPSHOT_TOPN`.
pub const SNAPSHOT_TOPN_DEFAULT: usize = 100;
/// Longest a statement may run on the server before it cancels it.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one sink call (connect, apply, snapshot) waits on the network: a server that
/// stopped answering without closing the connection fails the call, and the driver
/// backs off and reconnects.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Most missed cron ticks skipped over to find the latest one due (a sink down for a
/// day with a per-second cron has 86,400).
const MISSED_TICKS_MAX: usize = 1_000_000;

/// What the Postgres sink is configured with.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `DB_URL`: libpq URL or key=value string.
    pub url: String,
    /// `SEASON`: the `season` column of `players` and snapshots.
    pub season: String,
    /// `LB_WINDOWS`: the windows snapshotted.
    pub windows: Vec<WindowKind>,
    /// `SNAPSHOT_CRON`: 6-field cron with seconds, UTC.
    pub snapshot_cron: String,
    /// `SNAPSHOT_TOPN`: entries per snapshot.
    pub snapshot_topn: usize,
}

/// What talking to Postgres failed with.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error(
        "the database's schema is version {found}, newer than this binary's version {known}: \
         a newer engine migrated it; upgrade this engine or point DB_URL at another database"
    )]
    SchemaTooNew { found: i32, known: i32 },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("engine state: {0}")]
    State(#[from] StateError),
    #[error("mirror_cursors holds a negative position for shard {0}")]
    BadCursor(u32),
}

/// A parsed `SNAPSHOT_CRON`.
#[derive(Debug, Clone)]
pub struct SnapshotSchedule(cron::Schedule);

impl SnapshotSchedule {
    /// The first tick strictly after `ms` (unix ms, UTC); `None` if it never fires again.
    pub fn next_after_ms(&self, ms: u64) -> Option<u64> {
        let at = DateTime::<Utc>::from_timestamp_millis(rows::sql_int(ms))?;
        let next = self.0.after(&at).next()?;
        u64::try_from(next.timestamp_millis()).ok()
    }
}

/// Parses a 6-field cron expression with seconds (`sec min hour day-of-month month
/// day-of-week`), as `SNAPSHOT_CRON` takes it.
pub fn parse_cron(expr: &str) -> Result<SnapshotSchedule, String> {
    let fields = expr.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "{expr:?} has {fields} fields; expected 6 (sec min hour day-of-month month day-of-week)"
        ));
    }
    let schedule = cron::Schedule::from_str(expr).map_err(|e| format!("{expr:?}: {e}"))?;
    Ok(SnapshotSchedule(schedule))
}

/// An open connection and its prepared statements.
struct Connected {
    client: Client,
    /// `COPY events_staging FROM STDIN BINARY`.
    copy_events: Statement,
    /// Staging to `events`, skipping records already there.
    insert_events: Statement,
    upsert_players: Statement,
    upsert_cursor: Statement,
    select_cursor: Statement,
}

/// Columns of `events_staging` in COPY order.
const EVENT_COLUMN_TYPES: [Type; 11] = [
    Type::INT8,
    Type::INT4,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::JSONB,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::INT8,
];
const EVENT_COLUMNS: &str =
    "generation, shard, lsn, record_id, player_id, event_type, ts, payload, received_at, flag, xp_after";

/// The Postgres mirror. See the module docs.
pub struct PostgresSink {
    config: PostgresConfig,
    /// The parsed `DB_URL`.
    pg: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    /// The sink's own runtime: every call `block_on`s on it, on the sink's thread.
    runtime: tokio::runtime::Runtime,
    /// `None` until connected, and again after any failure (the next call reconnects).
    conn: Option<Connected>,
    /// Connections opened so far: every one after the first is a reconnect.
    opened: u64,
    state: Arc<dyn EngineState>,
    stats: Arc<SinkStats>,
    schedule: SnapshotSchedule,
    /// When the next snapshot tick is due (unix ms); `None`: the cron never fires again.
    next_tick_ms: Option<u64>,
}

impl PostgresSink {
    /// Validates `DB_URL` (and its TLS settings) and `SNAPSHOT_CRON`. Does not connect:
    /// the first [`Sink`] call does, and retries while the server is unreachable.
    pub fn new(
        config: PostgresConfig,
        state: Arc<dyn EngineState>,
        stats: Arc<SinkStats>,
    ) -> Result<PostgresSink, SinkError> {
        let info = conninfo::ConnInfo::parse(&config.url).map_err(SinkError::new)?;
        let tls = tls::connector(info.ssl_mode, &info.root_certs).map_err(SinkError::new)?;
        let schedule = parse_cron(&config.snapshot_cron)
            .map_err(|e| SinkError::new(format!("SNAPSHOT_CRON {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SinkError::with_source("postgres sink: runtime", e))?;
        let next_tick_ms = schedule.next_after_ms(unix_now_ms());
        Ok(PostgresSink {
            config,
            pg: info.config,
            tls,
            runtime,
            conn: None,
            opened: 0,
            state,
            stats,
            schedule,
            next_tick_ms,
        })
    }

    /// Connects (and migrates) unless connected.
    fn ensure_connected(&mut self) -> Result<(), SinkError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let result = self.runtime.block_on(within(connect(
            &self.pg,
            self.tls.clone(),
            &self.config.season,
        )));
        match result {
            Ok(conn) => {
                if self.opened > 0 {
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                self.opened += 1;
                self.conn = Some(conn);
                Ok(())
            }
            Err(e) => {
                if let PostgresError::SchemaTooNew { .. } = e {
                    // Retrying cannot fix this: say so loudly on every attempt.
                    tracing::error!(sink = "postgres", "postgres mirror stays degraded: {e}");
                }
                Err(SinkError::with_source(format!("postgres connect: {e}"), e))
            }
        }
    }

    /// Runs `result` of a call on the connection: a failure drops the connection (a
    /// broken one, or a transaction left in an unknown state), and the next call
    /// reconnects.
    fn settle<T>(&mut self, what: &str, result: Result<T, PostgresError>) -> Result<T, SinkError> {
        result.map_err(|e| {
            self.conn = None;
            SinkError::with_source(format!("postgres {what}: {e}"), e)
        })
    }

    /// The standings of each configured window's live period, for a tick.
    fn live_standings(&self) -> Result<Vec<(WindowKind, Standings)>, StateError> {
        let mut boards = Vec::with_capacity(self.config.windows.len());
        for &window in &self.config.windows {
            if let Some(standings) =
                self.state
                    .standings(window, None, self.config.snapshot_topn)?
            {
                boards.push((window, standings));
            }
        }
        Ok(boards)
    }

    /// The latest tick due at `now_ms`, from the first due one `due_ms` (ticks missed
    /// while the sink was down or busy are not back-filled: standings of the past are
    /// gone).
    fn latest_due_tick(&self, due_ms: u64, now_ms: u64) -> u64 {
        let mut tick = due_ms;
        for _ in 0..MISSED_TICKS_MAX {
            match self.schedule.next_after_ms(tick) {
                Some(next) if next <= now_ms => tick = next,
                _ => break,
            }
        }
        tick
    }
}

impl Sink for PostgresSink {
    fn name(&self) -> &str {
        "postgres"
    }

    fn cursor(&mut self, shard: u32) -> Result<Cursor, SinkError> {
        self.ensure_connected()?;
        let Some(conn) = self.conn.as_ref() else {
            return Err(SinkError::new("postgres: not connected"));
        };
        let result = self.runtime.block_on(within(read_cursor(conn, shard)));
        self.settle("reading the cursor", result)
    }

    fn apply(&mut self, shard: u32, items: &[FeedItem]) -> Result<(), SinkError> {
        if items.is_empty() {
            return Ok(());
        }
        let batch = Batch::build(items);
        self.ensure_connected()?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(SinkError::new("postgres: not connected"));
        };
        let context = Context {
            config: &self.config,
            state: &*self.state,
        };
        let result = self
            .runtime
            .block_on(within(write_batch(conn, shard, &batch, &context)));
        let writes = self.settle("writing a batch", result)?;
        self.stats.writes.fetch_add(writes, Ordering::Relaxed);
        Ok(())
    }

    /// Takes the snapshot of every live window when a `SNAPSHOT_CRON` tick is due.
    fn idle(&mut self) -> Result<(), SinkError> {
        let Some(due_ms) = self.next_tick_ms else {
            return Ok(());
        };
        let now_ms = unix_now_ms();
        if now_ms < due_ms {
            return Ok(());
        }
        let tick_ms = self.latest_due_tick(due_ms, now_ms);
        let boards = self
            .live_standings()
            .map_err(|e| SinkError::with_source("postgres snapshot: engine state", e))?;
        self.ensure_connected()?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(SinkError::new("postgres: not connected"));
        };
        let season = &self.config.season;
        let result = self.runtime.block_on(within(async {
            let tx = conn.client.transaction().await?;
            let mut writes = 0;
            for (window, standings) in &boards {
                writes +=
                    insert_standings(&tx, season, *window, standings, time_of(tick_ms), "tick")
                        .await?;
            }
            tx.commit().await?;
            Ok(writes)
        }));
        let writes = self.settle("writing a snapshot", result)?;
        self.stats.writes.fetch_add(writes, Ordering::Relaxed);
        self.next_tick_ms = self.schedule.next_after_ms(now_ms);
        Ok(())
    }
}

/// What writing a batch needs besides the rows.
struct Context<'a> {
    config: &'a PostgresConfig,
    state: &'a dyn EngineState,
}

/// Bounds a call by [`CALL_TIMEOUT`].
async fn within<T>(
    call: impl std::future::Future<Output = Result<T, PostgresError>>,
) -> Result<T, PostgresError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or(Err(PostgresError::Timeout(CALL_TIMEOUT)))
}

/// Opens a connection, migrates the schema, creates the staging table and prepares the
/// statements.
async fn connect(
    pg: &tokio_postgres::Config,
    tls: MakeRustlsConnect,
    season: &str,
) -> Result<Connected, PostgresError> {
    let (mut client, connection) = pg.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(sink = "postgres", "postgres connection closed: {e}");
        }
    });
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}",
            STATEMENT_TIMEOUT.as_millis()
        ))
        .await?;
    migrations::migrate(&mut client).await?;
    client
        .execute(
            "INSERT INTO mirror_live_periods (window_kind, period) VALUES ('seasonal', $1)
             ON CONFLICT (window_kind) DO NOTHING",
            &[&season],
        )
        .await?;
    client
        .batch_execute(
            "CREATE TEMP TABLE events_staging (
                 generation bigint, shard int, lsn bigint, record_id text, player_id text,
                 event_type text, ts bigint, payload jsonb, received_at timestamptz,
                 flag text, xp_after bigint
             ) ON COMMIT DELETE ROWS",
        )
        .await?;
    let copy_events = client
        .prepare(&format!(
            "COPY events_staging ({EVENT_COLUMNS}) FROM STDIN BINARY"
        ))
        .await?;
    let insert_events = client
        .prepare(&format!(
            "INSERT INTO events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM events_staging
             ON CONFLICT DO NOTHING"
        ))
        .await?;
    let upsert_players = client
        .prepare(
            "INSERT INTO players (player_id, season, xp, level, updated_at)
             SELECT p, $2, x, l, u
             FROM unnest($1::text[], $3::bigint[], $4::bigint[], $5::timestamptz[]) AS t(p, x, l, u)
             ON CONFLICT (player_id) DO UPDATE SET season = excluded.season, xp = excluded.xp,
                 level = excluded.level, updated_at = excluded.updated_at",
        )
        .await?;
    let upsert_cursor = client
        .prepare(
            "INSERT INTO mirror_cursors (generation, shard, lsn, updated_at) VALUES ($1, $2, $3, now())
             ON CONFLICT (generation, shard) DO UPDATE SET lsn = excluded.lsn, updated_at = now()",
        )
        .await?;
    let select_cursor = client
        .prepare(
            "SELECT generation, lsn FROM mirror_cursors WHERE shard = $1
             ORDER BY generation DESC LIMIT 1",
        )
        .await?;
    Ok(Connected {
        client,
        copy_events,
        insert_events,
        upsert_players,
        upsert_cursor,
        select_cursor,
    })
}

async fn read_cursor(conn: &Connected, shard: u32) -> Result<Cursor, PostgresError> {
    let shard_sql = shard_int(shard);
    let row = conn
        .client
        .query_opt(&conn.select_cursor, &[&shard_sql])
        .await?;
    let Some(row) = row else {
        return Ok(Cursor::NEW);
    };
    let generation: i64 = row.get(0);
    let lsn: i64 = row.get(1);
    Ok(Cursor {
        generation: u64::try_from(generation).map_err(|_| PostgresError::BadCursor(shard))?,
        lsn: u64::try_from(lsn).map_err(|_| PostgresError::BadCursor(shard))?,
    })
}

/// Writes a batch and its cursor in one transaction; returns the rows written.
async fn write_batch(
    conn: &mut Connected,
    shard: u32,
    batch: &Batch<'_>,
    context: &Context<'_>,
) -> Result<u64, PostgresError> {
    let tx = conn.client.transaction().await?;
    let mut writes = 0;
    if !batch.events.is_empty() {
        let copy = tx.copy_in(&conn.copy_events).await?;
        let writer = BinaryCopyInWriter::new(copy, &EVENT_COLUMN_TYPES);
        pin_mut!(writer);
        for e in &batch.events {
            writer
                .as_mut()
                .write(&[
                    &e.generation,
                    &e.shard,
                    &e.lsn,
                    &e.record_id,
                    &e.player_id,
                    &e.event_type,
                    &e.ts,
                    &e.payload,
                    &e.received_at,
                    &e.flag,
                    &e.xp_after,
                ])
                .await?;
        }
        writer.finish().await?;
        writes += tx.execute(&conn.insert_events, &[]).await?;
    }
    let players = &batch.players;
    if !players.player_id.is_empty() {
        writes += tx
            .execute(
                &conn.upsert_players,
                &[
                    &players.player_id,
                    &context.config.season,
                    &players.xp,
                    &players.level,
                    &players.updated_at,
                ],
            )
            .await?;
    }
    let audit = &batch.audit;
    if !audit.record_id.is_empty() {
        writes += tx
            .execute(
                "INSERT INTO audit (record_id, player_id, kind, reason, detail, at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                      $5::jsonb[], $6::timestamptz[])
                 ON CONFLICT DO NOTHING",
                &[
                    &audit.record_id,
                    &audit.player_id,
                    &audit.kind,
                    &audit.reason,
                    &audit.detail,
                    &audit.at,
                ],
            )
            .await?;
    }
    let receipts = &batch.receipts;
    if !receipts.receipt_id.is_empty() {
        writes += tx
            .execute(
                "INSERT INTO reward_receipts (receipt_id, player_id, item, timestamp, at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[],
                                      $5::timestamptz[])
                 ON CONFLICT DO NOTHING",
                &[
                    &receipts.receipt_id,
                    &receipts.player_id,
                    &receipts.item,
                    &receipts.timestamp,
                    &receipts.at,
                ],
            )
            .await?;
    }
    let shard_sql = shard_int(shard);
    for gap in &batch.gaps {
        writes += tx
            .execute(
                "INSERT INTO mirror_gaps (shard, after, through, reason, noticed_at)
                 VALUES ($1, $2, $3, $4, now()) ON CONFLICT DO NOTHING",
                &[&shard_sql, &gap.after, &gap.through, &gap.reason],
            )
            .await?;
    }
    for close in &batch.closes {
        writes += record_close(&tx, shard_sql, close, context).await?;
    }
    let generation = rows::sql_int(batch.cursor.generation);
    let lsn = rows::sql_int(batch.cursor.lsn);
    tx.execute(&conn.upsert_cursor, &[&generation, &shard_sql, &lsn])
        .await?;
    tx.commit().await?;
    Ok(writes + 1)
}

/// Notes `shard`'s close of a window period and, once every shard has closed it, writes
/// the period's final standings (once: the unique index on finals).
async fn record_close(
    tx: &Transaction<'_>,
    shard: i32,
    close: &CloseRow,
    context: &Context<'_>,
) -> Result<u64, PostgresError> {
    let window = close.window.as_str();
    let closed = match &close.closed_period {
        Some(name) => Some(name.clone()),
        None => seasonal_closed_period(tx, close).await?,
    };
    let Some(closed) = closed else {
        tracing::warn!(
            sink = "postgres",
            window,
            next = close.next_period,
            "window closed but the closed period is unknown (the mirror started with the new \
             season): no final standings written"
        );
        return Ok(0);
    };
    let mut writes = tx
        .execute(
            "INSERT INTO mirror_window_closes (window_kind, next_period, shard, closed_period, at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&window, &close.next_period, &shard, &closed, &close.at],
        )
        .await?;
    let closed_by: i64 = tx
        .query_one(
            "SELECT count(*) FROM mirror_window_closes WHERE window_kind = $1 AND next_period = $2",
            &[&window, &close.next_period],
        )
        .await?
        .get(0);
    if closed_by < i64::from(context.state.shards()) {
        return Ok(writes);
    }
    let season = match close.window {
        WindowKind::Seasonal => closed.as_str(),
        _ => context.config.season.as_str(),
    };
    // Once per period, whatever SNAPSHOT_TOPN was then and is now.
    let written = tx
        .query_opt(
            "SELECT 1 FROM leaderboard_snapshots
             WHERE kind = 'final' AND season = $1 AND window_kind = $2 AND period = $3 LIMIT 1",
            &[&season, &window, &closed],
        )
        .await?;
    if written.is_some() {
        return Ok(writes);
    }
    match context
        .state
        .standings(close.window, Some(&closed), context.config.snapshot_topn)?
    {
        Some(standings) => {
            writes +=
                insert_standings(tx, season, close.window, &standings, close.at, "final").await?;
        }
        None => tracing::warn!(
            sink = "postgres",
            window,
            period = closed,
            "the engine no longer keeps the closed period: no final standings written"
        ),
    }
    Ok(writes)
}

/// The season a seasonal close ended: the one another shard's close of the same season
/// already named, or the live season the sink last knew. Moves that on to the next.
async fn seasonal_closed_period(
    tx: &Transaction<'_>,
    close: &CloseRow,
) -> Result<Option<String>, PostgresError> {
    let window = close.window.as_str();
    let earlier = tx
        .query_opt(
            "SELECT closed_period FROM mirror_window_closes
             WHERE window_kind = $1 AND next_period = $2 LIMIT 1",
            &[&window, &close.next_period],
        )
        .await?;
    if let Some(row) = earlier {
        return Ok(Some(row.get(0)));
    }
    let live: Option<String> = tx
        .query_opt(
            "SELECT period FROM mirror_live_periods WHERE window_kind = $1",
            &[&window],
        )
        .await?
        .map(|row| row.get(0));
    tx.execute(
        "INSERT INTO mirror_live_periods (window_kind, period) VALUES ($1, $2)
         ON CONFLICT (window_kind) DO UPDATE SET period = excluded.period",
        &[&window, &close.next_period],
    )
    .await?;
    Ok(live.filter(|live| *live != close.next_period))
}

/// Writes one board's standings as snapshot rows; returns the rows written.
async fn insert_standings(
    client: &impl GenericClient,
    season: &str,
    window: WindowKind,
    standings: &Standings,
    taken_at: SystemTime,
    kind: &str,
) -> Result<u64, PostgresError> {
    let count = standings.entries.len();
    let ranks: Vec<i32> = (1..=i32::try_from(count).unwrap_or(i32::MAX)).collect();
    let players: Vec<&str> = standings
        .entries
        .iter()
        .map(|e| e.player.as_str())
        .collect();
    let scores: Vec<i64> = standings
        .entries
        .iter()
        .map(|e| rows::sql_int(e.score()))
        .collect();
    let written = client
        .execute(
            "INSERT INTO leaderboard_snapshots
                 (season, window_kind, period, taken_at, kind, rank, player_id, score)
             SELECT $1, $2, $3, $4, $5, r, p, s
             FROM unnest($6::int[], $7::text[], $8::bigint[]) AS t(r, p, s)
             ON CONFLICT DO NOTHING",
            &[
                &season,
                &window.as_str(),
                &standings.period,
                &taken_at,
                &kind,
                &ranks,
                &players,
                &scores,
            ],
        )
        .await?;
    Ok(written)
}

fn shard_int(shard: u32) -> i32 {
    i32::try_from(shard).unwrap_or(i32::MAX)
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_needs_six_fields_and_ticks_on_them() {
        assert!(parse_cron("*/15 * * * *").is_err(), "5 fields");
        assert!(parse_cron("0 0 */15 * * * *").is_err(), "7 fields");
        assert!(parse_cron("0 */99 * * * *").is_err());
        let every_15_min = parse_cron(SNAPSHOT_CRON_DEFAULT).unwrap();
        // 2026-11-24T12:07:30Z -> 12:15:00Z.
        let at = 1_795_521_600_000 + 7 * 60_000 + 30_000;
        assert_eq!(
            every_15_min.next_after_ms(at),
            Some(1_795_521_600_000 + 15 * 60_000)
        );
        let every_second = parse_cron("* * * * * *").unwrap();
        assert_eq!(every_second.next_after_ms(1_000), Some(2_000));
    }
}
