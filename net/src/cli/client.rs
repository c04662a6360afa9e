//! Where a service answers, and one bounded HTTP/1.1 exchange with it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{HeaderName, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

use super::CliError;
use crate::config::Service;

/// Connecting (name lookup included); a host that does not answer fails fast.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// The whole exchange after connecting: sending, the engine's work, the answer.
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Largest answer read: a 1000-entry leaderboard page or a 1000-event batch's outcomes
/// are far under it; a larger one is not the engine talking.
pub const RESPONSE_BYTES_MAX: usize = 8 << 20;
/// Where every service answers when neither a flag nor the environment says.
const HOST_DEFAULT: &str = "localhost";
/// Names the environment variable giving one host for every service.
pub const HOST_ENV: &str = "LIVEOPS_HOST";

/// Where a service answers: `http://HOST[:PORT][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `HOST[:PORT]` as given: the `Host` header and what messages show.
    authority: String,
    /// The host to connect to, without an IPv6 address's brackets.
    host: String,
    /// The TCP port (80 when the URL has none).
    port: u16,
    /// A path in front of every route (a reverse proxy's), without a trailing slash;
    /// empty for none.
    prefix: String,
}

impl BaseUrl {
    /// Parses `http://HOST[:PORT][/PREFIX]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "{url:?}: only http:// is spoken here, not {other}://"
                ))
            }
            None => return Err(format!("{url:?}: expected http://HOST[:PORT]")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?}: expected http://HOST[:PORT]"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{url:?}: credentials in the URL are not supported"));
        }
        if uri.query().is_some() {
            return Err(format!("{url:?}: a base URL has no query"));
        }
        let host = authority.host();
        Ok(BaseUrl {
            authority: authority.as_str().to_owned(),
            host: host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host)
                .to_owned(),
            port: authority.port_u16().unwrap_or(80),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The full URL of `path_and_query` (which starts with `/`).
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}{path_and_query}", self.authority, self.prefix)
    }
}

/// The flag giving `service`'s base URL (`gateway` for `--gateway`).
pub fn url_flag(service: Service) -> &'static str {
    service.as_str()
}

/// The environment variable giving `service`'s base URL.
pub fn url_env(service: Service) -> String {
    format!("LIVEOPS_{}_URL", service.as_str().to_ascii_uppercase())
}

/// Where `service` answers. A flag wins over the environment, and a service's own URL
/// over the host: `--SERVICE URL`, `--host HOST`, `LIVEOPS_SERVICE_URL`, `LIVEOPS_HOST`,
/// then localhost; a host is reached on the service's default port. `env` reads the
/// environment (empty values count as unset).
pub fn base_url(
    service: Service,
    url_flag_value: Option<&str>,
    host_flag_value: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<BaseUrl, CliError> {
    let env = |key: &str| env(key).filter(|v| !v.trim().is_empty());
    let url_env = url_env(service);
    let from_url = |source: &str, url: &str| {
        BaseUrl::parse(url.trim()).map_err(|e| CliError::Usage(format!("{source}: {e}")))
    };
    let from_host = |source: &str, host: &str| {
        let host = host.trim();
        let authority = format!("{host}:{}", service.default_port());
        // Nothing but a host: `HOST:PORT` would apply one port to every service.
        let bare = host.starts_with('[') || !host.contains(':');
        match BaseUrl::parse(&format!("http://{authority}")) {
            Ok(base) if bare && !host.is_empty() && base.authority == authority => Ok(base),
            _ => Err(CliError::Usage(format!(
                "{source}: {host:?} is not a host name or address (for another port, give the service's URL with --{})",
                url_flag(service)
            ))),
        }
    };
    let flag = format!("--{}", url_flag(service));
    if let Some(url) = url_flag_value {
        from_url(&flag, url)
    } else if let Some(host) = host_flag_value {
        from_host("--host", host)
    } else if let Some(url) = env(&url_env) {
        from_url(&url_env, &url)
    } else if let Some(host) = env(HOST_ENV) {
        from_host(HOST_ENV, &host)
    } else {
        from_host("the default host", HOST_DEFAULT)
    }
}

/// One request to a service.
pub struct Call<'a> {
    /// The HTTP method.
    pub method: Method,
    /// The service's base URL.
    pub base: &'a BaseUrl,
    /// The route, with its query; starts with `/`.
    pub path_and_query: String,
    /// Headers besides `Host`, `User-Agent` and `Content-Length`.
    pub headers: Vec<(HeaderName, String)>,
    /// The exact bytes to send.
    pub body: Bytes,
}

/// What a service answered.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The whole body, at most [`RESPONSE_BYTES_MAX`] bytes.
    pub body: Bytes,
}

/// Why no usable answer came.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot start the client: {0}")]
    Runtime(std::io::Error),
    #[error("{url}: cannot build the request: {source}")]
    Request {
        url: String,
        source: hyper::http::Error,
    },
    #[error("cannot connect to {url}: {source} (is the engine running? `cargo run --release` starts it; --help says how to point at another host)")]
    Connect { url: String, source: std::io::Error },
    #[error("cannot connect to {url} within {CONNECT_TIMEOUT_MS} ms")]
    ConnectTimeout { url: String },
    #[error("{url}: no complete answer within {REQUEST_TIMEOUT_MS} ms")]
    Timeout { url: String },
    #[error("{url}: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("{url}: the answer is larger than {RESPONSE_BYTES_MAX} bytes")]
    TooLarge { url: String },
    #[error("{url}: reading the answer: {message}")]
    Body { url: String, message: String },
}

impl Call<'_> {
    /// `METHOD URL`: what the status line on stderr names.
    pub fn describe(&self) -> String {
        format!("{} {}", self.method, self.base.url(&self.path_and_query))
    }

    /// Sends the request and reads the whole answer, within the time and size bounds.
    pub fn run(&self) -> Result<Reply, ClientError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?
            .block_on(self.exchange())
    }

    async fn exchange(&self) -> Result<Reply, ClientError> {
        let url = self.base.url(&self.path_and_query);
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(format!("{}{}", self.base.prefix, self.path_and_query))
            .header(HOST, &self.base.authority)
            .header(USER_AGENT, concat!("liveops/", env!("CARGO_PKG_VERSION")));
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(self.body.clone()))
            .map_err(|source| ClientError::Request {
                url: url.clone(),
                source,
            })?;
        let connect = tokio::net::TcpStream::connect((self.base.host.as_str(), self.base.port));
        let stream =
            match tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => return Err(ClientError::Connect { url, source }),
                Err(_) => return Err(ClientError::ConnectTimeout { url }),
            };
        let exchange = async {
            let http = |source| ClientError::Http {
                url: url.clone(),
                source,
            };
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(http)?;
            // The connection runs beside the request on this runtime, which ends with it.
            tokio::spawn(connection);
            let response = sender.send_request(request).await.map_err(http)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, RESPONSE_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        ClientError::TooLarge { url: url.clone() }
                    } else {
                        ClientError::Body {
                            url: url.clone(),
                            message: e.to_string(),
                        }
                    }
                })?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                body,
            })
        };
        tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), exchange)
            .await
            .unwrap_or_else(|_| Err(ClientError::Timeout { url: url.clone() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn parses_base_urls() {
        let base = BaseUrl::parse("http://10.0.0.5:9000/liveops/").unwrap();
        assert_eq!(base.url("/events"), "http://10.0.0.5:9000/liveops/events");
        assert_eq!((base.host.as_str(), base.port), ("10.0.0.5", 9000));
        let v6 = BaseUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8080));
        assert_eq!(BaseUrl::parse("http://example.com").unwrap().port, 80);
        for bad in [
            "https://example.com",
            "example.com:8080",
            "http://u:p@example.com",
            "http://example.com/?a=1",
            "http://",
            "",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_flag_wins_over_the_environment_and_a_url_over_a_host() {
        let env = |key: &str| match key {
            "LIVEOPS_GATEWAY_URL" => Some("http://gw.example:9000".to_owned()),
            "LIVEOPS_HOST" => Some("env-host".to_owned()),
            _ => None,
        };
        let url = |flag, host, env: &dyn Fn(&str) -> Option<String>| {
            base_url(Service::Gateway, flag, host, env)
                .unwrap()
                .url("/events")
        };
        assert_eq!(url(None, None, &no_env), "http://localhost:8080/events");
        assert_eq!(url(None, None, &env), "http://gw.example:9000/events");
        assert_eq!(
            url(None, Some("10.1.2.3"), &env),
            "http://10.1.2.3:8080/events"
        );
        assert_eq!(
            url(Some("http://x:1"), Some("10.1.2.3"), &env),
            "http://x:1/events"
        );
        let leaderboard = base_url(Service::Leaderboard, None, None, env).unwrap();
        assert_eq!(
            leaderboard.url("/leaderboard"),
            "http://env-host:8082/leaderboard"
        );
        let v6 = base_url(Service::Progression, None, Some("[::1]"), no_env).unwrap();
        assert_eq!(v6.url("/rewards/claim"), "http://[::1]:8083/rewards/claim");
    }

    #[test]
    fn refuses_a_host_with_a_port_or_a_path() {
        for host in ["example.com:9000", "a/b", "u@h", "", "a b"] {
            assert!(
                matches!(
                    base_url(Service::Gateway, None, Some(host), no_env),
                    Err(CliError::Usage(_))
                ),
                "{host:?}"
            );
        }
    }
}
