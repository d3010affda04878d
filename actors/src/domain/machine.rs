//! Machines: the hardware a license has been activated on.
//!
//! Activation is how a license with `max_machines` binds itself to a set of
//! computers: only those may acquire seats, and freeing a slot
//! (deactivation) is limited per day, so a license can't be passed around
//! by swapping machines in and out.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::LicenseId;

id_type!(
    /// One machine activated on one license.
    MachineId
);

/// A machine as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub id: MachineId,
    pub license_id: LicenseId,
    pub hardware_id: String,
    /// A name for people, e.g. the host name.
    pub name: Option<String>,
    /// e.g. `linux-x86_64`.
    pub platform: Option<String>,
    pub activated_at: DateTime<Utc>,
}

/// What an activation asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMachine {
    pub hardware_id: String,
    pub name: Option<String>,
    pub platform: Option<String>,
}
