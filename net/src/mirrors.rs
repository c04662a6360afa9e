//! The sinks the configuration asks for: the mirrors (Redis with `REDIS_URL`, Postgres
//! with `DB_URL`) and the message bus (`BUS_KIND` `nats`, `sqs` or `servicebus`). Each is a sink of the
//! change feed (`liveops-mirror`) on its own thread and runtime, following every shard's
//! log; a shard never waits on one.
//!
//! Start-up is in two steps. [`MirrorPlan::new`] (before recovery) makes one
//! [`LogWatch`] per shard, which the shard's log publishes its durable LSN to once
//! recovered, and holds every log from its start so no checkpoint deletes what a sink
//! has not seen before the sinks exist. [`MirrorPlan::start`] (once the engine is ready:
//! Redis rebuilds from engine state) spawns the sinks, whose own holds then replace the
//! start-up ones. Without `REDIS_URL`, `DB_URL` and a bus there is no plan: no watch, no
//! hold, no thread: `BUS_KIND=inmem` costs nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use liveops_mirror::bus::nats::{NatsConfig, NatsSink};
use liveops_mirror::bus::servicebus::{ServiceBusConfig, ServiceBusSink};
use liveops_mirror::bus::sqs::{SqsConfig, SqsSink};
use liveops_mirror::{
    Cursor, DriverConfig, DurableCursor, PostgresConfig, PostgresSink, RedisConfig, RedisSink,
    ShardLog, Sink, SinkDriver, SinkError, SinkStats,
};
use liveops_storage::{LogWatch, RetentionHold};

use crate::config::{Bus, Config};
use crate::engine_state::MeshState;
use crate::layout::Layout;
use crate::mesh::Mesh;

/// One configured sink, before it starts.
enum SinkSpec {
    Redis(RedisConfig),
    Postgres(PostgresConfig),
    Nats(NatsConfig),
    Sqs(SqsConfig),
    ServiceBus(ServiceBusConfig),
}

impl SinkSpec {
    /// The sink's name in metrics, logs and its cursor file.
    fn name(&self) -> &'static str {
        match self {
            SinkSpec::Redis(_) => "redis",
            SinkSpec::Postgres(_) => "postgres",
            SinkSpec::Nats(_) => "nats",
            SinkSpec::Sqs(_) => "sqs",
            SinkSpec::ServiceBus(_) => "servicebus",
        }
    }
}

/// The configured sinks (mirrors and the bus), before they start.
pub struct MirrorPlan {
    sinks: Vec<(SinkSpec, Arc<SinkStats>)>,
    /// One per shard of the current generation, in shard order.
    logs: Vec<ShardLog>,
    /// Keep every log whole until the sinks hold what they need themselves.
    startup_holds: Vec<RetentionHold>,
}

impl MirrorPlan {
    /// `None` when no sink is configured.
    pub fn new(config: &Config, layout: &Layout) -> Option<MirrorPlan> {
        let windows = config.policy.windows.clone();
        let season = config.policy.season.clone();
        // Bus sinks keep their cursors next to the data they follow.
        let cursor_dir = config.data_dir.join("mirror-cursors");
        let mut sinks = Vec::new();
        if let Some(url) = &config.redis_url {
            sinks.push(SinkSpec::Redis(RedisConfig {
                url: url.clone(),
                tls_ca_file: config.redis_tls_ca.clone(),
                season: season.clone(),
                windows: windows.clone(),
                closed_ttl_s: config.redis_closed_ttl_s,
                ..RedisConfig::default()
            }));
        }
        if let Some(url) = &config.db_url {
            sinks.push(SinkSpec::Postgres(PostgresConfig {
                url: url.clone(),
                season: season.clone(),
                windows: windows.clone(),
                snapshot_cron: config.snapshot_cron.clone(),
                snapshot_topn: config.snapshot_topn,
            }));
        }
        match &config.bus {
            Bus::Inmem => {}
            Bus::Nats { url, stream } => sinks.push(SinkSpec::Nats(NatsConfig {
                url: url.clone(),
                stream: stream.clone(),
                season,
                windows,
                cursor_dir,
            })),
            Bus::Sqs {
                queue_url,
                endpoint,
            } => sinks.push(SinkSpec::Sqs(SqsConfig {
                queue_url: queue_url.clone(),
                endpoint: endpoint.clone(),
                season,
                windows,
                cursor_dir,
            })),
            Bus::ServiceBus {
                connection_string,
                queue,
            } => sinks.push(SinkSpec::ServiceBus(ServiceBusConfig {
                connection_string: connection_string.clone(),
                queue: queue.clone(),
                season,
                windows,
                cursor_dir,
            })),
        }
        if sinks.is_empty() {
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
            sinks: sinks.into_iter().map(|s| (s, Arc::default())).collect(),
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
        self.sinks
            .iter()
            .map(|(spec, stats)| (spec.name(), Arc::clone(stats)))
            .collect()
    }

    /// Spawns the sinks over the running engine's `mesh`.
    pub fn start(self, mesh: Arc<Mesh>) -> Result<Mirrors, SinkError> {
        let state: Arc<MeshState> = Arc::new(MeshState { mesh });
        let mut running: Vec<Box<dyn RunningSink>> = Vec::new();
        for (spec, stats) in self.sinks {
            let logs = self.logs.clone();
            let driver = match spec {
                SinkSpec::Redis(config) => {
                    let watches: Vec<Arc<LogWatch>> =
                        logs.iter().map(|l| Arc::clone(&l.watch)).collect();
                    let generation = logs.first().map_or(0, |l| l.generation);
                    let durable: DurableCursor = Arc::new(move |shard: u32| Cursor {
                        generation,
                        lsn: watches[shard as usize].durable_lsn(),
                    });
                    let sink = RedisSink::new(config, state.clone(), durable, Arc::clone(&stats))?;
                    spawn(sink, logs, stats)?
                }
                SinkSpec::Postgres(config) => {
                    let sink = PostgresSink::new(config, state.clone(), Arc::clone(&stats))?;
                    spawn(sink, logs, stats)?
                }
                SinkSpec::Nats(config) => {
                    spawn(NatsSink::new(config, Arc::clone(&stats))?, logs, stats)?
                }
                SinkSpec::Sqs(config) => {
                    spawn(SqsSink::new(config, Arc::clone(&stats))?, logs, stats)?
                }
                SinkSpec::ServiceBus(config) => spawn(
                    ServiceBusSink::new(config, Arc::clone(&stats))?,
                    logs,
                    stats,
                )?,
            };
            running.push(driver);
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
