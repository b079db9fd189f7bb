//! Wire and bus types shared by every service: the HTTP objects, the WebSocket frames in both
//! directions, the error body, and the envelope that travels over the Redis bus.
//!
//! Each type has one serde shape; JSON and MessagePack (`to_vec_named`, so maps with the same keys)
//! are two encodings of it.

pub mod codec;
pub mod cursor;
pub mod depth;
pub mod error;
pub mod event;
pub mod frame;
pub mod job;
pub mod model;
pub mod time;

pub use codec::{BusBody, BusEnvelope, DecodeError, WireFormat};
pub use cursor::Cursor;
pub use depth::{MAX_JSON_DEPTH, json_depth_exceeds};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use event::{
    DeliveredBatch, DeliveredMove, DeliveredResult, DeliveredResults, Memberships,
    MembershipsRequest, PresenceBatch, PresenceChange, PresenceStatus, ServerEvent, SyncPage,
    UserGroups,
};
pub use frame::{ClientFrame, Reply, RequestId};
pub use job::PushJob;
pub use model::{
    Attachment, Chat, ChatKind, Contact, EditMessageRequest, Me, Member, MemberRole, Message,
    MessageBody, MessageKind, SendMessageRequest, UserRef, WatermarkRequest,
};

/// Database ids: MySQL `BIGINT UNSIGNED AUTO_INCREMENT`, below 2^53 in practice.
pub type Id = u64;
