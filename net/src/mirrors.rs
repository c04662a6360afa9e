//! The mirrors the configuration asks for: Redis with `REDIS_URL`, Postgres with
//! `DB_URL`. Each is a sink of the change feed (`liveops-mirror`) on its own thread and
//! runtime, following every shard's log; a shard never waits on one.
//!
//! Start-up is in two steps. [`MirrorPlan::new`] (before recovery) makes one
//! [`LogWatch`] per shard, which the shard's log publishes its durable LSN to once
//! recovered, and holds every log from its start so no checkpoint deletes what a sink
//! has not seen before the sinks exist. [`MirrorPlan::start`] (once the engine is ready:
//! Redis rebuilds from engine state) spawns the sinks, whose own holds then replace the
//! start-up ones. Without `REDIS_URL` and `DB_URL` there is no plan: no watch, no hold,
//! no thread, today's cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use liveops_mirror::{
    Cursor, DriverConfig, DurableCursor, PostgresConfig, PostgresSink, RedisConfig, RedisSink,
    ShardLog, Sink, SinkDriver, SinkError, SinkStats,
};
use liveops_storage::{LogWatch, RetentionHold};

use crate::config::Config;
use crate::engine_state::MeshState;
use crate::layout::Layout;
use crate::mesh::Mesh;

/// What the mirrors need from the configuration.
struct MirrorSettings {
    redis: Option<RedisConfig>,
    postgres: Option<PostgresConfig>,
}

/// The configured mirrors, before they start.
pub struct MirrorPlan {
    settings: MirrorSettings,
    /// One per shard of the current generation, in shard order.
    logs: Vec<ShardLog>,
    /// Keep every log whole until the sinks hold what they need themselves.
    startup_holds: Vec<RetentionHold>,
    redis_stats: Option<Arc<SinkStats>>,
    postgres_stats: Option<Arc<SinkStats>>,
}

impl MirrorPlan {
    /// `None` when no mirror is configured.
    pub fn new(config: &Config, layout: &Layout) -> Option<MirrorPlan> {
        let windows = config.policy.windows.clone();
        let season = config.policy.season.clone();
        let settings = MirrorSettings {
            redis: config.redis_url.as_ref().map(|url| RedisConfig {
                url: url.clone(),
                tls_ca_file: config.redis_tls_ca.clone(),
                season: season.clone(),
                windows: windows.clone(),
                closed_ttl_s: config.redis_closed_ttl_s,
                ..RedisConfig::default()
            }),
            postgres: config.db_url.as_ref().map(|url| PostgresConfig {
                url: url.clone(),
                season,
                windows,
                snapshot_cron: config.snapshot_cron.clone(),
                snapshot_topn: config.snapshot_topn,
            }),
        };
        if settings.redis.is_none() && settings.postgres.is_none() {
            return None;
        }
        let logs: Vec<ShardLog> = (0..layout.shards)
            .map(|shard| ShardLog {
                generation: layout.generation,
                shard: u32::try_from(shard).expect("shard counts fit u32"),
                dir: layout.shard_dir(shard),
                watch: LogWatch::new(config.mirror_retain_bytes),
            })
            .collect();
        let startup_holds = logs.iter().map(|log| log.watch.hold(1)).collect();
        Some(MirrorPlan {
            redis_stats: settings.redis.as_ref().map(|_| Arc::default()),
            postgres_stats: settings.postgres.as_ref().map(|_| Arc::default()),
            settings,
            logs,
            startup_holds,
        })
    }

    /// The watch shard `index`'s log publishes to.
    pub fn watch(&self, index: usize) -> Arc<LogWatch> {
        Arc::clone(&self.logs[index].watch)
    }

    /// Each configured sink's name and counters, for metrics and health.
    pub fn stats(&self) -> Vec<(&'static str, Arc<SinkStats>)> {
        let mut stats = Vec::new();
        if let Some(s) = &self.redis_stats {
            stats.push(("redis", Arc::clone(s)));
        }
        if let Some(s) = &self.postgres_stats {
            stats.push(("postgres", Arc::clone(s)));
        }
        stats
    }

    /// Spawns the sinks over the running engine's `mesh`.
    pub fn start(self, mesh: Arc<Mesh>) -> Result<Mirrors, SinkError> {
        let state = Arc::new(MeshState { mesh });
        let mut running: Vec<Box<dyn RunningSink>> = Vec::new();
        if let (Some(config), Some(stats)) = (self.settings.redis, self.redis_stats) {
            let watches: Vec<Arc<LogWatch>> =
                self.logs.iter().map(|l| Arc::clone(&l.watch)).collect();
            let generation = self.logs.first().map_or(0, |l| l.generation);
            let durable: DurableCursor = Arc::new(move |shard: u32| Cursor {
                generation,
                lsn: watches[shard as usize].durable_lsn(),
            });
            let sink = RedisSink::new(config, state.clone(), durable, Arc::clone(&stats))?;
            running.push(spawn(sink, self.logs.clone(), stats)?);
        }
        if let (Some(config), Some(stats)) = (self.settings.postgres, self.postgres_stats) {
            let sink = PostgresSink::new(config, state, Arc::clone(&stats))?;
            running.push(spawn(sink, self.logs.clone(), stats)?);
        }
        // The sinks' own holds are in place from their first pass on.
        drop(self.startup_holds);
        Ok(Mirrors { running })
    }
}

fn spawn<S: Sink + 'static>(
    sink: S,
    logs: Vec<ShardLog>,
    stats: Arc<SinkStats>,
) -> Result<Box<dyn RunningSink>, SinkError> {
    let name = sink.name().to_owned();
    SinkDriver::spawn_with_stats(sink, logs, DriverConfig::default(), stats)
        .map(|driver| Box::new(driver) as Box<dyn RunningSink>)
        .map_err(|e| SinkError::with_source(format!("cannot start the {name} mirror"), e))
}

/// A sink's driver, whatever the sink.
trait RunningSink: Send {
    fn request_stop(&self);
    fn is_finished(&self) -> bool;
    fn detach(self: Box<Self>);
}

impl<S: Sink + 'static> RunningSink for SinkDriver<S> {
    fn request_stop(&self) {
        SinkDriver::request_stop(self);
    }

    fn is_finished(&self) -> bool {
        SinkDriver::is_finished(self)
    }

    fn detach(self: Box<Self>) {
        SinkDriver::detach(*self);
    }
}

/// The running mirrors.
pub struct Mirrors {
    running: Vec<Box<dyn RunningSink>>,
}

impl Mirrors {
    /// Stops every sink after its current pass, waiting at most `deadline`; a sink still
    /// inside a slow call is left to finish on its own (its server holds its cursor).
    pub fn stop(self, deadline: Duration) {
        let until = Instant::now() + deadline;
        for sink in &self.running {
            sink.request_stop();
        }
        while Instant::now() < until && !self.running.iter().all(|s| s.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        for sink in self.running {
            sink.detach();
        }
    }
}
