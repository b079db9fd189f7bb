//! The Redis backend of [`crate::Bus`]: a single server or a cluster.

pub(crate) mod jobs;
pub(crate) mod limits;
pub(crate) mod presence;
pub(crate) mod subscriber;
pub(crate) mod unannounced;
