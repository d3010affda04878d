//! Names of the metrics the coordinator records through the `metrics`
//! facade. The binary installs the Prometheus exporter; every name starts
//! with `seatwarden_`.

/// Gauge, by `org_id` and `license_id`: live leases as last seen by this node.
pub const SEATS_IN_USE: &str = "seatwarden_seats_in_use";
/// Gauge, by `org_id` and `license_id`: the license's seat count.
pub const SEAT_LIMIT: &str = "seatwarden_seat_limit";
/// Gauge, by `org_id` and `license_id`: lapsed sessions whose token is
/// still valid (within the license's offline grace).
pub const GRACED_SESSIONS: &str = "seatwarden_graced_sessions";
/// Counter: acquisition-failure audit entries not written because of the
/// per-license rate bound.
pub const AUDIT_SUPPRESSED: &str = "seatwarden_audit_suppressed_total";
/// Counter: licenses whose leases were revoked after a suspension or
/// deactivation was seen.
pub const LICENSES_REVOKED: &str = "seatwarden_license_revocations_total";
/// Gauge: organization actors running on this node.
pub const ORG_ACTORS: &str = "seatwarden_org_actors";
/// Counter, by `actor`: restarts after a failure, and of subsystems (by
/// subsystem name) also by operators.
pub const ACTOR_RESTARTS: &str = "seatwarden_actor_restarts_total";
/// Gauge, by `name`: 1 while the subsystem runs, 0 while it restarts or is
/// down. Set from the root's board when `/metrics` is scraped.
pub const SUBSYSTEM_UP: &str = "seatwarden_subsystem_up";
/// Gauge, by `org_id` and `license_id`: tickets waiting in the license's
/// line, as last seen by this node.
pub const QUEUE_LENGTH: &str = "seatwarden_queue_length";
/// Histogram: how long a ticket waited in line before its machine got the
/// seat, in seconds.
pub const QUEUE_WAIT: &str = "seatwarden_queue_wait_seconds";
/// Gauge, by `org_id` and `license_id`: borrowed seats held (set from the
/// store when `/metrics` is scraped).
pub const BORROWED_SESSIONS: &str = "seatwarden_borrowed_sessions";
/// Counter: licenses seeded into the seat ledger from the store (its first
/// use, or after the ledger lost its data).
pub const LEDGER_SEEDS: &str = "seatwarden_ledger_seeds_total";
/// Counter: sessions closed because their lease lapsed.
pub const SESSIONS_EXPIRED: &str = "seatwarden_sessions_expired_total";

/// Counter, by `kind`: messages the mail transport accepted.
pub const MAIL_SENT: &str = "seatwarden_mail_sent_total";
/// Counter, by `kind`: messages given up (refused for good or out of
/// attempts).
pub const MAIL_FAILED: &str = "seatwarden_mail_failed_total";
/// Counter, by `kind`: failed attempts scheduled for another try.
pub const MAIL_RETRIED: &str = "seatwarden_mail_retried_total";

/// Counter, by `kind` (the event type): webhook events whose effects were
/// applied.
pub const WEBHOOKS_PROCESSED: &str = "seatwarden_webhooks_processed_total";
/// Counter, by `kind`: failed attempts scheduled for another try.
pub const WEBHOOKS_RETRIED: &str = "seatwarden_webhooks_retried_total";
/// Counter, by `kind`: events given up (a permanent failure or out of
/// attempts); replayable through the admin API.
pub const WEBHOOKS_FAILED: &str = "seatwarden_webhooks_failed_total";
/// Counter, by `kind` (grace_end, expiry, ...) and `outcome` (applied,
/// skipped, retried, failed): billing deadlines fired.
pub const DEADLINES: &str = "seatwarden_deadlines_total";

/// Describes the metrics above so the exporter prints `# HELP` lines.
pub fn describe() {
    metrics::describe_gauge!(
        SEATS_IN_USE,
        "Live seat leases per license, as last seen by this node"
    );
    metrics::describe_gauge!(
        GRACED_SESSIONS,
        "Lapsed sessions per license whose token is still valid offline"
    );
    metrics::describe_counter!(
        AUDIT_SUPPRESSED,
        "Acquisition-failure audit entries over the per-license rate bound"
    );
    metrics::describe_counter!(
        LICENSES_REVOKED,
        "Suspensions and deactivations applied to the seat ledger"
    );
    metrics::describe_gauge!(SEAT_LIMIT, "Seats a license may hold at once");
    metrics::describe_counter!(WEBHOOKS_PROCESSED, "Webhook events applied, by type");
    metrics::describe_counter!(
        WEBHOOKS_RETRIED,
        "Webhook event attempts that failed and will be retried, by type"
    );
    metrics::describe_counter!(
        WEBHOOKS_FAILED,
        "Webhook events given up until replayed, by type"
    );
    metrics::describe_counter!(DEADLINES, "Billing deadlines fired, by kind and outcome");
    metrics::describe_gauge!(ORG_ACTORS, "Organization actors running on this node");
    metrics::describe_counter!(
        ACTOR_RESTARTS,
        "Supervised actors restarted after a failure"
    );
    metrics::describe_gauge!(
        SUBSYSTEM_UP,
        "1 while the subsystem runs, 0 while it restarts or is down"
    );
    metrics::describe_gauge!(QUEUE_LENGTH, "Tickets waiting in a license's line");
    metrics::describe_counter!(
        LEDGER_SEEDS,
        "Licenses seeded into the seat ledger from the store"
    );
    metrics::describe_histogram!(
        QUEUE_WAIT,
        metrics::Unit::Seconds,
        "How long a ticket waited in line before its machine got the seat"
    );
    metrics::describe_gauge!(
        BORROWED_SESSIONS,
        "Borrowed seats held per license (no heartbeats until their end)"
    );
    metrics::describe_counter!(
        SESSIONS_EXPIRED,
        "Sessions closed because heartbeats stopped"
    );
    metrics::describe_counter!(MAIL_SENT, "Emails accepted by the mail transport");
    metrics::describe_counter!(
        MAIL_FAILED,
        "Emails given up: refused for good or out of attempts"
    );
    metrics::describe_counter!(
        MAIL_RETRIED,
        "Failed email attempts scheduled for another try"
    );
}

/// Sets the seat gauges of a license from a ledger answer: live leases,
/// lapsed ones still within their grace, and the tickets in line when the
/// answer says. The labels are formatted once for all of them: acquire
/// calls this on every request.
pub fn seat_gauges(
    org: crate::domain::OrgId,
    license: crate::domain::LicenseId,
    live: u32,
    graced: u32,
    queued: Option<u32>,
) {
    let (org, license) = (org.to_string(), license.to_string());
    metrics::gauge!(SEATS_IN_USE, "org_id" => org.clone(), "license_id" => license.clone())
        .set(f64::from(live));
    if let Some(queued) = queued {
        metrics::gauge!(QUEUE_LENGTH, "org_id" => org.clone(), "license_id" => license.clone())
            .set(f64::from(queued));
    }
    metrics::gauge!(GRACED_SESSIONS, "org_id" => org, "license_id" => license)
        .set(f64::from(graced));
}

/// Sets a license's seat gauges from a release's answer, so that a seat
/// given back shows as free at once rather than at the next sweep.
pub fn freed_gauges(
    org: crate::domain::OrgId,
    license: crate::domain::LicenseId,
    freed: crate::ports::Freed,
) {
    seat_gauges(org, license, freed.live, freed.graced, None);
}

/// Sets the queue-length gauge of a license from a ledger answer.
pub fn queue_gauge(org: crate::domain::OrgId, license: crate::domain::LicenseId, length: u32) {
    metrics::gauge!(QUEUE_LENGTH, "org_id" => org.to_string(), "license_id" => license.to_string())
        .set(f64::from(length));
}

/// Sets `seatwarden_subsystem_up` from the root's board. Called right
/// before each scrape: the board is the truth, and a process-wide gauge
/// set on every transition would mix the views of several coordinators in
/// one process (as in tests).
pub fn subsystem_gauges(subsystems: &[crate::supervision::SubsystemInfo]) {
    for s in subsystems {
        let up = s.status == crate::supervision::SubsystemStatus::Running;
        metrics::gauge!(SUBSYSTEM_UP, "name" => s.name).set(if up { 1.0 } else { 0.0 });
    }
}
