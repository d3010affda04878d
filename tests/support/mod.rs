//! Helpers shared by the integration tests.
//!
//! Tests of the Redis and PostgreSQL paths need real servers: run the suite
//! through `scripts/test.sh`, which starts throwaway ones and exports
//! `SEATWARDEN_TEST_REDIS_URL` and `SEATWARDEN_TEST_PG_URL`, and an SMTP
//! sink, `SEATWARDEN_TEST_SMTP_URL` and `SEATWARDEN_TEST_SMTP_DIR`. Stripe is
//! faked in-process ([`stripe::FakeStripe`]): no Stripe secret is needed.
#![allow(dead_code, unused_imports)]

pub mod accounts;
pub mod app;
pub mod backends;
pub mod billing;
pub mod mail;
pub mod people;
pub mod proxy;
pub mod seeded;
pub mod services;
pub mod softhsm;
pub mod stripe;

pub use app::{
    AppOptions, Backend, TestApp, TestLicense, eventually, ids, spawn_app, spawn_app_with,
};
