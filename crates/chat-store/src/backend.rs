//! The contract between [`crate::Store`] and a database backend (`crate::mysql`,
//! `crate::sqlite`): [`Backend`], which `Store` holds as a trait object.
//!
//! It is made of one trait per topic (`UserQueries` in `users.rs`, `ChatQueries` in `chats.rs`,
//! ...), declared next to the public methods and types they serve, and of the operations listed
//! here, which each database does its own way: its lifecycle, the send path and its per-chat
//! lock, presence and read watermarks.
//!
//! Why a trait object: the two backends share nothing at run time, `Store` picks one from the URL,
//! and every call is a database round trip at least. An `async-trait` method costs one boxed
//! future (an allocation) per call, which is noise next to that round trip; in exchange `Store`
//! is one plain struct and a new backend, or a new operation, is added in one place per backend
//! instead of in a `match` per method.

use std::fmt::Debug;

use async_trait::async_trait;
use chat_proto::Id;

use crate::Result;
use crate::attachments::AttachmentQueries;
use crate::chats::ChatQueries;
use crate::contacts::ContactQueries;
use crate::messages::{Announce, MessageQueries, NewMessage, ReadOutcome, SendOutcome};
use crate::push::PushQueries;
use crate::sync::SyncQueries;
use crate::users::{Seen, UserQueries};

/// Everything [`crate::Store`] asks of a database.
#[async_trait]
pub(crate) trait Backend:
    UserQueries
    + ContactQueries
    + ChatQueries
    + MessageQueries
    + SyncQueries
    + AttachmentQueries
    + PushQueries
    + Debug
    + Send
    + Sync
{
    /// `"mysql"` or `"sqlite"` (for logs).
    fn name(&self) -> &'static str;

    /// How many writer tasks coalesce sends (`Store::with_send_writers`); only MySQL batches
    /// sends, so by default this does nothing.
    fn set_send_writers(&self, _writers: usize) {}

    async fn migrate(&self) -> Result<()>;

    async fn ping(&self) -> Result<()>;

    async fn close(&self);

    /// Stores `last_seen` now and returns it with the user's audience (`Store::mark_seen`).
    async fn mark_seen(&self, user_id: Id) -> Result<Seen>;

    /// Stores a message and runs `announce` under the chat's send lock (`Store::send_message`).
    async fn send_message(&self, new: NewMessage<'_>, announce: Announce) -> Result<SendOutcome>;

    /// Takes the chat's send lock, which orders a chat's publishes (`Store::in_send_order`).
    async fn lock_chat(&self, chat_id: Id) -> Result<Box<dyn ChatLock + '_>>;

    /// Moves the caller's read watermark forward (`Store::mark_read`).
    async fn mark_read(&self, me: Id, chat_id: Id, up_to_seq: u64) -> Result<ReadOutcome>;
}

/// A chat's send lock, held until released.
#[async_trait]
pub(crate) trait ChatLock: Send {
    async fn release(self: Box<Self>);
}
