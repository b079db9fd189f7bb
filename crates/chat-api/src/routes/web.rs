//! The web client and the OpenAPI file, embedded in the binary so a container needs no extra
//! files. The page lives at `/` exactly and its assets under `/web/`, so it never shadows an
//! API route; unknown paths still get the JSON 404.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");
const OPENAPI_YAML: &str = include_str!("../../../../docs/openapi.yaml");

/// Scripts and styles only from this origin, no inline code; the page may talk to this api and
/// to a gateway on any host (it is on another port, so `'self'` alone would not cover it).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the page reads from `/web/config.json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WebConfig {
    /// The gateway's WebSocket URL; `null` lets the page use `ws://<page host>:8081/ws`.
    pub ws_url: Option<String>,
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

pub async fn openapi() -> Response {
    asset("application/yaml; charset=utf-8", OPENAPI_YAML)
}

pub async fn config(State(config): State<WebConfig>) -> Response {
    let mut response = Json(config).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Embedded in the binary: a new build is a new page, so revalidate instead of caching blindly.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
