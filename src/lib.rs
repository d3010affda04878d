//! seatwarden: a floating-license seat coordinator.
//!
//! This crate holds the adapters (HTTP, storage, seat ledger, token signing)
//! that plug into the coordinator in `seatwarden-actors`, and the wiring
//! that puts them together.

pub mod ledger;
pub mod signing;
pub mod store;
