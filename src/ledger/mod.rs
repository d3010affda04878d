//! Seat ledgers: implementations of [`seatwarden_actors::ports::SeatLedger`].

pub mod memory;
pub mod redis;
