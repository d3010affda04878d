//! The root of the supervision tree.

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::time::Duration;

use crate::metrics as m;
use crate::org_supervisor::{OrgSupervisor, OrgSupervisorArguments, OrgSupervisorMessage};

pub enum RootMessage {
    /// Operator action: stop the organization supervisor and every
    /// organization actor, then start them afresh. Live sessions survive:
    /// they are held by the ledger and the store, not by the actors.
    RestartOrgs(RpcReplyPort<Result<(), String>>),
}

pub struct RootSupervisor;

pub struct RootState {
    org_args: OrgSupervisorArguments,
    orgs: ActorRef<OrgSupervisorMessage>,
}

async fn spawn_orgs(
    myself: &ActorRef<RootMessage>,
    args: &OrgSupervisorArguments,
) -> Result<ActorRef<OrgSupervisorMessage>, ractor::SpawnErr> {
    let (orgs, _) = Actor::spawn_linked(
        Some(args.names.orgs()),
        OrgSupervisor,
        args.clone(),
        myself.get_cell(),
    )
    .await?;
    // Pick up organizations whose sessions need watching after a restart.
    let _ = orgs.cast(OrgSupervisorMessage::ResumeOpenOrgs);
    Ok(orgs)
}

/// Stops a subtree: the children first, since ractor does not stop them
/// with their supervisor.
async fn stop_subtree(cell: &ActorCell, reason: &str) {
    let wait = Some(Duration::from_secs(10));
    cell.stop_children_and_wait(Some(reason.to_owned()), wait)
        .await;
    let _ = cell.stop_and_wait(Some(reason.to_owned()), wait).await;
}

impl Actor for RootSupervisor {
    type Msg = RootMessage;
    type State = RootState;
    type Arguments = OrgSupervisorArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        org_args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let orgs = spawn_orgs(&myself, &org_args).await?;
        Ok(RootState { org_args, orgs })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        stop_subtree(&state.orgs.get_cell(), "shutdown").await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMessage::RestartOrgs(reply) => {
                let old = state.orgs.get_cell();
                stop_subtree(&old, "operator restart").await;
                let result = match spawn_orgs(&myself, &state.org_args).await {
                    Ok(orgs) => {
                        state.orgs = orgs;
                        metrics::counter!(m::ACTOR_RESTARTS, "actor" => "org_supervisor")
                            .increment(1);
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(result);
            }
        }
        Ok(())
    }

    /// Restarts the organization supervisor whenever it exits on its own;
    /// ractor's default would stop the whole tree instead.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, e) => (cell, e.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        // Events from a supervisor we already replaced are history.
        if cell.get_id() != state.orgs.get_id() {
            return Ok(());
        }
        tracing::error!(reason = %why, "org supervisor exited; restarting it");
        // Orphaned org actors would keep their registry names; stop them so
        // the new supervisor can own their successors.
        cell.stop_children_and_wait(
            Some("supervisor restart".into()),
            Some(Duration::from_secs(10)),
        )
        .await;
        state.orgs = spawn_orgs(&myself, &state.org_args).await?;
        metrics::counter!(m::ACTOR_RESTARTS, "actor" => "org_supervisor").increment(1);
        Ok(())
    }
}
