//! chat-api's extras for browsers: the embedded web client at `/` with its Content-Type and
//! CSP, the page config, the OpenAPI file, CORS on API routes and preflights, and that `/` shadows nothing.

use chat_testkit::{Stack, StackOptions, assert_error};

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{} has no {name} header", resp.url()))
}

#[tokio::test]
async fn serves_the_web_client_with_types_and_csp() {
    let stack = Stack::start(StackOptions::gateways(0)).await;
    let base = stack.api_url();
    for (path, content_type, marker) in [
        (
            "/",
            "text/html; charset=utf-8",
            "<script src=\"/web/app.js\"",
        ),
        (
            "/web/app.js",
            "text/javascript; charset=utf-8",
            "new WebSocket",
        ),
        ("/web/app.css", "text/css; charset=utf-8", ".chat-list"),
    ] {
        let resp = get(&format!("{base}{path}")).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        assert_eq!(header(&resp, "content-type"), content_type, "GET {path}");
        let csp = header(&resp, "content-security-policy").to_owned();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
        let body = resp.text().await.expect("body");
        assert!(body.contains(marker), "GET {path} lacks {marker:?}");
    }

    let resp = get(&format!("{base}/openapi.yaml")).await;
    assert_eq!(resp.status(), 200, "GET /openapi.yaml");
    assert_eq!(
        header(&resp, "content-type"),
        "application/yaml; charset=utf-8"
    );
    let spec = resp.text().await.expect("spec");
    assert!(
        spec.starts_with("openapi: 3.1"),
        "the OpenAPI file: {spec:.40}"
    );

    let resp = get(&format!("{base}/web/config.json")).await;
    assert_eq!(resp.status(), 200);
    let config: serde_json::Value = resp.json().await.expect("config JSON");
    assert!(
        config.get("ws_url").is_some(),
        "config has ws_url: {config}"
    );

    // `/` matches only itself: unknown paths, API paths and wrong methods keep their JSON errors.
    let api = stack.api();
    assert_error(
        &api.get("/index.html").await,
        404,
        "not_found",
        "/index.html",
    );
    assert_error(
        &api.get("/web/nope.js").await,
        404,
        "not_found",
        "/web/nope.js",
    );
    assert_error(
        &api.get("/v1/chats").await,
        401,
        "unauthorized",
        "/v1/chats",
    );
    assert_error(
        &api.post("/", &serde_json::json!({})).await,
        405,
        "method_not_allowed",
        "POST /",
    );
}

#[tokio::test]
async fn cors_allows_other_origins() {
    let stack = Stack::start(StackOptions::gateways(0)).await;
    let base = stack.api_url();
    let http = reqwest::Client::new();

    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{base}/v1/chats"))
        .header("Origin", "http://elsewhere.example:3000")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status(), 204);
    assert_eq!(header(&preflight, "access-control-allow-origin"), "*");
    assert!(header(&preflight, "access-control-allow-methods").contains("PATCH"));
    assert!(header(&preflight, "access-control-allow-headers").contains("authorization"));

    let resp = http
        .get(format!("{base}/v1/chats"))
        .header("Origin", "http://elsewhere.example:3000")
        .send()
        .await
        .expect("cross-origin GET");
    assert_eq!(resp.status(), 401, "still needs a token");
    assert_eq!(header(&resp, "access-control-allow-origin"), "*");

    let same_origin = get(&format!("{base}/healthz")).await;
    assert!(
        same_origin
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "no CORS headers without an Origin"
    );
}
