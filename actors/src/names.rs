//! Registry names of the coordinator's actors.
//!
//! ractor's registry is global to the process, so every name carries the
//! coordinator's instance prefix: several coordinators (as in the tests)
//! can then run side by side in one process.

use ractor::ActorRef;

use crate::domain::OrgId;
use crate::org::OrgMessage;
use crate::org_supervisor::OrgSupervisorMessage;

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

    pub fn org(&self, org: OrgId) -> String {
        format!("{}/org/{org}", self.prefix)
    }

    /// The running actor of an organization, if any: the one typed lookup
    /// over the untyped registry.
    pub fn org_actor(&self, org: OrgId) -> Option<ActorRef<OrgMessage>> {
        ActorRef::where_is(self.org(org))
    }

    /// The running organization supervisor, if any.
    pub fn org_supervisor(&self) -> Option<ActorRef<OrgSupervisorMessage>> {
        ActorRef::where_is(self.orgs())
    }
}

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}
