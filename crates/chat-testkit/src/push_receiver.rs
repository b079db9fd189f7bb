//! A stand-in for the push provider (FCM): an HTTP server in the test process on a free port that
//! records every notification chat-worker posts, and can be told to fail (500) — for everything,
//! or always for some tokens — and to recover.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use parking_lot::{Mutex, MutexGuard};
use serde_json::Value;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `X-Chat-Job-Id` header.
    pub job_id: String,
    /// `message.token` of the body.
    pub token: String,
    /// The status the receiver answered.
    pub status: u16,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The parsed body (`Value::Null` if it was not JSON).
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    failing: bool,
    failing_tokens: HashSet<String>,
    delay: Duration,
    received: Vec<Received>,
}

/// The running receiver; the server stops when the test's runtime ends.
#[derive(Clone)]
pub struct PushReceiver {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl PushReceiver {
    /// Starts listening on 127.0.0.1 on a free port, answering 200.
    pub async fn start() -> PushReceiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the push receiver: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("push receiver address: {e}"));
        let app = Router::new()
            .route("/push", post(receive))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        PushReceiver { addr, inner }
    }

    /// The URL to give chat-worker as `CHAT_PUSH_URL`.
    pub fn url(&self) -> String {
        format!("http://{}/push", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// From now on answer 500 to everything (`true`) or 200 again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    /// Always answer 500 for this device token.
    pub fn fail_token(&self, token: &str) {
        self.lock().failing_tokens.insert(token.to_string());
    }

    /// From now on hold each answer for `delay` (the request is recorded on arrival).
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Requests answered 2xx so far.
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Waits until `done` holds for the requests so far; panics with them after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.received();
            if done(&seen) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "push receiver: {what} did not happen within {timeout:?}; saw {} requests: {:?}",
                    seen.len(),
                    seen.iter()
                        .map(|r| (&r.job_id, r.status))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let token = body["message"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (status, delay) = {
        let mut inner = inner.lock();
        let status = if inner.failing || inner.failing_tokens.contains(&token) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        inner.received.push(Received {
            job_id: header("x-chat-job-id").unwrap_or_default(),
            token,
            status: status.as_u16(),
            authorization: header("authorization"),
            body,
        });
        (status, inner.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    status
}
