//! `fairsim`: plays a seeded population of honest players, pros and cheaters against a
//! real engine (loopback only) and reports how its fairness guard judged them. An
//! instrument, not a test: exit 0 whatever the figures, unless `--require` thresholds
//! are unmet (1) or the engine is unreachable (2). See FAIRNESS.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use liveops_loadtest::fairsim::driver::{self, DriverConfig, Target, EVENTS_MAX};
use liveops_loadtest::fairsim::params::{Params, DURATION_MAX_S, PLAYERS_MAX};
use liveops_loadtest::fairsim::plan::plan_player;
use liveops_loadtest::fairsim::population::{generate, Role};
use liveops_loadtest::fairsim::report::{build, check_requirements};
use liveops_loadtest::parse_loopback_host;

/// Most event connections.
const CONNECTIONS_MAX: usize = 256;

#[derive(Parser)]
#[command(about = "Population simulator judging the fairness guard (loopback only)")]
struct Cli {
    /// Engine host (loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Gateway port (POST /events).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Leaderboard port.
    #[arg(long, default_value_t = 8082)]
    read_port: u16,
    /// Fairness port.
    #[arg(long, default_value_t = 8081)]
    fairness_port: u16,
    /// The engine's HMAC_SECRET.
    #[arg(long, env = "HMAC_SECRET", hide_env_values = true, default_value = "")]
    secret: String,
    /// Seed of the population and of every player's play.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Real seconds of play (then the final reads).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Starting values: default, whales, casual, stress.
    #[arg(long, default_value = "default")]
    profile: String,
    /// Players (overrides the profile's).
    #[arg(long)]
    players: Option<u32>,
    /// Percent of players who cheat (overrides the profile's).
    #[arg(long)]
    cheaters_percent: Option<f64>,
    /// The engine's RATE_LIMIT_MAX (floods are sized from it).
    #[arg(long)]
    rate_limit_max: Option<f64>,
    /// Cheat families played (comma-separated; default all): sets the others' weight to 0.
    #[arg(long)]
    families: Option<String>,
    /// Any parameter: key=value[,key=value...] (repeatable; see --print-params).
    #[arg(long = "param", short = 'P')]
    params: Vec<String>,
    /// Prints every parameter's value and exits.
    #[arg(long)]
    print_params: bool,
    /// Plans the population and prints its summary, without an engine.
    #[arg(long)]
    plan_only: bool,
    /// Concurrent event connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Longest wait for one answer, seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Prefix of the player ids.
    #[arg(long, default_value = "fs_")]
    id_prefix: String,
    /// Board windows read at the end.
    #[arg(long, default_value = "daily,weekly,seasonal")]
    windows: String,
    /// Writes the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Thresholds, e.g. recall=0.95,honest_blocked=0.001,pro_blocked=0,purity=0.99:
    /// exit 1 when one is unmet.
    #[arg(long)]
    require: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fairsim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn params_of(cli: &Cli) -> anyhow::Result<Params> {
    let mut params = Params::profile(&cli.profile)?;
    if let Some(n) = cli.players {
        anyhow::ensure!(
            (1..=PLAYERS_MAX).contains(&n),
            "players must be 1..={PLAYERS_MAX}"
        );
        params.players = n;
    }
    if let Some(v) = cli.cheaters_percent {
        params.set("cheaters_percent", &v.to_string())?;
    }
    if let Some(v) = cli.rate_limit_max {
        params.set("rate_limit_max", &v.to_string())?;
    }
    if let Some(list) = &cli.families {
        let mut weights = [0.0; 7];
        for name in list.split(',').map(str::trim) {
            let f = liveops_loadtest::fairsim::family::Family::parse(name)
                .ok_or_else(|| anyhow::anyhow!("unknown cheat family {name:?}"))?;
            weights[f as usize] = params.family_weights[f as usize].max(1.0);
        }
        params.family_weights = weights;
    }
    for assignments in &cli.params {
        params.set_all(assignments)?;
    }
    params.validate()?;
    Ok(params)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let params = params_of(&cli)?;
    if cli.print_params {
        println!("players={}", params.players);
        for line in params.listing() {
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(
        cli.duration > 0.0 && cli.duration <= DURATION_MAX_S,
        "duration must be in (0, {DURATION_MAX_S}] s"
    );
    anyhow::ensure!(
        (1..=CONNECTIONS_MAX).contains(&cli.connections),
        "connections must be 1..={CONNECTIONS_MAX}"
    );
    anyhow::ensure!(
        cli.timeout > 0.0 && cli.timeout <= 60.0,
        "timeout must be in (0, 60] s"
    );
    let host = parse_loopback_host(&cli.host).map_err(anyhow::Error::msg)?;
    let duration_ms = (cli.duration * 1000.0) as u64;
    let players = generate(&params, cli.seed, &cli.id_prefix, duration_ms);
    let plans: Vec<_> = players
        .iter()
        .map(|p| plan_player(&params, cli.seed, p, duration_ms))
        .collect();
    let planned: usize = plans.iter().map(Vec::len).sum();
    let cheat_events: usize = plans.iter().flatten().filter(|e| e.cheat).count();
    println!(
        "fairsim: {} players ({} cheaters, {} pros), {planned} events planned ({cheat_events} cheat) over {} s: {:.0} events/s",
        players.len(),
        players.iter().filter(|p| !p.role.is_honest()).count(),
        players.iter().filter(|p| p.role == Role::Pro).count(),
        cli.duration,
        planned as f64 / cli.duration
    );
    anyhow::ensure!(
        planned <= EVENTS_MAX,
        "{planned} events planned, at most {EVENTS_MAX}"
    );
    if cli.plan_only {
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(
        cli.secret.len() >= 32,
        "--secret (or HMAC_SECRET) of at least 32 bytes is required"
    );
    let cfg = DriverConfig {
        target: Target {
            host,
            gateway: cli.port,
            reads: cli.read_port,
            fairness: cli.fairness_port,
        },
        secret: cli.secret.clone().into_bytes(),
        connections: cli.connections,
        timeout: Duration::from_secs_f64(cli.timeout),
        prefix: cli.id_prefix.clone(),
        windows: cli
            .windows
            .split(',')
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty())
            .collect(),
        poll_every: Duration::from_secs(1),
        run_tag: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let output = match runtime.block_on(driver::run(&cfg, players.clone(), plans)) {
        Ok(output) => output,
        Err(e) => {
            eprintln!("fairsim: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let report = build(
        cli.seed,
        &params,
        cli.duration,
        &players,
        &output.obs,
        output.boards,
        output.facts,
    );
    print!("{}", report.to_text());
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    if let Some(spec) = &cli.require {
        let unmet = check_requirements(&report, spec)?;
        if !unmet.is_empty() {
            for line in &unmet {
                println!("fairsim: unmet: {line}");
            }
            return Ok(ExitCode::from(1));
        }
        println!("fairsim: every requirement met");
    }
    Ok(ExitCode::SUCCESS)
}
