//! The README's "Try it" walk-through, read from README.md at test time and run with
//! bash against a fresh engine, as a new user pastes it: a README edit that breaks it
//! fails here.

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

/// What each request of the walk-through must answer: method, path, status.
const EXPECTED: [(&str, &str, u16); 7] = [
    ("POST", "/events", 202),
    ("GET", "/leaderboard/", 200),
    ("POST", "/rewards/claim", 200),
    ("GET", "/players/player_123/progress", 200),
    ("GET", "/fairness/players/player_123", 200),
    ("GET", "/readyz", 200),
    ("GET", "/metrics", 200),
];

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

    let mut script = blocks.join("\n");
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
    let child = Command::new("bash")
        .arg("-c")
        .arg(format!("{wrapper}{script}"))
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
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

    let (status_lines, other): (Vec<&str>, Vec<&str>) =
        ran.stderr.lines().partition(|l| l.starts_with(STATUS_MARK));
    assert!(
        other.is_empty(),
        "a command of the walk-through complained:\n{transcript}"
    );
    let mut answered: HashMap<(String, String), Vec<u16>> = HashMap::new();
    for line in status_lines {
        let mut fields = line[STATUS_MARK.len()..].split(' ');
        let status: u16 = fields.next().unwrap().parse().unwrap();
        let method = fields.next().unwrap().to_owned();
        let url = fields.next().unwrap();
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
        answered.entry((method, path)).or_default().push(status);
    }
    for (method, path, status) in EXPECTED {
        // `curl ... | head` may cut /metrics before curl reports; the rest must answer.
        let Some(statuses) = answered.get(&(method.to_owned(), path.to_owned())) else {
            assert_eq!(path, "/metrics", "{method} {path} never ran\n{transcript}");
            continue;
        };
        assert!(
            statuses.iter().all(|&s| s == status),
            "{method} {path}: {statuses:?}, expected {status}\n{transcript}"
        );
    }
    assert_eq!(
        answered[&("POST".to_owned(), "/events".to_owned())].len(),
        2,
        "both signed events were sent\n{transcript}"
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
