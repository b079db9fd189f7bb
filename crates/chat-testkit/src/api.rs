//! A thin HTTP client for chat-api: every call returns the status and the body as JSON.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::names::unique_username;

/// A response: the status code and the body parsed as JSON (`Value::Null` for an empty body, a
/// JSON string holding the text when the body is not JSON).
pub type Resp = (u16, Value);

/// A registered user with a valid token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: u64,
    pub username: String,
    pub password: String,
    pub token: String,
}

/// HTTP client for one chat-api, optionally carrying a bearer token.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// The password every [`ApiClient::new_user`] gets.
pub const TEST_PASSWORD: &str = "correct horse battery";

impl ApiClient {
    /// A client for `base` (`http://host:port`), without a token.
    pub fn new(base: &str) -> ApiClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("cannot build an HTTP client: {e}"));
        ApiClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: None,
        }
    }

    /// The same client sending `Authorization: Bearer <token>`.
    pub fn with_token(&self, token: &str) -> ApiClient {
        ApiClient {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// The same client as `user`.
    pub fn as_user(&self, user: &TestUser) -> ApiClient {
        self.with_token(&user.token)
    }

    /// The same client without a token.
    pub fn anonymous(&self) -> ApiClient {
        ApiClient {
            token: None,
            ..self.clone()
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `method path` with an optional raw body (no `Content-Type` unless given as the
    /// extra header); panics only on transport errors (the server not answering), with the
    /// request in the message.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        header: Option<(&str, &str)>,
    ) -> Resp {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: no response: {e}"));
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, body)
    }

    /// Sends `method path` with an optional JSON body.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        match body {
            Some(b) => {
                let bytes = serde_json::to_vec(b).unwrap_or_default();
                self.request_raw(
                    method,
                    path,
                    Some(bytes),
                    Some(("content-type", "application/json")),
                )
                .await
            }
            None => self.request_raw(method, path, None, None).await,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.request(Method::POST, path, Some(body)).await
    }

    /// POST without a body.
    pub async fn post_empty(&self, path: &str) -> Resp {
        self.request(Method::POST, path, None).await
    }

    /// POST with a raw body and no `Content-Type` (for malformed JSON).
    pub async fn post_raw(&self, path: &str, body: &str) -> Resp {
        self.request_raw(Method::POST, path, Some(body.as_bytes().to_vec()), None)
            .await
    }

    pub async fn put(&self, path: &str, body: Option<&Value>) -> Resp {
        self.request(Method::PUT, path, body).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.request(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.request(Method::DELETE, path, None).await
    }

    /// Registers `username`; returns `(user_id, token)`. Panics unless the answer is 201.
    pub async fn register(&self, username: &str, password: &str) -> (u64, String) {
        let resp = self
            .anonymous()
            .post(
                "/v1/auth/register",
                &json!({"username": username, "password": password}),
            )
            .await;
        assert_status(&resp, 201, &format!("register {username}"));
        user_and_token(&resp.1)
    }

    /// Logs in; returns `(user_id, token)`. Panics unless the answer is 200.
    pub async fn login(&self, username: &str, password: &str) -> (u64, String) {
        let resp = self
            .anonymous()
            .post(
                "/v1/auth/login",
                &json!({"username": username, "password": password}),
            )
            .await;
        assert_status(&resp, 200, &format!("login {username}"));
        user_and_token(&resp.1)
    }

    /// Registers a fresh user named after `tag`.
    pub async fn new_user(&self, tag: &str) -> TestUser {
        let username = unique_username(tag);
        let (id, token) = self.register(&username, TEST_PASSWORD).await;
        TestUser {
            id,
            username,
            password: TEST_PASSWORD.to_string(),
            token,
        }
    }

    /// Registers `n` fresh users concurrently.
    pub async fn new_users(&self, tag: &str, n: usize) -> Vec<TestUser> {
        futures_util::future::join_all((0..n).map(|i| {
            let tag = format!("{tag}{i}");
            async move { self.new_user(&tag).await }
        }))
        .await
    }

    /// Creates (or gets) the private chat with `peer_id` as the client's user; returns the chat.
    pub async fn private_chat(&self, peer_id: u64) -> Value {
        let resp = self
            .post("/v1/chats", &json!({"type": "private", "peer_id": peer_id}))
            .await;
        assert!(
            resp.0 == 201 || resp.0 == 200,
            "create private chat with {peer_id}: expected 201 or 200, got {} {}",
            resp.0,
            resp.1
        );
        resp.1
    }

    /// Creates a group; returns the chat. Panics unless the answer is 201.
    pub async fn group_chat(&self, title: &str, member_ids: &[u64]) -> Value {
        let resp = self
            .post(
                "/v1/chats",
                &json!({"type": "group", "title": title, "member_ids": member_ids}),
            )
            .await;
        assert_status(&resp, 201, &format!("create group {title:?}"));
        resp.1
    }

    /// Sends a text message over REST; returns the message. Panics unless the answer is 201.
    pub async fn send_text(&self, chat_id: u64, client_msg_id: &str, text: &str) -> Value {
        let resp = self
            .post(
                &format!("/v1/chats/{chat_id}/messages"),
                &json!({"client_msg_id": client_msg_id, "text": text}),
            )
            .await;
        assert_status(&resp, 201, &format!("send to chat {chat_id}"));
        resp.1
            .get("message")
            .cloned()
            .unwrap_or_else(|| panic!("send to chat {chat_id}: no `message` in {}", resp.1))
    }

    /// Fetches every message of a chat by paging forward with `after_seq` (limit 100). A 503
    /// is retried for up to 30 s, as the contract tells clients to: during a Redis failover the
    /// api cannot check revocations for a moment.
    pub async fn all_messages(&self, chat_id: u64) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0u64;
        let retry_until = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let path = format!("/v1/chats/{chat_id}/messages?after_seq={after}&limit=100");
            let mut resp = self.get(&path).await;
            while resp.0 == 503 && std::time::Instant::now() < retry_until {
                tokio::time::sleep(Duration::from_millis(200)).await;
                resp = self.get(&path).await;
            }
            assert_status(&resp, 200, &format!("page messages of chat {chat_id}"));
            let page = resp.1["messages"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| panic!("no `messages` array in {}", resp.1));
            let has_more = resp.1["has_more"]
                .as_bool()
                .unwrap_or_else(|| panic!("no boolean `has_more` in {}", resp.1));
            if let Some(last) = page.last() {
                after = last["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("message without seq: {last}"));
            }
            let empty = page.is_empty();
            out.extend(page);
            if !has_more || empty {
                return out;
            }
        }
    }
}

fn user_and_token(body: &Value) -> (u64, String) {
    let id = body["user"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer user.id in {body}"));
    let token = body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no string token in {body}"))
        .to_string();
    (id, token)
}

/// Asserts the status of a response, showing the body when it differs.
pub fn assert_status(resp: &Resp, status: u16, what: &str) {
    assert_eq!(
        resp.0, status,
        "{what}: expected status {status}, got {} with body {}",
        resp.0, resp.1
    );
}

/// Asserts an error response: the status, `{"error":{"code":<code>,"message":<string>}}`.
pub fn assert_error(resp: &Resp, status: u16, code: &str, what: &str) {
    assert_status(resp, status, what);
    let error = resp.1.get("error").unwrap_or_else(|| {
        panic!(
            "{what}: expected an error body {{\"error\":{{...}}}}, got {}",
            resp.1
        )
    });
    assert_eq!(
        error.get("code").and_then(Value::as_str),
        Some(code),
        "{what}: error code in {}",
        resp.1
    );
    assert!(
        error.get("message").is_some_and(Value::is_string),
        "{what}: error without a string message: {}",
        resp.1
    );
}
