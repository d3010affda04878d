//! The connection to Redis that the ledger and the rate limiter share the
//! shape of: one server, or a Redis Cluster.
//!
//! Both users only run Lua scripts whose keys share one hash tag (and
//! `PING`), so they need nothing of a connection but
//! [`ConnectionLike`]: [`RedisLink`] is that, over redis-rs's
//! [`ConnectionManager`] (one server, reconnecting by itself) or its
//! `cluster-async` [`ClusterConnection`] (which routes `EVALSHA` by its
//! first key, follows `MOVED`/`ASK`, and loads scripts on every master
//! when one answers `NOSCRIPT`).
//!
//! [`durability_warnings`] reads the server's persistence and eviction
//! settings, which the seat promise depends on: a Redis that loses or
//! evicts leases forgets seats (the ledger re-seeds from the store when it
//! notices, see `lua/seed.lua`, but it is better not to lose them).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::redact::{scrub, url_password_forms};

/// Where Redis is. The URLs may carry passwords: `Debug` shows them
/// redacted.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (or a proxy in front of a replicated pair).
    Single(String),
    /// Any reachable subset of a cluster's nodes; the rest are discovered.
    Cluster(Vec<String>),
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl RedisTarget {
    /// The target for logs and errors: URLs without their passwords.
    pub fn redacted(&self) -> String {
        match self {
            Self::Single(url) => crate::redact::redact_url(url),
            Self::Cluster(urls) => {
                let urls: Vec<String> = urls.iter().map(|u| crate::redact::redact_url(u)).collect();
                format!("cluster {}", urls.join(","))
            }
        }
    }

    fn secrets(&self) -> Vec<String> {
        match self {
            Self::Single(url) => url_password_forms(url),
            Self::Cluster(urls) => urls.iter().flat_map(|u| url_password_forms(u)).collect(),
        }
    }
}

/// A multiplexed connection to one server or to a cluster; clones share it.
#[derive(Clone)]
pub enum RedisLink {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects to `target`, failing after `timeout` instead of hanging, with
/// per-call timeouts of `timeout` too. Returns the link with the forms of
/// the URLs' passwords to scrub from later error messages; an error
/// message returned here has them scrubbed already.
pub async fn connect(
    target: &RedisTarget,
    timeout: Duration,
) -> Result<(RedisLink, Vec<String>), String> {
    let secrets = target.secrets();
    let fail = |what: &str, detail: String| scrub(&format!("{what}: {detail}"), &secrets);
    let connecting = async {
        match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| fail("invalid Redis URL", e.to_string()))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_max_delay(Duration::from_secs(2));
                // One plain attempt first: the connection manager retries
                // with backoff, which would turn "connection refused" or a
                // failed AUTH into a bare timeout.
                client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| fail("cannot connect to Redis", e.to_string()))?;
                ConnectionManager::new_with_config(client, config)
                    .await
                    .map(RedisLink::Single)
                    .map_err(|e| fail("cannot connect to Redis", e.to_string()))
            }
            RedisTarget::Cluster(urls) => {
                let client = ClusterClient::builder(urls.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // A failover takes a few seconds; a call retries
                    // within its caller's timeout, no longer.
                    .retries(3)
                    .min_retry_wait(50)
                    .max_retry_wait(500)
                    .build()
                    .map_err(|e| fail("invalid Redis Cluster URLs", e.to_string()))?;
                client
                    .get_async_connection()
                    .await
                    .map(RedisLink::Cluster)
                    .map_err(|e| fail("cannot connect to Redis Cluster", e.to_string()))
            }
        }
    };
    let link = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| {
            fail(
                "cannot connect to Redis",
                format!("timed out after {timeout:?}"),
            )
        })??;
    Ok((link, secrets))
}

/// What the seat ledger needs of Redis's configuration, each as
/// `(parameter, required value)`: an append-only file synced every second
/// (a restart loses at most a second of leases, which the ledger's seeding
/// covers), and no eviction (an evicted lease is a seat given away twice).
pub const REQUIRED_SETTINGS: [(&str, &str); 3] = [
    ("appendonly", "yes"),
    ("appendfsync", "everysec"),
    ("maxmemory-policy", "noeviction"),
];

/// Compares the server's settings with [`REQUIRED_SETTINGS`] and returns one
/// human sentence per difference (empty when all is well). On a cluster
/// this asks one node; they are expected to share a configuration.
///
/// `CONFIG GET` is often disabled on managed Redis; then the answer is a
/// single sentence saying the settings could not be checked.
pub async fn durability_warnings(link: &mut RedisLink, timeout: Duration) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, wanted) in REQUIRED_SETTINGS {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(name);
        let asked = cmd.query_async::<Vec<String>>(link);
        match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(pair)) => {
                let actual = pair.get(1).map(String::as_str).unwrap_or("");
                if !actual.eq_ignore_ascii_case(wanted) {
                    warnings.push(format!(
                        "Redis has {name} {actual:?}; seatwarden requires {name} {wanted:?} \
                         (see docs/deployment.md)"
                    ));
                }
            }
            Ok(Err(e)) => {
                return vec![format!(
                    "could not read Redis's {name} with CONFIG GET ({}); make sure it has \
                     appendonly yes, appendfsync everysec and maxmemory-policy noeviction \
                     (see docs/deployment.md)",
                    e.kind_str()
                )];
            }
            Err(_) => {
                return vec![format!(
                    "Redis did not answer CONFIG GET {name} within {timeout:?}; its persistence \
                     settings are unchecked"
                )];
            }
        }
    }
    warnings
}

/// A short, secret-free name for a Redis error's kind.
trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    fn kind_str(&self) -> String {
        match self.code() {
            Some(code) => code.to_owned(),
            None => format!("{:?}", self.kind()),
        }
    }
}
