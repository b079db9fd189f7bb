//! The gateway's client for chat-api: pooled keep-alive HTTP/1.1, the user's own token for the
//! frames it forwards, and a short-lived service token for presence notices.
//!
//! Several chat-api replicas may be given (a comma-separated list): requests go round-robin, and
//! one that finds its replica gone goes on to the next one. That is safe for every request when
//! the connection was refused (nothing was sent), and, when the outcome is unknown (a connection
//! reset mid-request, a 502 or 504 from a proxy), only for requests that mean the same done twice:
//! sync pages, sends (chat-api finds a repeated send by its idempotency key, the client's
//! `client_msg_id`) and read and delivered watermarks (which only move forward). A replica that
//! refused a connection is tried last for `DOWN_FOR`.
//!
//! Sync and history pages are paced (crate::pacing): at most `CHAT_REPLAY_CONCURRENCY` in flight
//! from this node, and a 503 is asked again after its `Retry-After` with jitter until the
//! replay deadline. A send, read, edit or delete that chat-api's admission refused (503 with
//! `Retry-After`: refused before its handler ran, so nothing was done) is tried again the same
//! way within `pacing::WRITE_RETRY_BUDGET`; other 503s (the database or Redis unreachable) go
//! back to the client as before.
//!
//! Each replica gets at most `CHAT_API_CONNECTIONS` requests at a time from this node, and the
//! pool keeps that many connections: requests beyond wait here for a turn. Without the bound a
//! slow chat-api made the node open a connection for every request waiting on it (14,000 from
//! six gateways in a 100,000-socket run), which costs chat-api an accept and a task each, and on
//! one host runs the source ports out.
//!
//! A plain hyper client rather than reqwest: every frame a client sends goes through here, and
//! chat-api is a plain-HTTP neighbour, so redirects, proxies, URL parsing and TLS buy nothing
//! (docs/performance.md has the profile and the measured difference).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_auth::TokenKeys;
use chat_proto::{
    DeliveredBatch, DeliveredResults, EditMessageRequest, ErrorBody, ErrorCode, Memberships,
    MembershipsRequest, Message, MessageBody, PresenceBatch, PresenceChange, SendMessageRequest,
    SyncPage,
};
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::http::uri::{Authority, Scheme};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Serialize;

use crate::metrics::GatewayMetrics;
use crate::pacing::{self, Pacing};

/// How long one exchange with chat-api may take, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a replica that refused a connection goes to the back of the line.
const DOWN_FOR: Duration = Duration::from_secs(1);

/// Whether a request may go to another replica after its outcome became unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Only if nothing was sent (the connection was refused).
    IfUnsent,
    /// Also after an unknown outcome: the request means the same done twice.
    Safe,
}

/// One chat-api replica.
struct Upstream {
    authority: Authority,
    /// The base URL's path without its trailing slash ("" for most deployments).
    base_path: String,
    /// Until when it goes last, after it refused a connection.
    down_until: Mutex<Option<Instant>>,
    /// Turns to have a request out to it (`CHAT_API_CONNECTIONS`).
    turns: tokio::sync::Semaphore,
}

impl Upstream {
    fn parse(base: &str, connections: usize) -> anyhow::Result<Self> {
        let uri: Uri = base
            .parse()
            .map_err(|e| anyhow::anyhow!("chat-api URL {base:?}: {e}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            anyhow::bail!(
                "chat-api URL {base:?} needs a scheme and a host, such as http://chat-api:8080"
            );
        };
        if scheme != &Scheme::HTTP {
            anyhow::bail!("chat-api URL {base:?}: the gateway speaks plain HTTP to chat-api");
        }
        if uri.query().is_some() {
            anyhow::bail!("chat-api URL {base:?} must not carry a query");
        }
        Ok(Self {
            authority: authority.clone(),
            base_path: uri.path().trim_end_matches('/').to_string(),
            down_until: Mutex::new(None),
            turns: tokio::sync::Semaphore::new(connections.max(1)),
        })
    }

    fn is_down(&self, now: Instant) -> bool {
        self.down_until
            .lock()
            .ok()
            .and_then(|until| *until)
            .is_some_and(|until| until > now)
    }

    fn mark_down(&self) {
        if let Ok(mut until) = self.down_until.lock() {
            *until = Some(Instant::now() + DOWN_FOR);
        }
    }
}

/// chat-api's whole answer to one request.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Bytes,
    /// `Retry-After` in seconds, when the answer carries one.
    retry_after: Option<Duration>,
}

/// What chat-api answered to a forwarded frame.
#[derive(Debug)]
pub enum ApiReply {
    Done(Option<Message>),
    Failed { code: ErrorCode, message: String },
}

/// Shared behind an `Arc`: every forwarded frame holds it, and its strings and metric handles
/// would otherwise be copied per frame.
pub struct ApiClient {
    http: Client<HttpConnector, Full<Bytes>>,
    upstreams: Vec<Upstream>,
    /// Round-robin position among `upstreams`.
    next: AtomicUsize,
    credential: InternalCredential,
    node: String,
    metrics: GatewayMetrics,
    /// The limit on this node's sync and history pages in flight.
    pacing: Pacing,
}

/// How this gateway proves itself to chat-api's internal endpoints.
#[derive(Clone)]
pub enum InternalCredential {
    /// `CHAT_INTERNAL_KEY`, sent in `x-chat-internal-key` (needs no signing key).
    Key(String),
    /// Legacy: short-lived HS256 service tokens signed with the shared secret.
    ServiceToken(Box<TokenKeys>),
}

/// Why chat-api did not take a presence notice.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    /// The endpoint is not there (404): a chat-api older than this gateway, mid-rollout.
    #[error("chat-api has no such endpoint")]
    Unsupported,
    #[error("{0}")]
    Failed(String),
}

/// Why an exchange with chat-api produced no answer.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("invalid request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("{0}")]
    Transport(#[from] hyper_util::client::legacy::Error),
    #[error("reading the answer: {0}")]
    Body(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("no chat-api replica to ask")]
    NoReplica,
    #[error("no turn to ask chat-api within {0:?}")]
    NoTurn(Duration),
}

impl ApiClient {
    /// `base` is chat-api's plain-HTTP base URL, such as `http://chat-api:8080`, or several
    /// separated by commas (one per replica); `connections` bounds the requests out to each.
    pub fn new(
        base: &str,
        credential: InternalCredential,
        node: String,
        metrics: GatewayMetrics,
        pacing: Pacing,
        connections: usize,
    ) -> anyhow::Result<Arc<Self>> {
        let upstreams = base
            .split(',')
            .map(str::trim)
            .filter(|one| !one.is_empty())
            .map(|one| Upstream::parse(one, connections))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if upstreams.is_empty() {
            anyhow::bail!("no chat-api URL given");
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(connections.max(1))
            .build(connector);
        Ok(Arc::new(Self {
            http,
            upstreams,
            next: AtomicUsize::new(0),
            credential,
            node,
            metrics,
            pacing,
        }))
    }

    pub async fn send_message(
        &self,
        token: &str,
        chat_id: u64,
        body: &SendMessageRequest,
    ) -> ApiReply {
        let path = format!("/v1/chats/{chat_id}/messages");
        self.forward_with(Method::POST, token, &path, Some(body), Replay::Safe)
            .await
    }

    pub async fn mark_read(&self, token: &str, chat_id: u64, up_to_seq: u64) -> ApiReply {
        let body = serde_json::json!({ "up_to_seq": up_to_seq });
        let path = format!("/v1/chats/{chat_id}/read");
        self.forward_with(Method::POST, token, &path, Some(&body), Replay::Safe)
            .await
    }

    /// `PATCH /v1/chats/{id}/messages/{message_id}`: the answer carries the edited message.
    pub async fn edit_message(
        &self,
        token: &str,
        chat_id: u64,
        message_id: u64,
        body: &EditMessageRequest,
    ) -> ApiReply {
        let path = format!("/v1/chats/{chat_id}/messages/{message_id}");
        self.forward_with(Method::PATCH, token, &path, Some(body), Replay::IfUnsent)
            .await
    }

    pub async fn delete_message(&self, token: &str, chat_id: u64, message_id: u64) -> ApiReply {
        let path = format!("/v1/chats/{chat_id}/messages/{message_id}");
        self.forward_with::<()>(Method::DELETE, token, &path, None, Replay::IfUnsent)
            .await
    }

    /// The delivered moves a lane coalesced, for the users of this gateway's sockets (service
    /// credential); one result per move, in order.
    pub async fn delivered_batch(
        &self,
        batch: &DeliveredBatch,
    ) -> Result<DeliveredResults, NoticeError> {
        let body = self
            .post_internal("/internal/v1/delivered/batch", batch, Replay::Safe)
            .await?;
        let results: DeliveredResults = serde_json::from_slice(&body)
            .map_err(|e| NoticeError::Failed(format!("unreadable delivered results: {e}")))?;
        if results.results.len() != batch.moves.len() {
            return Err(NoticeError::Failed(format!(
                "{} results for {} moves",
                results.results.len(),
                batch.moves.len()
            )));
        }
        Ok(results)
    }

    pub async fn typing(&self, token: &str, chat_id: u64) -> ApiReply {
        let path = format!("/v1/chats/{chat_id}/typing");
        self.forward_with::<()>(Method::POST, token, &path, None, Replay::IfUnsent)
            .await
    }

    /// One page of `GET /v1/sync` for the user.
    pub async fn sync(&self, token: &str, since: &str) -> Result<SyncPage, (ErrorCode, String)> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("since", since)
            .append_pair("limit", "500")
            .finish();
        let started = Instant::now();
        let answer = self.paced_get(token, &format!("/v1/sync?{query}")).await;
        self.metrics
            .api_request_seconds
            .record(started.elapsed().as_secs_f64());
        let Answer { status, body, .. } = answer.map_err(|e| {
            tracing::warn!(error = %e, "chat-api sync failed");
            (
                ErrorCode::Unavailable,
                "chat-api is unavailable, retry later".to_string(),
            )
        })?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| (ErrorCode::Internal, format!("unreadable sync page: {e}")));
        }
        let (code, message) = error_of(status, &body);
        Err((code, message))
    }

    /// The chat's messages above `after_seq`, oldest first, as the user may read them (one
    /// page of up to 100; `has_more` when there are more).
    pub async fn messages_after(
        &self,
        token: &str,
        chat_id: u64,
        after_seq: u64,
    ) -> Result<(Vec<Message>, bool), String> {
        #[derive(serde::Deserialize)]
        struct Page {
            messages: Vec<Message>,
            has_more: bool,
        }
        let path = format!("/v1/chats/{chat_id}/messages?after_seq={after_seq}&limit=100");
        let Answer { status, body, .. } = self
            .paced_get(token, &path)
            .await
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("chat-api answered {status}"));
        }
        let mut page: Page = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        page.messages.sort_by_key(|message| message.seq);
        Ok((page.messages, page.has_more))
    }

    /// The group chats of each user (`users` at most `MembershipsRequest::MAX_USERS`).
    pub async fn memberships(&self, users: &[u64]) -> Result<Memberships, NoticeError> {
        let request = MembershipsRequest {
            users: users.to_vec(),
        };
        let body = self
            .post_internal("/internal/v1/memberships", &request, Replay::Safe)
            .await?;
        serde_json::from_slice(&body).map_err(|e| NoticeError::Failed(e.to_string()))
    }

    async fn forward_with<B: Serialize>(
        &self,
        method: Method,
        token: &str,
        path: &str,
        body: Option<&B>,
        replay: Replay,
    ) -> ApiReply {
        let started = Instant::now();
        let body = match body.map(serde_json::to_vec).transpose() {
            Ok(body) => body.map(Bytes::from),
            Err(e) => {
                return ApiReply::Failed {
                    code: ErrorCode::Internal,
                    message: format!("unencodable request: {e}"),
                };
            }
        };
        let authorization = bearer(token);
        let until = started + pacing::WRITE_RETRY_BUDGET;
        let mut jitter = pacing::jitter();
        let answer = loop {
            let answer = self
                .exchange(
                    method.clone(),
                    path,
                    authorization.clone(),
                    body.clone(),
                    replay,
                )
                .await;
            // Only a refusal by admission (it carries Retry-After): nothing ran.
            let refused_after = match &answer {
                Ok(answer) if answer.status == StatusCode::SERVICE_UNAVAILABLE => {
                    answer.retry_after
                }
                _ => None,
            };
            let wait = refused_after.and_then(|after| {
                pacing::retry_wait(Some(after), &mut jitter, Instant::now(), until)
            });
            let Some(wait) = wait else { break answer };
            metrics::counter!("chat_gateway_api_retries_total", "kind" => "write").increment(1);
            tokio::time::sleep(wait).await;
        };
        let reply = match answer {
            Ok(answer) => read_reply(answer.status, &answer.body),
            Err(e) => {
                tracing::warn!(error = %e, path, "chat-api request failed");
                ApiReply::Failed {
                    code: ErrorCode::Unavailable,
                    message: "chat-api is unavailable, retry later".into(),
                }
            }
        };
        self.metrics
            .api_request_seconds
            .record(started.elapsed().as_secs_f64());
        reply
    }

    /// Tells chat-api that a user came online or went offline everywhere.
    pub async fn presence(&self, change: PresenceChange) -> Result<(), NoticeError> {
        self.post_internal("/internal/v1/presence", &change, Replay::IfUnsent)
            .await
            .map(drop)
    }

    /// Several such changes in one request, in order (at most `PresenceBatch::MAX_CHANGES`).
    /// `NoticeError::Unsupported` from a chat-api older than the batch endpoint.
    pub async fn presence_batch(&self, batch: &PresenceBatch) -> Result<(), NoticeError> {
        self.post_internal("/internal/v1/presence/batch", batch, Replay::IfUnsent)
            .await
            .map(drop)
    }

    /// POSTs to an internal endpoint; the answer's body on a 2xx.
    async fn post_internal<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        replay: Replay,
    ) -> Result<Bytes, NoticeError> {
        let failed = |e: &dyn std::fmt::Display| NoticeError::Failed(e.to_string());
        let credential = match &self.credential {
            InternalCredential::Key(key) => (
                hyper::header::HeaderName::from_static(chat_auth::INTERNAL_KEY_HEADER),
                HeaderValue::try_from(key.as_str()).map_err(|e| failed(&e))?,
            ),
            InternalCredential::ServiceToken(keys) => (
                AUTHORIZATION,
                bearer(
                    &keys
                        .issue_service_token(&self.node, Duration::from_secs(60))
                        .map_err(|e| failed(&e))?,
                ),
            ),
        };
        let body = serde_json::to_vec(body).map_err(|e| failed(&e))?;
        let Answer {
            status,
            body: answer,
            ..
        } = self
            .exchange_with(
                Method::POST,
                path,
                credential,
                Some(Bytes::from(body)),
                replay,
            )
            .await
            .map_err(|e| failed(&e))?;
        match status {
            s if s.is_success() => Ok(answer),
            StatusCode::NOT_FOUND => Err(NoticeError::Unsupported),
            s => Err(NoticeError::Failed(format!("chat-api answered {s}"))),
        }
    }

    /// A GET of a sync or history page: waits for a turn (crate::pacing), and after a 503 asks
    /// again, after its Retry-After plus jitter, until the pacing's deadline.
    async fn paced_get(&self, token: &str, path: &str) -> Result<Answer, ExchangeError> {
        let until = Instant::now() + self.pacing.deadline();
        let authorization = bearer(token);
        let mut jitter = pacing::jitter();
        loop {
            let answer = {
                let Some(_turn) = self.pacing.turn(until).await else {
                    return Err(ExchangeError::NoTurn(self.pacing.deadline()));
                };
                self.exchange(Method::GET, path, authorization.clone(), None, Replay::Safe)
                    .await?
            };
            if answer.status != StatusCode::SERVICE_UNAVAILABLE {
                return Ok(answer);
            }
            let Some(wait) =
                pacing::retry_wait(answer.retry_after, &mut jitter, Instant::now(), until)
            else {
                return Ok(answer);
            };
            metrics::counter!("chat_gateway_api_retries_total", "kind" => "replay").increment(1);
            tokio::time::sleep(wait).await;
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        authorization: HeaderValue,
        body: Option<Bytes>,
        replay: Replay,
    ) -> Result<Answer, ExchangeError> {
        self.exchange_with(method, path, (AUTHORIZATION, authorization), body, replay)
            .await
    }

    /// One request and its whole answer: from the next replica in turn (those that just
    /// refused a connection last), then from the others while `replay` allows.
    async fn exchange_with(
        &self,
        method: Method,
        path: &str,
        header: (hyper::header::HeaderName, HeaderValue),
        body: Option<Bytes>,
        replay: Replay,
    ) -> Result<Answer, ExchangeError> {
        let count = self.upstreams.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let now = Instant::now();
        let mut order: Vec<&Upstream> = (0..count)
            .map(|i| &self.upstreams[(first + i) % count])
            .collect();
        order.sort_by_key(|upstream| upstream.is_down(now));
        let mut outcome = Err(ExchangeError::NoReplica);
        for (tried, upstream) in order.into_iter().enumerate() {
            if tried > 0 {
                metrics::counter!("chat_gateway_api_failovers_total").increment(1);
            }
            outcome = self
                .exchange_once(upstream, method.clone(), path, header.clone(), body.clone())
                .await;
            let next_may_answer = match &outcome {
                Ok(answer) => {
                    replay == Replay::Safe
                        && matches!(
                            answer.status,
                            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
                        )
                }
                Err(ExchangeError::Transport(e)) if e.is_connect() => {
                    upstream.mark_down();
                    true
                }
                Err(ExchangeError::Transport(_) | ExchangeError::Body(_)) => replay == Replay::Safe,
                Err(_) => false,
            };
            if !next_may_answer {
                break;
            }
        }
        outcome
    }

    /// One request to one replica and its whole answer, within `REQUEST_TIMEOUT`.
    async fn exchange_once(
        &self,
        upstream: &Upstream,
        method: Method,
        path: &str,
        (name, value): (hyper::header::HeaderName, HeaderValue),
        body: Option<Bytes>,
    ) -> Result<Answer, ExchangeError> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(upstream.authority.clone())
            .path_and_query(format!("{}{path}", upstream.base_path))
            .build()?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(name, value);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        let exchange = async {
            // Held until the whole answer is read, so the connection is back in the pool.
            let _turn = upstream
                .turns
                .acquire()
                .await
                .map_err(|_| ExchangeError::NoReplica)?;
            let response = self.http.request(request).await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|secs| secs.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response.into_body().collect().await?.to_bytes();
            Ok(Answer {
                status,
                body,
                retry_after,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(ExchangeError::Timeout(REQUEST_TIMEOUT)))
    }
}

/// `Authorization: Bearer <token>`; a token that is no header value gets chat-api's 401.
fn bearer(token: &str) -> HeaderValue {
    HeaderValue::try_from(format!("Bearer {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer -"))
}

fn read_reply(status: StatusCode, body: &[u8]) -> ApiReply {
    if status.is_success() {
        let message = serde_json::from_slice::<MessageBody>(body)
            .ok()
            .map(|b| b.message);
        return ApiReply::Done(message);
    }
    let (code, message) = error_of(status, body);
    ApiReply::Failed { code, message }
}

/// chat-api's error body, or one made from the status when the body is not one.
fn error_of(status: StatusCode, body: &[u8]) -> (ErrorCode, String) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => (error.error.code, error.error.message),
        Err(_) => (
            ErrorCode::from_http_status(status.as_u16()),
            format!("chat-api answered {status}"),
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests;
