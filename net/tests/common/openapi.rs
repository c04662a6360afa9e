//! Every response the integration suite receives is checked against `api/openapi.yaml`:
//! the route and method must be documented for the port that answered, the status must
//! be one the operation lists, required headers must be present, and a JSON body must
//! validate against the documented schema (JSON Schema 2020-12, as OpenAPI 3.1 says).
//! So the server and the spec cannot drift apart without a test failing.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use super::Response;

/// The spec, as JSON, with its validators built once per schema location.
struct Spec {
    doc: Value,
    validators: Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
}

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/openapi.yaml");
        let text = std::fs::read_to_string(path).expect("api/openapi.yaml is readable");
        let doc: Value = serde_norway::from_str(&text).expect("api/openapi.yaml is YAML");
        Spec {
            doc,
            validators: Mutex::new(HashMap::new()),
        }
    })
}

/// A JSON pointer's escaping of one path segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Follows a local `$ref` (`#/components/...`) once, if `value` is one.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> (&'a Value, Option<String>) {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("openapi.yaml: dangling $ref {reference}"));
            (target, Some(pointer.to_owned()))
        }
        None => (value, None),
    }
}

/// The documented path template that `path` (no query) matches, e.g.
/// `/players/{playerId}/progress` for `/players/p1/progress`.
fn template_of<'a>(paths: &'a serde_json::Map<String, Value>, path: &str) -> Option<&'a str> {
    let segments: Vec<&str> = path.split('/').collect();
    let matches = |template: &str| {
        let parts: Vec<&str> = template.split('/').collect();
        parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(part, segment)| {
                part == segment
                    || (part.starts_with('{') && part.ends_with('}') && !segment.is_empty())
            })
    };
    // A literal template wins over one with a parameter in the same place.
    let mut found: Vec<&str> = paths
        .keys()
        .map(String::as_str)
        .filter(|t| matches(t))
        .collect();
    found.sort_by_key(|t| t.matches('{').count());
    found.first().copied()
}

/// Whether the operation at `template` is served on `service`'s port.
fn served_on(doc: &Value, template: &str, service: &str) -> bool {
    doc["paths"][template]["servers"]
        .as_array()
        .is_some_and(|servers| servers.iter().any(|s| s["description"] == service))
}

/// Checks one response; panics with what disagrees.
pub fn check(service: &str, method: &str, target: &str, response: &Response) {
    let spec = spec();
    let doc = &spec.doc;
    let path = target.split('?').next().unwrap_or(target);
    let what = format!(
        "{method} {target} on {service} answered {}",
        response.status
    );
    let body_text = String::from_utf8_lossy(&response.body);
    let paths = doc["paths"].as_object().expect("openapi.yaml has paths");
    let operation = template_of(paths, path)
        .filter(|template| served_on(doc, template, service))
        .and_then(|template| {
            let op = &doc["paths"][template][method.to_ascii_lowercase()];
            (!op.is_null()).then_some((template, op))
        });
    if let Some((template, op)) = operation {
        check_query_refusal(doc, template, op, target, response, &what);
    }
    let (response_spec, location) = match operation {
        Some((template, op)) => {
            let status = response.status.to_string();
            let declared = op["responses"]
                .get(&status)
                .or_else(|| op["responses"].get("default"))
                .unwrap_or_else(|| {
                    panic!("openapi.yaml: {what}, a status {method} {template} does not list; body: {body_text}")
                });
            let location = format!(
                "/paths/{}/{}/responses/{status}",
                escape(template),
                method.to_ascii_lowercase()
            );
            let (declared, moved) = resolve(doc, declared);
            (declared, moved.unwrap_or(location))
        }
        // A route the spec does not have: only the documented refusals may answer it.
        None => {
            let name = match response.status {
                404 => "NotFound",
                405 => "MethodNotAllowed",
                _ => panic!("openapi.yaml does not document {what}; body: {body_text}"),
            };
            let location = format!("/components/responses/{name}");
            (
                doc.pointer(&location).expect("documented refusal"),
                location,
            )
        }
    };
    if let Some(headers) = response_spec["headers"].as_object() {
        for (name, header) in headers {
            let (header, _) = resolve(doc, header);
            if header["required"] == Value::Bool(true) {
                assert!(
                    response.header(name).is_some(),
                    "openapi.yaml: {what} lacks its required header {name}; body: {body_text}"
                );
            }
        }
    }
    let Some(content) = response_spec["content"].as_object() else {
        return;
    };
    let content_type = response.header("content-type").unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let Some((declared_type, _)) = content
        .iter()
        .find(|(declared, _)| declared.split(';').next().unwrap_or_default().trim() == media)
    else {
        panic!(
            "openapi.yaml: {what} with Content-Type {content_type:?}, not one of {:?}",
            content.keys().collect::<Vec<_>>()
        );
    };
    if media != "application/json" {
        return;
    }
    let body: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e}): {body_text}"));
    let schema_location = format!("{location}/content/{}/schema", escape(declared_type));
    let validator = validator(spec, &schema_location);
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "openapi.yaml: {what}; the body does not match {schema_location}:\n  {}\nbody: {body_text}",
        errors.join("\n  ")
    );
}

/// A 400 `invalid_query` must name a parameter whose value the spec refuses too: a value
/// the spec allows and the server refuses (e.g. an offset the spec documents up to
/// 1,000,000 refused past 10,000) is a disagreement. Parameters marked
/// `x-narrowed-by-config` (the enabled windows) may be refused within their schema.
fn check_query_refusal(
    doc: &Value,
    template: &str,
    op: &Value,
    target: &str,
    response: &Response,
    what: &str,
) {
    if response.status != 400 {
        return;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&response.body) else {
        return;
    };
    if body["error"]["code"] != "invalid_query" {
        return;
    }
    let Some(field) = body["error"]["field"].as_str() else {
        panic!("openapi.yaml: {what}: invalid_query names no field");
    };
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let Some(sent) = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == field)
        .map(|(_, v)| v.into_owned())
        .last()
    else {
        return;
    };
    let method = op_method(doc, template, op);
    let path_level = doc["paths"][template]["parameters"].as_array();
    let op_level = op["parameters"].as_array();
    let declared = located(doc, path_level, format!("/paths/{}", escape(template)))
        .into_iter()
        .chain(located(
            doc,
            op_level,
            format!("/paths/{}/{method}", escape(template)),
        ))
        .find(|(param, _)| param["in"] == "query" && param["name"] == field);
    let Some((param, location)) = declared else {
        panic!("openapi.yaml: {what}: invalid_query names {field}, which the operation does not document");
    };
    if param.get("x-narrowed-by-config").is_some() {
        return;
    }
    let value = match param["schema"]["type"].as_str() {
        Some("integer") => match sent.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => return, // not an integer: the spec refuses it too
        },
        _ => Value::from(sent.clone()),
    };
    let validator = validator(spec(), &format!("{location}/schema"));
    assert!(
        !validator.is_valid(&value),
        "openapi.yaml allows {field}={sent} ({location}), but the server refused it: {what}: {}",
        String::from_utf8_lossy(&response.body)
    );
}

/// Parameters (resolved) with the location of each in the spec.
fn located<'a>(
    doc: &'a Value,
    params: Option<&'a Vec<Value>>,
    prefix: String,
) -> Vec<(&'a Value, String)> {
    params
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| {
            let (param, moved) = resolve(doc, p);
            (
                param,
                moved.unwrap_or_else(|| format!("{prefix}/parameters/{i}")),
            )
        })
        .collect()
}

/// The method key under which `op` sits at `template`.
fn op_method<'a>(doc: &'a Value, template: &str, op: &Value) -> &'a str {
    doc["paths"][template]
        .as_object()
        .and_then(|item| item.iter().find(|(_, v)| *v == op).map(|(k, _)| k.as_str()))
        .expect("the operation is under its path")
}

/// A validator for the schema at `location` in the spec, with the whole spec as its
/// root so that `#/components/schemas/...` references resolve.
fn validator(spec: &Spec, location: &str) -> std::sync::Arc<jsonschema::Validator> {
    let mut validators = spec
        .validators
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    validators
        .entry(location.to_owned())
        .or_insert_with(|| {
            let mut root = spec.doc.clone();
            root["$schema"] = Value::from("https://json-schema.org/draft/2020-12/schema");
            root["$ref"] = Value::from(format!("#{}", uri_fragment(location)));
            std::sync::Arc::new(
                jsonschema::draft202012::new(&root)
                    .unwrap_or_else(|e| panic!("openapi.yaml: schema at {location}: {e}")),
            )
        })
        .clone()
}

/// `pointer` percent-encoded for a URI fragment (`{playerId}` is not allowed raw).
fn uri_fragment(pointer: &str) -> String {
    pointer
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
