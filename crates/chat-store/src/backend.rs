//! The contract between [`crate::Store`] and a database backend (`crate::mysql`,
//! `crate::sqlite`): [`Backend`], which `Store` holds as a trait object.
//!
//! Most of it is one trait per topic, declared next to the public methods and types it serves
//! (`UserQueries` in `users.rs`, `ChatQueries` in `chats.rs`, ...) and implemented there once for
//! both databases (`impl<D: Dialect> UserQueries for D`, see `crate::dialect`). The operations
//! declared here are the ones each database does its own way: its lifecycle, sending (with the
//! chat's send lock) and presence; `mysql/mod.rs` and `sqlite/mod.rs` implement them.
//!
//! Adding a query: when both databases run the same SQL, add a method to its topic's trait, its
//! body to the one implementation below it, and the public `Store` method that calls it; when the
//! SQL differs by a word or two, add that word to `Dialect`; when the whole operation differs,
//! add it here and to both backends.
//!
//! Why a trait object rather than an enum of the two backends: `Store` picks one from the URL and
//! keeps it, the two share nothing at run time, and with an enum every method is a `match` (what
//! this replaced). An `async-trait` method costs one boxed future (a heap allocation, tens of
//! nanoseconds) per call; every call is at least one database round trip (or, for a send, a wait
//! for the writer's next batch), tens of microseconds at the very least, so the allocation is
//! noise, and no dispatch crate (such as `enum_dispatch`) is worth its macro here.

use std::fmt::Debug;

use async_trait::async_trait;
use chat_proto::Id;

use crate::Result;
use crate::attachments::AttachmentQueries;
use crate::chats::ChatQueries;
use crate::contacts::ContactQueries;
use crate::messages::{Announce, MessageQueries, NewMessage, SendOutcome};
use crate::push::PushQueries;
use crate::receipts::ReceiptQueries;
use crate::sync::SyncQueries;
use crate::users::{Seen, UserQueries};

/// Everything [`crate::Store`] asks of a database.
#[async_trait]
pub(crate) trait Backend:
    UserQueries
    + ContactQueries
    + ChatQueries
    + MessageQueries
    + ReceiptQueries
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
}

/// A chat's send lock, held until released.
#[async_trait]
pub(crate) trait ChatLock: Send {
    async fn release(self: Box<Self>);
}
