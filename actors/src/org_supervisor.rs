//! Spawns one [`OrgActor`] per organization on first use, restarts those
//! that fail, and forgets those that stop because they were idle.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::domain::OrgId;
use crate::messages::{OrgMessage, OrgSupervisorMessage};
use crate::metrics as m;
use crate::names::Names;
use crate::org::{OrgActor, OrgArguments};
use crate::ports::{LicenseStore, SessionStore};
use crate::settings::CoordinatorSettings;

#[derive(Clone)]
pub struct OrgSupervisorArguments {
    pub names: Names,
    pub licenses: Arc<dyn LicenseStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub settings: Arc<CoordinatorSettings>,
}

pub struct OrgSupervisor;

pub struct OrgSupervisorState {
    args: OrgSupervisorArguments,
    by_org: HashMap<OrgId, ActorRef<OrgMessage>>,
    by_actor: HashMap<ActorId, OrgId>,
}

impl OrgSupervisorState {
    /// Spawns the organization's actor. Only called when none runs: the
    /// map is updated on every exit before the next request is handled, so
    /// the registry name is always free here.
    async fn spawn(
        &mut self,
        myself: &ActorRef<OrgSupervisorMessage>,
        org_id: OrgId,
    ) -> Result<ActorRef<OrgMessage>, String> {
        let args = OrgArguments {
            org_id,
            licenses: self.args.licenses.clone(),
            sessions: self.args.sessions.clone(),
            settings: self.args.settings.clone(),
        };
        let (actor, _) = Actor::spawn_linked(
            Some(self.args.names.org(org_id)),
            OrgActor,
            args,
            myself.get_cell(),
        )
        .await
        .map_err(|e| e.to_string())?;
        self.by_actor.insert(actor.get_id(), org_id);
        self.by_org.insert(org_id, actor.clone());
        metrics::gauge!(m::ORG_ACTORS).set(self.by_org.len() as f64);
        Ok(actor)
    }

    fn forget(&mut self, id: ActorId) -> Option<OrgId> {
        let org = self.by_actor.remove(&id)?;
        if self.by_org.get(&org).is_some_and(|a| a.get_id() == id) {
            self.by_org.remove(&org);
        }
        metrics::gauge!(m::ORG_ACTORS).set(self.by_org.len() as f64);
        Some(org)
    }
}

impl Actor for OrgSupervisor {
    type Msg = OrgSupervisorMessage;
    type State = OrgSupervisorState;
    type Arguments = OrgSupervisorArguments;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(OrgSupervisorState {
            args,
            by_org: HashMap::new(),
            by_actor: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            OrgSupervisorMessage::Get(org_id, reply) => {
                let running = state.by_org.get(&org_id).cloned();
                let actor = match running {
                    Some(actor) => Ok(actor),
                    None => state.spawn(&myself, org_id).await,
                };
                let _ = reply.send(actor);
            }
            OrgSupervisorMessage::Count(reply) => {
                let _ = reply.send(state.by_org.len());
            }
        }
        Ok(())
    }

    /// Overrides ractor's default, which would stop this supervisor when any
    /// organization's actor exits.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(org_id) = state.forget(cell.get_id()) else {
                    return Ok(());
                };
                tracing::error!(%org_id, %error, "org actor failed; restarting it");
                metrics::counter!(m::ACTOR_RESTARTS, "actor" => "org").increment(1);
                // The new incarnation starts empty: the ledger holds every
                // live lease and the store every record.
                if let Err(e) = state.spawn(&myself, org_id).await {
                    tracing::error!(%org_id, error = %e, "could not restart org actor; the next request will");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(org_id) = state.forget(cell.get_id()) {
                    tracing::debug!(%org_id, ?reason, "org actor stopped");
                }
            }
            _ => {}
        }
        Ok(())
    }
}
