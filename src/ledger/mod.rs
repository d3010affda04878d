//! Seat ledgers: implementations of [`seatwarden_actors::ports::SeatLedger`].
//!
//! - [`memory::MemoryLedger`]: in-process, for the single-machine embedded
//!   default.
//! - [`redis::RedisLedger`]: shared by every node through Redis (Lua scripts
//!   in `lua/`), for production.
//!
//! Both follow the same rules, checked by `tests/ledger_conformance.rs`:
//! expiry lives in the data (a lease is live iff `now < expires_at`, and
//! lapsed leases are purged before seats are counted), so a holder that dies
//! frees its seat by itself.

use std::time::Duration;

use chrono::{DateTime, Utc};
use seatwarden_actors::ports::LedgerError;

pub mod memory;
pub mod redis;

/// A lease TTL in whole milliseconds, at least 1 ms so that a grant is never
/// born lapsed, and capped so that `now + ttl` cannot overflow anywhere.
fn ttl_ms(ttl: Duration) -> i64 {
    const MAX_TTL_MS: u128 = 100 * 365 * 24 * 3600 * 1000;
    ttl.as_millis().clamp(1, MAX_TTL_MS) as i64
}

/// An offline grace in whole milliseconds, capped like a TTL.
fn grace_ms(grace: Duration) -> i64 {
    const MAX_GRACE_MS: u128 = 10 * 365 * 24 * 3600 * 1000;
    grace.as_millis().min(MAX_GRACE_MS) as i64
}

/// A ledger timestamp (milliseconds since the Unix epoch) as a `DateTime`.
fn from_ms(ms: i64) -> Result<DateTime<Utc>, LedgerError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| LedgerError::Corrupt(format!("ledger returned a bad timestamp: {ms}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_whole_milliseconds_and_never_zero() {
        assert_eq!(ttl_ms(Duration::from_secs(2)), 2000);
        assert_eq!(ttl_ms(Duration::from_micros(1500)), 1);
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert!(ttl_ms(Duration::MAX) > 0);
    }
}
