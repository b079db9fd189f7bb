//! Messages: the gap-free per-chat sequence, idempotent sends, history pages, read watermarks.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use chat_proto::time::{Timestamp, now_millis};
use chat_proto::{Attachment, Id, Message, MessageKind};
use sqlx::types::chrono::NaiveDateTime;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use crate::chats::ChatQueries;
use crate::dialect::{Dialect, Stamp, bound, key};
use crate::{Result, Store, StoreError};

/// A message as read: the columns of [`message_columns`].
#[derive(FromRow)]
pub(crate) struct MessageRow {
    id: u64,
    chat_id: u64,
    seq: u64,
    sender_id: u64,
    kind: String,
    body: Option<String>,
    attachment_id: Option<u64>,
    reply_to_id: Option<u64>,
    client_msg_id: Vec<u8>,
    created_at: NaiveDateTime,
    edited_at: Option<NaiveDateTime>,
    deleted_at: Option<NaiveDateTime>,
    /// The attachment's `size sha256 content_type`, packed into one string by a primary-key
    /// subquery (the queries stay single-table; no type here contains a space).
    attachment: Option<Vec<u8>>,
}

/// The columns of [`MessageRow`] for a query on `messages` under the name `table`.
pub(crate) fn message_columns<D: Dialect>(table: &str) -> String {
    let packed = D::concat(&["a.size", "' '", "a.sha256", "' '", "a.content_type"]);
    format!(
        "{table}.id, {table}.chat_id, {table}.seq, {table}.sender_id, {table}.kind, \
         {table}.body, {table}.attachment_id, {table}.reply_to_id, {table}.client_msg_id, \
         {table}.created_at, {table}.edited_at, {table}.deleted_at, \
         (SELECT {packed} FROM attachments a WHERE a.id = {table}.attachment_id) AS attachment"
    )
}

impl From<MessageRow> for Message {
    fn from(row: MessageRow) -> Self {
        let attachment = row.attachment.as_deref();
        Message {
            id: row.id,
            chat_id: row.chat_id,
            seq: row.seq,
            sender_id: row.sender_id,
            kind: MessageKind::parse(&row.kind).unwrap_or(MessageKind::Text),
            text: row.body,
            attachment: row
                .attachment_id
                .and_then(|id| unpack_attachment(id, attachment?)),
            reply_to_id: row.reply_to_id,
            client_msg_id: String::from_utf8_lossy(&row.client_msg_id).into_owned(),
            created_at: row.created_at.and_utc(),
            edited_at: row.edited_at.map(|t| t.and_utc()),
            deleted_at: row.deleted_at.map(|t| t.and_utc()),
        }
    }
}

fn unpack_attachment(id: Id, packed: &[u8]) -> Option<Attachment> {
    let packed = std::str::from_utf8(packed).ok()?;
    let mut parts = packed.splitn(3, ' ');
    let size = parts.next()?.parse().ok()?;
    let sha256 = parts.next()?.to_string();
    let content_type = parts.next()?.to_string();
    Some(Attachment {
        id,
        url: Attachment::url_for(id),
        size,
        content_type,
        sha256,
    })
}

/// A validated message to store.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub chat_id: Id,
    pub sender_id: Id,
    pub kind: MessageKind,
    pub text: Option<&'a str>,
    /// Checked by the caller: uploaded by the sender.
    pub attachment: Option<&'a Attachment>,
    pub reply_to_id: Option<Id>,
    pub client_msg_id: &'a str,
}

#[derive(Debug, Clone)]
pub struct SendOutcome {
    pub message: Message,
    /// False when the same `client_msg_id` had been stored before: the stored message is returned.
    pub created: bool,
    /// Everyone in the chat at commit time (the sender included); empty for a repeat.
    pub member_ids: Vec<Id>,
}

#[derive(Debug, Clone)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

#[derive(Debug, Clone)]
pub struct ReadOutcome {
    /// The new watermark when it moved.
    pub moved_to: Option<u64>,
    /// When it moved (database clock).
    pub read_at: Timestamp,
    pub member_ids: Vec<Id>,
}

impl NewMessage<'_> {
    /// The message as stored with its id, seq and time.
    pub(crate) fn stored_as(&self, id: Id, seq: u64, created_at: Timestamp) -> Message {
        Message {
            id,
            chat_id: self.chat_id,
            seq,
            sender_id: self.sender_id,
            kind: self.kind,
            text: self.text.map(str::to_string),
            attachment: self.attachment.cloned(),
            reply_to_id: self.reply_to_id,
            client_msg_id: self.client_msg_id.to_string(),
            created_at,
            edited_at: None,
            deleted_at: None,
        }
    }

    /// `target_chat` is the chat of the message named by `reply_to_id` (`None`: no such message).
    pub(crate) fn check_reply_target(&self, target_chat: Option<Id>) -> Result<()> {
        if target_chat != Some(self.chat_id) {
            return Err(StoreError::Invalid(
                "reply_to_id must name a message of the same chat".into(),
            ));
        }
        Ok(())
    }
}

impl SendOutcome {
    /// The answer to a retried send: the first message, nobody to publish to.
    pub(crate) fn repeat(message: Message) -> Self {
        Self {
            message,
            created: false,
            member_ids: Vec::new(),
        }
    }
}

impl MessagePage {
    /// A page from up to `limit + 1` rows read in ascending seq, or in descending seq when
    /// `descending` (the page below a bound); the extra row only says there is more.
    pub(crate) fn from_rows(mut rows: Vec<MessageRow>, limit: u32, descending: bool) -> Self {
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        if descending {
            rows.reverse();
        }
        Self {
            messages: rows.into_iter().map(Message::from).collect(),
            has_more,
        }
    }
}

impl ReadOutcome {
    /// The watermark did not move.
    pub(crate) fn unmoved(read_at: Timestamp) -> Self {
        Self {
            moved_to: None,
            read_at,
            member_ids: Vec::new(),
        }
    }
}

/// A caller's watermark in a chat, the chat's last seq, and the database's clock
/// (`Dialect::CLOCK`).
#[derive(FromRow)]
pub(crate) struct ReadStateRow {
    last_seq: u64,
    last_read_seq: u64,
    now: Option<NaiveDateTime>,
}

/// Where a read up to `up_to_seq` moves a watermark now at `current` in a chat whose last
/// message is `last_seq`: never past the last message, never back; `None` when it stays.
pub(crate) fn read_target(up_to_seq: u64, last_seq: u64, current: u64) -> Option<u64> {
    let target = up_to_seq.min(last_seq);
    (target > current).then_some(target)
}

type PublishFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// The caller's publish, run under the chat's lock with the send's outcome.
pub(crate) type Announce = Box<dyn FnOnce(&SendOutcome) -> PublishFuture + Send>;

/// The messages' part of the backend contract (`crate::backend`), the same SQL on both
/// databases; sending is each database's own (`crate::backend::Backend`).
#[async_trait]
pub(crate) trait MessageQueries {
    async fn mark_read(&self, me: Id, chat_id: Id, up_to_seq: u64) -> Result<ReadOutcome>;
    async fn message_by_client_id(
        &self,
        chat_id: Id,
        sender_id: Id,
        client_msg_id: &str,
    ) -> Result<Option<Message>>;
    async fn messages(
        &self,
        me: Id,
        chat_id: Id,
        before_seq: Option<u64>,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<MessagePage>;
    async fn messages_after(&self, chat_id: Id, after_seq: u64, limit: u32)
    -> Result<Vec<Message>>;
}

#[async_trait]
impl<D, DB> MessageQueries for D
where
    D: Dialect<Db = DB> + ChatQueries,
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Stamp: Encode<'q, DB> + Type<DB>,
    for<'r> MessageRow: FromRow<'r, DB::Row>,
    for<'r> ReadStateRow: FromRow<'r, DB::Row>,
{
    /// The check runs on a reader (most reads move nothing); the move is a conditional update
    /// on the writer, so of two racing reads the lower one cannot win.
    async fn mark_read(&self, me: Id, chat_id: Id, up_to_seq: u64) -> Result<ReadOutcome> {
        let row: Option<ReadStateRow> = sqlx::query_as(&format!(
            "SELECT c.last_seq, m.last_read_seq, {} AS now FROM chat_members m \
             JOIN chats c ON c.id = m.chat_id WHERE m.chat_id = ? AND m.user_id = ?",
            D::CLOCK.unwrap_or("NULL")
        ))
        .bind(key(chat_id))
        .bind(key(me))
        .fetch_optional(self.reader())
        .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        let now = row.now.map_or_else(now_millis, |now| now.and_utc());
        let Some(target) = read_target(up_to_seq, row.last_seq, row.last_read_seq) else {
            return Ok(ReadOutcome::unmoved(now));
        };
        let updated = sqlx::query(
            "UPDATE chat_members SET last_read_seq = ?, read_at = ? \
             WHERE chat_id = ? AND user_id = ? AND last_read_seq < ?",
        )
        .bind(bound(target))
        .bind(Stamp(now))
        .bind(key(chat_id))
        .bind(key(me))
        .bind(bound(target))
        .execute(self.writer())
        .await?;
        if D::rows_affected(&updated) == 0 {
            return Ok(ReadOutcome::unmoved(now));
        }
        Ok(ReadOutcome {
            moved_to: Some(target),
            read_at: now,
            member_ids: self.member_ids(chat_id).await?,
        })
    }

    async fn message_by_client_id(
        &self,
        chat_id: Id,
        sender_id: Id,
        client_msg_id: &str,
    ) -> Result<Option<Message>> {
        stored_by_client_id::<D, DB, _>(self.reader(), chat_id, sender_id, client_msg_id).await
    }

    async fn messages(
        &self,
        me: Id,
        chat_id: Id,
        before_seq: Option<u64>,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<MessagePage> {
        self.require_member(me, chat_id).await?;
        let fetch = i64::from(limit) + 1;
        let columns = message_columns::<D>("messages");
        if let (None, Some(after)) = (before_seq, after_seq) {
            let rows: Vec<MessageRow> = sqlx::query_as(&format!(
                "SELECT {columns} FROM messages WHERE chat_id = ? AND seq > ? \
                 ORDER BY seq ASC LIMIT ?"
            ))
            .bind(key(chat_id))
            .bind(bound(after))
            .bind(fetch)
            .fetch_all(self.reader())
            .await?;
            return Ok(MessagePage::from_rows(rows, limit, false));
        }
        let rows: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT {columns} FROM messages \
             WHERE chat_id = ? AND seq < ? AND seq > ? ORDER BY seq DESC LIMIT ?"
        ))
        .bind(key(chat_id))
        .bind(bound(before_seq.unwrap_or(u64::MAX)))
        .bind(bound(after_seq.unwrap_or(0)))
        .bind(fetch)
        .fetch_all(self.reader())
        .await?;
        Ok(MessagePage::from_rows(rows, limit, true))
    }

    /// On the writer: what a send just committed must be there, whatever a reader lags.
    async fn messages_after(
        &self,
        chat_id: Id,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let columns = message_columns::<D>("messages");
        let rows: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT {columns} FROM messages WHERE chat_id = ? AND seq > ? \
             ORDER BY seq ASC LIMIT ?"
        ))
        .bind(key(chat_id))
        .bind(bound(after_seq))
        .bind(i64::from(limit))
        .fetch_all(self.writer())
        .await?;
        Ok(MessagePage::from_rows(rows, limit, false).messages)
    }
}

/// The message a sender stored under a client id: for `MessageQueries`, and for MySQL's send
/// writer, which finds a retried send's first message on its own connection.
pub(crate) async fn stored_by_client_id<'e, D, DB, E>(
    db: E,
    chat_id: Id,
    sender_id: Id,
    client_msg_id: &str,
) -> Result<Option<Message>>
where
    D: Dialect<Db = DB>,
    DB: Database,
    E: Executor<'e, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'r> MessageRow: FromRow<'r, DB::Row>,
{
    let row: Option<MessageRow> = sqlx::query_as(&format!(
        "SELECT {} FROM messages WHERE chat_id = ? AND sender_id = ? AND client_msg_id = ?",
        message_columns::<D>("messages")
    ))
    .bind(key(chat_id))
    .bind(key(sender_id))
    .bind(client_msg_id.as_bytes())
    .fetch_optional(db)
    .await?;
    Ok(row.map(Message::from))
}

impl Store {
    /// Stores a message with the chat's next `seq`, then runs `announce` (the publish) with the
    /// outcome, all under the chat's named lock (`GET_LOCK`, held by this connection's session).
    /// `announce` runs for a new message and for a retried one (`created == false`), so the
    /// caller can also announce what an earlier send left unannounced; it does not run on an
    /// error. The counter row lock alone gives gap-free seqs, but it ends at COMMIT, so two
    /// senders' publishes could race and reach clients out of seq order; the named lock spans
    /// the publish too, for every api replica.
    ///
    /// [`StoreError::CommitUnknown`] means COMMIT was sent and no answer came: the message may be
    /// stored, and nobody announced it.
    ///
    /// On MySQL, sends that arrive together share one transaction and one lock statement
    /// (`crate::mysql::send_batch`); `announce` then runs after that commit, still under the
    /// lock, in seq order with the chat's other sends. When the chat's writer already has a full
    /// queue, the send is refused at once with [`StoreError::Busy`] and nothing is stored.
    pub async fn send_message<F, Fut>(
        &self,
        new: NewMessage<'_>,
        announce: F,
    ) -> Result<SendOutcome>
    where
        F: FnOnce(&SendOutcome) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let announce: Announce = Box::new(move |outcome| Box::pin(announce(outcome)));
        self.backend.send_message(new, announce).await
    }

    /// Runs `work` under the chat's send lock, as `send_message` runs its publish: for
    /// announcing, in seq order with the chat's other sends, what a send left unannounced.
    pub async fn in_send_order<F, Fut, T>(&self, chat_id: Id, work: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let lock = self.backend.lock_chat(chat_id).await?;
        let done = work().await;
        lock.release().await;
        Ok(done)
    }

    /// The message a sender sent into a chat under a client id, if it is stored.
    pub async fn message_by_client_id(
        &self,
        chat_id: Id,
        sender_id: Id,
        client_msg_id: &str,
    ) -> Result<Option<Message>> {
        self.backend
            .message_by_client_id(chat_id, sender_id, client_msg_id)
            .await
    }

    /// Up to `limit` messages of the chat after `after_seq`, oldest first, for any member or
    /// none: what chat-api publishes when it finds a chat's messages unannounced.
    pub async fn messages_after(
        &self,
        chat_id: Id,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Message>> {
        self.backend.messages_after(chat_id, after_seq, limit).await
    }

    /// A page of history in ascending seq. With only `after_seq`, the page starts right after it;
    /// otherwise it ends right below `before_seq` (or at the newest message).
    pub async fn messages(
        &self,
        me: Id,
        chat_id: Id,
        before_seq: Option<u64>,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<MessagePage> {
        self.backend
            .messages(me, chat_id, before_seq, after_seq, limit)
            .await
    }

    /// Moves the caller's read watermark forward to `min(up_to_seq, last_seq)`; never back.
    pub async fn mark_read(&self, me: Id, chat_id: Id, up_to_seq: u64) -> Result<ReadOutcome> {
        self.backend.mark_read(me, chat_id, up_to_seq).await
    }
}

#[cfg(test)]
mod tests;
