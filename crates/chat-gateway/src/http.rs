//! The gateway's HTTP side: the WebSocket upgrade at `/ws`, health, readiness and metrics.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use chat_proto::{ErrorBody, ErrorCode, WireFormat};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, ORIGIN};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Gateway;
use crate::limits::{self, IpSlot, Refusal};
use crate::socket::{self, SocketParams};

type HttpResponse = Response<Full<Bytes>>;

/// Accepts connections until `stop` is cancelled.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(gateway.clone(), peer.ip(), req));
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
}

async fn handle(
    gateway: Arc<Gateway>,
    peer: IpAddr,
    mut req: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/ws") => upgrade(gateway, peer, &mut req),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => readiness(&gateway).await,
        (&Method::GET, "/metrics") => text(StatusCode::OK, &gateway.prometheus.render()),
        (_, "/ws" | "/healthz" | "/readyz" | "/metrics") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "use GET",
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "not found; the WebSocket is at /ws",
        ),
    };
    Ok(response)
}

fn upgrade(gateway: Arc<Gateway>, peer: IpAddr, req: &mut Request<Incoming>) -> HttpResponse {
    if gateway.draining.load(Ordering::Acquire) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "this gateway is draining",
        );
    }
    if !fastwebsockets::upgrade::is_upgrade_request(req) {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidInput,
            "expected a WebSocket upgrade",
        );
    }
    let origin = req.headers().get(ORIGIN).and_then(|v| v.to_str().ok());
    if !limits::origin_allowed(&gateway.origins, origin) {
        metrics::counter!("chat_gateway_refused_total", "reason" => "origin").increment(1);
        return error(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this Origin may not open a socket",
        );
    }
    let client = client_ip(&gateway, peer, req);
    let slot = match gateway.ip_limiter.admit(client) {
        Ok(slot) => slot,
        Err(refusal) => {
            let (reason, message) = match refusal {
                Refusal::HandshakeRate => ("handshake_rate", "too many connection attempts"),
                Refusal::TooManyConnections => ("ip_connections", "too many open sockets"),
            };
            metrics::counter!("chat_gateway_refused_total", "reason" => reason).increment(1);
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                message,
            );
        }
    };
    let params = match socket_params(req, slot) {
        Ok(params) => params,
        Err(message) => return error(StatusCode::BAD_REQUEST, ErrorCode::InvalidInput, message),
    };
    match fastwebsockets::upgrade::upgrade(req) {
        Ok((response, upgraded)) => {
            tokio::spawn(socket::serve(gateway, upgraded, params));
            response.map(|_| Full::new(Bytes::new()))
        }
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidInput,
            &e.to_string(),
        ),
    }
}

/// The client's address: with a trusted proxy in front, the last X-Forwarded-For entry (the
/// address the proxy saw; entries before it are whatever the client sent), else the TCP peer.
fn client_ip(gateway: &Gateway, peer: IpAddr, req: &Request<Incoming>) -> IpAddr {
    if !gateway.config.trust_forwarded_for {
        return peer;
    }
    req.headers()
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
}

/// Reads `format` and `token` from the query and a bearer token from the headers.
fn socket_params(
    req: &Request<Incoming>,
    ip_slot: Option<IpSlot>,
) -> Result<SocketParams, &'static str> {
    let mut format = WireFormat::Json;
    let mut token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(chat_auth::bearer_token)
        .map(String::from);
    let mut since = None;
    let query = req.uri().query().unwrap_or_default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "format" => {
                format = match &*value {
                    "json" => WireFormat::Json,
                    "msgpack" => WireFormat::MsgPack,
                    _ => return Err("format must be json or msgpack"),
                }
            }
            "token" if token.is_none() && !value.is_empty() => token = Some(value.into_owned()),
            "since" if !value.is_empty() => since = Some(value.into_owned()),
            _ => {}
        }
    }
    Ok(SocketParams {
        format,
        token,
        since,
        ip_slot,
    })
}

/// Ready while not draining, the subscriptions are live and Redis answers.
async fn readiness(gateway: &Gateway) -> HttpResponse {
    if gateway.draining.load(Ordering::Acquire) {
        return text(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    if !gateway.subscriptions_up.load(Ordering::Acquire) {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "redis subscriptions are reconnecting",
        );
    }
    let redis_up = matches!(
        tokio::time::timeout(Duration::from_secs(1), gateway.bus.ping()).await,
        Ok(Ok(()))
    );
    if redis_up {
        text(StatusCode::OK, "ready")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "redis unreachable")
    }
}

fn text(status: StatusCode, body: &str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn error(status: StatusCode, code: ErrorCode, message: &str) -> HttpResponse {
    let body = serde_json::to_vec(&ErrorBody::new(code, message)).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
