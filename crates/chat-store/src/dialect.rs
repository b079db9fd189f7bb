//! What the SQL both backends share needs to know about a database ([`Dialect`]), and how values
//! cross into it and back, in one place for both: ids and counters are bound as `i64` ([`key`],
//! [`bound`]) and read as `u64` (sqlx checks the conversion on SQLite, whose integers are signed:
//! a negative value is a decode error, never a panic); times are bound as [`Stamp`].
//!
//! A query both databases run with the same SQL is written once, in its topic module, as a
//! method of that topic's trait implemented for every `D: Dialect` (e.g. `users::UserQueries`).
//! Such an implementation lists, in its `where` clause, what sqlx must be able to do with the
//! database (bind these types, decode these rows): Rust does not carry bounds like
//! `i64: Encode<'q, DB>` from a trait's declaration to its users, so each generic impl states
//! them; when a new query binds a new type, the compiler names the bound to add. What differs
//! between the two is here, as a constant or a function of [`Dialect`], or, for whole operations
//! (the send path, the chat's send lock, presence), in `crate::backend::Backend`.

use chat_proto::Id;
use chat_proto::time::Timestamp;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::types::chrono::NaiveDateTime;
use sqlx::{Database, Encode, MySql, Pool, Sqlite, Type};

use crate::Result;

/// A database as the shared queries see it: its pools, and the few words of SQL it spells its
/// own way.
pub(crate) trait Dialect: Send + Sync + 'static {
    type Db: Database;

    /// Where reads go.
    fn reader(&self) -> &Pool<Self::Db>;

    /// Where writes go (on SQLite, the one connection that serializes them).
    fn writer(&self) -> &Pool<Self::Db>;

    /// The statement that begins a write transaction on [`Dialect::writer`].
    const BEGIN_WRITE: &'static str;

    /// `INSERT` that skips rows whose unique key exists already.
    const INSERT_IGNORE: &'static str;

    /// What follows `LIKE ?` so that the backslash escapes wildcards (`users::escape_like`).
    const LIKE_ESCAPE: &'static str;

    /// Stores a device token (`user_id, token, platform, updated_at`), refreshing it when the
    /// user has it already.
    const UPSERT_PUSH_TOKEN: &'static str;

    /// The SQL of the database's clock, where the times it stores must come from it (MySQL: one
    /// clock for every api replica, so that sync cursors order events the way they committed);
    /// `None` to take the process's clock (SQLite: one process).
    const CLOCK: Option<&'static str>;

    /// The SQL of the concatenation of `parts` (SQL expressions).
    fn concat(parts: &[&str]) -> String;

    /// The id of the row an `INSERT` added.
    fn inserted_id(done: &<Self::Db as Database>::QueryResult) -> Result<Id>;

    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;

    /// Whether `err` says that a write broke `key`.
    fn is_duplicate(err: &sqlx::Error, key: UniqueKey) -> bool;
}

/// The unique keys whose violation a shared query turns into an answer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum UniqueKey {
    /// `users.username`
    Username,
    /// `chats.pair_key`: one private chat per pair of users.
    ChatPair,
}

/// An id (or any key) as bound: no row has a negative id, so an id too large for `i64` matches
/// nothing, as an id no row has.
pub(crate) fn key(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(-1)
}

/// A seq bound of a range query, or a count: values past `i64::MAX` mean "no bound".
pub(crate) fn bound(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A time as bound: MySQL's `DATETIME(3)`; on SQLite, UTC text with always three fraction digits
/// (`YYYY-MM-DD HH:MM:SS.mmm`), so that comparing the text compares the times.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp(pub Timestamp);

impl Stamp {
    /// The SQLite text of the time.
    pub(crate) fn text(self) -> String {
        self.0.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
    }
}

impl Type<MySql> for Stamp {
    fn type_info() -> sqlx::mysql::MySqlTypeInfo {
        <NaiveDateTime as Type<MySql>>::type_info()
    }
}

impl Encode<'_, MySql> for Stamp {
    fn encode_by_ref(&self, buf: &mut Vec<u8>) -> Result<IsNull, BoxDynError> {
        <NaiveDateTime as Encode<'_, MySql>>::encode_by_ref(&self.0.naive_utc(), buf)
    }
}

impl Type<Sqlite> for Stamp {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, Sqlite> for Stamp {
    fn encode_by_ref(
        &self,
        buf: &mut Vec<sqlx::sqlite::SqliteArgumentValue<'q>>,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Sqlite>>::encode(self.text(), buf)
    }
}

#[cfg(test)]
mod tests;
