//! `DB_URL` as libpq reads it, split into what `tokio-postgres` understands and the TLS
//! settings it does not (`sslmode=verify-ca|verify-full`, `sslrootcert`).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Connect timeout when `DB_URL` sets none: an unreachable server fails the attempt (and
/// the driver backs off) instead of hanging the sink's thread.
const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// TCP keepalive idle time: a server that vanished without closing the connection (a
/// failover, a dropped NAT entry) is noticed within about a minute, not two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// `sslmode` with libpq's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, plain otherwise; the certificate is not checked.
    Prefer,
    /// TLS or fail; the certificate is not checked (encryption only).
    Require,
    /// TLS, the certificate chains to a trusted root; the host name is not checked.
    VerifyCa,
    /// TLS, trusted chain and the certificate names the host.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<SslMode, String> {
        match s {
            "disable" => Ok(SslMode::Disable),
            // libpq's `allow` tries plain first; trying TLS first is never less safe.
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            _ => Err(format!(
                "sslmode {s:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )),
        }
    }
}

/// Where trusted roots come from for `verify-*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The system's store (no `sslrootcert`, or `sslrootcert=system`).
    System,
    /// A PEM file of CA certificates.
    File(PathBuf),
}

/// `DB_URL`, parsed.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Everything but the TLS settings, for `tokio-postgres`.
    pub config: tokio_postgres::Config,
    /// The TLS mode in effect.
    pub ssl_mode: SslMode,
    pub root_certs: RootCerts,
}

impl ConnInfo {
    /// Parses a libpq URL (`postgres://user:pw@host:5432/db?sslmode=require`) or
    /// key=value string. As in libpq, `sslmode` defaults to `prefer`, and `require` with
    /// an explicit `sslrootcert` file verifies the chain (`verify-ca`).
    pub fn parse(url: &str) -> Result<ConnInfo, String> {
        let (rest, tls) = split_tls_params(url)?;
        let mut config = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| format!("DB_URL does not parse: {e}"))?;
        let mut ssl_mode = match tls.sslmode.as_deref() {
            Some(mode) => mode.parse()?,
            None => SslMode::Prefer,
        };
        let root_certs = match tls.sslrootcert.as_deref() {
            None | Some("system") => RootCerts::System,
            Some(path) => RootCerts::File(PathBuf::from(path)),
        };
        if ssl_mode == SslMode::Require && matches!(root_certs, RootCerts::File(_)) {
            ssl_mode = SslMode::VerifyCa;
        }
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT_DEFAULT);
        }
        config.keepalives_idle(KEEPALIVE_IDLE);
        if config.get_application_name().is_none() {
            config.application_name("liveops-mirror");
        }
        if config.get_hosts().is_empty() {
            return Err("DB_URL names no host".to_string());
        }
        Ok(ConnInfo {
            config,
            ssl_mode,
            root_certs,
        })
    }
}

/// The TLS parameters taken out of a connection string.
#[derive(Debug, Default)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query or a key=value string.
fn split_tls_params(url: &str) -> Result<(String, TlsParams), String> {
    let mut tls = TlsParams::default();
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if is_url {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), tls));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => tls.sslmode = Some(percent_decode(value)?),
                "sslrootcert" => tls.sslrootcert = Some(percent_decode(value)?),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, tls));
    }
    let mut kept = Vec::new();
    for (key, value) in key_values(url)? {
        match key.as_str() {
            "sslmode" => tls.sslmode = Some(value),
            "sslrootcert" => tls.sslrootcert = Some(value),
            _ => kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            )),
        }
    }
    Ok((kept.join(" "), tls))
}

/// A libpq key=value string's pairs (`key = value`, values optionally single-quoted with
/// backslash escapes).
fn key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("DB_URL: {key:?} has no '=' value"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or("DB_URL: dangling '\\'")?),
                    Some(c) => value.push(c),
                    None => return Err("DB_URL: unterminated quoted value".to_string()),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        pairs.push((key, value));
    }
}

/// Decodes `%XX` escapes of a URL query value.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("DB_URL: bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("DB_URL: {s:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_tls_params_are_taken_out_and_the_rest_kept() {
        let info = ConnInfo::parse(
            "postgres://u:pw@db.example:6432/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(info.ssl_mode, SslMode::VerifyFull);
        assert_eq!(info.root_certs, RootCerts::File("/etc/ca.pem".into()));
        assert_eq!(info.config.get_dbname(), Some("app"));
        assert_eq!(info.config.get_ports(), &[6432]);
        assert_eq!(info.config.get_application_name(), Some("x"));
    }

    #[test]
    fn libpq_defaults_and_require_with_a_root_file() {
        let info = ConnInfo::parse("postgres://u@h/db").unwrap();
        assert_eq!(info.ssl_mode, SslMode::Prefer);
        assert_eq!(info.root_certs, RootCerts::System);
        assert_eq!(
            info.config.get_connect_timeout(),
            Some(&CONNECT_TIMEOUT_DEFAULT)
        );
        let info = ConnInfo::parse("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(info.ssl_mode, SslMode::Require);
        let info = ConnInfo::parse("postgres://u@h/db?sslmode=require&sslrootcert=/ca").unwrap();
        assert_eq!(info.ssl_mode, SslMode::VerifyCa);
        let info =
            ConnInfo::parse("postgres://u@h/db?sslmode=verify-full&sslrootcert=system").unwrap();
        assert_eq!(info.root_certs, RootCerts::System);
    }

    #[test]
    fn key_value_form_with_quotes() {
        let info = ConnInfo::parse(
            r"host=127.0.0.1 port = 5433 user=postgres password='it\'s a pw' dbname=test sslmode=require connect_timeout=3",
        )
        .unwrap();
        assert_eq!(info.ssl_mode, SslMode::Require);
        assert_eq!(info.config.get_password(), Some(&b"it's a pw"[..]));
        assert_eq!(info.config.get_ports(), &[5433]);
        assert_eq!(
            info.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
    }

    #[test]
    fn refuses_what_libpq_refuses() {
        assert!(ConnInfo::parse("postgres://u@h/db?sslmode=sometimes").is_err());
        assert!(ConnInfo::parse("host=h sslmode").is_err());
        assert!(ConnInfo::parse("postgres://u@h/db?sslrootcert=%zz").is_err());
        assert!(ConnInfo::parse("user=u dbname=d").is_err(), "no host");
    }
}
