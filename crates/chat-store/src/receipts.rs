//! Delivered watermarks, message edits and deletions (client contract 1.1), written once for
//! both databases (`ReceiptQueries`, implemented for every `D: Dialect` as the other topics are),
//! and the rules they share: who may change a message, and where a delivered watermark moves.
//!
//! A delivered watermark only moves forward and never below the read watermark (reading
//! implies delivery, see `chats::group_members`). Moves come in batches from the gateways,
//! which coalesce their sockets' `delivered` frames. A batch costs one UPDATE however many moves
//! it holds: the target of each row in a `CASE`, the rows as an `OR` of their keys, each with
//! its forward-only guard (both databases plan that as key lookups). Around it: a read of the
//! chats' `last_seq` (the clamp; it only grows, so a value a moment old is safe) and, after it,
//! a read of which rows now carry this batch's time and target, i.e. which rows it moved.

use std::collections::HashMap;

use async_trait::async_trait;
use chat_proto::time::now_millis;
use chat_proto::{ChatKind, DeliveredMove, Id, MemberRole, Message};
use sqlx::types::chrono::NaiveDateTime;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use crate::chats::{ChatQueries, Membership};
use crate::dialect::{Dialect, Stamp, bound, key};
use crate::messages::{MessageRow, ReadOutcome, message_columns};
use crate::padded::placeholders;
use crate::{Result, Store, StoreError};

/// An edit or a deletion that was stored (or found already done).
#[derive(Debug, Clone)]
pub struct UpdateOutcome {
    /// The message as it now is.
    pub message: Message,
    /// False when nothing changed (a message deleted twice): nothing to announce.
    pub changed: bool,
    /// Everyone in the chat now; empty when nothing changed.
    pub member_ids: Vec<Id>,
}

/// What a caller wants done to a message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    Edit(&'a str),
    Delete,
}

impl Change<'_> {
    /// Whether `me`, standing as `membership` in the chat, may make this change to a message
    /// sent by `sender` (deleted when `deleted`). An edit is its sender's only, and not of a
    /// tombstone; a deletion is its sender's or a group owner's.
    pub(crate) fn check(
        self,
        me: Id,
        membership: &Membership,
        sender: Id,
        deleted: bool,
    ) -> Result<()> {
        match self {
            Self::Edit(_) if sender != me => {
                Err(StoreError::Forbidden("only its sender may edit a message"))
            }
            Self::Edit(_) if deleted => {
                Err(StoreError::Conflict("a deleted message cannot be edited"))
            }
            Self::Delete
                if sender != me
                    && !(membership.kind == ChatKind::Group
                        && membership.role == MemberRole::Owner) =>
            {
                Err(StoreError::Forbidden(
                    "only its sender or the group's owner may delete a message",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The moves of a batch, at most one per member and chat (the highest), with the indexes of the
/// moves each one answers.
pub(crate) fn coalesce(moves: &[DeliveredMove]) -> Vec<(DeliveredMove, Vec<usize>)> {
    let mut by_member: HashMap<(Id, Id), usize> = HashMap::new();
    let mut merged: Vec<(DeliveredMove, Vec<usize>)> = Vec::new();
    for (index, one) in moves.iter().enumerate() {
        match by_member.get(&(one.chat_id, one.user_id)) {
            Some(&at) => {
                let (kept, indexes) = &mut merged[at];
                kept.up_to_seq = kept.up_to_seq.max(one.up_to_seq);
                indexes.push(index);
            }
            None => {
                by_member.insert((one.chat_id, one.user_id), merged.len());
                merged.push((*one, vec![index]));
            }
        }
    }
    merged
}

/// Spreads the answers of coalesced moves back over the moves as given.
pub(crate) fn spread(
    merged: Vec<(DeliveredMove, Vec<usize>)>,
    answers: Vec<Result<ReadOutcome>>,
    total: usize,
) -> Vec<Result<ReadOutcome>> {
    let mut out: Vec<Option<Result<ReadOutcome>>> = (0..total).map(|_| None).collect();
    for ((_, indexes), answer) in merged.into_iter().zip(answers) {
        let (first, repeats) = indexes
            .split_first()
            .map_or((None, &[][..]), |(f, r)| (Some(*f), r));
        for &index in repeats {
            // A repeat in the same batch moved nothing of its own.
            // (Per move, a batch only ever answers NotFound; other errors fail it whole.)
            out[index] = Some(match &answer {
                Ok(outcome) => Ok(ReadOutcome::unmoved(outcome.read_at)),
                Err(_) => Err(StoreError::NotFound),
            });
        }
        if let Some(first) = first {
            out[first] = Some(answer);
        }
    }
    out.into_iter()
        .map(|answer| answer.unwrap_or(Err(StoreError::NotFound)))
        .collect()
}

/// `min(up_to_seq, last_seq)` when that is a move at all (past 0).
pub(crate) fn delivered_target(up_to_seq: u64, last_seq: u64) -> Option<u64> {
    let target = up_to_seq.min(last_seq);
    (target > 0).then_some(target)
}

/// A member's chat counter, and the database's clock (`Dialect::CLOCK`).
#[derive(FromRow)]
pub(crate) struct ClampRow {
    chat_id: u64,
    user_id: u64,
    last_seq: u64,
    now: Option<NaiveDateTime>,
}

/// A member's delivered watermark and when it last moved.
#[derive(FromRow)]
pub(crate) struct DeliveredRow {
    chat_id: u64,
    user_id: u64,
    last_delivered_seq: u64,
    delivered_at: Option<NaiveDateTime>,
}

/// A message's sender and deletion, and the database's clock.
#[derive(FromRow)]
pub(crate) struct ChangeTargetRow {
    sender_id: u64,
    deleted_at: Option<NaiveDateTime>,
    now: Option<NaiveDateTime>,
}

/// A chat's member (for publishing the moves of a batch).
#[derive(FromRow)]
pub(crate) struct ChatMemberRow {
    chat_id: u64,
    user_id: u64,
}

/// The receipts' part of the backend contract (`crate::backend`), the same SQL on both
/// databases.
#[async_trait]
pub(crate) trait ReceiptQueries {
    /// The moves of `merged` (one per member and chat), answered in its order.
    async fn deliver(
        &self,
        merged: &[(DeliveredMove, Vec<usize>)],
    ) -> Result<Vec<Result<ReadOutcome>>>;
    async fn change_message(
        &self,
        me: Id,
        chat_id: Id,
        message_id: Id,
        change: Change<'_>,
    ) -> Result<UpdateOutcome>;
    /// The message with this id as it now is, read from the writer (`NotFound` if none).
    async fn message(&self, message_id: Id) -> Result<Message>;
}

/// `(chat_id = ? AND user_id = ?{extra}) OR ...` for `n` members.
fn member_keys(n: usize, extra: &str) -> String {
    placeholders(n, &format!("(chat_id = ? AND user_id = ?{extra})"), " OR ")
}

#[async_trait]
impl<D, DB> ReceiptQueries for D
where
    D: Dialect<Db = DB> + ChatQueries,
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Stamp: Encode<'q, DB> + Type<DB>,
    for<'r> ClampRow: FromRow<'r, DB::Row>,
    for<'r> DeliveredRow: FromRow<'r, DB::Row>,
    for<'r> ChangeTargetRow: FromRow<'r, DB::Row>,
    for<'r> ChatMemberRow: FromRow<'r, DB::Row>,
    for<'r> MessageRow: FromRow<'r, DB::Row>,
{
    async fn deliver(
        &self,
        merged: &[(DeliveredMove, Vec<usize>)],
    ) -> Result<Vec<Result<ReadOutcome>>> {
        let keys = |n| {
            member_keys(n, "")
                .replace("chat_id", "m.chat_id")
                .replace("user_id", "m.user_id")
        };
        let sql = format!(
            "SELECT m.chat_id, m.user_id, c.last_seq, {} AS now FROM chat_members m \
             JOIN chats c ON c.id = m.chat_id WHERE {}",
            D::CLOCK.unwrap_or("NULL"),
            keys(merged.len())
        );
        let mut query = sqlx::query_as(&sql);
        for (one, _) in merged {
            query = query.bind(key(one.chat_id)).bind(key(one.user_id));
        }
        let rows: Vec<ClampRow> = query.fetch_all(self.reader()).await?;
        let now = rows
            .first()
            .and_then(|row| row.now)
            .map_or_else(now_millis, |now| now.and_utc());
        let last_seqs: HashMap<(Id, Id), u64> = rows
            .iter()
            .map(|row| ((row.chat_id, row.user_id), row.last_seq))
            .collect();
        let targets: Vec<(Id, Id, u64)> = merged
            .iter()
            .filter_map(|(one, _)| {
                let last_seq = last_seqs.get(&(one.chat_id, one.user_id))?;
                let target = delivered_target(one.up_to_seq, *last_seq)?;
                Some((one.chat_id, one.user_id, target))
            })
            .collect();
        let mut moved: HashMap<(Id, Id), u64> = HashMap::new();
        if !targets.is_empty() {
            // One UPDATE for the whole batch; the guards keep it forward-only under any race.
            let sql = format!(
                "UPDATE chat_members SET last_delivered_seq = CASE {} ELSE last_delivered_seq \
                 END, delivered_at = ? WHERE {}",
                placeholders(
                    targets.len(),
                    "WHEN chat_id = ? AND user_id = ? THEN ?",
                    " "
                ),
                member_keys(
                    targets.len(),
                    " AND last_delivered_seq < ? AND last_read_seq < ?"
                )
            );
            let mut update = sqlx::query(&sql);
            for &(chat, user, seq) in &targets {
                update = update.bind(key(chat)).bind(key(user)).bind(bound(seq));
            }
            update = update.bind(Stamp(now));
            for &(chat, user, seq) in &targets {
                update = update
                    .bind(key(chat))
                    .bind(key(user))
                    .bind(bound(seq))
                    .bind(bound(seq));
            }
            update.execute(self.writer()).await?;
            // Which rows this batch moved: those at its target with its time. (Another batch that
            // moved the same row to the same seq in the same millisecond would be counted twice,
            // which only repeats an event clients apply as max(current, up_to_seq).)
            let sql = format!(
                "SELECT chat_id, user_id, last_delivered_seq, delivered_at FROM chat_members \
                 WHERE {}",
                member_keys(targets.len(), "")
            );
            let mut check = sqlx::query_as(&sql);
            for &(chat, user, _) in &targets {
                check = check.bind(key(chat)).bind(key(user));
            }
            let after: Vec<DeliveredRow> = check.fetch_all(self.writer()).await?;
            let wanted: HashMap<(Id, Id), u64> = targets
                .iter()
                .map(|&(chat, user, seq)| ((chat, user), seq))
                .collect();
            let at = Some(now.naive_utc());
            for row in after {
                let pair = (row.chat_id, row.user_id);
                if row.delivered_at == at && wanted.get(&pair) == Some(&row.last_delivered_seq) {
                    moved.insert(pair, row.last_delivered_seq);
                }
            }
        }
        let members = members_by_chat(self, moved.keys().map(|&(chat, _)| chat)).await?;
        Ok(merged
            .iter()
            .map(|(one, _)| {
                let pair = (one.chat_id, one.user_id);
                if !last_seqs.contains_key(&pair) {
                    return Err(StoreError::NotFound);
                }
                Ok(match moved.get(&pair) {
                    Some(&to) => ReadOutcome {
                        moved_to: Some(to),
                        read_at: now,
                        member_ids: members.get(&one.chat_id).cloned().unwrap_or_default(),
                    },
                    None => ReadOutcome::unmoved(now),
                })
            })
            .collect())
    }

    async fn change_message(
        &self,
        me: Id,
        chat_id: Id,
        message_id: Id,
        change: Change<'_>,
    ) -> Result<UpdateOutcome> {
        let standing = self.membership(me, chat_id).await?;
        let row: Option<ChangeTargetRow> = sqlx::query_as(&format!(
            "SELECT sender_id, deleted_at, {} AS now FROM messages WHERE id = ? AND chat_id = ?",
            D::CLOCK.unwrap_or("NULL")
        ))
        .bind(key(message_id))
        .bind(key(chat_id))
        .fetch_optional(self.reader())
        .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        let deleted = row.deleted_at.is_some();
        change.check(me, &standing, row.sender_id, deleted)?;
        let now = Stamp(row.now.map_or_else(now_millis, |now| now.and_utc()));
        let changed = if deleted {
            // Deleting a tombstone again: done already, nothing to announce.
            false
        } else {
            let query = match change {
                Change::Edit(text) => sqlx::query(
                    "UPDATE messages SET body = ?, edited_at = ?, updated_at = ? \
                     WHERE id = ? AND deleted_at IS NULL",
                )
                .bind(text),
                Change::Delete => sqlx::query(
                    "UPDATE messages SET body = NULL, attachment_id = NULL, deleted_at = ?, \
                     updated_at = ? WHERE id = ? AND deleted_at IS NULL",
                ),
            };
            let done = query
                .bind(now)
                .bind(now)
                .bind(key(message_id))
                .execute(self.writer())
                .await?;
            D::rows_affected(&done) > 0
        };
        let message = message_by_id(self, message_id).await?;
        finish_change(change, changed, message, || self.member_ids(chat_id)).await
    }

    async fn message(&self, message_id: Id) -> Result<Message> {
        message_by_id(self, message_id).await
    }
}

/// The members of each of these chats, in one query.
async fn members_by_chat<D, DB>(
    db: &D,
    chats: impl Iterator<Item = Id>,
) -> Result<HashMap<Id, Vec<Id>>>
where
    D: Dialect<Db = DB>,
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> ChatMemberRow: FromRow<'r, DB::Row>,
{
    let mut chats: Vec<Id> = chats.collect();
    chats.sort_unstable();
    chats.dedup();
    if chats.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT chat_id, user_id FROM chat_members WHERE chat_id IN ({})",
        placeholders(chats.len(), "?", ", ")
    );
    let mut query = sqlx::query_as(&sql);
    for &chat in &chats {
        query = query.bind(key(chat));
    }
    let rows: Vec<ChatMemberRow> = query.fetch_all(db.reader()).await?;
    let mut by_chat: HashMap<Id, Vec<Id>> = HashMap::new();
    for row in rows {
        by_chat.entry(row.chat_id).or_default().push(row.user_id);
    }
    Ok(by_chat)
}

async fn message_by_id<D, DB>(db: &D, message_id: Id) -> Result<Message>
where
    D: Dialect<Db = DB>,
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> MessageRow: FromRow<'r, DB::Row>,
{
    let row: Option<MessageRow> = sqlx::query_as(&format!(
        "SELECT {} FROM messages WHERE id = ?",
        message_columns::<D>("messages")
    ))
    .bind(key(message_id))
    .fetch_optional(db.writer())
    .await?;
    row.map(Message::from).ok_or(StoreError::NotFound)
}

/// The answer once the guarded UPDATE ran: `changed` says whether it changed the row. One it
/// did not change was deleted in between: an edit then answers 409, a deletion "done already".
/// (MySQL also reports an edit that wrote the same text in the same millisecond as unchanged;
/// the message is not deleted then, and the edit counts.)
pub(crate) async fn finish_change<F, Fut>(
    change: Change<'_>,
    changed: bool,
    message: Message,
    members: F,
) -> Result<UpdateOutcome>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Id>>>,
{
    match change {
        Change::Edit(_) if !changed && message.deleted_at.is_some() => {
            Err(StoreError::Conflict("a deleted message cannot be edited"))
        }
        Change::Delete if !changed => Ok(UpdateOutcome {
            message,
            changed: false,
            member_ids: Vec::new(),
        }),
        _ => Ok(UpdateOutcome {
            message,
            changed: true,
            member_ids: members().await?,
        }),
    }
}

impl Store {
    /// Moves the caller's delivered watermark forward to `min(up_to_seq, last_seq)`; never back,
    /// and not when the read watermark is there already.
    pub async fn mark_delivered(&self, me: Id, chat_id: Id, up_to_seq: u64) -> Result<ReadOutcome> {
        let one = DeliveredMove {
            user_id: me,
            chat_id,
            up_to_seq,
        };
        self.mark_delivered_batch(&[one])
            .await?
            .pop()
            .unwrap_or(Err(StoreError::NotFound))
    }

    /// Several users' delivered moves together, answered one by one in the order given
    /// (`NotFound` for a user who is not a member of the chat). Where the same member and chat
    /// come twice, the highest move counts, answered at the first of them; the others answer
    /// "unmoved".
    pub async fn mark_delivered_batch(
        &self,
        moves: &[DeliveredMove],
    ) -> Result<Vec<Result<ReadOutcome>>> {
        if moves.is_empty() {
            return Ok(Vec::new());
        }
        let merged = coalesce(moves);
        let answers = self.backend.deliver(&merged).await?;
        Ok(spread(merged, answers, moves.len()))
    }

    /// Replaces the text of the caller's own message (already validated by the caller).
    pub async fn edit_message(
        &self,
        me: Id,
        chat_id: Id,
        message_id: Id,
        text: &str,
    ) -> Result<UpdateOutcome> {
        self.backend
            .change_message(me, chat_id, message_id, Change::Edit(text))
            .await
    }

    /// Turns a message into a tombstone: its seq stays, its text and attachment go (and with the
    /// attachment, the access the message granted to it).
    pub async fn delete_message(
        &self,
        me: Id,
        chat_id: Id,
        message_id: Id,
    ) -> Result<UpdateOutcome> {
        self.backend
            .change_message(me, chat_id, message_id, Change::Delete)
            .await
    }

    /// A chat's message as it now is, for any member or none (`None` when the chat has no such
    /// message): what chat-api announces when an edit or deletion got no answer from the
    /// database and may have been applied.
    pub async fn message_in_chat(&self, chat_id: Id, message_id: Id) -> Result<Option<Message>> {
        match self.backend.message(message_id).await {
            Ok(message) if message.chat_id == chat_id => Ok(Some(message)),
            Ok(_) | Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
