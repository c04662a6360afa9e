//! The operator console: a static page (`net/console/`) compiled into the binary and
//! served at `/console` on the fairness port. No Node.js, no CDN, nothing read from disk
//! at run time.
//!
//! Same origin, on purpose. The page reads the fairness routes, `GET /stats`, and the
//! boards and progress, which live on the leaderboard and progression ports. Calling
//! those ports from the page would make every read cross-origin: CORS headers on three
//! ports, an `Authorization` preflight per call, and a `connect-src` naming ports that
//! the configuration can change. Instead the fairness port serves those read routes too
//! (`routes/mod.rs`), so the page talks to its own origin only, its CSP says
//! `connect-src 'self'`, and no other port answers to any origin but its own.
//!
//! The admin token is typed into the page, kept in the tab's `sessionStorage` and sent
//! as `Authorization: Bearer`; it never appears in a URL, so no log or history holds it.

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL};
use hyper::{Method, StatusCode};

use super::{only, Outcome};
use crate::http::{bytes_response, ApiError};
use crate::runtime::HttpResponse;

/// The page's policy: its own scripts, styles and API only; no inline script or style,
/// no plugin, no framing (clickjacking the block button), no form posting elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// Its path under `/console/` (`""` is the page itself).
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: [Asset; 6] = [
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../console/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/app.js"),
    },
    Asset {
        name: "chart.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/chart.js"),
    },
    Asset {
        name: "quantile.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/quantile.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../console/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../console/favicon.svg"),
    },
];

/// Serves `/console/<path>` (`path` split into segments): an asset, or 404. Every answer,
/// refusals included, carries the security headers.
pub(super) fn asset(method: &Method, path: &[&str]) -> Outcome {
    let found = only(method, Method::GET).and_then(|()| {
        let name = match path {
            [] => "",
            [name] => name,
            _ => "\u{0}",
        };
        ASSETS
            .iter()
            .find(|a| a.name == name)
            .map(|a| {
                bytes_response(
                    StatusCode::OK,
                    Bytes::from_static(a.body.as_bytes()),
                    a.content_type,
                )
            })
            .ok_or_else(|| ApiError::not_found("not_found", "no such console file"))
    });
    let mut response = found.unwrap_or_else(ApiError::into_response);
    secure(&mut response);
    Ok(response)
}

/// Adds the console's security headers. `no-store`: the page is small, and a new
/// engine version must never run against an old cached script.
fn secure(response: &mut HttpResponse) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        let text = |name: &str| ASSETS.iter().find(|a| a.name == name).unwrap().body;
        let page = text("");
        assert!(page.contains(r#"src="/console/app.js""#));
        assert!(page.contains(r#"href="/console/app.css""#));
        for module in ["chart.js", "quantile.js"] {
            assert!(text("app.js").contains(&format!("from '/console/{module}'")));
        }
        // No inline script or style (the CSP refuses them), nothing from elsewhere.
        assert!(!page.contains("<script>") && !page.contains("style=") && !page.contains("<style"));
        for asset in &ASSETS {
            let body = asset.body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{} names another origin",
                asset.name
            );
        }
    }
}
