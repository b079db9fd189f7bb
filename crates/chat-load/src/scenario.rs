//! The scenarios, each the shape of one k6 script (storm is chat with a gateway killed).

mod books;
pub mod chat;
pub mod churn;
pub mod connect;
