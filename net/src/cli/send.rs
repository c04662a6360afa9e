//! `liveops send [FILE|-]`: posts an event or a batch, signed, to the gateway.

use std::io::{IsTerminal, Read, Write};

use hyper::StatusCode;

use super::args::Args;
use super::{client, connection_help, outcome_help, post_signed, secret, CliError, SIGNING_HELP};
use crate::config::Service;
use crate::routes::{
    idempotency_key_valid, EVENTS_BODY_BYTES_MAX, IDEMPOTENCY_KEY_BYTES_MAX as KEY_BYTES_MAX,
};

pub fn help() -> String {
    format!(
        "liveops send: post an event or a batch to the gateway, signed

usage: liveops send [FILE|-] [--key KEY] [--host HOST] [--gateway URL]

Posts the exact bytes of FILE (of stdin with `-` or no FILE) to POST /events: one event
object, or a JSON array of up to 1000 (README, \"Event rules\"); at most {EVENTS_BODY_BYTES_MAX} bytes,
the engine's limit, or nothing is sent.

options:
  --key KEY           an Idempotency-Key (1-{KEY_BYTES_MAX} printable ASCII characters): a retry with the
                      same key and body is applied once and answers 208

{}

{SIGNING_HELP}

{}

examples:
  liveops send sample_events/progression.json
  liveops send --key retry-42 sample_events/boss_kill.json
  liveops send - < sample_events/batch.json
  echo '{{\"type\":\"progression\",\"playerId\":\"p1\",\"ts\":1730560000,\"payload\":{{\"deltaXp\":10}}}}' | liveops send
  liveops send --host 10.0.0.5 sample_events/drop_claimed.json",
        connection_help(Service::Gateway),
        outcome_help()
    )
}

pub fn run(raw: &[&str], out: &mut dyn Write, err: &mut dyn Write) -> Result<StatusCode, CliError> {
    let args = Args::parse(raw, &["key", "host", "gateway"])?;
    let source = args
        .positionals(0, 1, "at most one FILE (or -)")?
        .first()
        .copied()
        .unwrap_or("-");
    let key = args.flag("key").map(check_key).transpose()?;
    let base = client::base_url(
        Service::Gateway,
        args.flag("gateway"),
        args.flag("host"),
        |k| std::env::var(k).ok(),
    )?;
    let secret = secret::find()?;
    if source == "-" && std::io::stdin().is_terminal() {
        writeln!(err, "reading the body from stdin; end it with Ctrl-D")?;
    }
    let body = read_body(source)?;
    post_signed(&base, "/events", body, &secret, key, out, err)
}

/// The key, when the gateway would take it: a refusal here sends nothing.
fn check_key(key: &str) -> Result<&str, CliError> {
    if idempotency_key_valid(key.as_bytes()) {
        Ok(key)
    } else {
        Err(CliError::Usage(format!(
            "--key must be 1-{KEY_BYTES_MAX} printable ASCII characters"
        )))
    }
}

/// The bytes of `source` (`-` is stdin), at most the engine's body limit.
fn read_body(source: &str) -> Result<Vec<u8>, CliError> {
    let name = if source == "-" { "stdin" } else { source };
    let failed = |e: std::io::Error| CliError::Input(format!("{name}: {e}"));
    let mut body = Vec::new();
    // One byte past the limit tells "too large" from "exactly the limit".
    let limit = EVENTS_BODY_BYTES_MAX as u64 + 1;
    if source == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut body)
    } else {
        std::fs::File::open(source)
            .map_err(failed)?
            .take(limit)
            .read_to_end(&mut body)
    }
    .map_err(failed)?;
    if body.len() > EVENTS_BODY_BYTES_MAX {
        return Err(CliError::Input(format!(
            "{name}: larger than {EVENTS_BODY_BYTES_MAX} bytes, the engine's limit for POST /events (split the batch)"
        )));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(CliError::Input(format!("{name}: nothing to send")));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_as_the_gateway_does() {
        assert!(check_key("demo-1").is_ok());
        assert!(check_key(&"k".repeat(KEY_BYTES_MAX)).is_ok());
        for bad in ["", "tab\there", "é", &"k".repeat(KEY_BYTES_MAX + 1)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }
}
