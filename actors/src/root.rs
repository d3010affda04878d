//! The root of the supervision tree: named subsystems, each restarted when
//! it exits on its own.

use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::mailer::{MailerActor, MailerArguments};
use crate::messages::{
    MailerMessage, OrgSupervisorMessage, RootMessage, SweeperMessage, WatcherMessage,
};
use crate::metrics as m;
use crate::org_supervisor::{OrgSupervisor, OrgSupervisorArguments};
use crate::sweeper::{SweeperActor, SweeperArguments};
use crate::watcher::{LicenseWatcherActor, WatcherArguments};

/// Everything the root needs to start (and restart) its subsystems.
#[derive(Clone)]
pub struct RootArguments {
    pub orgs: OrgSupervisorArguments,
    pub sweeper: SweeperArguments,
    pub watcher: WatcherArguments,
    pub mailer: MailerArguments,
}

/// The root's subsystems. Adding one is a variant, a name and a spawn arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subsystem {
    /// The organization supervisor and its organization actors.
    Orgs,
    /// The cluster-wide sweep of lapsed sessions.
    Sweeper,
    /// The license watcher.
    Watcher,
    /// Delivers the outbox.
    Mailer,
}

impl Subsystem {
    pub const ALL: [Subsystem; 4] = [Self::Orgs, Self::Sweeper, Self::Watcher, Self::Mailer];

    pub fn name(self) -> &'static str {
        match self {
            Self::Orgs => "orgs",
            Self::Sweeper => "sweeper",
            Self::Watcher => "watcher",
            Self::Mailer => "mailer",
        }
    }
}

pub struct RootSupervisor;

pub struct RootState {
    args: RootArguments,
    children: Vec<(Subsystem, ActorCell)>,
}

async fn spawn(
    myself: &ActorRef<RootMessage>,
    args: &RootArguments,
    which: Subsystem,
) -> Result<ActorCell, ractor::SpawnErr> {
    let sup = myself.get_cell();
    Ok(match which {
        Subsystem::Orgs => {
            let (a, _) = Actor::spawn_linked(
                Some(args.orgs.names.orgs()),
                OrgSupervisor,
                args.orgs.clone(),
                sup,
            )
            .await?;
            ActorRef::<OrgSupervisorMessage>::get_cell(&a)
        }
        Subsystem::Sweeper => {
            let (a, _) = Actor::spawn_linked(
                Some(args.orgs.names.sweeper()),
                SweeperActor,
                args.sweeper.clone(),
                sup,
            )
            .await?;
            ActorRef::<SweeperMessage>::get_cell(&a)
        }
        Subsystem::Watcher => {
            let (a, _) = Actor::spawn_linked(
                Some(args.orgs.names.watcher()),
                LicenseWatcherActor,
                args.watcher.clone(),
                sup,
            )
            .await?;
            ActorRef::<WatcherMessage>::get_cell(&a)
        }
        Subsystem::Mailer => {
            let (a, _) = Actor::spawn_linked(
                Some(args.orgs.names.mailer()),
                MailerActor,
                args.mailer.clone(),
                sup,
            )
            .await?;
            ActorRef::<MailerMessage>::get_cell(&a)
        }
    })
}

/// Stops a subtree: the children first, since ractor does not stop them
/// with their supervisor.
async fn stop_subtree(cell: &ActorCell, reason: &str) {
    let wait = Some(Duration::from_secs(10));
    cell.stop_children_and_wait(Some(reason.to_owned()), wait)
        .await;
    let _ = cell.stop_and_wait(Some(reason.to_owned()), wait).await;
}

impl RootState {
    fn position(&self, which: Subsystem) -> Option<usize> {
        self.children.iter().position(|(s, _)| *s == which)
    }

    async fn restart(
        &mut self,
        myself: &ActorRef<RootMessage>,
        which: Subsystem,
    ) -> Result<(), ractor::SpawnErr> {
        let cell = spawn(myself, &self.args, which).await?;
        match self.position(which) {
            Some(i) => self.children[i].1 = cell,
            None => self.children.push((which, cell)),
        }
        metrics::counter!(m::ACTOR_RESTARTS, "actor" => which.name()).increment(1);
        Ok(())
    }
}

impl Actor for RootSupervisor {
    type Msg = RootMessage;
    type State = RootState;
    type Arguments = RootArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut children = Vec::new();
        for which in Subsystem::ALL {
            children.push((which, spawn(&myself, &args, which).await?));
        }
        Ok(RootState { args, children })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for (_, cell) in &state.children {
            stop_subtree(cell, "shutdown").await;
        }
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
                if let Some(i) = state.position(Subsystem::Orgs) {
                    let old = state.children[i].1.clone();
                    stop_subtree(&old, "operator restart").await;
                }
                let result = state
                    .restart(&myself, Subsystem::Orgs)
                    .await
                    .map_err(|e| e.to_string());
                let _ = reply.send(result);
            }
            RootMessage::RestartMailer(reply) => {
                if let Some(i) = state.position(Subsystem::Mailer) {
                    let old = state.children[i].1.clone();
                    stop_subtree(&old, "operator restart").await;
                }
                let result = state
                    .restart(&myself, Subsystem::Mailer)
                    .await
                    .map_err(|e| e.to_string());
                let _ = reply.send(result);
            }
        }
        Ok(())
    }

    /// Restarts a subsystem whenever it exits on its own; ractor's default
    /// would stop the whole tree instead.
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
        // Events from a child we already replaced are history.
        let Some(which) = state
            .children
            .iter()
            .find(|(_, c)| c.get_id() == cell.get_id())
            .map(|(s, _)| *s)
        else {
            return Ok(());
        };
        tracing::error!(subsystem = which.name(), reason = %why, "subsystem exited; restarting it");
        // Orphaned children would keep their registry names; stop them so
        // the new incarnation can own their successors.
        cell.stop_children_and_wait(
            Some("supervisor restart".into()),
            Some(Duration::from_secs(10)),
        )
        .await;
        state.restart(&myself, which).await?;
        Ok(())
    }
}
