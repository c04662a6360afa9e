//! `SERVICEBUS_CONNECTION_STRING` as the Azure portal gives it, and the SAS token made
//! from it.
//!
//! `Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=NAME;SharedAccessKey=KEY`
//! with optional `EntityPath=QUEUE` (a queue-scoped key) and
//! `UseDevelopmentEmulator=true` (Microsoft's emulator strings: plain AMQP, no TLS, port
//! 5672 unless given). Keys are case-insensitive, as Azure's own parsers take them.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;

/// Port of AMQP over TLS (Service Bus).
pub const AMQPS_PORT: u16 = 5671;
/// Port of plain AMQP (the emulator).
pub const AMQP_PORT: u16 = 5672;
/// Longest connection string accepted: a real one is some 200 bytes.
const CONNECTION_STRING_BYTES_MAX: usize = 4096;
/// Longest queue (entity path) name Service Bus allows.
const QUEUE_CHARS_MAX: usize = 260;
/// Longest key name Service Bus allows.
const KEY_NAME_CHARS_MAX: usize = 256;
/// Longest key Service Bus allows.
const KEY_CHARS_MAX: usize = 256;

/// What JavaScript's `encodeURIComponent` leaves alone (Microsoft's SDKs encode the
/// token's fields with it): letters, digits and `-_.!~*'()`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Why a connection string (with its queue) is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error("longer than {CONNECTION_STRING_BYTES_MAX} bytes")]
    TooLong,
    #[error("`{0}` is not `Key=Value`")]
    NotKeyValue(String),
    #[error("{0} is given twice")]
    Duplicate(&'static str),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0} is empty or too long")]
    BadLength(&'static str),
    #[error("Endpoint {0:?}: expected sb://HOST[:PORT]/ (amqps:// and, with UseDevelopmentEmulator=true, amqp:// too)")]
    Endpoint(String),
    #[error("Endpoint {0:?} is plain AMQP (the key would travel unencrypted): only with UseDevelopmentEmulator=true")]
    PlainWithoutEmulator(String),
    #[error("UseDevelopmentEmulator={0:?}: expected true or false")]
    EmulatorFlag(String),
    #[error("no queue: set SERVICEBUS_QUEUE (or EntityPath in the connection string)")]
    NoQueue,
    #[error(
        "SERVICEBUS_QUEUE {queue:?} is not the connection string's EntityPath {entity_path:?}"
    )]
    QueueMismatch { queue: String, entity_path: String },
    #[error("queue {0:?}: expected 1 to 260 of letters, digits, `.-_/`")]
    QueueName(String),
}

/// A parsed connection string, bound to its queue.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceBusTarget {
    /// The namespace's host name (`NS.servicebus.windows.net`): the TLS name, the AMQP
    /// `open` hostname and the token audience's host.
    pub host: String,
    pub port: u16,
    /// TLS (`amqps`): everywhere but the emulator.
    pub tls: bool,
    /// The queue the sender link targets.
    pub queue: String,
    /// `SharedAccessKeyName`: the token's `skn`.
    pub key_name: String,
    /// `SharedAccessKey`: signs tokens; never printed.
    key: String,
}

impl std::fmt::Debug for ServiceBusTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBusTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("queue", &self.queue)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl ServiceBusTarget {
    /// Parses `connection_string` for `queue` (empty: the string's `EntityPath`).
    pub fn parse(
        connection_string: &str,
        queue: &str,
    ) -> Result<ServiceBusTarget, ConnectionStringError> {
        use ConnectionStringError as E;
        if connection_string.len() > CONNECTION_STRING_BYTES_MAX {
            return Err(E::TooLong);
        }
        let mut endpoint = None;
        let mut key_name = None;
        let mut key = None;
        let mut entity_path = None;
        let mut emulator = None;
        for part in connection_string.split(';').map(str::trim) {
            if part.is_empty() {
                continue;
            }
            // Keys end at the first `=`; a base64 key may end in `=` itself.
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| E::NotKeyValue(redact(part)))?;
            let (slot, label) = match name.trim().to_ascii_lowercase().as_str() {
                "endpoint" => (&mut endpoint, "Endpoint"),
                "sharedaccesskeyname" => (&mut key_name, "SharedAccessKeyName"),
                "sharedaccesskey" => (&mut key, "SharedAccessKey"),
                "entitypath" => (&mut entity_path, "EntityPath"),
                "usedevelopmentemulator" => (&mut emulator, "UseDevelopmentEmulator"),
                // Other keys Azure hands out (e.g. `SharedAccessSignature`) are not used.
                _ => continue,
            };
            if slot.replace(value.trim().to_owned()).is_some() {
                return Err(E::Duplicate(label));
            }
        }
        let emulator = match emulator.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(E::EmulatorFlag(other.to_owned())),
        };
        let endpoint = endpoint.ok_or(E::Missing("Endpoint"))?;
        let (host, port, tls) = parse_endpoint(&endpoint, emulator)?;
        let key_name = key_name.ok_or(E::Missing("SharedAccessKeyName"))?;
        if key_name.is_empty() || key_name.chars().count() > KEY_NAME_CHARS_MAX {
            return Err(E::BadLength("SharedAccessKeyName"));
        }
        let key = key.ok_or(E::Missing("SharedAccessKey"))?;
        if key.is_empty() || key.chars().count() > KEY_CHARS_MAX {
            return Err(E::BadLength("SharedAccessKey"));
        }
        let queue = match (queue, entity_path) {
            ("", None) => return Err(E::NoQueue),
            ("", Some(path)) => path,
            (queue, Some(path)) if !queue.eq_ignore_ascii_case(&path) => {
                return Err(E::QueueMismatch {
                    queue: queue.to_owned(),
                    entity_path: path,
                })
            }
            (queue, _) => queue.to_owned(),
        };
        let queue_ok = (1..=QUEUE_CHARS_MAX).contains(&queue.len())
            && queue
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
        if !queue_ok {
            return Err(E::QueueName(queue));
        }
        Ok(ServiceBusTarget {
            host,
            port,
            tls,
            queue,
            key_name,
            key,
        })
    }

    /// The URL the connection opens.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// The resource the token grants: the queue, as `sb://HOST/QUEUE` (the CBS
    /// `put-token` name and the token's `sr`).
    pub fn audience(&self) -> String {
        format!("sb://{}/{}", self.host, self.queue)
    }

    /// A SAS token for [`ServiceBusTarget::audience`] valid until `expiry_unix_s`:
    /// `SharedAccessSignature sr=<aud>&sig=<sig>&se=<expiry>&skn=<key name>`, where
    /// `sig` = `base64(HMAC-SHA256(key as UTF-8, "<aud>\n<expiry>"))` and `<aud>` the
    /// lower-cased audience, URI-encoded (as Microsoft's SDKs make it).
    pub fn sas_token(&self, expiry_unix_s: u64) -> String {
        sas_token(&self.audience(), &self.key_name, &self.key, expiry_unix_s)
    }
}

/// See [`ServiceBusTarget::sas_token`]; public for the test's CBS responder, which
/// checks tokens with the same rule.
pub fn sas_token(audience: &str, key_name: &str, key: &str, expiry_unix_s: u64) -> String {
    let resource = utf8_percent_encode(&audience.to_lowercase(), URI_COMPONENT).to_string();
    let signature = sign(key, &format!("{resource}\n{expiry_unix_s}"));
    format!(
        "SharedAccessSignature sr={resource}&sig={}&se={expiry_unix_s}&skn={}",
        utf8_percent_encode(&signature, URI_COMPONENT),
        utf8_percent_encode(key_name, URI_COMPONENT),
    )
}

/// base64(HMAC-SHA256(key, text)); Service Bus keys sign as their UTF-8 text (they are
/// not base64-decoded first).
fn sign(key: &str, text: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `(host, port, tls)` of an `Endpoint` value.
fn parse_endpoint(
    endpoint: &str,
    emulator: bool,
) -> Result<(String, u16, bool), ConnectionStringError> {
    let bad = || ConnectionStringError::Endpoint(endpoint.to_owned());
    let (scheme, rest) = endpoint.split_once("://").ok_or_else(bad)?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        // The emulator's strings say `sb://localhost` and mean plain AMQP.
        "sb" => !emulator,
        "amqps" => true,
        "amqp" if emulator => false,
        "amqp" => return Err(ConnectionStringError::PlainWithoutEmulator(endpoint.into())),
        _ => return Err(bad()),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
        return Err(bad());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port.parse::<u16>().map_err(|_| bad())?)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !host_ok {
        return Err(bad());
    }
    let port = port.unwrap_or(if tls { AMQPS_PORT } else { AMQP_PORT });
    Ok((host.to_ascii_lowercase(), port, tls))
}

/// `part` hidden (a part without `=` may be a pasted key): only its length is told.
fn redact(part: &str) -> String {
    format!("<{} characters>", part.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTAL: &str = "Endpoint=sb://liveops.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=abc+def/ghi=";

    #[test]
    fn parses_the_portal_and_emulator_forms() {
        let target = ServiceBusTarget::parse(PORTAL, "events").unwrap();
        assert_eq!(target.url(), "amqps://liveops.servicebus.windows.net:5671");
        assert_eq!(target.key_name, "RootManageSharedAccessKey");
        assert_eq!(
            target.key, "abc+def/ghi=",
            "a trailing = belongs to the key"
        );
        assert_eq!(
            target.audience(),
            "sb://liveops.servicebus.windows.net/events"
        );
        assert!(
            !format!("{target:?}").contains("abc+def"),
            "key not printed"
        );

        let scoped = format!("{PORTAL};EntityPath=events");
        assert_eq!(
            ServiceBusTarget::parse(&scoped, "").unwrap().queue,
            "events"
        );
        assert!(matches!(
            ServiceBusTarget::parse(&scoped, "other"),
            Err(ConnectionStringError::QueueMismatch { .. })
        ));

        let emulator = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";
        let target = ServiceBusTarget::parse(emulator, "q").unwrap();
        assert_eq!(target.url(), "amqp://localhost:5672");
        let local =
            "endpoint=amqp://127.0.0.1:40001/;sharedaccesskeyname=k;sharedaccesskey=s;usedevelopmentemulator=TRUE";
        assert_eq!(
            ServiceBusTarget::parse(local, "q").unwrap().url(),
            "amqp://127.0.0.1:40001"
        );
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        use ConnectionStringError as E;
        let parse = |s: &str| ServiceBusTarget::parse(s, "q").unwrap_err();
        assert!(matches!(
            parse("Endpoint=amqp://127.0.0.1:1/;SharedAccessKeyName=k;SharedAccessKey=s"),
            E::PlainWithoutEmulator(_)
        ));
        assert!(matches!(
            parse("Endpoint=http://x/;SharedAccessKeyName=k;SharedAccessKey=s"),
            E::Endpoint(_)
        ));
        assert!(matches!(
            parse("Endpoint=sb://x:99999/;SharedAccessKeyName=k;SharedAccessKey=s"),
            E::Endpoint(_)
        ));
        assert!(matches!(
            parse("Endpoint=sb://x/;SharedAccessKeyName=k"),
            E::Missing("SharedAccessKey")
        ));
        assert!(matches!(
            parse("Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=s;SharedAccessKey=t"),
            E::Duplicate("SharedAccessKey")
        ));
        assert!(
            matches!(parse("garbage-key-material"), E::NotKeyValue(s) if !s.contains("material"))
        );
        assert!(matches!(
            ServiceBusTarget::parse(PORTAL, "bad queue"),
            Err(E::QueueName(_))
        ));
        assert!(matches!(
            ServiceBusTarget::parse(PORTAL, ""),
            Err(E::NoQueue)
        ));
    }

    #[test]
    fn sas_tokens_follow_microsofts_recipe() {
        // Computed independently with Python's hmac/hashlib/base64 and
        // urllib.parse.quote(s, safe="-_.!~*'()") on the same inputs.
        let token = sas_token(
            "sb://Liveops.servicebus.windows.net/events",
            "RootManageSharedAccessKey",
            "abc+def/ghi=",
            1_800_000_000,
        );
        assert_eq!(token, EXPECTED_TOKEN);
    }

    const EXPECTED_TOKEN: &str = "SharedAccessSignature \
        sr=sb%3A%2F%2Fliveops.servicebus.windows.net%2Fevents\
        &sig=Vc7zn7Dn4AclJgCNb4gzSOEizKpyYJZLKAahkR0BMg0%3D\
        &se=1800000000&skn=RootManageSharedAccessKey";
}
