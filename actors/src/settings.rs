//! Tunables of the coordinator, handed to every actor through its
//! `Arguments`. A leaf module: it imports nothing of the actors.

use std::time::Duration;

use crate::ports::LineRules;
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
    /// The mailer subsystem's tunables.
    pub mailer: MailerSettings,
    /// The webhooks subsystem's tunables.
    pub webhooks: WebhookSettings,
    /// The renewals subsystem's tunables.
    pub renewals: RenewalSettings,
    /// The seat queue: how long a freed seat is held for the head of a
    /// license's line, how long a ticket waits between polls, how long a
    /// line may grow.
    pub line: LineRules,
    /// How often a waiting client is told to poll its ticket. A ticket that
    /// misses three polls leaves the line (`line.patience` is three of these).
    pub queue_poll: Duration,
}

/// Tunables of the renewals subsystem.
#[derive(Clone, Debug)]
pub struct RenewalSettings {
    /// The longest the subsystem sleeps between two looks at the deadlines.
    /// It wakes earlier for the next deadline it knows of; this bounds how
    /// late it notices one scheduled by another node.
    pub poll_interval: Duration,
    /// How long before a license's expiry its owners are warned
    /// (`renewals.expiry_warning_secs`).
    pub expiry_warning: Duration,
    /// The delay before the second attempt at a deadline that failed; each
    /// further one doubles it, up to `max_retry_delay`.
    pub retry_base: Duration,
    pub max_retry_delay: Duration,
    /// A deadline is given up (fired, with its error kept) after this many
    /// attempts.
    pub max_attempts: u32,
    /// How many deadlines one claim takes.
    pub batch_size: u32,
    /// How long a claim holds its deadlines; a node that dies between claim
    /// and effect leaves them to other nodes after this.
    pub claim_lease: Duration,
    /// The longest deciding one deadline may take (it may ask the payment
    /// provider); shorter than `claim_lease`.
    pub decide_timeout: Duration,
}

impl Default for RenewalSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(30),
            expiry_warning: Duration::from_secs(7 * 24 * 3600),
            retry_base: Duration::from_secs(30),
            max_retry_delay: Duration::from_secs(3600),
            max_attempts: 20,
            batch_size: 50,
            claim_lease: Duration::from_secs(120),
            decide_timeout: Duration::from_secs(30),
        }
    }
}

impl RenewalSettings {
    /// How long to wait after failed attempt number `attempt` (1-based).
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        backoff(self.retry_base, self.max_retry_delay, attempt)
    }
}

/// Tunables of the webhooks subsystem.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// How often the inbox is polled for due events when nothing kicks the
    /// subsystem (retries come due, other nodes receive events).
    pub poll_interval: Duration,
    /// The delay before the second attempt; each further one doubles it,
    /// up to `max_retry_delay`.
    pub retry_base: Duration,
    pub max_retry_delay: Duration,
    /// An event is given up (`failed`, replayable) after this many attempts.
    pub max_attempts: u32,
    /// How many events one claim takes.
    pub batch_size: u32,
    /// How long a claim holds its events; a node that dies leaves them to
    /// other nodes after this.
    pub claim_lease: Duration,
    /// The longest one event's processing may take; processing is only
    /// started while the claim has at least this long left.
    pub process_timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            retry_base: Duration::from_secs(10),
            max_retry_delay: Duration::from_secs(3600),
            max_attempts: 10,
            batch_size: 20,
            claim_lease: Duration::from_secs(120),
            process_timeout: Duration::from_secs(30),
        }
    }
}

impl WebhookSettings {
    /// How long to wait after failed attempt number `attempt` (1-based):
    /// `retry_base * 2^(attempt - 1)`, at most `max_retry_delay`.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        backoff(self.retry_base, self.max_retry_delay, attempt)
    }
}

/// `base * 2^(attempt - 1)`, at most `max`.
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(Duration::MAX).min(max)
}

/// Tunables of the mailer subsystem.
#[derive(Clone, Debug)]
pub struct MailerSettings {
    /// How often the outbox is polled for due mail when nothing kicks the
    /// mailer (retries come due, other nodes enqueue).
    pub poll_interval: Duration,
    /// The delay before the second attempt; each further one doubles it,
    /// up to [`MailerSettings::max_retry_delay`].
    pub retry_base: Duration,
    /// The longest delay between two attempts.
    pub max_retry_delay: Duration,
    /// A message is given up (`failed`) after this many attempts.
    pub max_attempts: u32,
    /// How many messages one claim takes.
    pub batch_size: u32,
    /// How long a claim holds its messages. A node that dies leaves them
    /// to other nodes after this.
    pub claim_lease: Duration,
    /// The longest one send may take; a send is only started while the
    /// claim has at least this long left, so that it never outlives it.
    pub send_timeout: Duration,
}

impl Default for MailerSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            retry_base: Duration::from_secs(30),
            max_retry_delay: Duration::from_secs(6 * 3600),
            max_attempts: 8,
            batch_size: 10,
            claim_lease: Duration::from_secs(60),
            send_timeout: Duration::from_secs(15),
        }
    }
}

impl MailerSettings {
    /// How long to wait after failed attempt number `attempt` (1-based):
    /// `retry_base * 2^(attempt - 1)`, at most `max_retry_delay`.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        backoff(self.retry_base, self.max_retry_delay, attempt)
    }
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
            mailer: MailerSettings::default(),
            webhooks: WebhookSettings::default(),
            renewals: RenewalSettings::default(),
            line: LineRules::default(),
            queue_poll: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_from_the_base_up_to_the_cap() {
        let s = MailerSettings {
            retry_base: Duration::from_secs(30),
            max_retry_delay: Duration::from_secs(600),
            ..MailerSettings::default()
        };
        let delays: Vec<u64> = (1..=7).map(|a| s.retry_delay(a).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(s.retry_delay(200), Duration::from_secs(600), "no overflow");
    }
}
