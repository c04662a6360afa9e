//! A Postgres cluster of the test's own: `initdb` into a temp dir, `pg_ctl` on a free
//! port, trust authentication for user `postgres`, optionally TLS. Run as the `postgres`
//! user (with `runuser`) when the tests run as root, since Postgres refuses root.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tls::{write_ca_and_server_cert, TlsFiles};
use crate::{free_port, require_tool};

/// Where `initdb` and `pg_ctl` are: the PATH, else the newest `/usr/lib/postgresql/*/bin`
/// (Debian keeps them off the PATH).
pub fn pg_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
            .collect();
        dirs.sort();
        dirs.pop()
    })
}

/// A cluster in a temp dir on a free port of 127.0.0.1; stopped (immediately) and
/// removed on drop.
pub struct Cluster {
    /// Where `initdb` and `pg_ctl` are.
    bin: PathBuf,
    /// The cluster's own directory: data, log, socket, certificates.
    dir: PathBuf,
    /// Where it listens (also after a restart).
    pub port: u16,
    /// Whether the tools run as the `postgres` user (the test runs as root).
    as_postgres: bool,
    /// The CA and server certificate, when it serves TLS.
    tls: Option<TlsFiles>,
}

impl Cluster {
    /// Makes and starts a new cluster named after `test` (with TLS on when `tls`); `None`
    /// when Postgres is not installed (the test fails under `CI=true`, else skips loudly,
    /// as [`require_tool`] does).
    pub fn start_new(test: &str, tls: bool) -> Option<Cluster> {
        let Some(bin) = pg_bin_dir() else {
            // Not found anywhere `pg_bin_dir` looks: the same verdict as a missing tool.
            require_tool(test, &["initdb", "pg_ctl"]);
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("liveops-pg-{test}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a cluster directory");
        let mut cluster = Cluster {
            bin,
            dir,
            port: free_port(),
            as_postgres: running_as_root(),
            tls: None,
        };
        if cluster.as_postgres {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(&cluster.dir));
        }
        let data = cluster.data_dir();
        run(cluster.pg_command("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ]));
        if tls {
            let files = write_ca_and_server_cert(&cluster.dir);
            // Postgres refuses a key others can read.
            run(Command::new("chmod").arg("600").arg(&files.key_file));
            if cluster.as_postgres {
                run(Command::new("chown")
                    .arg("postgres:")
                    .arg(&files.key_file)
                    .arg(&files.cert_file));
            }
            cluster.tls = Some(files);
        }
        cluster.start();
        Some(cluster)
    }

    /// The CA a client verifies the server with (`sslrootcert`), when it serves TLS.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|files| files.ca_file.as_path())
    }

    /// Starts the server (again, after [`Cluster::stop`]) and waits until it accepts
    /// connections.
    pub fn start(&self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40",
            self.port,
            self.dir.display(),
        );
        if let Some(files) = &self.tls {
            options += &format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                files.cert_file.display(),
                files.key_file.display()
            );
        }
        run(self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-o", &options, "start"]));
    }

    /// Kills the server as a crash would (`pg_ctl -m immediate stop`).
    pub fn stop(&self) {
        run(self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-m", "immediate", "stop"]));
    }

    /// The URL of database `postgres` as user `postgres`, with query `params`
    /// (`sslmode=...`).
    pub fn url(&self, params: &str) -> String {
        self.database_url("postgres", params)
    }

    /// The URL of `database` as user `postgres`, with query `params`.
    pub fn database_url(&self, database: &str, params: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?{params}",
            self.port
        )
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A Postgres tool, run as the `postgres` user when the test runs as root.
    fn pg_command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `command`; panics with its output when it fails.
fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
