//! The router: every endpoint of the contract, the embedded web client, JSON fallbacks for
//! unknown paths and methods, the body limit, CORS, request metrics, and which admission class
//! (crate::admission) each heavy read and each write goes through.

mod attachments;
mod auth;
mod chats;
mod contacts;
mod internal;
mod messages;
mod ops;
mod push_tokens;
mod receipts;
pub(crate) mod sync;
mod users;
mod web;

pub use web::WebConfig;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::admission::{self, Admission};
use crate::error::ApiError;
use crate::state::AppState;

const BODY_LIMIT: usize = 1 << 20;

pub fn router(
    state: AppState,
    metrics: PrometheusHandle,
    web: WebConfig,
    admission: &Admission,
) -> Router {
    // Per handler rather than per path: one path serves a heavy read and a write.
    let sync_class = middleware::from_fn_with_state(admission.sync.clone(), admission::admit);
    let write_class = middleware::from_fn_with_state(admission.write.clone(), admission::admit);
    let v1 = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/logout", post(auth::logout))
        .route("/users/me", get(users::me))
        .route(
            "/me/push-token",
            put(push_tokens::put).delete(push_tokens::delete),
        )
        .route("/users", get(users::search))
        .route("/contacts", get(contacts::list))
        .route(
            "/contacts/{user_id}",
            put(contacts::add).delete(contacts::remove),
        )
        .route("/chats", post(chats::create).get(chats::list))
        .route("/chats/{id}", get(chats::get).patch(chats::update))
        .route(
            "/chats/{id}/members",
            get(chats::members).post(chats::add_member),
        )
        .route(
            "/chats/{id}/members/{user_id}",
            axum::routing::delete(chats::remove_member),
        )
        .route(
            "/chats/{id}/messages",
            post(messages::send.layer(write_class.clone()))
                .get(messages::list.layer(sync_class.clone())),
        )
        .route(
            "/chats/{id}/read",
            post(messages::read.layer(write_class.clone())),
        )
        .route(
            "/chats/{id}/delivered",
            post(receipts::delivered.layer(write_class.clone())),
        )
        .route(
            "/chats/{id}/messages/{message_id}",
            axum::routing::patch(receipts::edit.layer(write_class.clone()))
                .delete(receipts::delete.layer(write_class.clone())),
        )
        .route("/chats/{id}/typing", post(messages::typing))
        .route("/sync", get(sync::sync.layer(sync_class)))
        // The upload counts bytes itself (its own, larger limit); the 1 MiB limit would also
        // stop a multipart upload.
        .route(
            "/attachments",
            post(attachments::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/attachments/{id}", get(attachments::download))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_migrated,
        ));
    Router::new()
        .nest("/v1", v1)
        .route(
            "/internal/v1/presence",
            post(internal::presence.layer(write_class.clone())),
        )
        .route(
            "/internal/v1/presence/batch",
            post(internal::presence_batch.layer(write_class.clone())),
        )
        .route("/internal/v1/memberships", post(internal::memberships))
        .route(
            "/internal/v1/delivered/batch",
            post(receipts::delivered_batch.layer(write_class)),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics).with_state(metrics))
        .route("/openapi.yaml", get(web::openapi))
        .route("/", get(web::index))
        .route("/web/app.js", get(web::app_js))
        .route("/web/app.css", get(web::app_css))
        .route("/web/config.json", get(web::config).with_state(web))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(cors))
        .layer(middleware::from_fn(record_metrics))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        chat_proto::ErrorCode::MethodNotAllowed,
        "method not allowed on this path",
    )
}

/// Until the schema exists, answer 503 rather than failing on missing tables.
async fn require_migrated(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.is_migrated() {
        next.run(req).await
    } else {
        ApiError::unavailable("the database is not ready yet").into_response()
    }
}

/// Lets a page from another origin call the api: tokens travel in the `Authorization` header,
/// never in cookies, so any origin may call; preflights are answered here, before routing.
async fn cors(req: Request, next: Next) -> Response {
    if !req.headers().contains_key(header::ORIGIN) {
        return next.run(req).await;
    }
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        response
    } else {
        next.run(req).await
    };
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// When the request reached chat-api (put in the request's extensions by `record_metrics`), for
/// handlers that time a part of it from the start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestStarted(pub Instant);

async fn record_metrics(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    req.extensions_mut().insert(RequestStarted(started));
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("chat_api_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("chat_api_http_request_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
