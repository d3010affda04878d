//! The coordinator's public face: a cheap, cloneable handle that routes each
//! license operation to its organization's actor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, MessagingErr, RpcReplyPort};
use tokio::task::JoinHandle;

use crate::domain::{
    ClientInfo, EndReason, License, LicenseId, LicenseKey, OrgId, SessionId, SessionRecord,
};
use crate::error::CoordinatorError;
use crate::names::Names;
use crate::org::{AcquireCommand, OrgMessage};
use crate::org_supervisor::{OrgSupervisorArguments, OrgSupervisorMessage};
use crate::ports::{SeatLedger, Store};
use crate::root::{RootMessage, RootSupervisor};

/// Tunables of the coordinator.
#[derive(Clone, Debug)]
pub struct CoordinatorSettings {
    /// How long a lease lives without a heartbeat.
    pub lease_ttl: Duration,
    /// How often an organization's actor flushes batched heartbeats and
    /// closes the records of lapsed leases. Bounds how late a lapsed
    /// session's record is closed.
    pub sweep_interval: Duration,
    /// An organization's actor with no open sessions stops after this long
    /// without requests.
    pub org_idle_timeout: Duration,
    /// How long cached license data (status, seats, expiry) is trusted.
    pub license_cache_ttl: Duration,
    /// How long a request waits for its organization's actor.
    pub call_timeout: Duration,
    /// Enables the test-only fault hook [`Coordinator::inject_panic`].
    pub fault_hooks: bool,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(360),
            sweep_interval: Duration::from_secs(5),
            org_idle_timeout: Duration::from_secs(300),
            license_cache_ttl: Duration::from_secs(10),
            call_timeout: Duration::from_secs(10),
            fault_hooks: false,
        }
    }
}

/// A granted or renewed seat.
#[derive(Clone, Debug)]
pub struct Acquired {
    /// `false` when the machine already held a live session, which was
    /// extended instead.
    pub created: bool,
    pub session: SessionRecord,
    pub license: License,
    pub seats_used: u32,
}

/// An extended lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Beat {
    pub session_id: SessionId,
    pub expires_at: DateTime<Utc>,
}

/// An ended session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    pub session_id: SessionId,
    pub ended_at: DateTime<Utc>,
    pub reason: EndReason,
}

/// A license key resolved to its license and organization. The mapping
/// never changes, so it is cached for the life of the process.
#[derive(Clone, Copy)]
struct KeyTarget {
    license: LicenseId,
    org: OrgId,
}

/// Bound on the key cache, so keys sprayed by a client can't grow it
/// without limit; it is simply cleared when full.
const KEY_CACHE_LIMIT: usize = 100_000;

/// Handle to a running coordinator.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    names: Names,
    store: Arc<dyn Store>,
    settings: Arc<CoordinatorSettings>,
    root: ActorRef<RootMessage>,
    keys: Mutex<HashMap<String, KeyTarget>>,
}

impl Coordinator {
    /// Starts the supervision tree.
    pub async fn start(
        store: Arc<dyn Store>,
        ledger: Arc<dyn SeatLedger>,
        settings: CoordinatorSettings,
    ) -> Result<(Self, JoinHandle<()>), CoordinatorError> {
        crate::metrics::describe();
        let names = Names::new();
        let settings = Arc::new(settings);
        let args = OrgSupervisorArguments {
            names: names.clone(),
            store: store.clone(),
            ledger,
            settings: settings.clone(),
        };
        let (root, handle) = Actor::spawn(Some(names.root()), RootSupervisor, args)
            .await
            .map_err(|e| CoordinatorError::Busy(format!("could not start the coordinator: {e}")))?;
        let inner = Inner {
            names,
            store,
            settings,
            root,
            keys: Mutex::new(HashMap::new()),
        };
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            handle,
        ))
    }

    pub fn settings(&self) -> &CoordinatorSettings {
        &self.inner.settings
    }

    /// Checks out a seat for `hardware_id` on the license whose key is given.
    pub async fn acquire(
        &self,
        license_key: &str,
        hardware_id: String,
        client: ClientInfo,
        metadata: Option<serde_json::Value>,
    ) -> Result<Acquired, CoordinatorError> {
        let target = self.resolve_key(license_key).await?;
        let cmd = AcquireCommand {
            license_id: target.license,
            hardware_id,
            client,
            metadata,
        };
        self.call(target.org, |reply| OrgMessage::Acquire(cmd.clone(), reply))
            .await
    }

    /// Extends the lease of a session of `org`.
    pub async fn heartbeat(
        &self,
        org: OrgId,
        session: SessionId,
    ) -> Result<Beat, CoordinatorError> {
        self.call(org, |reply| OrgMessage::Heartbeat(session, reply))
            .await
    }

    /// Ends a session of `org`. Idempotent: ending an ended session returns
    /// its original end.
    pub async fn release(
        &self,
        org: OrgId,
        session: SessionId,
        client: ClientInfo,
    ) -> Result<Released, CoordinatorError> {
        self.call(org, |reply| {
            OrgMessage::Release(session, client.clone(), reply)
        })
        .await
    }

    /// The durable record of a session, if it exists.
    pub async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>, CoordinatorError> {
        Ok(self.inner.store.session(id).await?)
    }

    /// How many organization actors run on this node.
    pub async fn org_actor_count(&self) -> Result<usize, CoordinatorError> {
        let sup = self.org_supervisor()?;
        match sup
            .call(
                OrgSupervisorMessage::Count,
                Some(self.inner.settings.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(n)) => Ok(n),
            _ => Err(CoordinatorError::Busy(
                "org supervisor did not answer".into(),
            )),
        }
    }

    /// The id of the organization's actor running on this node, if any. A
    /// restarted actor has a new id.
    pub fn org_actor_id(&self, org: OrgId) -> Option<ractor::ActorId> {
        self.inner.names.org_actor(org).map(|a| a.get_id())
    }

    /// Whether an organization's actor is running on this node.
    pub fn org_actor_running(&self, org: OrgId) -> bool {
        self.org_actor_id(org).is_some()
    }

    /// Operator action: restarts the organization supervisor and all
    /// organization actors.
    pub async fn restart_orgs(&self) -> Result<(), CoordinatorError> {
        match self
            .inner
            .root
            .call(RootMessage::RestartOrgs, Some(Duration::from_secs(30)))
            .await
        {
            Ok(CallResult::Success(r)) => r.map_err(CoordinatorError::Busy),
            _ => Err(CoordinatorError::Busy(
                "root supervisor did not answer".into(),
            )),
        }
    }

    /// Test-only fault hook: makes the organization's actor panic, as a bug
    /// would. Does nothing unless `fault_hooks` is enabled.
    pub async fn inject_panic(&self, org: OrgId) -> Result<(), CoordinatorError> {
        let actor = self.org_actor(org).await?;
        actor
            .cast(OrgMessage::InjectPanic)
            .map_err(|e| CoordinatorError::Busy(e.to_string()))
    }

    /// Stops the supervision tree, flushing what the actors have batched.
    pub async fn shutdown(&self) {
        let _ = self
            .inner
            .root
            .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(15)))
            .await;
    }

    async fn resolve_key(&self, license_key: &str) -> Result<KeyTarget, CoordinatorError> {
        let hash = LicenseKey::hash(license_key);
        if let Some(t) = self
            .inner
            .keys
            .lock()
            .expect("key cache poisoned")
            .get(&hash)
        {
            return Ok(*t);
        }
        let license = self
            .inner
            .store
            .license_by_key_hash(&hash)
            .await?
            .ok_or(CoordinatorError::LicenseNotFound)?;
        let target = KeyTarget {
            license: license.id,
            org: license.org_id,
        };
        let mut keys = self.inner.keys.lock().expect("key cache poisoned");
        if keys.len() >= KEY_CACHE_LIMIT {
            keys.clear();
        }
        keys.insert(hash, target);
        Ok(target)
    }

    fn org_supervisor(&self) -> Result<ActorRef<OrgSupervisorMessage>, CoordinatorError> {
        self.inner
            .names
            .org_supervisor()
            .ok_or_else(|| CoordinatorError::Busy("org supervisor is restarting".into()))
    }

    /// The organization's actor: straight from the registry when it runs,
    /// else spawned through the organization supervisor.
    async fn org_actor(&self, org: OrgId) -> Result<ActorRef<OrgMessage>, CoordinatorError> {
        if let Some(actor) = self.inner.names.org_actor(org) {
            return Ok(actor);
        }
        let sup = self.org_supervisor()?;
        match sup
            .call(
                |reply| OrgSupervisorMessage::Get(org, reply),
                Some(self.inner.settings.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(Ok(actor))) => Ok(actor),
            Ok(CallResult::Success(Err(e))) => Err(CoordinatorError::Busy(e)),
            _ => Err(CoordinatorError::Busy(
                "org supervisor did not answer".into(),
            )),
        }
    }

    /// Sends a request to the organization's actor and waits for its answer.
    ///
    /// An actor that stops between lookup and delivery (idle, or restarting
    /// after a failure) never saw the message, so delivery is retried a few
    /// times. A request that was delivered is never re-sent: only the actor
    /// knows whether it took effect.
    async fn call<T, F>(&self, org: OrgId, build: F) -> Result<T, CoordinatorError>
    where
        T: Send + 'static,
        F: Fn(RpcReplyPort<Result<T, CoordinatorError>>) -> OrgMessage,
    {
        const ATTEMPTS: usize = 5;
        let timeout = self.inner.settings.call_timeout;
        for attempt in 1..=ATTEMPTS {
            let actor = self.org_actor(org).await?;
            match actor.call(&build, Some(timeout)).await {
                Ok(CallResult::Success(result)) => return result,
                Ok(CallResult::Timeout) => {
                    return Err(CoordinatorError::Busy(
                        "the organization's actor did not answer in time".into(),
                    ));
                }
                // The actor died while handling the request.
                Ok(CallResult::SenderError) => {
                    return Err(CoordinatorError::Busy(
                        "the organization's actor failed; retry".into(),
                    ));
                }
                Err(MessagingErr::SendErr(_)) | Err(MessagingErr::ChannelClosed) => {
                    tracing::debug!(%org, attempt, "org actor was stopping; retrying delivery");
                    tokio::task::yield_now().await;
                }
                Err(e) => return Err(CoordinatorError::Busy(e.to_string())),
            }
        }
        Err(CoordinatorError::Busy(
            "the organization's actor kept stopping".into(),
        ))
    }
}
