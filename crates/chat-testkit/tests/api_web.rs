//! chat-api's extras for browsers: the embedded web client at `/` with its Content-Type and
//! CSP, the page config, the OpenAPI file, CORS on API routes and preflights, and that `/` shadows nothing.
//! Also that docs/openapi.yaml documents exactly the routes of chat-api's router, so that
//! `make openapi-check` (schemathesis, which tests only documented operations) covers every one.

use std::collections::BTreeSet;

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

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `(METHOD, path)` of every `.route("...", ...)` in chat-api's router source. Routes before
/// `.nest("/v1", v1)` belong to the `v1` router and get the `/v1` prefix.
fn router_operations(source: &str) -> BTreeSet<(String, String)> {
    assert_eq!(
        source.matches(".nest(").count(),
        1,
        "routes/mod.rs nests routers other than /v1: teach this test about them"
    );
    for unknown in [".merge(", ".route_service(", ".nest_service("] {
        assert!(
            !source.contains(unknown),
            "routes/mod.rs uses {unknown}: teach this test about it"
        );
    }
    let nest_at = source
        .find(".nest(\"/v1\", v1)")
        .expect("routes/mod.rs nests the v1 router under /v1");
    let mut operations = BTreeSet::new();
    for (at, _) in source.match_indices(".route(") {
        let args = &source[at + ".route(".len()..];
        let mut depth = 1;
        let end = args
            .char_indices()
            .find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(i)
            })
            .expect("a .route( call is closed");
        let args = &args[..end];
        let path = args
            .split('"')
            .nth(1)
            .unwrap_or_else(|| panic!("no path literal in .route({args})"));
        let path = if at < nest_at {
            format!("/v1{path}")
        } else {
            path.to_owned()
        };
        let mut found = 0;
        for method in METHODS {
            for (i, _) in args.match_indices(&format!("{method}(")) {
                let before = args[..i].chars().next_back();
                if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                    operations.insert((method.to_uppercase(), path.clone()));
                    found += 1;
                }
            }
        }
        assert!(found > 0, "no method handler found in .route({args})");
    }
    operations
}

/// `(METHOD, path)` of every operation under `paths:` in the OpenAPI document (its layout: a
/// path at two spaces of indentation, its operations at four).
fn spec_operations(spec: &str) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in spec.lines() {
        if !line.starts_with(' ') && !line.is_empty() && !line.starts_with('#') {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        let Some(key) = line.trim_end().strip_suffix(':') else {
            continue;
        };
        if let Some(p) = key.strip_prefix("  /") {
            path = Some(format!("/{}", p.trim_matches('"')));
        } else if let Some(method) = key.strip_prefix("    ")
            && METHODS.contains(&method)
        {
            let path = path.clone().expect("an operation below a path");
            operations.insert((method.to_uppercase(), path));
        }
    }
    operations
}

#[test]
fn openapi_documents_every_route() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let read = |path: &str| {
        std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let routes = router_operations(&read("crates/chat-api/src/routes/mod.rs"));
    let documented = spec_operations(&read("docs/openapi.yaml"));
    // The parsers themselves: a few routes both sides certainly have.
    for known in [
        ("POST", "/v1/auth/register"),
        ("DELETE", "/v1/chats/{id}/members/{user_id}"),
        ("GET", "/healthz"),
    ] {
        let known = (known.0.to_owned(), known.1.to_owned());
        assert!(routes.contains(&known), "router parse lacks {known:?}");
        assert!(documented.contains(&known), "spec parse lacks {known:?}");
    }
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "docs/openapi.yaml and routes/mod.rs disagree.\n\
         Routes without an operation in the spec (add them, with their bodies and errors): {undocumented:?}\n\
         Operations in the spec that no route serves: {unrouted:?}"
    );
}
