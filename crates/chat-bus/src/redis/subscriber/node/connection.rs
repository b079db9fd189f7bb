//! A subscription connection's transport: where to connect ([`Endpoint`], from a `redis://` URL
//! or a cluster's slot map), opening and authenticating the TCP connection, and RESP2 frames on
//! it through redis-protocol's codec, which decodes a push without copying its payload.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use redis::{ConnectionAddr, IntoConnectionInfo};
use redis_protocol::codec::Resp2;
use redis_protocol::resp2::types::BytesFrame;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::unavailable;
use crate::{BusError, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long Redis may take to confirm a (un)subscribe or answer AUTH before the connection is
/// taken for dead.
pub(super) const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) type Connection = Framed<TcpStream, Resp2>;

/// Where to connect, from a `redis://` URL or a cluster's slot map.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Endpoint {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
}

/// The address only: the password stays out of logs.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let info = url.into_connection_info()?;
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(BusError::Config(format!(
                "the subscription connection needs a redis:// URL over TCP, not {}",
                info.addr()
            )));
        };
        let settings = info.redis_settings();
        Ok(Self {
            host: host.clone(),
            port: *port,
            username: settings.username().map(str::to_string),
            password: settings.password().map(str::to_string),
        })
    }

    /// Another server of the same cluster, reached with the same credentials.
    pub(crate) fn at(&self, host: &str, port: u16) -> Self {
        Self {
            host: host.to_string(),
            port,
            ..self.clone()
        }
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// Asks one command on a connection of its own, closed after the answer.
    pub(crate) async fn query(&self, words: &[&str]) -> Result<BytesFrame> {
        let mut connection = self.open("").await?;
        ask(&mut connection, words).await
    }

    /// A new connection, authenticated when the URL carries a password and named `name` (so
    /// that CLIENT LIST tells the gateways' subscriptions apart). The database number does not
    /// matter: channels are the same in every database.
    pub(super) async fn open(&self, name: &str) -> Result<Connection> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| unavailable("connecting to Redis timed out"))?
            .map_err(|e| BusError::Subscription(format!("connecting to Redis: {e}")))?;
        // Confirmations are small writes that a subscribe waits for.
        stream.set_nodelay(true).map_err(io_error)?;
        let mut connection = Framed::new(stream, Resp2::default());
        if let Some(password) = &self.password {
            let mut auth = vec!["AUTH"];
            auth.extend(self.username.as_deref());
            auth.push(password);
            if let BytesFrame::Error(e) = ask(&mut connection, &auth).await? {
                return Err(BusError::Subscription(format!("AUTH refused: {e}")));
            }
        }
        // Only a convenience: a server that refuses it (an ACL, a name it rejects) is still used.
        if !name.is_empty()
            && let BytesFrame::Error(e) = ask(&mut connection, &["CLIENT", "SETNAME", name]).await?
        {
            tracing::debug!(error = %e, "CLIENT SETNAME refused");
        }
        Ok(connection)
    }
}

/// Sends one command before subscribing and waits for its answer.
pub(super) async fn ask(connection: &mut Connection, words: &[&str]) -> Result<BytesFrame> {
    connection
        .send(command_frame(words))
        .await
        .map_err(protocol_error)?;
    match tokio::time::timeout(REPLY_TIMEOUT, connection.next()).await {
        Err(_) => Err(unavailable("Redis did not answer")),
        Ok(None) => Err(unavailable("Redis closed the connection")),
        Ok(Some(answer)) => answer.map_err(protocol_error),
    }
}

pub(super) fn io_error(e: std::io::Error) -> BusError {
    BusError::Subscription(e.to_string())
}

pub(super) fn protocol_error(e: redis_protocol::error::RedisProtocolError) -> BusError {
    BusError::Subscription(e.to_string())
}

/// A command as Redis reads it: an array of bulk strings.
pub(super) fn command_frame<S: AsRef<str>>(words: &[S]) -> BytesFrame {
    BytesFrame::Array(
        words
            .iter()
            .map(|word| BytesFrame::BulkString(Bytes::copy_from_slice(word.as_ref().as_bytes())))
            .collect(),
    )
}
