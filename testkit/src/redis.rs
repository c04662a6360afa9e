//! A `redis-server` of the test's own, keeping nothing on disk: a restart brings it back
//! empty, as a Redis that lost its data.

use crate::tls::TlsFiles;
use crate::Server;

/// How a [`RedisServer`] is started besides its port.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisOptions<'a> {
    /// Serve TLS only (`rediss://`) with these files; clients need no certificate.
    pub tls: Option<&'a TlsFiles>,
    /// `requirepass`: clients must `AUTH` with it.
    pub password: Option<&'a str>,
}

/// A `redis-server` on 127.0.0.1, killed on drop (also when a test panics).
pub struct RedisServer {
    /// The process (its arguments kept for restarts).
    server: Server,
}

impl RedisServer {
    /// Starts a plain `redis-server` on `port` and waits until it listens.
    pub fn start(port: u16) -> RedisServer {
        RedisServer::start_with(port, RedisOptions::default())
    }

    /// Starts `redis-server` on `port` with `options` and waits until it listens.
    pub fn start_with(port: u16, options: RedisOptions<'_>) -> RedisServer {
        let port_text = port.to_string();
        let mut args: Vec<String> = match options.tls {
            Some(_) => vec!["--tls-port", &port_text, "--port", "0"],
            None => vec!["--port", &port_text],
        }
        .into_iter()
        .chain(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .map(String::from)
        .collect();
        if let Some(tls) = options.tls {
            for (flag, path) in [
                ("--tls-cert-file", &tls.cert_file),
                ("--tls-key-file", &tls.key_file),
                ("--tls-ca-cert-file", &tls.ca_file),
            ] {
                args.push(flag.into());
                args.push(path.to_string_lossy().into_owned());
            }
            args.extend(["--tls-auth-clients", "no"].map(String::from));
        }
        if let Some(password) = options.password {
            args.extend(["--requirepass".to_string(), password.to_string()]);
        }
        RedisServer {
            server: Server::start("redis-server", &args, port),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Kills it at once (SIGKILL: a crash); a no-op when it is not running.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts it again on the same port, empty (killing it first if it runs), and waits
    /// until it listens.
    pub fn restart(&mut self) {
        self.server.kill();
        self.server.restart();
    }
}
