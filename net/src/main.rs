//! The `liveops` binary: `liveops` or `liveops serve` runs the engine; `send`, `claim`
//! and `top` talk to a running one (`liveops_net::cli`); `wal` reads a stopped one's
//! data directory.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use liveops_net::config::{self, Config, Env};
use liveops_net::layout::DataDirLock;
use liveops_net::server::Server;

/// mimalloc rather than glibc's malloc: request bodies, parsed events and answers are
/// many and short-lived, and glibc spent ~14 % of the engine's CPU on them under the
/// hostile mix (`_int_malloc`, `unlink_chunk`, `malloc_consolidate` in `perf`); the
/// same-session A/B is in BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// From the signal to exit, the contract allows 2 s; leave room for the process exit.
const SHUTDOWN_DEADLINE_MS: u64 = 1_900;

const USAGE: &str = "usage: liveops [serve]                 run the engine (ports 8080-8083)
       liveops send [FILE|-]           post a signed event or batch to the gateway
       liveops claim PLAYER ITEM       claim a drop a player earned; prints the receipt
       liveops top [--window W] [--limit N]
                                       a leaderboard as a table
       liveops wal verify [DATA_DIR]   check every log segment and checkpoint
       liveops wal dump [DATA_DIR]     print every record as a JSON line
       liveops COMMAND --help          a command's options and examples

Configuration comes from the environment and ./.env; see README.md.

examples:
  cargo run --release                              # build and run the engine
  ./target/release/liveops send sample_events/progression.json
  ./target/release/liveops top --window weekly --limit 10";

const SERVE_HELP: &str = "liveops serve: run the engine (the default command)

usage: liveops [serve]

Serves the gateway (PORT, 8080), fairness (FAIRNESS_PORT, 8081), leaderboard
(LEADERBOARD_PORT, 8082) and progression (PROGRESSION_PORT, 8083) services from one
process, with its data in DATA_DIR (default ./data). Configuration comes from the
environment and ./.env (the environment wins); README.md, \"Configuration\", lists every
key. With ENV=dev (the default) missing secrets are generated and kept in
DATA_DIR/dev-secrets/. SIGTERM or SIGINT stops it within 2 s. Exit status: 0 after a
clean stop, 1 when it cannot start or serve, 2 on bad configuration.

examples:
  liveops
  ENV=prod HMAC_SECRET=... RECEIPT_SECRET=... ADMIN_TOKEN=... DATA_DIR=/var/lib/liveops liveops serve";

const WAL_HELP: &str = "liveops wal: read a stopped engine's write-ahead logs

usage: liveops wal verify [DATA_DIR]   check every log segment and checkpoint
       liveops wal dump [DATA_DIR]     print every record as a JSON line

DATA_DIR defaults to $DATA_DIR, else ./data. Both refuse to run while an engine holds
it (its last records would read as a torn tail). Exit status: 0 when clean, 1 when
damage was found or the directory cannot be read, 2 on a usage error.

examples:
  liveops wal verify
  liveops wal dump data | grep '\"source\":\"log\"' | head";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let help = |text: &str| {
        // Nothing to do if stdout is gone (`liveops --help | head`).
        let _ = writeln!(std::io::stdout(), "{text}");
        ExitCode::SUCCESS
    };
    match args.as_slice() {
        [] | ["serve"] => serve(),
        ["serve", "-h" | "--help"] => help(SERVE_HELP),
        ["wal", rest @ ..] if rest.iter().any(|a| matches!(*a, "-h" | "--help")) => help(WAL_HELP),
        ["wal", command, rest @ ..] if rest.len() <= 1 => wal(command, rest.first().copied()),
        ["-h"] | ["--help"] | ["help"] => help(USAGE),
        ["help", command] => {
            liveops_net::cli::run(command, &["--help"]).unwrap_or_else(|| match *command {
                "serve" => help(SERVE_HELP),
                "wal" => help(WAL_HELP),
                _ => usage_error(),
            })
        }
        [command, rest @ ..] => liveops_net::cli::run(command, rest).unwrap_or_else(usage_error),
    }
}

fn usage_error() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

/// `liveops wal verify|dump [DATA_DIR]`: exit 0 when clean, 1 when damage was found,
/// 2 on usage errors.
fn wal(command: &str, data_dir: Option<&str>) -> ExitCode {
    let data_dir = data_dir
        .map(str::to_owned)
        .or_else(|| std::env::var("DATA_DIR").ok().filter(|d| !d.is_empty()))
        .unwrap_or_else(|| config::DATA_DIR_DEFAULT.to_owned());
    // A live engine is appending: its last records would read as a torn tail.
    if let Err(e) = DataDirLock::check_unheld(data_dir.as_ref()) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let mut out = std::io::stdout().lock();
    let result = match command {
        "verify" => liveops_net::tools::verify(data_dir.as_ref(), &mut out),
        "dump" => liveops_net::tools::dump(data_dir.as_ref(), &mut out),
        _ => {
            eprintln!("{WAL_HELP}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        // `liveops wal dump | head`: the reader has what it wanted.
        Err(liveops_net::tools::ToolError::Output(e))
            if e.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve() -> ExitCode {
    let mut config = match config::from_process() {
        Ok(config) => config,
        Err(problems) => {
            for problem in problems {
                eprintln!("{problem}");
            }
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Before anything reads or writes in the data directory, and for the process's life.
    let lock = match DataDirLock::acquire(&config.data_dir) {
        Ok(lock) => lock,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = log_dev_secrets(&mut config, &lock) {
        tracing::error!("{e}");
        return ExitCode::from(1);
    }
    if config.env != Env::Dev && config.admin_token.is_none() {
        tracing::warn!("ADMIN_TOKEN is not set: admin routes are disabled");
    }
    if config.db_url.is_some() || config.redis_url.is_some() {
        tracing::warn!("DB_URL/REDIS_URL are set, but this build has no Redis or Postgres mirror yet; serving from the engine alone");
    }
    tracing::info!(?config, "starting");
    // Handlers first: a signal during start-up must shut down cleanly, not kill.
    let signals = Signals::install();
    let server = match Server::start(&config, lock) {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    for (service, addr) in &server.addrs {
        tracing::info!("listening service={} addr={addr}", service.as_str());
        if *service == config::Service::Fairness {
            tracing::info!("operator console: http://{addr}/console (the ADMIN_TOKEN signs in)");
        }
    }
    if let Err(e) = server.wait_ready() {
        tracing::error!("{e}");
        server.shutdown(Duration::from_millis(SHUTDOWN_DEADLINE_MS));
        return ExitCode::from(1);
    }
    let signal = signals.wait();
    tracing::info!(signal, "shutting down");
    if server.shutdown(Duration::from_millis(SHUTDOWN_DEADLINE_MS)) {
        tracing::info!("stopped");
    } else {
        tracing::warn!("shards still busy at the shutdown deadline; exiting");
    }
    ExitCode::SUCCESS
}

/// Keeps generated dev secrets across starts and says where: the value itself only
/// when it was just generated (it cannot be known otherwise), later the file to read.
fn log_dev_secrets(config: &mut Config, lock: &DataDirLock) -> Result<(), config::DevSecretError> {
    for kept in config.keep_dev_secrets(lock)? {
        let key = kept.key;
        let path = std::path::absolute(&kept.path).unwrap_or(kept.path);
        if kept.created {
            tracing::warn!(
                "{key} is not set; generated one (ENV=dev only) and kept it in {} for the next starts: export {key}={}",
                path.display(),
                String::from_utf8_lossy(&config.secret(key))
            );
        } else {
            tracing::warn!(
                "{key} is not set; using the one generated at an earlier start (ENV=dev only): export {key}=$(cat {})",
                path.display()
            );
        }
    }
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    runtime: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds");
        let (term, int) = runtime.block_on(async {
            (
                signal(SignalKind::terminate()).expect("SIGTERM handler installs"),
                signal(SignalKind::interrupt()).expect("SIGINT handler installs"),
            )
        });
        Signals { runtime, term, int }
    }

    /// Blocks until SIGTERM or SIGINT; returns its name.
    fn wait(mut self) -> &'static str {
        self.runtime.block_on(async {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        })
    }
}
