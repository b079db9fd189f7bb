//! Value lists padded to a few sizes (1, 4, 16, 64, 256, 1024, ...), so that a connection
//! prepares and caches a handful of statement shapes rather than one per list length. Repeating a
//! value is harmless in every list padded this way: `IN` lists, and rows joined to an UPDATE
//! (which changes each target row once).

use sqlx::query::QueryAs;
use sqlx::{Database, Encode, Type};

/// The padded length of a list of `n` values: the next power of four.
pub(crate) fn padded_len(n: usize) -> usize {
    let mut size = 1;
    while size < n {
        size *= 4;
    }
    size
}

pub(crate) fn placeholders(n: usize, one: &str, separator: &str) -> String {
    vec![one; n].join(separator)
}

/// Binds `values`, then copies of the last one, `padded` values in all; `values` is not empty.
pub(crate) fn bind_padded<'q, DB, O, V>(
    mut query: QueryAs<'q, DB, O, DB::Arguments<'q>>,
    values: &[V],
    padded: usize,
) -> QueryAs<'q, DB, O, DB::Arguments<'q>>
where
    DB: Database,
    V: Encode<'q, DB> + Type<DB> + Copy + Send + 'q,
{
    for index in 0..padded {
        query = query.bind(values[index.min(values.len() - 1)]);
    }
    query
}

#[cfg(test)]
mod tests;
