//! The README's "Try it" walk-through, read from README.md at test time and run with
//! bash against a fresh engine, as a new user pastes it: a README edit that breaks it
//! fails here. Its requests are made by curl and by the `liveops` command line.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The tools the walk-through's commands call.
const TOOLS: [&str; 3] = ["openssl", "xxd", "curl"];

/// The ports the README's commands use, by service.
const README_PORTS: [(&str, u16); 4] = [
    ("gateway", 8080),
    ("fairness", 8081),
    ("leaderboard", 8082),
    ("progression", 8083),
];

/// Who made a request: curl (the openssl recipe) or the `liveops` command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    Curl,
    Liveops,
}

/// What each request of the walk-through must answer: client, method, path, status, and
/// how many times it is made.
const EXPECTED: [(Client, &str, &str, u16, usize); 10] = [
    (Client::Curl, "POST", "/events", 202, 2),
    (Client::Curl, "GET", "/leaderboard/", 200, 1),
    (Client::Curl, "POST", "/rewards/claim", 200, 1),
    (Client::Curl, "GET", "/players/player_123/progress", 200, 1),
    (Client::Curl, "GET", "/fairness/players/player_123", 200, 1),
    (Client::Curl, "GET", "/readyz", 200, 1),
    (Client::Curl, "GET", "/metrics", 200, 1),
    (Client::Liveops, "POST", "/events", 202, 3),
    (Client::Liveops, "POST", "/rewards/claim", 200, 1),
    (Client::Liveops, "GET", "/leaderboard", 200, 1),
];

/// Where the README runs the command line from: the binary `cargo run --release` builds.
const README_BINARY: &str = "target/release/liveops";

/// Marks the status lines the test's `curl` wrapper writes to stderr.
const STATUS_MARK: &str = "@@status ";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The ```bash blocks of the README section titled `title`, in order.
fn bash_blocks(readme: &str, title: &str) -> Vec<String> {
    let heading = format!("## {title}");
    let section: Vec<&str> = readme
        .lines()
        .skip_while(|l| l.trim_end() != heading)
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect();
    assert!(!section.is_empty(), "README.md has no section {heading:?}");
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in section {
        match (&mut current, line.trim_end()) {
            (None, "```bash") => current = Some(Vec::new()),
            (Some(block), "```") => {
                blocks.push(block.join("\n"));
                current = None;
            }
            (Some(block), _) => block.push(line),
            (None, _) => {}
        }
    }
    assert!(
        current.is_none(),
        "an unclosed ```bash block in {heading:?}"
    );
    blocks
}

/// A status line on stderr: the curl wrapper's (`@@status 202 POST URL`) or the command
/// line's (`POST URL -> 202 Accepted`), as (client, status, method, URL).
fn status_line(line: &str) -> Option<(Client, u16, &str, &str)> {
    if let Some(rest) = line.strip_prefix(STATUS_MARK) {
        let mut fields = rest.split(' ');
        let status = fields.next()?.parse().ok()?;
        return Some((Client::Curl, status, fields.next()?, fields.next()?));
    }
    let (request, answer) = line.split_once(" -> ")?;
    let (method, url) = request.split_once(' ')?;
    let status = answer.split(' ').next()?.parse().ok()?;
    url.starts_with("http://")
        .then_some((Client::Liveops, status, method, url))
}

#[test]
fn readme_try_it_runs_as_written() {
    if !liveops_testkit::require_tool("readme_try_it_runs_as_written", &TOOLS) {
        return;
    }
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let blocks = bash_blocks(&readme, "Try it");
    assert!(!blocks.is_empty(), "no ```bash block under \"## Try it\"");

    // A fresh clone: the sample bodies, no .env, no HMAC_SECRET anywhere: the engine
    // generates its dev secret, as `cargo run --release` does.
    let dir = temp_dir();
    std::os::unix::fs::symlink(repo_root().join("sample_events"), dir.join("sample_events"))
        .unwrap();
    let engine = Engine::start_in(&dir, &[("HMAC_SECRET", "")]);
    // The README runs `./target/release/liveops` after `cargo run --release` built it;
    // here the same program is the binary under test (built by this `cargo test`), linked
    // where the README looks, so the README's lines run exactly as written.
    let binary = dir.join(README_BINARY);
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_liveops"), &binary).unwrap();

    let mut script = blocks.join("\n");
    assert!(
        script.contains(&format!("./{README_BINARY} ")),
        "the walk-through runs no `./{README_BINARY}`:\n{script}"
    );
    for (service, readme_port) in README_PORTS {
        let port = engine.port(service);
        for host in ["localhost", "127.0.0.1"] {
            script = script.replace(
                &format!("{host}:{readme_port}"),
                &format!("127.0.0.1:{port}"),
            );
        }
    }
    for (_, readme_port) in README_PORTS {
        assert!(
            !script.contains(&readme_port.to_string()),
            "port {readme_port} in a form this test does not rewrite:\n{script}"
        );
    }
    // Every curl reports its status on stderr, out of the way of pipes like `| head`.
    let wrapper = format!(
        "curl() {{ command curl -s -w '%{{stderr}}{STATUS_MARK}%{{http_code}} %{{method}} %{{url_effective}}\\n' \"$@\"; }}\n"
    );
    let mut bash = Command::new("bash");
    bash.arg("-c")
        .arg(format!("{wrapper}{script}"))
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    // As the URLs above are rewritten to the engine's free ports, the command line is
    // pointed at them by its documented environment overrides (its lines carry no port).
    for service in ["gateway", "leaderboard", "progression"] {
        let key = format!("LIVEOPS_{}_URL", service.to_ascii_uppercase());
        bash.env(key, format!("http://127.0.0.1:{}", engine.port(service)));
    }
    let child = bash
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ran = exit_within(child, Duration::from_secs(60));
    let transcript = format!(
        "script:\n{script}\nstdout:\n{}\nstderr:\n{}",
        ran.stdout, ran.stderr
    );

    let mut answered: HashMap<(Client, String, String), Vec<u16>> = HashMap::new();
    let mut complaints = Vec::new();
    for line in ran.stderr.lines() {
        let Some((client, status, method, url)) = status_line(line) else {
            complaints.push(line);
            continue;
        };
        let path = url
            .trim_start_matches("http://")
            .split_once('/')
            .map(|(_, p)| format!("/{}", p.split('?').next().unwrap()))
            .unwrap();
        assert_ne!(
            status, 401,
            "{method} {path}: a signature was refused\n{transcript}"
        );
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}\n{transcript}"
        );
        answered
            .entry((client, method.to_owned(), path))
            .or_default()
            .push(status);
    }
    assert!(
        complaints.is_empty(),
        "a command of the walk-through complained:\n{transcript}"
    );
    for (client, method, path, status, times) in EXPECTED {
        // `curl ... | head` may cut /metrics before curl reports; the rest must answer.
        let Some(statuses) = answered.remove(&(client, method.to_owned(), path.to_owned())) else {
            assert_eq!(
                path, "/metrics",
                "{client:?} {method} {path} never ran\n{transcript}"
            );
            continue;
        };
        assert_eq!(
            statuses,
            vec![status; times],
            "{client:?} {method} {path}\n{transcript}"
        );
    }
    assert!(
        answered.is_empty(),
        "requests EXPECTED does not list: {answered:?}\n{transcript}"
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
