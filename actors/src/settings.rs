//! Tunables of the coordinator, handed to every actor through its
//! `Arguments`. A leaf module: it imports nothing of the actors.

use std::time::Duration;

use crate::supervision::RestartPolicy;

/// Tunables of the coordinator.
#[derive(Clone, Debug)]
pub struct CoordinatorSettings {
    /// How long a lease lives without a heartbeat.
    pub lease_ttl: Duration,
    /// What clients are told: heartbeat this often. Heartbeats re-sign the
    /// token only when it would expire before the next one is due.
    pub heartbeat_interval: Duration,
    /// How long past its lease a token stays valid, for licenses that set
    /// no policy of their own.
    pub offline_grace: Duration,
    /// Added to every token's expiry for clock skew between server and
    /// client (at most 60 s).
    pub token_skew: Duration,
    /// How often the cluster-wide sweep looks for lapsed sessions, and each
    /// organization's actor flushes batched heartbeats. A lapsed session's
    /// record is closed within two of these.
    pub sweep_interval: Duration,
    /// How many sessions one sweep claims at a time.
    pub sweep_batch: u32,
    /// How often each node polls the store for license changes.
    pub license_watch_interval: Duration,
    /// An organization's actor with nothing pending stops after this long
    /// without requests.
    pub org_idle_timeout: Duration,
    /// How long cached license data is trusted without a change notice.
    pub license_cache_ttl: Duration,
    /// How long an unknown license key is remembered as unknown.
    pub unknown_key_ttl: Duration,
    /// Acquisition-failure audit entries written per license and minute on
    /// each node; the rest are counted into the next entry written.
    pub failure_audits_per_minute: u32,
    /// How long a request waits for its organization's actor.
    pub call_timeout: Duration,
    /// Enables the test-only fault hooks `Coordinator::inject_panic` and
    /// `Coordinator::set_subsystem_fault`.
    pub fault_hooks: bool,
    /// How often the root restarts a failing subsystem before it gives up.
    pub restart_policy: RestartPolicy,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(360),
            heartbeat_interval: Duration::from_secs(300),
            offline_grace: Duration::ZERO,
            token_skew: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(5),
            sweep_batch: 500,
            license_watch_interval: Duration::from_millis(500),
            org_idle_timeout: Duration::from_secs(300),
            license_cache_ttl: Duration::from_secs(60),
            unknown_key_ttl: Duration::from_secs(2),
            failure_audits_per_minute: 60,
            call_timeout: Duration::from_secs(10),
            fault_hooks: false,
            restart_policy: RestartPolicy::default(),
        }
    }
}
