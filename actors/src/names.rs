//! Registry names of the coordinator's actors.
//!
//! ractor's registry is global to the process, so every name carries the
//! coordinator's instance prefix: several coordinators (as in the tests)
//! can then run side by side in one process. This module only makes
//! strings; typed lookups live with their callers.

use crate::domain::OrgId;

#[derive(Clone, Debug)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            prefix: format!("seatwarden-{}", &id[..8]),
        }
    }

    pub fn root(&self) -> String {
        format!("{}/root", self.prefix)
    }

    pub fn orgs(&self) -> String {
        format!("{}/orgs", self.prefix)
    }

    pub fn sweeper(&self) -> String {
        format!("{}/sweeper", self.prefix)
    }

    pub fn watcher(&self) -> String {
        format!("{}/watcher", self.prefix)
    }

    pub fn mailer(&self) -> String {
        format!("{}/mailer", self.prefix)
    }

    pub fn webhooks(&self) -> String {
        format!("{}/webhooks", self.prefix)
    }

    pub fn renewals(&self) -> String {
        format!("{}/renewals", self.prefix)
    }

    pub fn org(&self, org: OrgId) -> String {
        format!("{}/org/{org}", self.prefix)
    }
}

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}
