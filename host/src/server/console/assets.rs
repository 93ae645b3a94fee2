//! The console's static files, embedded in the binary from `host/assets/console/` (no build
//! step, nothing read from disk at run time): the page, its stylesheets, its scripts (ES
//! modules) and the browser phone's audio worklet. Served without authentication (they hold no data) and with
//! `Cache-Control: no-cache`, so a browser revalidates them after an upgrade.
//!
//! Every file directly under `host/assets/console/` is embedded (the build script lists them,
//! `host/build.rs`): a new one is served on the next build.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its name under `/console/assets/` (and `host/assets/console/`).
    pub name: &'static str,
    /// Its `Content-Type` (from its extension).
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// The page, served at `/console` (and `/console/assets/index.html`).
pub const INDEX: &str = "index.html";

/// Every file directly under `host/assets/console/`, listed by the build script
/// (`host/build.rs`), sorted by name.
pub const ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// The embedded file called `name`.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// `GET /console`: the page; 404 in a build without it.
pub async fn index() -> Response {
    match find(INDEX) {
        Some(page) => serve(page),
        None => (
            StatusCode::NOT_FOUND,
            "this build has no console page (host/assets/console/index.html)\n",
        )
            .into_response(),
    }
}

/// `GET /console/assets/{file}`: an embedded file, or 404.
pub async fn asset(Path(file): Path<String>) -> Response {
    match find(&file) {
        Some(asset) => serve(asset),
        None => (StatusCode::NOT_FOUND, "no such console file\n").into_response(),
    }
}

fn serve(asset: &'static Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The browser must not guess another type; the page's requests carry no `Referer` (no
    // other site needs to know a console exists here).
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Only the console's own files run and connect (its API, `/events`, the phone's
    // WebSocket: CSP 3 `'self'` covers ws:/wss: of the same host); no framing (clickjacking),
    // no plugins, no inline script. Inline styles stay allowed for the chart's SVG.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

/// The console's `Content-Security-Policy` (W3C CSP Level 3).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_found_by_its_name_and_nothing_else_is() {
        for asset in ASSETS {
            assert_eq!(find(asset.name).map(|a| a.name), Some(asset.name));
            assert!(!asset.body.is_empty(), "{} is empty", asset.name);
        }
        assert!(find("../Cargo.toml").is_none());
        assert!(find("").is_none());
        assert!(find("package.json").is_none(), "tooling is not served");
    }

    #[tokio::test]
    async fn assets_carry_their_type_and_no_cache() {
        let Some(script) = ASSETS.iter().find(|a| a.name.ends_with(".js")) else {
            panic!("no script among the console's files: {ASSETS:?}");
        };
        let response = asset(Path(script.name.into())).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
        let missing = asset(Path("nope.js".into())).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
}
