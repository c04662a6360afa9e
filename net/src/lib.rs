//! # liveops-net
//!
//! The serving side of LiveOps Guard: a thread-per-core runtime that runs one shard of
//! [`liveops_engine`] per pinned thread and serves the four HTTP services from every
//! thread through SO_REUSEPORT.
//!
//! * [`config`] reads and validates the environment (and `.env`).
//! * [`runtime`] spawns pinned current-thread runtimes and serves HTTP/1.1 with
//!   graceful shutdown; the bench's baseline server reuses it.
//! * [`mesh`] carries work to the shard owning it over bounded lock-free queues.
//! * [`routes`] maps requests to shard work; [`http`] has the response and error shapes.
//!   [`heavy_work`] gives large batches and long pages at most half of a thread while
//!   other work is ready.
//! * [`engine_state`] answers the change feed's sinks from the shards.
//! * [`server`] assembles it all; [`metrics`] is the Prometheus registry.
//! * [`cli`] is the command line for people (`liveops send`, `claim`, `top`); [`tools`]
//!   reads a stopped engine's data directory (`liveops wal`).

pub mod cli;
pub mod committer;
pub mod config;
pub mod engine_state;
pub mod heavy_work;
pub mod host_budget;
pub mod http;
pub mod layout;
pub mod mesh;
pub mod metrics;
pub mod mirrors;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod store;
pub mod syn_gate;
pub mod tools;
