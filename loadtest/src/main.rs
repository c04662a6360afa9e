//! `loadtest`: the command line of `liveops-loadtest`. See the library documentation for
//! the method (open loop, no coordinated omission) and the JSON fields.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::json;

use liveops_loadtest::config::{
    MAX_BATCH, MAX_CONNECTIONS, MAX_DURATION_S, MAX_PLAYERS, MAX_RATE, MAX_THREADS,
};
use liveops_loadtest::{
    find_max, parse_loopback_host, FindMaxConfig, Mix, Popularity, RunConfig, Step,
};

/// Open-loop load generator for LiveOps Guard: constant arrival rate, latency from each
/// request's intended send time (no coordinated omission), HdrHistogram percentiles.
/// Targets loopback only; every run ends by itself.
#[derive(Parser, Debug)]
#[command(name = "loadtest", version)]
struct Cli {
    /// Target host: 127.0.0.0/8, ::1 or localhost only.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Gateway port (POST /events).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Leaderboard port (the reads).
    #[arg(long, default_value_t = 8082)]
    read_port: u16,
    /// Requests per second, writes and reads together (a batch is one request). Required
    /// unless --find-max.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured seconds (at most 3600). Required unless --find-max.
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds at the target rate before measuring (not recorded).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Keep-alive connections to the gateway.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Keep-alive connections to the leaderboard port (when --read-ratio > 0).
    #[arg(long, default_value_t = 16)]
    read_connections: usize,
    /// Generator worker threads (the engine shares the machine).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Distinct players lt_0 .. lt_{N-1}.
    #[arg(long, default_value_t = 100_000)]
    players: u64,
    /// Zipf popularity with this exponent (e.g. 1.1) instead of uniform.
    #[arg(long)]
    zipf: Option<f64>,
    /// Event mix: relative weights of progression, boss_kill, drop_claimed.
    #[arg(long, default_value = "progression=80,boss_kill=15,drop_claimed=5")]
    mix: String,
    /// Events per POST /events (1: a single object; more: a JSON array).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Fraction of requests that are leaderboard reads (half top-N, half player rank).
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
    /// `limit` of the top-N reads.
    #[arg(long, default_value_t = 100)]
    top_n: u32,
    /// Send a unique Idempotency-Key with every write.
    #[arg(long)]
    idempotency_keys: bool,
    /// The engine's HMAC_SECRET.
    #[arg(long, env = "HMAC_SECRET", hide_env_values = true)]
    secret: String,
    /// Seconds after its intended send time a request is given up.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Seed of the player and event choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Pacing quantum, microseconds: the pacer wakes at most this often (0: for every
    /// request). Larger saves generator CPU at high rates (fewer wake-ups); requests may
    /// then wait up to the quantum, which the latencies include.
    #[arg(long, default_value_t = 100)]
    pace_quantum_us: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,

    /// Search the highest rate whose p99 (every class) stays within --p99-ms.
    #[arg(long)]
    find_max: bool,
    /// The p99 bound of --find-max, milliseconds.
    #[arg(long, default_value_t = 2.0)]
    p99_ms: f64,
    /// First rate of --find-max (then doubled while passing).
    #[arg(long, default_value_t = 1000.0)]
    start_rate: f64,
    /// Highest rate --find-max tries.
    #[arg(long, default_value_t = 1_000_000.0)]
    max_rate: f64,
    /// Measured seconds of each --find-max step.
    #[arg(long, default_value_t = 5.0)]
    step_duration: f64,
    /// Warm-up seconds of each --find-max step.
    #[arg(long, default_value_t = 1.0)]
    step_warmup: f64,
    /// Pause between --find-max steps, seconds.
    #[arg(long, default_value_t = 1.0)]
    step_pause: f64,
    /// --find-max stops when failing and passing rates are this close (fraction).
    #[arg(long, default_value_t = 0.05)]
    resolution: f64,
    /// Error fraction above which a --find-max step fails.
    #[arg(long, default_value_t = 0.01)]
    max_error_rate: f64,
    /// Most --find-max steps.
    #[arg(long, default_value_t = 30)]
    max_steps: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn base_config(cli: &Cli) -> anyhow::Result<RunConfig> {
    let host = parse_loopback_host(&cli.host).map_err(anyhow::Error::msg)?;
    let mix = Mix::parse(&cli.mix).map_err(|e| anyhow::anyhow!("--mix: {e}"))?;
    let popularity = match cli.zipf {
        Some(s) => Popularity::Zipf { s },
        None => Popularity::Uniform,
    };
    let mut cfg = RunConfig::new(cli.secret.clone().into_bytes(), 1.0, 1.0);
    cfg.host = host;
    cfg.port = cli.port;
    cfg.read_port = cli.read_port;
    cfg.warmup_s = cli.warmup;
    cfg.connections = cli.connections;
    cfg.read_connections = cli.read_connections;
    cfg.threads = cli.threads;
    cfg.players = cli.players;
    cfg.popularity = popularity;
    cfg.mix = mix;
    cfg.batch = cli.batch;
    cfg.read_ratio = cli.read_ratio;
    cfg.top_n = cli.top_n;
    cfg.idempotency_keys = cli.idempotency_keys;
    cfg.timeout_s = cli.timeout;
    cfg.seed = cli.seed;
    cfg.pace_quantum_us = cli.pace_quantum_us;
    Ok(cfg)
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut cfg = base_config(&cli)?;
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let describe = |cfg: &RunConfig| {
        format!(
            "target {} (writes :{}, reads :{}), {} players ({}), mix {}, batch {}, read ratio {}, {}+{} connections, {} thread(s){}",
            cfg.host,
            cfg.port,
            cfg.read_port,
            cfg.players,
            match cfg.popularity {
                Popularity::Uniform => "uniform".to_string(),
                Popularity::Zipf { s } => format!("zipf s={s}"),
            },
            cfg.mix,
            cfg.batch,
            cfg.read_ratio,
            cfg.connections,
            if cfg.read_ratio > 0.0 { cfg.read_connections } else { 0 },
            cfg.threads,
            if cfg.idempotency_keys { ", idempotency keys" } else { "" }
        )
    };

    if cli.find_max {
        let fm = FindMaxConfig {
            p99_ms: cli.p99_ms,
            start_rate: cli.start_rate,
            max_rate: cli.max_rate,
            step_duration_s: cli.step_duration,
            step_warmup_s: cli.step_warmup,
            pause_s: cli.step_pause,
            resolution: cli.resolution,
            max_error_rate: cli.max_error_rate,
            max_steps: cli.max_steps,
        };
        fm.validate().map_err(anyhow::Error::msg)?;
        // Check everything but the rate before the first step.
        cfg.rate = fm.start_rate;
        cfg.duration_s = fm.step_duration_s;
        cfg.warmup_s = fm.step_warmup_s;
        cfg.validate().map_err(anyhow::Error::msg)?;
        println!("find-max: p99 <= {} ms, {}", fm.p99_ms, describe(&cfg));
        println!(
            "{:>4} {:<9} {:>11} {:>6} {:>10} {:>10} {:>10} {:>9} {:>10}  reasons",
            "step", "phase", "rate", "pass", "p50 ms", "p99 ms", "p99.9 ms", "errors %", "events/s"
        );
        let on_step = |s: &Step| {
            let write = s.report.classes.get("write");
            let (p50, p999) = write
                .map(|c| (c.latency_ms.p50, c.latency_ms.p99_9))
                .unwrap_or((0.0, 0.0));
            println!(
                "{:>4} {:<9} {:>11.0} {:>6} {:>10.3} {:>10.3} {:>10.3} {:>9.3} {:>10.0}  {}",
                s.index,
                s.phase,
                s.rate,
                if s.pass { "yes" } else { "no" },
                p50,
                s.p99_ms,
                p999,
                s.error_rate * 100.0,
                s.report.events_per_s,
                s.reasons.join("; ")
            );
        };
        let report = find_max(&cfg, &fm, on_step)?;
        match report.max_rate {
            Some(rate) => println!(
                "max rate with p99 <= {} ms: {:.0} requests/s ({:.0} events/s){}",
                fm.p99_ms,
                rate,
                report.max_events_per_s.unwrap_or(0.0),
                if report.hit_ceiling {
                    " -- the --max-rate ceiling: the real maximum may be higher"
                } else {
                    ""
                }
            ),
            None => println!("no rate met p99 <= {} ms", fm.p99_ms),
        }
        if let Some(path) = &cli.json {
            let doc = json!({
                "tool": "liveops-loadtest",
                "version": env!("CARGO_PKG_VERSION"),
                "mode": "find_max",
                "started_at": started_at,
                "config": cfg,
                "find_max_config": fm,
                "find_max": report,
            });
            write_json(path, &doc)?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    let (Some(rate), Some(duration)) = (cli.rate, cli.duration) else {
        anyhow::bail!("--rate and --duration are required (or use --find-max)");
    };
    cfg.rate = rate;
    cfg.duration_s = duration;
    cfg.validate().map_err(|e| {
        anyhow::anyhow!(
            "{e} (limits: rate <= {MAX_RATE}, duration <= {MAX_DURATION_S} s, connections <= {MAX_CONNECTIONS}, players <= {MAX_PLAYERS}, batch <= {MAX_BATCH}, threads <= {MAX_THREADS})"
        )
    })?;
    println!("{}", describe(&cfg));
    let report = liveops_loadtest::run(&cfg)?;
    print!("{}", report.render());
    if let Some(path) = &cli.json {
        let doc = json!({
            "tool": "liveops-loadtest",
            "version": env!("CARGO_PKG_VERSION"),
            "mode": "run",
            "started_at": started_at,
            "config": cfg,
            "result": report,
        });
        write_json(path, &doc)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_json(path: &PathBuf, doc: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(doc)?;
    std::fs::write(path, text + "\n")
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    println!("JSON report: {}", path.display());
    Ok(())
}
