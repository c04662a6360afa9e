//! HTTP helpers shared by the routes: JSON responses, the error body, bounded body
//! reads and query parsing.

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{HeaderMap, Response, StatusCode};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::runtime::HttpResponse;
use liveops_engine::event::ValidationError;

/// A refusal, rendered as `{"error":{"code","message","field"?,...extra}}`. Boxed so
/// that every `Result<_, ApiError>` on the request path stays one pointer wide.
#[derive(Debug, Clone)]
pub struct ApiError(Box<ErrorParts>);

#[derive(Debug, Clone)]
pub struct ErrorParts {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Extra members of the `error` object (e.g. `blockedUntil`, `receiptId`).
    pub extra: Map<String, Value>,
    /// Seconds for a `Retry-After` header.
    pub retry_after_s: Option<u64>,
    /// Methods for an `Allow` header (405).
    pub allow: Option<String>,
}

impl std::ops::Deref for ApiError {
    type Target = ErrorParts;

    fn deref(&self) -> &ErrorParts {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ErrorParts {
        &mut self.0
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError(Box::new(ErrorParts {
            status,
            code,
            message: message.into(),
            field: None,
            extra: Map::new(),
            retry_after_s: None,
            allow: None,
        }))
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_extra(mut self, key: &str, value: Value) -> Self {
        assert!(
            !ERROR_FIXED_MEMBERS.contains(&key),
            "an extra member may not replace `{key}`"
        );
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds.max(1));
        self
    }

    pub fn bad_request(v: ValidationError) -> Self {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, v.code, v.message);
        e.field = v.field;
        e
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn overloaded() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the engine is overloaded; nothing was applied, retry later",
        )
        .retry_after(1)
    }

    pub fn shutting_down() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the engine is shutting down; nothing was applied",
        )
        .retry_after(1)
    }

    pub fn into_response(self) -> HttpResponse {
        let mut response = json_response(self.status, &ErrorResponse { error: &self });
        if let Some(seconds) = self.retry_after_s {
            set_retry_after(&mut response, seconds);
        }
        if let Some(allow) = self
            .allow
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
        {
            response.headers_mut().insert(ALLOW, allow);
        }
        response
    }
}

/// The members every `error` object may have besides its extras, in name order.
const ERROR_FIXED_MEMBERS: [&str; 3] = ["code", "field", "message"];

/// An `ApiError` serializes as the `error` object of its response (batch results embed
/// it): its members in name order, as a `serde_json::Map` would hold them, but written
/// straight from the error, since a batch of refusals holds up to a thousand of them.
impl Serialize for ApiError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fixed = [
            Some(self.code),
            self.field.as_deref(),
            Some(self.message.as_str()),
        ];
        let mut map = serializer.serialize_map(None)?;
        let mut extra = self.extra.iter().peekable();
        for (name, value) in ERROR_FIXED_MEMBERS.into_iter().zip(fixed) {
            while let Some((key, value)) = extra.next_if(|(key, _)| key.as_str() < name) {
                map.serialize_entry(key, value)?;
            }
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        for (key, value) in extra {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// A whole error response's body: `{"error": {...}}`.
#[derive(Serialize)]
pub struct ErrorResponse<'a> {
    pub error: &'a ApiError,
}

pub fn set_retry_after(response: &mut HttpResponse, seconds: u64) {
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
}

/// Seconds for `Retry-After` from a wait in ms, rounded up, at least 1.
pub fn retry_after_s(wait_ms: u64) -> u64 {
    wait_ms.div_ceil(1000).max(1)
}

pub fn json_response(status: StatusCode, value: &impl Serialize) -> HttpResponse {
    let body = serde_json::to_vec(value).expect("our response types serialize");
    bytes_response(status, body.into(), "application/json")
}

pub fn bytes_response(status: StatusCode, body: Bytes, content_type: &'static str) -> HttpResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Bytes of a too-large body read and thrown away before its 413 is sent: a client still
/// sending then reads the status instead of a reset connection (closing a socket with
/// unread data resets it). A client that would send more is cut off at this bound.
const TOO_LARGE_DRAIN_BYTES_MAX: u64 = 16 << 20;

/// Reads a body of at most `bytes_max`; refuses with 413 when the declared length or the
/// bytes read exceed it, without buffering the excess (it is read and dropped, up to
/// [`TOO_LARGE_DRAIN_BYTES_MAX`], so the client sees the 413), and with 408 (closing the
/// connection) when the body is not complete by the request's read deadline
/// ([`crate::runtime::request_read_deadline`]).
pub async fn read_body(
    headers: &HeaderMap,
    mut body: Incoming,
    bytes_max: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds {bytes_max} bytes"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let read = async {
        if let Some(declared) = declared.filter(|&n| n > bytes_max as u64) {
            // A body declared far beyond the bound is not waited for.
            if declared <= TOO_LARGE_DRAIN_BYTES_MAX {
                drain(&mut body, TOO_LARGE_DRAIN_BYTES_MAX).await;
            }
            return Err(too_large());
        }
        let mut bytes = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("could not read the request body: {e}"),
                )
            })?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            if bytes.len() + data.len() > bytes_max {
                drain(&mut body, TOO_LARGE_DRAIN_BYTES_MAX).await;
                return Err(too_large());
            }
            bytes.extend_from_slice(data);
        }
        Ok(bytes.freeze())
    };
    match crate::runtime::request_read_deadline() {
        Some(deadline) => match tokio::time::timeout_at(deadline.at.into(), read).await {
            Ok(read) => read,
            Err(_) => {
                deadline.expire();
                Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body was not received within REQUEST_READ_TIMEOUT_MS",
                ))
            }
        },
        None => read.await,
    }
}

/// Reads and drops the rest of `body`, at most `bytes_max` more bytes (or until an error).
async fn drain(body: &mut Incoming, bytes_max: u64) {
    let mut left = bytes_max;
    while let Some(Ok(frame)) = body.frame().await {
        let len = frame.data_ref().map_or(0, |d| d.len() as u64);
        if len > left {
            return;
        }
        left -= len;
    }
}

/// Parses a request body that must be one JSON object; repeated keys are refused at any
/// depth, as in event bodies (see `liveops_engine::json`).
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match liveops_engine::json::parse_unique(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("body is not valid JSON: {e}"),
        )),
    }
}

/// Query parameters, percent-decoded. Repeated keys keep the last value.
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// An optional integer within `range`, `default` when absent.
    pub fn int(
        &self,
        key: &str,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<usize, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!(
                        "{key} must be a whole number in {}..={}",
                        range.start(),
                        range.end()
                    ),
                )
                .with_field(key)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_body_shape() {
        let e = ApiError::new(StatusCode::FORBIDDEN, "player_blocked", "blocked")
            .with_field("playerId")
            .with_extra("blockedUntil", json!(5));
        let expected = json!({"code":"player_blocked","message":"blocked","field":"playerId","blockedUntil":5});
        assert_eq!(serde_json::to_value(&e).unwrap(), expected);
        // Byte for byte what the map of members wrote before: names in order.
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
        let extras = ApiError::new(StatusCode::CONFLICT, "c", "m")
            .with_extra("zeta", json!(1))
            .with_extra("alpha", json!(2))
            .with_extra("dog", json!(3));
        assert_eq!(
            serde_json::to_string(&extras).unwrap(),
            r#"{"alpha":2,"code":"c","dog":3,"message":"m","zeta":1}"#
        );
        let response = ApiError::overloaded().into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn query_parsing() {
        let q = Query::parse(Some("window=weekly&limit=10&playerId=a%5Fb&limit=20"));
        assert_eq!(q.get("window"), Some("weekly"));
        assert_eq!(q.get("playerId"), Some("a_b"));
        assert_eq!(q.int("limit", 5, 1..=1000).unwrap(), 20);
        assert_eq!(q.int("offset", 0, 0..=10).unwrap(), 0);
        assert_eq!(
            q.int("window", 0, 0..=10).unwrap_err().field.as_deref(),
            Some("window")
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_s(0), 1);
        assert_eq!(retry_after_s(1001), 2);
    }
}
