//! The command line for people: `liveops send`, `liveops claim`, `liveops top`. Each
//! signs (where the API asks) with the engine's own `HMAC_SECRET`, makes one bounded
//! request, writes `METHOD URL -> STATUS` on stderr and the answer on stdout, and exits
//! 0 on a 2xx, 1 on another status, 2 on a usage error, 3 without a usable answer.

pub mod args;
pub mod claim;
pub mod client;
pub mod secret;
pub mod send;
pub mod top;

use std::io::Write;
use std::process::ExitCode;

use bytes::Bytes;
use hyper::header::{HeaderName, CONTENT_TYPE};
use hyper::{Method, StatusCode};

use crate::config::Service;
use client::{BaseUrl, Call, ClientError, Reply};
use liveops_engine::signing::Signer;
use secret::Secret;

/// The engine answered with a status other than 2xx.
pub const EXIT_STATUS_ERROR: u8 = 1;
/// Bad arguments, no secret, an unreadable or too large input: nothing was sent.
pub const EXIT_USAGE: u8 = 2;
/// No usable answer: no connection, a timeout, an answer too large or not the API's.
pub const EXIT_NO_ANSWER: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Arguments the command does not take; `--help` is suggested.
    #[error("{0}")]
    Usage(String),
    /// No secret to sign with, or an unreadable one.
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    /// The body to send cannot be read, is empty or is over the engine's limit.
    #[error("{0}")]
    Input(String),
    /// No answer: connection, timeout, size.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A 2xx answer that does not parse as the API documents it.
    #[error("{url}: the answer is not what the API documents: {message}")]
    Unexpected { url: String, message: String },
    /// Writing stdout or stderr failed.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Secret(_) | CliError::Input(_) => EXIT_USAGE,
            CliError::Client(_) | CliError::Unexpected { .. } => EXIT_NO_ANSWER,
            CliError::Output(_) => EXIT_STATUS_ERROR,
        }
    }
}

/// A client command: its arguments, stdout, stderr; the status the engine answered.
type Command = fn(&[&str], &mut dyn Write, &mut dyn Write) -> Result<StatusCode, CliError>;

/// Runs client command `name` with `args` when it is one (`None` otherwise).
pub fn run(name: &str, args: &[&str]) -> Option<ExitCode> {
    let (command, help): (Command, String) = match name {
        "send" => (send::run, send::help()),
        "claim" => (claim::run, claim::help()),
        "top" => (top::run, top::help()),
        _ => return None,
    };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    if args.iter().any(|a| matches!(*a, "-h" | "--help")) {
        // Nothing to do if stdout is gone.
        let _ = writeln!(out, "{help}");
        return Some(ExitCode::SUCCESS);
    }
    let code = match command(args, &mut out, &mut err) {
        Ok(status) if status.is_success() => 0,
        Ok(_) => EXIT_STATUS_ERROR,
        // `liveops top | head`: the reader has what it wanted.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            if matches!(e, CliError::Usage(_)) {
                let _ = writeln!(err, "see: liveops {name} --help");
            }
            e.exit_code()
        }
    };
    let _ = out.flush();
    Some(ExitCode::from(code))
}

/// Makes `call` and writes `METHOD URL -> STATUS REASON` on `err`.
fn exchange(call: &Call, err: &mut dyn Write) -> Result<Reply, CliError> {
    let reply = call.run()?;
    writeln!(
        err,
        "{} -> {} {}",
        call.describe(),
        reply.status.as_u16(),
        reply.status.canonical_reason().unwrap_or("")
    )?;
    Ok(reply)
}

/// Posts `body` to `path`, signed with `secret` (and with `Idempotency-Key: key`), and
/// writes the answer; when the engine refuses the signature, says which secret made it.
fn post_signed(
    base: &BaseUrl,
    path: &str,
    body: Vec<u8>,
    secret: &Secret,
    key: Option<&str>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<StatusCode, CliError> {
    let mut headers = vec![
        (CONTENT_TYPE, "application/json".to_owned()),
        (
            HeaderName::from_static("x-signature"),
            Signer::new(&secret.bytes).header_value(&body),
        ),
    ];
    if let Some(key) = key {
        headers.push((HeaderName::from_static("idempotency-key"), key.to_owned()));
    }
    let call = Call {
        method: Method::POST,
        base,
        path_and_query: path.to_owned(),
        headers,
        body: Bytes::from(body),
    };
    let reply = exchange(&call, err)?;
    write_body(out, &reply.body)?;
    if reply.status == StatusCode::UNAUTHORIZED {
        writeln!(
            err,
            "the engine refused the signature: it was made with {}; is that the engine's HMAC_SECRET?",
            secret.source
        )?;
    }
    Ok(reply.status)
}

/// Writes an answer's body as it came, ending with a newline, but with control
/// characters (which no JSON answer holds outside whitespace) escaped so a hostile
/// server cannot drive the terminal.
fn write_body(out: &mut dyn Write, body: &[u8]) -> std::io::Result<()> {
    let text = terminal_safe(&String::from_utf8_lossy(body));
    if text.ends_with('\n') {
        write!(out, "{text}")
    } else {
        writeln!(out, "{text}")
    }
}

/// `text` with control characters other than newline and tab escaped.
fn terminal_safe(text: &str) -> String {
    let mut safe = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            safe.extend(c.escape_default());
        } else {
            safe.push(c);
        }
    }
    safe
}

/// `--help`'s part on where a command connects.
fn connection_help(service: Service) -> String {
    let flag = client::url_flag(service);
    let env = client::url_env(service);
    let port = service.default_port();
    let url_label = format!("--{flag} URL");
    format!(
        "where it connects (a flag wins over the environment; a URL over a host):
  {url_label:<20}the {flag} service's base URL, http://HOST[:PORT][/PREFIX];
  {blank:<20}env {env}
  {host_label:<20}the engine's host, reached on the {flag} port, {port};
  {blank:<20}env {host_env}; default localhost",
        blank = "",
        host_label = "--host HOST",
        host_env = client::HOST_ENV,
    )
}

/// `--help`'s part on signing (commands that sign).
const SIGNING_HELP: &str =
    "signing: X-Signature: sha256=<hex HMAC-SHA256 of the exact bytes sent>, with
HMAC_SECRET from the environment, else ./.env, else the dev secret an ENV=dev engine
generated and kept in DATA_DIR/dev-secrets/HMAC_SECRET (DATA_DIR from the environment or
./.env, default ./data), as the engine started in the same directory finds it.";

/// `--help`'s part on output and exit status.
fn outcome_help() -> String {
    format!(
        "output: `METHOD URL -> STATUS` on stderr, the answer on stdout.
exit status: 0 on a 2xx answer, {EXIT_STATUS_ERROR} on any other status, {EXIT_USAGE} on a usage error (nothing
sent), {EXIT_NO_ANSWER} without a usable answer (no connection within {} ms, no complete answer
within {} ms, an answer over {} bytes or not what the API documents).",
        client::CONNECT_TIMEOUT_MS,
        client::REQUEST_TIMEOUT_MS,
        client::RESPONSE_BYTES_MAX
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_json_is_kept() {
        assert_eq!(terminal_safe("{\"a\":\t1}\n"), "{\"a\":\t1}\n");
        assert_eq!(terminal_safe("x\u{1b}[2Jy\r"), "x\\u{1b}[2Jy\\r");
        let mut out = Vec::new();
        write_body(&mut out, b"{}").unwrap();
        assert_eq!(out, b"{}\n");
    }
}
