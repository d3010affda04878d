//! The seat coordinator: per-organization actors, the domain types they
//! work on, and the ports (traits) they need from the outside world.
//!
//! This crate knows nothing of HTTP, SQL, Redis, email or Stripe. The
//! `seatwarden` binary implements the [`ports`] and hands them in through
//! [`Coordinator::start`].
//!
//! # Supervision tree
//!
//! ```text
//! RootSupervisor                       restarts each subsystem when it exits, at
//! │                                    most supervision.max_restarts times in
//! │                                    supervision.window_secs; then it is down
//! ├── OrgSupervisor        "orgs"      one per node; spawns on first use,
//! │   │                                restarts failed children, forgets idle ones
//! │   ├── OrgActor  org/<org_id>       one organization's cached licenses,
//! │   ├── OrgActor  org/<org_id>       batched heartbeats and failure audits
//! │   └── ...
//! ├── SweeperActor         "sweeper"   claims lapsed sessions cluster-wide and
//! │                                    closes their records
//! ├── LicenseWatcherActor  "watcher"   hears license changes; revokes leases of
//! │                                    suspended licenses
//! ├── MailerActor          "mailer"    claims due outbox mail cluster-wide and
//! │                                    sends it, with backoff
//! ├── WebhookActor         "webhooks"  claims recorded webhook events
//! │                                    cluster-wide and applies them once, with
//! │                                    backoff
//! └── RenewalActor         "renewals"  sleeps until the next billing deadline
//!                                      (grace end, expiry, warning, trial end),
//!                                      claims it cluster-wide and fires it once
//! ```
//!
//! Live seats are held by the ledger (Redis or in-process) and history by the
//! store, never only by an actor: an actor that fails is rebuilt empty and no
//! live session is lost.
//!
//! Actor structs are empty; state is built in `pre_start` from `Arguments`,
//! so a restart is just another `spawn_linked` with the same arguments.
//! Messages and settings live in leaf modules ([`messages`], [`settings`]),
//! so actor modules import those and the ports, never each other (the
//! supervisors import the actors they spawn, and nothing points back).

pub mod coordinator;
pub mod domain;
pub mod error;
pub mod mailer;
pub mod messages;
pub mod metrics;
mod names;
pub mod org;
pub mod org_supervisor;
pub mod ports;
pub mod renewals;
pub mod root;
pub mod settings;
pub mod supervision;
pub mod sweeper;
pub mod watcher;
pub mod webhooks;

pub use coordinator::{Coordinator, Ports, token_expiry};
pub use error::CoordinatorError;
pub use messages::{Acquired, Admission, Beat, Queued, Released, SeatRequest, SessionRef};
pub use root::Subsystem;
pub use settings::{CoordinatorSettings, MailerSettings, RenewalSettings, WebhookSettings};
pub use supervision::{RestartPolicy, SubsystemInfo, SubsystemStatus};
