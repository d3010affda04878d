//! seatwarden: a floating-license seat coordinator.
//!
//! This crate holds the adapters (HTTP, storage, seat ledger, token signing,
//! mail, Stripe)
//! that plug into the coordinator in `seatwarden-actors`, and the wiring
//! that puts them together in [`startup`].

pub mod auth;
pub mod billing;
pub mod cli;
pub mod config;
pub mod http;
pub mod ledger;
pub mod licensing;
pub mod mail;
pub mod ratelimit;
pub mod redact;
pub mod redis_link;
pub mod signing;
pub mod startup;
pub mod store;
pub mod stripe;
pub mod telemetry;
