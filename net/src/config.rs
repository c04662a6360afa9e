//! Configuration from the environment and an optional `.env` file.
//!
//! Every key is validated at start; each problem becomes one line naming the key and
//! what is wrong, and the binary exits with code 2. The environment wins over `.env`.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use liveops_engine::event::TsPolicy;
use liveops_engine::fairness::Thresholds;
use liveops_engine::policy::Policy;
use liveops_engine::window::WindowKind;
use liveops_mirror::bus::servicebus::ServiceBusTarget;
use liveops_mirror::bus::{BUS_STREAM_DEFAULT, NATS_URL_DEFAULT};

/// Shortest accepted HMAC and receipt secret: 256 bits, the HMAC-SHA256 block strength.
pub const SECRET_BYTES_MIN: usize = 32;
/// Largest `LB_TOPN`: the leaderboard's page limit.
pub const LEADERBOARD_PAGE_MAX: usize = 1000;
/// Most shards: far more than any machine's cores, small enough to catch a typo.
const SHARDS_MAX: usize = 1024;
/// Largest `MAX_CONNECTIONS` / `MAX_CONNECTIONS_PER_HOST`: Linux's default `fs.nr_open`.
const CONNECTIONS_MAX: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    Dev,
    Staging,
    Prod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after the data reached the disk (`fdatasync`).
    Fsync,
    /// Acknowledge after the write; sync on an interval.
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Corruption before the log's tail stops the start.
    Strict,
    /// Corruption is cut away (with everything after it) and reported.
    Truncate,
}

/// The four services and their ports, in a fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Gateway,
    Fairness,
    Leaderboard,
    Progression,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::Gateway,
        Service::Fairness,
        Service::Leaderboard,
        Service::Progression,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Fairness => "fairness",
            Service::Leaderboard => "leaderboard",
            Service::Progression => "progression",
        }
    }

    fn port_key(self) -> &'static str {
        match self {
            Service::Gateway => "PORT",
            Service::Fairness => "FAIRNESS_PORT",
            Service::Leaderboard => "LEADERBOARD_PORT",
            Service::Progression => "PROGRESSION_PORT",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Service::Gateway => 8080,
            Service::Fairness => 8081,
            Service::Leaderboard => 8082,
            Service::Progression => 8083,
        }
    }
}

/// Where accepted events and decisions are forwarded (`BUS_KIND`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    /// Nowhere: the shards talk over in-memory queues and nothing leaves the process.
    Inmem,
    /// A NATS JetStream stream (`NATS_URL`, `BUS_STREAM`).
    Nats { url: String, stream: String },
    /// An SQS FIFO queue (`SQS_QUEUE_URL`, optional `SQS_ENDPOINT`; region and
    /// credentials the AWS way).
    Sqs {
        queue_url: String,
        endpoint: Option<String>,
    },
    /// An Azure Service Bus queue (`SERVICEBUS_CONNECTION_STRING`, `SERVICEBUS_QUEUE`).
    ServiceBus {
        connection_string: String,
        queue: String,
    },
}

impl Bus {
    pub fn kind(&self) -> &'static str {
        match self {
            Bus::Inmem => "inmem",
            Bus::Nats { .. } => "nats",
            Bus::Sqs { .. } => "sqs",
            Bus::ServiceBus { .. } => "servicebus",
        }
    }
}

#[derive(Clone)]
pub struct Config {
    pub env: Env,
    pub cloud: Option<String>,
    pub bind_addr: IpAddr,
    /// Port per service, in [`Service::ALL`] order; 0 lets the OS choose.
    pub ports: [u16; 4],
    pub hmac_secret: Vec<u8>,
    pub receipt_secret: Vec<u8>,
    /// `None` disables the admin routes (they answer 401 saying so).
    pub admin_token: Option<String>,
    pub db_url: Option<String>,
    pub redis_url: Option<String>,
    /// Where the event stream is forwarded (`BUS_KIND` and its keys).
    pub bus: Bus,
    pub data_dir: PathBuf,
    pub shards: usize,
    /// Jobs one shard's inbox holds before requests for it get 503 (`SHARD_INBOX_MAX`).
    pub shard_inbox_max: usize,
    /// Default page size of `GET /leaderboard` (`LB_TOPN`).
    pub lb_topn: usize,
    /// Leaderboard read units one client host may spend per second, also its burst
    /// (`READ_UNITS_PER_HOST_S`): reads are unauthenticated, and a deep page costs the
    /// shards far more than a write, so no host may take all of their time.
    pub read_units_per_host_s: u64,
    pub snapshot_cron: String,
    /// Entries of each live window written to Postgres at every `SNAPSHOT_CRON` tick, and
    /// of each closed period at its close (`SNAPSHOT_TOPN`).
    pub snapshot_topn: usize,
    /// Log bytes per shard kept for lagging mirrors beyond what checkpoints need
    /// (`MIRROR_RETAIN_MB`): a mirror down longer than this much log takes a gap.
    pub mirror_retain_bytes: u64,
    /// Extra root certificate (PEM file) trusted for `rediss://` (`REDIS_TLS_CA`): a
    /// server with a private CA.
    pub redis_tls_ca: Option<PathBuf>,
    /// How long a closed period's Redis set `lb:{season}:{window}:{period}` is kept
    /// (`REDIS_CLOSED_TTL`).
    pub redis_closed_ttl_s: u64,
    pub durability: Durability,
    /// With batch durability, the longest a write waits for its fsync; with fsync
    /// durability, the longest a write that acknowledges nothing does
    /// (`FSYNC_INTERVAL_MS`).
    pub fsync_interval_ms: u64,
    pub recovery_mode: RecoveryMode,
    /// Log records per shard after which a checkpoint is taken (`CHECKPOINT_RECORDS`).
    pub checkpoint_records: u64,
    /// Time after which a checkpoint is taken if anything changed (`CHECKPOINT_INTERVAL`).
    pub checkpoint_interval_ms: u64,
    pub policy: Policy,
    /// From a request's first byte, the time its headers and body have to arrive before
    /// it gets 408 and its connection closes (`REQUEST_READ_TIMEOUT_MS`): a slow or
    /// stalled sender cannot hold a connection. Each connection gets up to a quarter more
    /// (`runtime::spread`).
    pub request_read_timeout_ms: u64,
    /// How long a keep-alive connection may wait for its next request
    /// (`IDLE_TIMEOUT_MS`), plus up to a quarter drawn per connection.
    pub idle_timeout_ms: u64,
    /// Open connections the process serves at most (`MAX_CONNECTIONS`); `None`: derived
    /// at start from the file-descriptor limit.
    pub max_connections: Option<usize>,
    /// Open connections one client IP address may hold (`MAX_CONNECTIONS_PER_HOST`), so
    /// no single host exhausts the budget shared by all; `None`: derived at start.
    pub max_connections_per_host: Option<usize>,
    /// Secrets not set and generated (dev only); [`Config::keep_dev_secrets`] swaps
    /// them for the ones an earlier start kept in the data directory.
    pub generated_secrets: Vec<&'static str>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets stay out of logs.
        f.debug_struct("Config")
            .field("env", &self.env)
            .field("bind_addr", &self.bind_addr)
            .field("ports", &self.ports)
            .field("shards", &self.shards)
            .field("data_dir", &self.data_dir)
            .field("season", &self.policy.season)
            .finish_non_exhaustive()
    }
}

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error: {}: {}", self.key, self.message)
    }
}

/// Reads the process environment, with `.env` in the working directory under it.
pub fn from_process() -> Result<Config, Vec<ConfigProblem>> {
    let vars = process_vars().map_err(|problem| vec![problem])?;
    from_vars(&vars, random_secret)
}

/// The settings as the engine sees them: `.env` in the working directory, with the
/// process environment winning over it. The command line reads `HMAC_SECRET` and
/// `DATA_DIR` from here so it signs with the secret the engine checks.
pub fn process_vars() -> Result<HashMap<String, String>, ConfigProblem> {
    let mut vars: HashMap<String, String> = HashMap::new();
    match dotenvy::from_path_iter(".env") {
        Ok(iter) => {
            for item in iter {
                let (k, v) = item.map_err(|e| ConfigProblem {
                    key: ".env",
                    message: format!("cannot parse: {e}"),
                })?;
                vars.insert(k, v);
            }
        }
        Err(e) if e.not_found() => {}
        Err(e) => {
            return Err(ConfigProblem {
                key: ".env",
                message: format!("cannot read: {e}"),
            })
        }
    }
    vars.extend(std::env::vars());
    Ok(vars)
}

/// A set, non-empty value, trimmed: how every key is read.
pub fn setting<'a>(vars: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    vars.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// `DATA_DIR` when unset.
pub const DATA_DIR_DEFAULT: &str = "./data";

fn random_secret() -> Vec<u8> {
    let mut bytes = [0u8; 32];
    let mut file = std::fs::File::open("/dev/urandom").expect("/dev/urandom is readable");
    std::io::Read::read_exact(&mut file, &mut bytes).expect("/dev/urandom yields bytes");
    hex::encode(bytes).into_bytes()
}

/// Where generated dev secrets are kept between starts: `DATA_DIR/dev-secrets/<KEY>`.
pub const DEV_SECRETS_DIR: &str = "dev-secrets";

/// A generated dev secret and the file that keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSecret {
    pub key: &'static str,
    pub path: PathBuf,
    /// Generated at this start (else read back from an earlier one).
    pub created: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DevSecretError {
    #[error("{key}: cannot read the dev secret kept in {}: {source}", .path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key}: the dev secret kept in {} is {len} bytes, under {SECRET_BYTES_MIN}; delete the file to generate a new one", .path.display())]
    TooShort {
        key: &'static str,
        path: PathBuf,
        len: usize,
    },
    #[error("{key}: cannot keep the generated dev secret in {}: {source}", .path.display())]
    Write {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Config {
    /// With `ENV=dev` and a secret unset, the engine must sign with the same secret at
    /// every start, or receipts minted before a restart stop verifying while the claims
    /// they record still stand: each generated secret is replaced by the one kept in
    /// `DATA_DIR/dev-secrets/<KEY>`, or, at the first start, kept there (mode 0600).
    /// Takes the data directory's lock because it reads and writes inside it.
    pub fn keep_dev_secrets(
        &mut self,
        lock: &crate::layout::DataDirLock,
    ) -> Result<Vec<KeptSecret>, DevSecretError> {
        let dir = lock.data_dir().join(DEV_SECRETS_DIR);
        let mut kept = Vec::new();
        for key in self.generated_secrets.clone() {
            let path = dev_secret_path(lock.data_dir(), key);
            let created = match read_dev_secret(&path, key)? {
                Some(bytes) => {
                    self.set_secret(key, bytes);
                    false
                }
                None => {
                    let secret = self.secret(key);
                    write_private(&dir, &path, &secret).map_err(|source| {
                        DevSecretError::Write {
                            key,
                            path: path.clone(),
                            source,
                        }
                    })?;
                    true
                }
            };
            kept.push(KeptSecret { key, path, created });
        }
        Ok(kept)
    }
}

/// The file keeping `key`'s generated dev secret for the engine serving `data_dir`.
pub fn dev_secret_path(data_dir: &std::path::Path, key: &str) -> PathBuf {
    data_dir.join(DEV_SECRETS_DIR).join(key)
}

/// The dev secret kept in `path`, without an editor's trailing newline; `None` when no
/// engine kept one there yet.
pub fn read_dev_secret(
    path: &std::path::Path,
    key: &'static str,
) -> Result<Option<Vec<u8>>, DevSecretError> {
    let mut bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            let path = path.to_path_buf();
            return Err(DevSecretError::Read { key, path, source });
        }
    };
    while bytes.last().is_some_and(u8::is_ascii_whitespace) {
        bytes.pop();
    }
    if bytes.len() < SECRET_BYTES_MIN {
        let (path, len) = (path.to_path_buf(), bytes.len());
        return Err(DevSecretError::TooShort { key, path, len });
    }
    Ok(Some(bytes))
}

impl Config {
    /// The value of a secret that may be generated in dev (see
    /// [`Config::generated_secrets`]).
    pub fn secret(&self, key: &str) -> Vec<u8> {
        match key {
            "HMAC_SECRET" => self.hmac_secret.clone(),
            "RECEIPT_SECRET" => self.receipt_secret.clone(),
            _ => self.admin_token.clone().unwrap_or_default().into_bytes(),
        }
    }

    fn set_secret(&mut self, key: &str, bytes: Vec<u8>) {
        match key {
            "HMAC_SECRET" => self.hmac_secret = bytes,
            "RECEIPT_SECRET" => self.receipt_secret = bytes,
            _ => self.admin_token = Some(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }
}

/// Writes `bytes` to `path` readable by the owner only (in a directory only the owner
/// can list), atomically: write, fsync, rename, fsync the directory.
fn write_private(
    dir: &std::path::Path,
    path: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    // The umask can only narrow the mode; set it exactly anyway.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Parses and validates; collects every problem rather than stopping at the first.
pub fn from_vars(
    vars: &HashMap<String, String>,
    generate_secret: fn() -> Vec<u8>,
) -> Result<Config, Vec<ConfigProblem>> {
    let mut p = Parser {
        vars,
        problems: Vec::new(),
    };
    let env = p.parse("ENV", "dev", |s| match s {
        "dev" => Ok(Env::Dev),
        "staging" => Ok(Env::Staging),
        "prod" => Ok(Env::Prod),
        _ => Err("must be dev, staging or prod".into()),
    });
    let bind_addr = p.parse("BIND_ADDR", "0.0.0.0", |s| {
        s.parse::<IpAddr>()
            .map_err(|e| format!("not an IP address: {e}"))
    });
    let mut ports = [0u16; 4];
    for (i, service) in Service::ALL.iter().enumerate() {
        ports[i] = p
            .parse(
                service.port_key(),
                &service.default_port().to_string(),
                |s| {
                    s.parse::<u16>()
                        .map_err(|_| "must be a port number 0..=65535".into())
                },
            )
            .unwrap_or(0);
    }
    for i in 0..4 {
        for j in i + 1..4 {
            if ports[i] != 0 && ports[i] == ports[j] {
                p.problem(
                    Service::ALL[j].port_key(),
                    format!("port {} is also {}", ports[j], Service::ALL[i].port_key()),
                );
            }
        }
    }
    let mut generated_secrets = Vec::new();
    let mut secret = |p: &mut Parser, key: &'static str| -> Vec<u8> {
        match p.get(key) {
            Some(s) if s.len() >= SECRET_BYTES_MIN => s.as_bytes().to_vec(),
            Some(s) => {
                p.problem(
                    key,
                    format!("must be at least {SECRET_BYTES_MIN} bytes, got {}", s.len()),
                );
                Vec::new()
            }
            None if env == Some(Env::Dev) => {
                generated_secrets.push(key);
                generate_secret()
            }
            None => {
                p.problem(key, "is required outside ENV=dev".into());
                Vec::new()
            }
        }
    };
    let hmac_secret = secret(&mut p, "HMAC_SECRET");
    let receipt_secret = secret(&mut p, "RECEIPT_SECRET");
    let admin_token = match p.get("ADMIN_TOKEN") {
        Some(t) if t.len() < 16 => {
            p.problem("ADMIN_TOKEN", "must be at least 16 characters".into());
            None
        }
        Some(t) => Some(t.to_owned()),
        // The console (and block/unblock) must work on a fresh clone's first run: dev
        // gets a token like its other secrets, kept with them.
        None if env == Some(Env::Dev) => {
            generated_secrets.push("ADMIN_TOKEN");
            Some(String::from_utf8_lossy(&generate_secret()).into_owned())
        }
        None => None,
    };
    let db_url = p.get("DB_URL").map(str::to_owned);
    if let Some(url) = &db_url {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            p.problem(
                "DB_URL",
                "must start with postgres:// or postgresql://".into(),
            );
        }
    }
    let redis_url = p.get("REDIS_URL").map(str::to_owned);
    if let Some(url) = &redis_url {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            p.problem("REDIS_URL", "must start with redis:// or rediss://".into());
        }
    }
    let bus_kind = p.parse("BUS_KIND", "inmem", |s| match s {
        "inmem" | "nats" | "sqs" | "servicebus" => Ok(s.to_owned()),
        _ => Err("must be inmem, nats, sqs or servicebus".into()),
    });
    let bus = match bus_kind.as_deref() {
        Some("nats") => {
            let url = p.get("NATS_URL").unwrap_or(NATS_URL_DEFAULT).to_owned();
            if !(url.starts_with("nats://") || url.starts_with("tls://")) {
                p.problem("NATS_URL", "must start with nats:// or tls://".into());
            }
            let stream = p.get("BUS_STREAM").unwrap_or(BUS_STREAM_DEFAULT).to_owned();
            let stream_name_ok = stream.len() <= 64
                && stream
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !stream_name_ok {
                p.problem("BUS_STREAM", "must be 1-64 of A-Z a-z 0-9 _ -".into());
            }
            Bus::Nats { url, stream }
        }
        Some("sqs") => {
            let queue_url = p.get("SQS_QUEUE_URL").map(str::to_owned);
            match &queue_url {
                None => p.problem("SQS_QUEUE_URL", "is required with BUS_KIND=sqs".into()),
                Some(url) if !url.ends_with(".fifo") => p.problem(
                    "SQS_QUEUE_URL",
                    "must name a FIFO queue (ending in .fifo): order per player needs one".into(),
                ),
                Some(_) => {}
            }
            let endpoint = p.get("SQS_ENDPOINT").map(str::to_owned);
            if let Some(e) = &endpoint {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    p.problem("SQS_ENDPOINT", "must start with http:// or https://".into());
                }
            }
            Bus::Sqs {
                queue_url: queue_url.unwrap_or_default(),
                endpoint,
            }
        }
        Some("servicebus") => {
            let connection_string = p
                .get("SERVICEBUS_CONNECTION_STRING")
                .unwrap_or_default()
                .to_owned();
            let queue = p.get("SERVICEBUS_QUEUE").unwrap_or_default().to_owned();
            // Checked as the sink will read it; the message never repeats the key.
            if let Err(e) = ServiceBusTarget::parse(&connection_string, &queue) {
                p.problem("SERVICEBUS_CONNECTION_STRING", e.to_string());
            }
            Bus::ServiceBus {
                connection_string,
                queue,
            }
        }
        _ => Bus::Inmem,
    };
    let data_dir = PathBuf::from(p.get("DATA_DIR").unwrap_or(DATA_DIR_DEFAULT));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = p.parse("SHARDS", &cores.to_string(), |s| match s.parse::<usize>() {
        Ok(n) if (1..=SHARDS_MAX).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number 1..={SHARDS_MAX}")),
    });
    let shard_inbox_max = p.parse("SHARD_INBOX_MAX", "65536", |s| match s.parse::<usize>() {
        Ok(n) if (1..=1 << 24).contains(&n) => Ok(n),
        _ => Err("must be a whole number 1..=16777216".into()),
    });
    let season = p.parse("SEASON", "1", |s| {
        let ok = (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(s.to_owned())
        } else {
            Err("must match ^[A-Za-z0-9_-]{1,32}$".into())
        }
    });
    let windows = p.parse("LB_WINDOWS", "daily,weekly,seasonal", |s| {
        let mut kinds = Vec::new();
        for part in s.split(',').map(str::trim) {
            let kind: WindowKind = part.parse()?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() {
            Err("must name at least one window".into())
        } else {
            Ok(kinds)
        }
    });
    let lb_topn = p.parse("LB_TOPN", "100", |s| match s.parse::<usize>() {
        Ok(n) if (1..=LEADERBOARD_PAGE_MAX).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number 1..={LEADERBOARD_PAGE_MAX}")),
    });
    let read_units_per_host_s = p.parse("READ_UNITS_PER_HOST_S", "100000", |s| {
        match s.parse::<u64>() {
            Ok(n) if (1..=100_000_000).contains(&n) => Ok(n),
            _ => Err("must be a whole number 1..=100000000".into()),
        }
    });
    let snapshot_cron = p.parse("SNAPSHOT_CRON", "0 */15 * * * *", |s| {
        liveops_mirror::postgres::parse_cron(s).map(|_| s.to_owned())
    });
    let snapshot_topn = p.parse("SNAPSHOT_TOPN", "100", |s| match s.parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err("must be a whole number 1..=10000".into()),
    });
    let mirror_retain_bytes = p.parse("MIRROR_RETAIN_MB", "1024", |s| match s.parse::<u64>() {
        Ok(n) if (1..=1_048_576).contains(&n) => Ok(n << 20),
        _ => Err("must be a whole number of MiB 1..=1048576".into()),
    });
    let redis_tls_ca = p.get("REDIS_TLS_CA").map(PathBuf::from);
    if let Some(path) = &redis_tls_ca {
        if !path.is_file() {
            let message = format!("{} is not a readable file", path.display());
            p.problem("REDIS_TLS_CA", message);
        }
    }
    let redis_closed_ttl_s = p.parse("REDIS_CLOSED_TTL", "8d", |s| match parse_duration(s) {
        Some(d) if d.as_secs() >= 1 && d.as_secs() <= 366 * 86_400 => Ok(d.as_secs()),
        _ => Err("must be a duration from 1s to 366d, e.g. 8d".into()),
    });
    let fairness = fairness_thresholds(&mut p);
    let block_s = p.parse("BLOCK_SEC", "60", |s| match s.parse::<u64>() {
        Ok(n) if (1..=31_536_000).contains(&n) => Ok(n),
        _ => Err("must be whole seconds 1..=31536000".into()),
    });
    let block_escalation_max = p.parse("BLOCK_ESCALATION_MAX", "16", |s| match s.parse::<u64>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err("must be a whole multiple of BLOCK_SEC 1..=1000000".into()),
    });
    let review_confirm_block_s = p.parse("REVIEW_CONFIRM_BLOCK_SEC", "2592000", |s| {
        match s.parse::<u64>() {
            Ok(n) if (1..=3_153_600_000).contains(&n) => Ok(n),
            _ => Err("must be whole seconds 1..=3153600000 (100 years)".into()),
        }
    });
    let rate = p.parse("RATE_LIMIT_MAX", "50", |s| match s.parse::<u32>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err("must be events per second 1..=1000000".into()),
    });
    let idem_ttl = p.parse("IDEMP_TTL", "300s", |s| {
        parse_duration(s)
            .filter(|d| !d.is_zero() && d.as_secs() <= 7 * 86_400)
            .ok_or_else(|| "must be a duration like 300s, 5m or 1h (at most 7 days)".into())
    });
    let idem_keys_max = p.parse("IDEMP_KEYS_MAX", "1000000", |s| match s.parse::<usize>() {
        Ok(n) if (1_000..=100_000_000).contains(&n) => Ok(n),
        _ => Err("must be a whole number 1000..=100000000".into()),
    });
    let idem_bytes_max = p.parse("IDEMP_BYTES_MAX", "268435456", |s| {
        match s.parse::<usize>() {
            Ok(n) if ((1 << 20)..=(64 << 30)).contains(&n) => Ok(n),
            _ => Err("must be bytes 1048576..=68719476736 (1 MiB to 64 GiB)".into()),
        }
    });
    let idem_host_share = p.parse("IDEMP_HOST_SHARE", "10", |s| match s.parse::<usize>() {
        Ok(n) if (1..=100).contains(&n) => Ok(n),
        _ => Err("must be a percentage 1..=100".into()),
    });
    let replay_window_s = p.parse("REPLAY_WINDOW_SEC", "60", |s| match s.parse::<u64>() {
        Ok(n) if (1..=86_400).contains(&n) => Ok(n),
        _ => Err("must be whole seconds 1..=86400".into()),
    });
    let replay_entries_max = p.parse("REPLAY_ENTRIES_MAX", "1000000", |s| {
        match s.parse::<usize>() {
            Ok(n) if (1_000..=1_000_000_000).contains(&n) => Ok(n),
            _ => Err("must be a whole number 1000..=1000000000".into()),
        }
    });
    let replay_block_after = p.parse("REPLAY_BLOCK_AFTER", "2", |s| match s.parse::<u8>() {
        Ok(n) => Ok(n),
        _ => Err("must be a whole number 0..=255 (0: never block)".into()),
    });
    let skew = p.parse("TS_SKEW", "300s", |s| {
        parse_duration(s).ok_or_else(|| "must be a duration like 300s or 5m".into())
    });
    let max_age = match p.get("TS_MAX_AGE") {
        None | Some("") | Some("none") => Some(None),
        Some(s) => match parse_duration(s) {
            Some(d) if !d.is_zero() => Some(Some(d)),
            _ => {
                p.problem("TS_MAX_AGE", "must be a duration like 24h, or none".into());
                None
            }
        },
    };
    let durability = p.parse("DURABILITY", "fsync", |s| match s {
        "fsync" => Ok(Durability::Fsync),
        "batch" => Ok(Durability::Batch),
        _ => Err("must be fsync or batch".into()),
    });
    let fsync_interval_ms = p.parse("FSYNC_INTERVAL_MS", "10", |s| match s.parse::<u64>() {
        Ok(n) if (1..=60_000).contains(&n) => Ok(n),
        _ => Err("must be milliseconds 1..=60000".into()),
    });
    let recovery_mode = p.parse("RECOVERY_MODE", "strict", |s| match s {
        "strict" => Ok(RecoveryMode::Strict),
        "truncate" => Ok(RecoveryMode::Truncate),
        _ => Err("must be strict or truncate".into()),
    });
    let checkpoint_records = p.parse("CHECKPOINT_RECORDS", "1000000", |s| {
        match s.parse::<u64>() {
            Ok(n) if (1_000..=100_000_000).contains(&n) => Ok(n),
            _ => Err("must be a whole number 1000..=100000000".into()),
        }
    });
    let checkpoint_interval = p.parse("CHECKPOINT_INTERVAL", "300s", |s| {
        parse_duration(s)
            .filter(|d| d.as_secs() >= 1 && d.as_secs() <= 86_400)
            .ok_or_else(|| "must be a duration 1s..=24h".into())
    });
    let request_read_timeout_ms = p.parse("REQUEST_READ_TIMEOUT_MS", "10000", |s| {
        match s.parse::<u64>() {
            Ok(n) if (100..=600_000).contains(&n) => Ok(n),
            _ => Err("must be milliseconds 100..=600000".into()),
        }
    });
    let idle_timeout_ms = p.parse("IDLE_TIMEOUT_MS", "60000", |s| match s.parse::<u64>() {
        Ok(n) if (100..=3_600_000).contains(&n) => Ok(n),
        _ => Err("must be milliseconds 100..=3600000".into()),
    });
    let connections_cap = |s: &str| match s.parse::<usize>() {
        Ok(n) if (1..=CONNECTIONS_MAX).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "must be a whole number 1..={CONNECTIONS_MAX} (unset: derived from the fd limit)"
        )),
    };
    let max_connections = match p.get("MAX_CONNECTIONS") {
        None => Some(None),
        Some(_) => p.parse("MAX_CONNECTIONS", "", connections_cap),
    };
    let max_connections_per_host = match p.get("MAX_CONNECTIONS_PER_HOST") {
        None => Some(None),
        Some(_) => p.parse("MAX_CONNECTIONS_PER_HOST", "", connections_cap),
    };
    if let (Some(Some(total)), Some(Some(per_host))) = (max_connections, max_connections_per_host) {
        if per_host > total {
            p.problem(
                "MAX_CONNECTIONS_PER_HOST",
                format!("{per_host} is above MAX_CONNECTIONS ({total})"),
            );
        }
    }
    let cloud = p.get("CLOUD").map(str::to_owned);

    if !p.problems.is_empty() {
        return Err(p.problems);
    }
    let defaults = Policy::default();
    let shards = shards.expect("no problems");
    let policy = Policy {
        season: season.expect("no problems"),
        windows: windows.expect("no problems"),
        ts: TsPolicy {
            skew_s: skew.expect("no problems").as_secs(),
            max_age_s: max_age.expect("no problems").map(|d| d.as_secs()),
        },
        rate_limit_per_s: rate.expect("no problems"),
        block_ms: block_s.expect("no problems") * 1000,
        block_escalation_max: block_escalation_max.expect("no problems"),
        review_confirm_block_ms: review_confirm_block_s.expect("no problems") * 1000,
        fairness: fairness.expect("no problems"),
        idempotency_ttl_ms: idem_ttl.expect("no problems").as_millis() as u64,
        // Engine-wide budgets, split across shards.
        idempotency_keys_max: idem_keys_max.expect("no problems").div_ceil(shards),
        idempotency_bytes_max: idem_bytes_max.expect("no problems").div_ceil(shards),
        idempotency_host_share_percent: idem_host_share.expect("no problems"),
        replay_window_ms: replay_window_s.expect("no problems") * 1000,
        replay_entries_max: replay_entries_max.expect("no problems").div_ceil(shards),
        replay_block_after: replay_block_after.expect("no problems"),
        players_max: defaults.players_max.div_ceil(shards),
        ..defaults
    };
    Ok(Config {
        env: env.expect("no problems"),
        cloud,
        bind_addr: bind_addr.expect("no problems"),
        ports,
        hmac_secret,
        receipt_secret,
        admin_token,
        db_url,
        redis_url,
        bus,
        data_dir,
        shards,
        shard_inbox_max: shard_inbox_max.expect("no problems"),
        lb_topn: lb_topn.expect("no problems"),
        read_units_per_host_s: read_units_per_host_s.expect("no problems"),
        snapshot_cron: snapshot_cron.expect("no problems"),
        snapshot_topn: snapshot_topn.expect("no problems"),
        mirror_retain_bytes: mirror_retain_bytes.expect("no problems"),
        redis_tls_ca,
        redis_closed_ttl_s: redis_closed_ttl_s.expect("no problems"),
        durability: durability.expect("no problems"),
        fsync_interval_ms: fsync_interval_ms.expect("no problems"),
        recovery_mode: recovery_mode.expect("no problems"),
        checkpoint_records: checkpoint_records.expect("no problems"),
        checkpoint_interval_ms: checkpoint_interval.expect("no problems").as_millis() as u64,
        policy,
        request_read_timeout_ms: request_read_timeout_ms.expect("no problems"),
        idle_timeout_ms: idle_timeout_ms.expect("no problems"),
        max_connections: max_connections.expect("no problems"),
        max_connections_per_host: max_connections_per_host.expect("no problems"),
        generated_secrets,
    })
}

/// `300s`, `5m`, `1h`, `2d`, `250ms`, or bare seconds.
/// The fairness detectors' thresholds (see the README's Fairness section).
fn fairness_thresholds(p: &mut Parser) -> Option<Thresholds> {
    let anomaly_z = p.parse("ANOMALY_Z", "3.5", |s| number_in(s, 0.0, 100.0, false));
    let prior_progression = p.parse("ANOMALY_PRIOR_PROGRESSION", "50", |s| {
        number_in(s, 1.0, 1_000_000.0, true)
    });
    let prior_boss_kill = p.parse("ANOMALY_PRIOR_BOSS_KILL", "2500", |s| {
        number_in(s, 1.0, 1_000_000.0, true)
    });
    let cap_progression = p.parse("SCORE_CAP_PROGRESSION", "20000", |s| {
        whole_in(s, 1, 1_000_000)
    });
    let cap_boss_kill = p.parse("SCORE_CAP_BOSS_KILL", "100000", |s| {
        whole_in(s, 1, 1_000_000)
    });
    let shift_drift = p.parse("ANOMALY_SHIFT_DRIFT", "0.5", |s| {
        number_in(s, 0.0, 10.0, true)
    });
    let shift_max = p.parse("ANOMALY_SHIFT_MAX", "3", |s| {
        number_in(s, 0.0, 100.0, false)
    });
    let gain_rate_max = p.parse("GAIN_RATE_MAX", "4", |s| number_in(s, 0.0, 1e9, false));
    let gain_window_s = p.parse("GAIN_WINDOW_SEC", "5", |s| whole_in(s, 1, 3600));
    let cadence_fraction = p.parse("CADENCE_FRACTION", "0.3", |s| number_in(s, 0.0, 1.0, true));
    let cadence_floor_s = p.parse("CADENCE_FLOOR_SEC", "5", |s| whole_in(s, 0, 3600));
    let cadence_min_samples = p.parse("CADENCE_MIN_SAMPLES", "3", |s| whole_in(s, 1, 1_000_000));
    let luck_reference_weight = p.parse("LUCK_REFERENCE_WEIGHT", "0.05", |s| {
        number_in(s, 0.0, 1.0, false)
    });
    let luck_llr_max = p.parse("LUCK_LLR_MAX", "7", |s| number_in(s, 0.0, 1000.0, false));
    let flag_strikes = p.parse("FLAG_STRIKES", "3", |s| whole_in(s, 1, 255));
    let flag_strike_s = p.parse("FLAG_STRIKE_SEC", "300", |s| whole_in(s, 1, 7 * 86_400));
    Some(Thresholds {
        anomaly_z: anomaly_z?,
        prior_progression: prior_progression?,
        prior_boss_kill: prior_boss_kill?,
        cap_progression: cap_progression?,
        cap_boss_kill: cap_boss_kill?,
        shift_drift: shift_drift?,
        shift_max: shift_max?,
        gain_rate_max: gain_rate_max?,
        gain_window_ms: gain_window_s? * 1000,
        cadence_fraction: cadence_fraction?,
        cadence_floor_ms: cadence_floor_s? * 1000,
        cadence_min_samples: cadence_min_samples?,
        luck_reference_weight: luck_reference_weight?,
        luck_llr_max: luck_llr_max?,
        flag_strikes: u8::try_from(flag_strikes?).ok()?,
        flag_strike_ms: flag_strike_s? * 1000,
    })
}

/// A finite number from `min` (included when `min_included`) to `max` (included).
fn number_in(s: &str, min: f64, max: f64, min_included: bool) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (v > min || (min_included && v == min)) && v <= max => Ok(v),
        _ => {
            let open = if min_included { '[' } else { '(' };
            Err(format!("must be a number in {open}{min}, {max}]"))
        }
    }
}

/// A whole number in `[min, max]`.
fn whole_in(s: &str, min: u64, max: u64) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number {min}..={max}")),
    }
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

struct Parser<'a> {
    vars: &'a HashMap<String, String>,
    problems: Vec<ConfigProblem>,
}

impl Parser<'_> {
    /// A set, non-empty value.
    fn get(&self, key: &str) -> Option<&str> {
        setting(self.vars, key)
    }

    fn problem(&mut self, key: &'static str, message: String) {
        self.problems.push(ConfigProblem { key, message });
    }

    fn parse<T>(
        &mut self,
        key: &'static str,
        default: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.get(key).unwrap_or(default).to_owned();
        match f(&raw) {
            Ok(v) => Some(v),
            Err(message) => {
                self.problem(key, format!("{message} (got {raw:?})"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn fixed_secret() -> Vec<u8> {
        vec![b'g'; 64]
    }

    #[test]
    fn defaults_in_dev_generate_secrets() {
        let config = from_vars(&vars(&[]), fixed_secret).unwrap();
        assert_eq!(config.ports, [8080, 8081, 8082, 8083]);
        assert_eq!(
            config.generated_secrets,
            vec!["HMAC_SECRET", "RECEIPT_SECRET", "ADMIN_TOKEN"]
        );
        assert_eq!(config.policy.rate_limit_per_s, 50);
        assert_eq!(config.policy.idempotency_ttl_ms, 300_000);
        assert_eq!(config.policy.idempotency_host_share_percent, 10);
        let policy = Policy::default();
        assert_eq!(config.policy.replay_window_ms, policy.replay_window_ms);
        assert_eq!(config.policy.replay_block_after, policy.replay_block_after);
        assert_eq!(
            config.policy.replay_entries_max,
            policy.replay_entries_max.div_ceil(config.shards)
        );
        assert_eq!(config.policy.windows.len(), 3);
        // The documented defaults are the engine's.
        assert_eq!(config.policy.fairness, Thresholds::default());
        assert_eq!(config.lb_topn, 100);
        assert_eq!(config.read_units_per_host_s, 100_000);
        assert_eq!(config.admin_token, Some("g".repeat(64)));
        let staging = vars(&[
            ("ENV", "staging"),
            ("HMAC_SECRET", "h".repeat(40).as_str()),
            ("RECEIPT_SECRET", "r".repeat(40).as_str()),
        ]);
        let staging = from_vars(&staging, fixed_secret).unwrap();
        assert!(
            staging.admin_token.is_none(),
            "outside dev no token is made up"
        );
    }

    #[test]
    fn every_problem_is_named() {
        let problems = from_vars(
            &vars(&[
                ("ENV", "prod"),
                ("PORT", "99999"),
                ("SEASON", "bad season"),
                ("LB_WINDOWS", "daily,monthly"),
                ("HMAC_SECRET", "short"),
                ("IDEMP_TTL", "soon"),
                ("IDEMP_HOST_SHARE", "0"),
                ("IDEMP_BYTES_MAX", "1k"),
                ("REPLAY_WINDOW_SEC", "0"),
                ("REPLAY_ENTRIES_MAX", "10"),
                ("REPLAY_BLOCK_AFTER", "-1"),
                ("REDIS_URL", "http://x"),
            ]),
            fixed_secret,
        )
        .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key).collect();
        for key in [
            "PORT",
            "SEASON",
            "LB_WINDOWS",
            "HMAC_SECRET",
            "RECEIPT_SECRET",
            "IDEMP_TTL",
            "IDEMP_HOST_SHARE",
            "IDEMP_BYTES_MAX",
            "REPLAY_WINDOW_SEC",
            "REPLAY_ENTRIES_MAX",
            "REPLAY_BLOCK_AFTER",
            "REDIS_URL",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        let line = problems[0].to_string();
        assert!(line.starts_with("config error: "), "{line}");
    }

    #[test]
    fn buses_and_mirrors_are_configured_or_refused_by_name() {
        let config = from_vars(
            &vars(&[
                ("BUS_KIND", "sqs"),
                (
                    "SQS_QUEUE_URL",
                    "https://sqs.eu-west-1.amazonaws.com/1/liveops.fifo",
                ),
                ("SNAPSHOT_CRON", "*/30 * * * * *"),
                ("MIRROR_RETAIN_MB", "64"),
            ]),
            fixed_secret,
        )
        .unwrap();
        assert_eq!(
            config.bus,
            Bus::Sqs {
                queue_url: "https://sqs.eu-west-1.amazonaws.com/1/liveops.fifo".into(),
                endpoint: None
            }
        );
        assert_eq!(config.mirror_retain_bytes, 64 << 20);
        let nats = from_vars(&vars(&[("BUS_KIND", "nats")]), fixed_secret).unwrap();
        assert_eq!(nats.bus.kind(), "nats");
        for (pairs, key) in [
            (vec![("BUS_KIND", "kafka")], "BUS_KIND"),
            (vec![("BUS_KIND", "sqs")], "SQS_QUEUE_URL"),
            (
                vec![("BUS_KIND", "sqs"), ("SQS_QUEUE_URL", "https://q/standard")],
                "SQS_QUEUE_URL",
            ),
            (
                vec![("BUS_KIND", "nats"), ("BUS_STREAM", "a.b")],
                "BUS_STREAM",
            ),
            (
                vec![("BUS_KIND", "servicebus")],
                "SERVICEBUS_CONNECTION_STRING",
            ),
            (
                // Plain amqp:// only for the development emulator: the key would travel
                // unencrypted.
                vec![
                    ("BUS_KIND", "servicebus"),
                    (
                        "SERVICEBUS_CONNECTION_STRING",
                        "Endpoint=amqp://127.0.0.1/;SharedAccessKeyName=k;SharedAccessKey=s",
                    ),
                    ("SERVICEBUS_QUEUE", "q"),
                ],
                "SERVICEBUS_CONNECTION_STRING",
            ),
            (vec![("SNAPSHOT_CRON", "0 */15 * * *")], "SNAPSHOT_CRON"),
            (vec![("SNAPSHOT_CRON", "0 99 * * * *")], "SNAPSHOT_CRON"),
            (vec![("MIRROR_RETAIN_MB", "0")], "MIRROR_RETAIN_MB"),
            (
                vec![("REDIS_TLS_CA", "/nonexistent/ca.pem")],
                "REDIS_TLS_CA",
            ),
        ] {
            let problems = from_vars(&vars(&pairs), fixed_secret).unwrap_err();
            assert!(
                problems.iter().any(|p| p.key == key),
                "{pairs:?}: {key} not named in {problems:?}"
            );
        }
    }

    #[test]
    fn generated_dev_secrets_are_kept_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("liveops-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let lock = crate::layout::DataDirLock::acquire(&dir).unwrap();
        let set_hmac = vars(&[
            ("HMAC_SECRET", "h".repeat(40).as_str()),
            ("ADMIN_TOKEN", "a".repeat(20).as_str()),
        ]);
        let mut first = from_vars(&set_hmac, fixed_secret).unwrap();
        let kept = first.keep_dev_secrets(&lock).unwrap();
        let path = dir.join(DEV_SECRETS_DIR).join("RECEIPT_SECRET");
        assert_eq!(
            kept,
            vec![KeptSecret {
                key: "RECEIPT_SECRET",
                path: path.clone(),
                created: true
            }],
            "only the unset secret is generated and kept"
        );
        assert_eq!(std::fs::read(&path).unwrap(), fixed_secret());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut second = from_vars(&set_hmac, || vec![b'x'; 64]).unwrap();
        assert!(!second.keep_dev_secrets(&lock).unwrap()[0].created);
        assert_eq!(
            second.receipt_secret,
            fixed_secret(),
            "read back, not regenerated"
        );
        assert_eq!(second.hmac_secret, "h".repeat(40).into_bytes());

        std::fs::write(&path, "short\n").unwrap();
        let error = second.keep_dev_secrets(&lock).unwrap_err();
        assert!(
            matches!(error, DevSecretError::TooShort { len: 5, .. }),
            "{error}"
        );
        drop(lock);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_generated_admin_token_is_kept_and_reused() {
        let dir = std::env::temp_dir().join(format!("liveops-admin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let lock = crate::layout::DataDirLock::acquire(&dir).unwrap();
        let secrets = vars(&[
            ("HMAC_SECRET", "h".repeat(40).as_str()),
            ("RECEIPT_SECRET", "r".repeat(40).as_str()),
        ]);
        let mut first = from_vars(&secrets, fixed_secret).unwrap();
        assert_eq!(first.generated_secrets, vec!["ADMIN_TOKEN"]);
        assert!(first.keep_dev_secrets(&lock).unwrap()[0].created);
        let path = dir.join(DEV_SECRETS_DIR).join("ADMIN_TOKEN");
        assert_eq!(std::fs::read(&path).unwrap(), fixed_secret());

        let mut second = from_vars(&secrets, || vec![b'x'; 64]).unwrap();
        assert!(!second.keep_dev_secrets(&lock).unwrap()[0].created);
        assert_eq!(
            second.admin_token, first.admin_token,
            "read back, not regenerated"
        );
        assert_eq!(second.secret("ADMIN_TOKEN"), fixed_secret());
        drop(lock);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn connection_limits() {
        let config = from_vars(&vars(&[]), fixed_secret).unwrap();
        assert_eq!(config.request_read_timeout_ms, 10_000);
        assert_eq!(config.idle_timeout_ms, 60_000);
        assert_eq!(config.max_connections, None);
        assert_eq!(config.max_connections_per_host, None);
        let config = from_vars(
            &vars(&[
                ("REQUEST_READ_TIMEOUT_MS", "1500"),
                ("MAX_CONNECTIONS", "1000"),
                ("MAX_CONNECTIONS_PER_HOST", "10"),
            ]),
            fixed_secret,
        )
        .unwrap();
        assert_eq!(config.request_read_timeout_ms, 1500);
        assert_eq!(config.max_connections, Some(1000));
        assert_eq!(config.max_connections_per_host, Some(10));
        let problems = from_vars(
            &vars(&[
                ("REQUEST_READ_TIMEOUT_MS", "0"),
                ("IDLE_TIMEOUT_MS", "soon"),
                ("MAX_CONNECTIONS", "10"),
                ("MAX_CONNECTIONS_PER_HOST", "11"),
            ]),
            fixed_secret,
        )
        .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "REQUEST_READ_TIMEOUT_MS",
                "IDLE_TIMEOUT_MS",
                "MAX_CONNECTIONS_PER_HOST"
            ]
        );
        assert!(from_vars(&vars(&[("MAX_CONNECTIONS", "0")]), fixed_secret).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5w"), None);
    }

    #[test]
    fn duplicate_ports_are_refused_but_zero_is_free() {
        assert!(from_vars(
            &vars(&[("PORT", "0"), ("FAIRNESS_PORT", "0")]),
            fixed_secret
        )
        .is_ok());
        let problems = from_vars(
            &vars(&[("PORT", "9000"), ("FAIRNESS_PORT", "9000")]),
            fixed_secret,
        )
        .unwrap_err();
        assert_eq!(problems[0].key, "FAIRNESS_PORT");
    }
}
