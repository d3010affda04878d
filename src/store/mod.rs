//! Durable storage: one implementation of [`seatwarden_actors::ports::Store`]
//! per backend, each with its own migrations folder.

pub mod postgres;
pub mod sqlite;
