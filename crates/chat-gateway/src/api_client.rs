//! The gateway's client for chat-api: pooled keep-alive HTTP, the user's own token for the
//! frames it forwards, and a short-lived service token for presence notices.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_auth::TokenKeys;
use chat_proto::{
    ErrorBody, ErrorCode, Message, MessageBody, PresenceStatus, SendMessageRequest, SyncPage,
};
use serde::Serialize;

use crate::metrics::GatewayMetrics;

/// What chat-api answered to a forwarded frame.
#[derive(Debug)]
pub enum ApiReply {
    Done(Option<Message>),
    Failed { code: ErrorCode, message: String },
}

/// Shared behind an `Arc`: every forwarded frame holds it, and its strings and metric handles
/// would otherwise be copied per frame.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    credential: InternalCredential,
    node: String,
    metrics: GatewayMetrics,
}

/// How this gateway proves itself to chat-api's internal endpoints.
#[derive(Clone)]
pub enum InternalCredential {
    /// `CHAT_INTERNAL_KEY`, sent in `x-chat-internal-key` (needs no signing key).
    Key(String),
    /// Legacy: short-lived HS256 service tokens signed with the shared secret.
    ServiceToken(Box<TokenKeys>),
}

impl ApiClient {
    pub fn new(
        base: &str,
        credential: InternalCredential,
        node: String,
        metrics: GatewayMetrics,
    ) -> anyhow::Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(15))
            .build()?;
        Ok(Arc::new(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            credential,
            node,
            metrics,
        }))
    }

    pub async fn send_message(
        &self,
        token: &str,
        chat_id: u64,
        body: &SendMessageRequest,
    ) -> ApiReply {
        self.forward(token, &format!("/v1/chats/{chat_id}/messages"), Some(body))
            .await
    }

    pub async fn mark_read(&self, token: &str, chat_id: u64, up_to_seq: u64) -> ApiReply {
        let body = serde_json::json!({ "up_to_seq": up_to_seq });
        self.forward(token, &format!("/v1/chats/{chat_id}/read"), Some(&body))
            .await
    }

    pub async fn typing(&self, token: &str, chat_id: u64) -> ApiReply {
        self.forward::<()>(token, &format!("/v1/chats/{chat_id}/typing"), None)
            .await
    }

    /// One page of `GET /v1/sync` for the user.
    pub async fn sync(&self, token: &str, since: &str) -> Result<SyncPage, (ErrorCode, String)> {
        let started = Instant::now();
        let response = self
            .http
            .get(format!("{}/v1/sync", self.base))
            .query(&[("since", since), ("limit", "500")])
            .bearer_auth(token)
            .send()
            .await;
        self.metrics
            .api_request_seconds
            .record(started.elapsed().as_secs_f64());
        let response = response.map_err(|e| {
            tracing::warn!(error = %e, "chat-api sync failed");
            (
                ErrorCode::Unavailable,
                "chat-api is unavailable, retry later".to_string(),
            )
        })?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| (ErrorCode::Internal, format!("unreadable sync page: {e}")));
        }
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => (error.error.code, error.error.message),
            Err(_) => (
                ErrorCode::from_http_status(status.as_u16()),
                format!("chat-api answered {status}"),
            ),
        })
    }

    async fn forward<B: Serialize>(&self, token: &str, path: &str, body: Option<&B>) -> ApiReply {
        let started = Instant::now();
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let reply = match request.send().await {
            Ok(response) => read_reply(response).await,
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
    pub async fn presence(&self, user: u64, status: PresenceStatus) -> Result<(), String> {
        let body = serde_json::json!({ "user_id": user, "status": status });
        let mut request = self
            .http
            .post(format!("{}/internal/v1/presence", self.base));
        request = match &self.credential {
            InternalCredential::Key(key) => request.header(chat_auth::INTERNAL_KEY_HEADER, key),
            InternalCredential::ServiceToken(keys) => request.bearer_auth(
                keys.issue_service_token(&self.node, Duration::from_secs(60))
                    .map_err(|e| e.to_string())?,
            ),
        };
        let response = request
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("chat-api answered {}", response.status()))
        }
    }
}

async fn read_reply(response: reqwest::Response) -> ApiReply {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    if status.is_success() {
        let message = serde_json::from_slice::<MessageBody>(&body)
            .ok()
            .map(|b| b.message);
        return ApiReply::Done(message);
    }
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(error) => ApiReply::Failed {
            code: error.error.code,
            message: error.error.message,
        },
        Err(_) => ApiReply::Failed {
            code: ErrorCode::from_http_status(status.as_u16()),
            message: format!("chat-api answered {status}"),
        },
    }
}
