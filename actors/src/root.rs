//! The root of the supervision tree: named subsystems, each restarted when
//! it exits, within a restart policy written once, here, for all of them.
//!
//! Per subsystem, at most `max_restarts` restarts within a sliding
//! `window` ([`RestartPolicy`]); one more failure and the subsystem stays
//! `down`, with an error in the log, until an operator restarts it
//! ([`RootMessage::Restart`]), which also gives it a fresh budget. The root
//! writes every change to a [`SubsystemBoard`] that readiness, `/metrics`
//! and the ops API read without asking the root.

use std::time::{Duration, Instant};

use chrono::Utc;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::mailer::{MailerActor, MailerArguments};
use crate::messages::{
    MailerMessage, OrgSupervisorMessage, RenewalMessage, RootMessage, SweeperMessage,
    WatcherMessage, WebhookMessage,
};
use crate::metrics as m;
use crate::org_supervisor::{OrgSupervisor, OrgSupervisorArguments};
use crate::renewals::{RenewalActor, RenewalArguments};
use crate::supervision::{RestartHistory, RestartPolicy, SubsystemBoard, SubsystemStatus};
use crate::sweeper::{SweeperActor, SweeperArguments};
use crate::watcher::{LicenseWatcherActor, WatcherArguments};
use crate::webhooks::{WebhookActor, WebhookArguments};

/// Everything the root needs to start (and restart) its subsystems.
#[derive(Clone)]
pub struct RootArguments {
    /// The policy, the board and the fault hook: the same for every subsystem.
    pub supervision: SupervisionArguments,
    pub orgs: OrgSupervisorArguments,
    pub sweeper: SweeperArguments,
    pub watcher: WatcherArguments,
    pub mailer: MailerArguments,
    pub webhooks: WebhookArguments,
    pub renewals: RenewalArguments,
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
    /// Processes recorded webhook events (Stripe's).
    Webhooks,
    /// Fires billing deadlines: grace ends, expiries, warnings, trial ends.
    Renewals,
}

impl Subsystem {
    pub const ALL: [Subsystem; 6] = [
        Self::Orgs,
        Self::Sweeper,
        Self::Watcher,
        Self::Mailer,
        Self::Webhooks,
        Self::Renewals,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Orgs => "orgs",
            Self::Sweeper => "sweeper",
            Self::Watcher => "watcher",
            Self::Mailer => "mailer",
            Self::Webhooks => "webhooks",
            Self::Renewals => "renewals",
        }
    }
}

/// What the root applies to every subsystem alike.
#[derive(Clone, Default)]
pub struct SupervisionArguments {
    pub policy: RestartPolicy,
    pub board: SubsystemBoard,
    /// Enables [`RootMessage::InjectFault`]; off outside tests.
    pub fault_hooks: bool,
}

impl Subsystem {
    /// The subsystem of that name, as given to the ops API.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

pub struct RootSupervisor;

pub struct RootState {
    args: RootArguments,
    slots: Vec<Slot>,
}

/// One subsystem as the root tracks it.
struct Slot {
    which: Subsystem,
    /// The running incarnation; `None` while down.
    cell: Option<ActorCell>,
    history: RestartHistory,
    /// Test-only: start a stand-in that panics instead of the subsystem.
    failing: bool,
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
        Subsystem::Webhooks => {
            let (a, _) = Actor::spawn_linked(
                Some(args.orgs.names.webhooks()),
                WebhookActor,
                args.webhooks.clone(),
                sup,
            )
            .await?;
            ActorRef::<WebhookMessage>::get_cell(&a)
        }
        Subsystem::Renewals => {
            let (a, _) = Actor::spawn_linked(
                Some(args.orgs.names.renewals()),
                RenewalActor,
                args.renewals.clone(),
                sup,
            )
            .await?;
            ActorRef::<RenewalMessage>::get_cell(&a)
        }
    })
}

/// A stand-in for a subsystem that panics as soon as it starts: the
/// test-only fault hook, for any subsystem, through the same supervision
/// path a real crash takes.
struct FaultyActor;

impl Actor for FaultyActor {
    type Msg = ();
    type State = ();
    type Arguments = &'static str;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _name: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(())
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        panic!("fault injected into a subsystem");
    }
}

/// Stops a subtree: the children first, since ractor does not stop them
/// with their supervisor.
async fn stop_subtree(cell: &ActorCell, reason: &str) {
    let wait = Some(Duration::from_secs(10));
    cell.stop_children_and_wait(Some(reason.to_owned()), wait)
        .await;
    let _ = cell.stop_and_wait(Some(reason.to_owned()), wait).await;
}

/// Why a subsystem could not be brought back.
fn down_message(which: Subsystem, policy: RestartPolicy) -> String {
    format!(
        "subsystem {} failed more than {} times in {} s and stays down",
        which.name(),
        policy.max_restarts,
        policy.window.as_secs()
    )
}

impl RootState {
    fn slot(&self, which: Subsystem) -> usize {
        self.slots
            .iter()
            .position(|s| s.which == which)
            .expect("every subsystem has a slot")
    }

    fn set_status(&self, which: Subsystem, status: SubsystemStatus) {
        self.args
            .supervision
            .board
            .update(which.name(), |s| s.status = status);
    }

    /// Spawns a subsystem, or its panicking stand-in while the fault hook
    /// is set for it.
    async fn spawn_one(
        &self,
        myself: &ActorRef<RootMessage>,
        i: usize,
    ) -> Result<ActorCell, ractor::SpawnErr> {
        let which = self.slots[i].which;
        if self.slots[i].failing && self.args.supervision.fault_hooks {
            let (a, _) =
                Actor::spawn_linked(None, FaultyActor, which.name(), myself.get_cell()).await?;
            return Ok(a.get_cell());
        }
        spawn(myself, &self.args, which).await
    }

    /// Starts slot `i` again, as a restart: counted on the board and in
    /// `seatwarden_actor_restarts_total`. A subsystem whose start fails
    /// (its `pre_start` returned an error) has failed again, within the
    /// same policy. `Err` means it is down.
    async fn restart(&mut self, myself: &ActorRef<RootMessage>, i: usize) -> Result<(), String> {
        let which = self.slots[i].which;
        loop {
            self.set_status(which, SubsystemStatus::Restarting);
            metrics::counter!(m::ACTOR_RESTARTS, "actor" => which.name()).increment(1);
            self.args
                .supervision
                .board
                .update(which.name(), |s| s.restarts += 1);
            match self.spawn_one(myself, i).await {
                Ok(cell) => {
                    self.slots[i].cell = Some(cell);
                    self.args.supervision.board.update(which.name(), |s| {
                        s.status = SubsystemStatus::Running;
                        s.started_at = Utc::now();
                    });
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!(subsystem = which.name(), error = %e, "subsystem failed to start");
                    if !self.may_restart(i) {
                        return Err(self.give_up(i));
                    }
                }
            }
        }
    }

    /// Records a failure of slot `i`; whether the policy allows a restart.
    fn may_restart(&mut self, i: usize) -> bool {
        let policy = self.args.supervision.policy;
        self.slots[i].history.allow(policy, Instant::now())
    }

    /// Marks slot `i` down, with an error in the log.
    fn give_up(&mut self, i: usize) -> String {
        let which = self.slots[i].which;
        self.slots[i].cell = None;
        self.set_status(which, SubsystemStatus::Down);
        let message = down_message(which, self.args.supervision.policy);
        tracing::error!(
            subsystem = which.name(),
            max_restarts = self.args.supervision.policy.max_restarts,
            window_secs = self.args.supervision.policy.window.as_secs(),
            "{message}; an operator restart brings it back"
        );
        message
    }

    /// Operator action: stops the subsystem's subtree (if it runs), forgets
    /// its failures, and starts it afresh.
    async fn operator_restart(
        &mut self,
        myself: &ActorRef<RootMessage>,
        which: Subsystem,
    ) -> Result<(), String> {
        let i = self.slot(which);
        if let Some(old) = self.slots[i].cell.take() {
            stop_subtree(&old, "operator restart").await;
        }
        self.slots[i].history.clear();
        tracing::info!(
            subsystem = which.name(),
            "restarting subsystem on operator request"
        );
        self.restart(myself, i).await
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
        // A subsystem that can't start at boot stops the node from
        // starting: that is a configuration error, not a crash to ride out.
        let mut slots = Vec::new();
        for which in Subsystem::ALL {
            let cell = spawn(&myself, &args, which).await?;
            args.supervision.board.update(which.name(), |s| {
                s.status = SubsystemStatus::Running;
                s.started_at = Utc::now();
            });
            slots.push(Slot {
                which,
                cell: Some(cell),
                history: RestartHistory::default(),
                failing: false,
            });
        }
        Ok(RootState { args, slots })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for slot in &state.slots {
            if let Some(cell) = &slot.cell {
                stop_subtree(cell, "shutdown").await;
            }
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
            RootMessage::Restart(which, reply) => {
                let result = state.operator_restart(&myself, which).await;
                let _ = reply.send(result);
            }
            RootMessage::InjectFault(which, failing, reply) => {
                inject_fault(state, &myself, which, failing, reply).await;
            }
        }
        Ok(())
    }

    /// Restarts a subsystem whenever it exits on its own, within the
    /// policy; ractor's default would stop the whole tree instead.
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
        // Events from an incarnation we already replaced or stopped are
        // history.
        let Some(i) = state
            .slots
            .iter()
            .position(|s| s.cell.as_ref().is_some_and(|c| c.get_id() == cell.get_id()))
        else {
            return Ok(());
        };
        let which = state.slots[i].which;
        state.slots[i].cell = None;
        // Orphaned children would keep their registry names; stop them so
        // the new incarnation can own their successors.
        cell.stop_children_and_wait(
            Some("supervisor restart".into()),
            Some(Duration::from_secs(10)),
        )
        .await;
        if !state.may_restart(i) {
            tracing::error!(subsystem = which.name(), reason = %why, "subsystem exited");
            state.give_up(i);
            return Ok(());
        }
        tracing::error!(subsystem = which.name(), reason = %why, "subsystem exited; restarting it");
        // Err: down, and already logged.
        let _ = state.restart(&myself, i).await;
        Ok(())
    }
}

/// The test-only fault hook: while `failing`, the subsystem is replaced by
/// a stand-in that panics on start, so it fails on every restart until the
/// policy gives up. Setting it restarts the subsystem (not counted as a
/// failure); clearing it leaves a `down` subsystem down until an operator
/// restart. Refused unless fault hooks are enabled.
async fn inject_fault(
    state: &mut RootState,
    myself: &ActorRef<RootMessage>,
    which: Subsystem,
    failing: bool,
    reply: RpcReplyPort<bool>,
) {
    if !state.args.supervision.fault_hooks {
        tracing::warn!("ignored a fault-injection request: fault hooks are disabled");
        let _ = reply.send(false);
        return;
    }
    let i = state.slot(which);
    state.slots[i].failing = failing;
    if failing && let Some(old) = state.slots[i].cell.take() {
        stop_subtree(&old, "fault injected").await;
        let _ = state.restart(myself, i).await;
    }
    let _ = reply.send(true);
}
