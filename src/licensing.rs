//! Issuing a license: the one code path behind `seatwarden license create`
//! and `POST /api/v1/admin/licenses`, so both validate alike and make keys
//! alike.

use chrono::{DateTime, Utc};
use seatwarden_actors::domain::{LicenseKey, NewLicense, OrgId};

/// Longest tier name and feature name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Most features on one license.
pub const MAX_FEATURES: usize = 64;
/// Largest count a license field takes (the columns are 32-bit).
pub const MAX_COUNT: u32 = i32::MAX as u32;

/// What a license is issued with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenseSpec {
    pub org_id: OrgId,
    pub seats: u32,
    pub tier: String,
    pub features: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub offline_grace_secs: Option<u32>,
    pub offline_overdraft: u32,
    pub max_machines: Option<u32>,
    pub requires_user: bool,
    /// The longest borrow, in hours; 0 turns borrowing off.
    pub max_borrow_hours: u32,
}

/// A field of a [`LicenseSpec`] out of its domain: the API's error code
/// and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSpec {
    pub code: &'static str,
    pub message: String,
}

fn invalid(code: &'static str, message: impl Into<String>) -> InvalidSpec {
    InvalidSpec {
        code,
        message: message.into(),
    }
}

/// Checks a seat count (also for changes).
pub fn check_seats(seats: u32) -> Result<(), InvalidSpec> {
    if seats == 0 || seats > MAX_COUNT {
        return Err(invalid(
            "invalid_seats",
            format!("seats must be 1 to {MAX_COUNT}"),
        ));
    }
    Ok(())
}

/// Checks a machine limit (also for changes).
pub fn check_max_machines(max: Option<u32>) -> Result<(), InvalidSpec> {
    match max {
        Some(0) => Err(invalid(
            "invalid_max_machines",
            "max_machines must be at least 1, or absent for no limit",
        )),
        Some(n) if n > MAX_COUNT => Err(invalid(
            "invalid_max_machines",
            format!("max_machines must be at most {MAX_COUNT}"),
        )),
        _ => Ok(()),
    }
}

/// The longest borrow a license may allow: a year.
pub const MAX_BORROW_HOURS: u32 = 24 * 366;

/// Checks a borrowing policy (also for changes).
pub fn check_max_borrow_hours(hours: u32) -> Result<(), InvalidSpec> {
    if hours > MAX_BORROW_HOURS {
        return Err(invalid(
            "invalid_max_borrow_hours",
            format!("max_borrow_hours must be 0 (off) to {MAX_BORROW_HOURS}"),
        ));
    }
    Ok(())
}

/// Checks an expiry: a date every client can read back. RFC 3339 has four
/// year digits, so an instant past 9999-12-31 UTC (which `-23:59` offsets
/// can reach from a year-9999 input) would come back as `+10000-...`,
/// which no date-time parser accepts.
pub fn check_expires_at(at: chrono::DateTime<chrono::Utc>) -> Result<(), InvalidSpec> {
    use chrono::Datelike;
    if !(1970..=9999).contains(&at.year()) {
        return Err(invalid(
            "invalid_expires_at",
            "expires_at must fall within the years 1970 to 9999 (UTC)",
        ));
    }
    Ok(())
}

fn check_name(name: &str, code: &'static str, what: &str) -> Result<(), InvalidSpec> {
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(invalid(
            code,
            format!("{what} must be 1 to {MAX_NAME_CHARS} printable characters"),
        ));
    }
    Ok(())
}

impl LicenseSpec {
    /// Validates the spec (trimming names and dropping empty features) and
    /// makes a fresh key with `key_prefix`: the license to store and the
    /// key, which is shown once and never stored.
    pub fn issue(mut self, key_prefix: &str) -> Result<(NewLicense, String), InvalidSpec> {
        check_seats(self.seats)?;
        check_max_machines(self.max_machines)?;
        self.tier = self.tier.trim().to_owned();
        check_name(&self.tier, "invalid_tier", "tier")?;
        let features: Vec<String> = self
            .features
            .into_iter()
            .map(|f| f.trim().to_owned())
            .filter(|f| !f.is_empty())
            .collect();
        if features.len() > MAX_FEATURES {
            return Err(invalid(
                "invalid_features",
                format!("at most {MAX_FEATURES} features"),
            ));
        }
        for f in &features {
            check_name(f, "invalid_features", "each feature")?;
        }
        if self.offline_grace_secs.is_some_and(|g| g > MAX_COUNT)
            || self.offline_overdraft > MAX_COUNT
        {
            return Err(invalid(
                "invalid_offline_policy",
                format!("offline_grace_secs and offline_overdraft must be at most {MAX_COUNT}"),
            ));
        }
        check_max_borrow_hours(self.max_borrow_hours)?;
        if let Some(at) = self.expires_at {
            check_expires_at(at)?;
        }
        let key = LicenseKey::generate(key_prefix);
        let new = NewLicense {
            org_id: self.org_id,
            key_hash: LicenseKey::hash(&key),
            key_hint: LicenseKey::hint(&key),
            seats: self.seats,
            tier: self.tier,
            features,
            expires_at: self.expires_at,
            offline_grace_secs: self.offline_grace_secs,
            offline_overdraft: self.offline_overdraft,
            max_machines: self.max_machines,
            requires_user: self.requires_user,
            max_borrow_hours: self.max_borrow_hours,
        };
        Ok((new, key))
    }
}
