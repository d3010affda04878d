//! The seat coordinator: per-organization actors, the domain types they
//! work on, and the ports (traits) they need from the outside world.
//!
//! This crate knows nothing of HTTP, SQL, Redis, email or Stripe. The
//! `seatwarden` binary implements [`ports::Store`] and [`ports::SeatLedger`]
//! and hands them in through [`Coordinator::start`].
//!
//! # Supervision tree
//!
//! ```text
//! RootSupervisor                       restarts OrgSupervisor when it exits
//! └── OrgSupervisor                    one per node; spawns on first use,
//!     │                                restarts failed children, forgets idle ones
//!     ├── OrgActor  org/<org_id>       serializes one organization's operations,
//!     ├── OrgActor  org/<org_id>       caches its licenses, keeps store and
//!     └── ...                          ledger in step, closes lapsed sessions
//! ```
//!
//! Live seats are held by the ledger (Redis or in-process) and history by the
//! store, never only by an actor: an actor that fails is rebuilt from the two
//! and no live session is lost.
//!
//! Actor structs are empty; state is built in `pre_start` from `Arguments`,
//! so a restart is just another `spawn_linked` with the same arguments.

pub mod coordinator;
pub mod domain;
pub mod error;
pub mod metrics;
mod names;
pub mod org;
pub mod org_supervisor;
pub mod ports;
pub mod root;

pub use coordinator::{Acquired, Beat, Coordinator, CoordinatorSettings, Released};
pub use error::CoordinatorError;
