//! Messages: the gap-free per-chat sequence, idempotent sends, history pages, read watermarks.

use chat_proto::time::Timestamp;
use chat_proto::{Attachment, Id, Message, MessageKind};
use sqlx::MySqlPool;
use sqlx::types::chrono::NaiveDateTime;

use crate::error::is_duplicate_of;
use crate::send_batch::{Announce, SendBatcher};
use crate::{Result, Store, StoreError};

/// How long a send waits for another send in the same chat before answering "busy".
const CHAT_LOCK_WAIT_SECS: i64 = 10;

/// The columns of [`MessageRow`] for queries on the unaliased `messages` table (the last one is
/// [`attachment_column`] for `messages`).
pub(crate) const MESSAGE_COLUMNS: &str = "id, chat_id, seq, sender_id, kind, body, attachment_id, \
     reply_to_id, client_msg_id, created_at, (SELECT CONCAT(a.size, ' ', a.sha256, ' ', \
     a.content_type) FROM attachments a WHERE a.id = messages.attachment_id)";

/// The last column of the message queries: the attachment's `size sha256 content_type` packed
/// into one string by a primary-key subquery (the queries stay single-table; no type here
/// contains a space).
pub(crate) fn attachment_column(table: &str) -> String {
    format!(
        "(SELECT CONCAT(a.size, ' ', a.sha256, ' ', a.content_type) FROM attachments a \
         WHERE a.id = {table}.attachment_id)"
    )
}

pub(crate) type MessageRow = (
    u64,
    u64,
    u64,
    u64,
    String,
    Option<String>,
    Option<u64>,
    Option<u64>,
    Vec<u8>,
    NaiveDateTime,
    Option<Vec<u8>>,
);

pub(crate) fn message_from_row(row: MessageRow) -> Message {
    let (
        id,
        chat_id,
        seq,
        sender_id,
        kind,
        text,
        attachment_id,
        reply_to_id,
        client_msg_id,
        at,
        packed,
    ) = row;
    Message {
        id,
        chat_id,
        seq,
        sender_id,
        kind: MessageKind::parse(&kind).unwrap_or(MessageKind::Text),
        text,
        attachment: attachment_id.and_then(|aid| unpack_attachment(aid, packed.as_deref()?)),
        reply_to_id,
        client_msg_id: String::from_utf8_lossy(&client_msg_id).into_owned(),
        created_at: at.and_utc(),
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
            messages: rows.into_iter().map(message_from_row).collect(),
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

/// Where a read up to `up_to_seq` moves a watermark now at `current` in a chat whose last
/// message is `last_seq`: never past the last message, never back; `None` when it stays.
pub(crate) fn read_target(up_to_seq: u64, last_seq: u64, current: u64) -> Option<u64> {
    let target = up_to_seq.min(last_seq);
    (target > current).then_some(target)
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
    /// (`crate::send_batch`); `announce` then runs after that commit, still under the lock, in
    /// seq order with the chat's other sends. When the chat's writer already has a full queue,
    /// the send is refused at once with [`StoreError::Busy`] and nothing is stored.
    pub async fn send_message<F, Fut>(
        &self,
        new: NewMessage<'_>,
        announce: F,
    ) -> Result<SendOutcome>
    where
        F: FnOnce(&SendOutcome) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let pool = mysql_or_sqlite!(self, send_message(new, announce));
        let announce: Announce = Box::new(move |outcome| Box::pin(announce(outcome)));
        // Concurrent sends share transactions (crate::send_batch).
        self.sends
            .get_or_init(|| SendBatcher::start(pool.clone(), self.send_writers))
            .send(&new, announce)
            .await
    }

    /// Runs `work` under the chat's send lock, as `send_message` runs its publish: for
    /// announcing, in seq order with the chat's other sends, what a send left unannounced.
    pub async fn in_send_order<F, Fut, T>(&self, chat_id: Id, work: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let pool = mysql_or_sqlite!(self, in_send_order(chat_id, work));
        let mut conn = pool.acquire().await?;
        lock_chat(&mut conn, chat_id).await?;
        let done = work().await;
        unlock_chat(conn, chat_id).await;
        Ok(done)
    }

    /// The message a sender sent into a chat under a client id, if it is stored.
    pub async fn message_by_client_id(
        &self,
        chat_id: Id,
        sender_id: Id,
        client_msg_id: &str,
    ) -> Result<Option<Message>> {
        let pool = mysql_or_sqlite!(
            self,
            message_by_client_id(chat_id, sender_id, client_msg_id)
        );
        stored_by_client_id(pool, chat_id, sender_id, client_msg_id).await
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
        let pool = mysql_or_sqlite!(self, messages(me, chat_id, before_seq, after_seq, limit));
        crate::chats::membership(pool, me, chat_id).await?;
        let fetch = limit + 1;
        let rows: Vec<MessageRow> = match (before_seq, after_seq) {
            (None, Some(after)) => {
                sqlx::query_as(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = ? AND seq > ? \
                     ORDER BY seq ASC LIMIT ?"
                ))
                .bind(chat_id)
                .bind(after)
                .bind(fetch)
                .fetch_all(pool)
                .await?
            }
            (before, after) => {
                let rows: Vec<MessageRow> = sqlx::query_as(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages \
                     WHERE chat_id = ? AND seq < ? AND seq > ? ORDER BY seq DESC LIMIT ?"
                ))
                .bind(chat_id)
                .bind(before.unwrap_or(u64::MAX))
                .bind(after.unwrap_or(0))
                .bind(fetch)
                .fetch_all(pool)
                .await?;
                return Ok(MessagePage::from_rows(rows, limit, true));
            }
        };
        Ok(MessagePage::from_rows(rows, limit, false))
    }

    /// Moves the caller's read watermark forward to `min(up_to_seq, last_seq)`; never back.
    pub async fn mark_read(&self, me: Id, chat_id: Id, up_to_seq: u64) -> Result<ReadOutcome> {
        let pool = mysql_or_sqlite!(self, mark_read(me, chat_id, up_to_seq));
        let row: Option<(u64, u64, NaiveDateTime)> = sqlx::query_as(
            "SELECT c.last_seq, m.last_read_seq, NOW(3) FROM chat_members m \
             JOIN chats c ON c.id = m.chat_id WHERE m.chat_id = ? AND m.user_id = ?",
        )
        .bind(chat_id)
        .bind(me)
        .fetch_optional(pool)
        .await?;
        let (last_seq, current, now) = row.ok_or(StoreError::NotFound)?;
        let Some(target) = read_target(up_to_seq, last_seq, current) else {
            return Ok(ReadOutcome::unmoved(now.and_utc()));
        };
        let updated = sqlx::query(
            "UPDATE chat_members SET last_read_seq = ?, read_at = ? \
             WHERE chat_id = ? AND user_id = ? AND last_read_seq < ?",
        )
        .bind(target)
        .bind(now)
        .bind(chat_id)
        .bind(me)
        .bind(target)
        .execute(pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(ReadOutcome::unmoved(now.and_utc()));
        }
        Ok(ReadOutcome {
            moved_to: Some(target),
            read_at: now.and_utc(),
            member_ids: self.member_ids(chat_id).await?,
        })
    }
}

/// One send on its own connection and transaction: the batch path's fallback.
pub(crate) async fn send_alone(
    pool: &MySqlPool,
    new: NewMessage<'_>,
    announce: Announce,
) -> Result<SendOutcome> {
    let mut conn = pool.acquire().await?;
    lock_chat(&mut conn, new.chat_id).await?;
    let outcome = insert_message(pool, &mut conn, &new).await;
    if let Ok(outcome) = &outcome {
        announce(outcome).await;
    }
    unlock_chat(conn, new.chat_id).await;
    outcome
}

pub(crate) fn lock_wait_secs() -> i64 {
    CHAT_LOCK_WAIT_SECS
}

/// Takes the chat's named lock on this connection, waiting up to `CHAT_LOCK_WAIT_SECS`.
async fn lock_chat(conn: &mut sqlx::pool::PoolConnection<sqlx::MySql>, chat_id: Id) -> Result<()> {
    let (granted,): (Option<i64>,) =
        sqlx::query_as("SELECT GET_LOCK(LEFT(CONCAT(DATABASE(), ?), 64), ?)")
            .bind(chat_lock_name(chat_id))
            .bind(CHAT_LOCK_WAIT_SECS)
            .fetch_one(&mut **conn)
            .await?;
    if granted != Some(1) {
        return Err(StoreError::Busy("the chat is busy, retry"));
    }
    Ok(())
}

/// Releases the chat's named lock; if that fails, closes the connection instead, which frees it.
async fn unlock_chat(mut conn: sqlx::pool::PoolConnection<sqlx::MySql>, chat_id: Id) {
    let released = sqlx::query("DO RELEASE_LOCK(LEFT(CONCAT(DATABASE(), ?), 64))")
        .bind(chat_lock_name(chat_id))
        .execute(&mut *conn)
        .await;
    if released.is_err() {
        drop(conn.detach());
    }
}

pub(crate) fn chat_lock_name(chat_id: Id) -> String {
    format!("/chat/{chat_id}")
}

async fn insert_message(
    pool: &MySqlPool,
    conn: &mut sqlx::pool::PoolConnection<sqlx::MySql>,
    new: &NewMessage<'_>,
) -> Result<SendOutcome> {
    let mut tx = sqlx::Connection::begin(&mut **conn).await?;
    // The timestamp comes from the database, taken under the chat's lock: one clock for all
    // api replicas, so sync cursors (points in time) order messages the way they committed.
    let locked: Option<(u64, Option<u64>, NaiveDateTime)> = sqlx::query_as(
        "SELECT c.last_seq, m.user_id, NOW(3) FROM chats c \
         LEFT JOIN chat_members m ON m.chat_id = c.id AND m.user_id = ? \
         WHERE c.id = ? FOR UPDATE",
    )
    .bind(new.sender_id)
    .bind(new.chat_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (last_seq, created_at) = match locked {
        Some((last_seq, Some(_), now)) => (last_seq, now.and_utc()),
        _ => return Err(StoreError::NotFound),
    };
    if let Some(reply_to) = new.reply_to_id {
        let target: Option<(u64,)> = sqlx::query_as("SELECT chat_id FROM messages WHERE id = ?")
            .bind(reply_to)
            .fetch_optional(&mut *tx)
            .await?;
        new.check_reply_target(target.map(|(chat,)| chat))?;
    }
    let seq = last_seq + 1;
    let inserted = sqlx::query(
        "INSERT INTO messages (chat_id, seq, sender_id, kind, body, attachment_id, reply_to_id, \
         client_msg_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(new.chat_id)
    .bind(seq)
    .bind(new.sender_id)
    .bind(new.kind.as_str())
    .bind(new.text)
    .bind(new.attachment.map(|a| a.id))
    .bind(new.reply_to_id)
    .bind(new.client_msg_id.as_bytes())
    .bind(created_at.naive_utc())
    .execute(&mut *tx)
    .await;
    let id = match inserted {
        Ok(done) => done.last_insert_id(),
        Err(e) if is_duplicate_of(&e, "uq_messages_idem") => {
            drop(tx);
            return repeated_send(pool, new).await;
        }
        Err(e) => return Err(e.into()),
    };
    // The chat's counter and, since sending implies having read the chat up to one's own
    // message, the sender's watermark: one statement (both rows are locked already).
    sqlx::query(
        "UPDATE chats c JOIN chat_members m ON m.chat_id = c.id AND m.user_id = ? \
         SET c.last_seq = ?, c.last_message_id = ?, c.last_activity_at = ?, m.last_read_seq = ? \
         WHERE c.id = ?",
    )
    .bind(new.sender_id)
    .bind(seq)
    .bind(id)
    .bind(created_at.naive_utc())
    .bind(seq)
    .bind(new.chat_id)
    .execute(&mut *tx)
    .await?;
    let member_ids: Vec<(u64,)> =
        sqlx::query_as("SELECT user_id FROM chat_members WHERE chat_id = ?")
            .bind(new.chat_id)
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await.map_err(StoreError::at_commit)?;
    Ok(SendOutcome {
        message: new.stored_as(id, seq, created_at),
        created: true,
        member_ids: member_ids.into_iter().map(|(id,)| id).collect(),
    })
}

async fn repeated_send(pool: &MySqlPool, new: &NewMessage<'_>) -> Result<SendOutcome> {
    let first = stored_by_client_id(pool, new.chat_id, new.sender_id, new.client_msg_id).await?;
    first.map(SendOutcome::repeat).ok_or(StoreError::NotFound)
}

async fn stored_by_client_id(
    pool: &MySqlPool,
    chat_id: Id,
    sender_id: Id,
    client_msg_id: &str,
) -> Result<Option<Message>> {
    let row: Option<MessageRow> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages \
         WHERE chat_id = ? AND sender_id = ? AND client_msg_id = ?"
    ))
    .bind(chat_id)
    .bind(sender_id)
    .bind(client_msg_id.as_bytes())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(message_from_row))
}

#[cfg(test)]
mod tests {
    use super::unpack_attachment;

    #[test]
    fn packed_attachment_columns_unpack() {
        let sha = "ab".repeat(32);
        let packed = format!("1234 {sha} image/png");
        let attachment = unpack_attachment(7, packed.as_bytes());
        assert_eq!(attachment.as_ref().map(|a| a.size), Some(1234));
        assert_eq!(
            attachment.as_ref().map(|a| a.sha256.as_str()),
            Some(sha.as_str())
        );
        assert_eq!(
            attachment.as_ref().map(|a| a.content_type.as_str()),
            Some("image/png")
        );
        assert_eq!(
            attachment.map(|a| a.url),
            Some("/v1/attachments/7".to_string())
        );
        assert!(unpack_attachment(7, b"x y z").is_none());
        assert!(unpack_attachment(7, b"12").is_none());
    }
}
