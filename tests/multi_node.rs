//! Two real `seatwarden` processes sharing one Redis ledger and one
//! PostgreSQL database: seats are counted once across the cluster, and a
//! session acquired on one node is served by the other.
//!
//! Needs the throwaway servers from `scripts/services.sh`.

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::Barrier;

use support::eventually;
use support::services::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_seatwarden");
const READY_LIMIT: Duration = Duration::from_secs(90);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Knobs a cluster test turns; everything else is the shipped default.
#[derive(Clone, Debug)]
struct ClusterOptions {
    lease_ttl_secs: u64,
    /// Extra arguments of `license create`.
    license_args: Vec<&'static str>,
    /// The ledger on the test Redis Cluster instead of the single server.
    redis_cluster: bool,
    /// Also how often an organization's batched heartbeats are written.
    sweep_interval_secs: u64,
    shutdown_grace_secs: u64,
    /// A SoftHSM2 token every process may keep signing keys in.
    softhsm: Option<Arc<support::softhsm::SoftHsm>>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            lease_ttl_secs: 360,
            license_args: Vec::new(),
            redis_cluster: false,
            sweep_interval_secs: 1,
            shutdown_grace_secs: 20,
            softhsm: None,
        }
    }
}

/// Settings shared by every process of one cluster: the database, the
/// ledger and the signing key file.
struct Shared {
    database_url: String,
    redis_url: String,
    key_path: PathBuf,
    opts: ClusterOptions,
    _key_dir: TempDir,
}

impl Shared {
    fn env(&self) -> Vec<(String, String)> {
        let ttl = self.opts.lease_ttl_secs;
        let redis = match self.opts.redis_cluster {
            false => ("SEATWARDEN__REDIS__URL", self.redis_url.clone()),
            true => (
                "SEATWARDEN__REDIS__CLUSTER_URLS",
                std::env::var("SEATWARDEN_TEST_REDIS_CLUSTER_URLS")
                    .expect("SEATWARDEN_TEST_REDIS_CLUSTER_URLS (scripts/test.sh sets it)"),
            ),
        };
        [
            ("SEATWARDEN__DATABASE__URL", self.database_url.clone()),
            ("SEATWARDEN__DATABASE__MAX_CONNECTIONS", "10".into()),
            redis,
            (
                "SEATWARDEN__SIGNING__KEY_PATH",
                self.key_path.display().to_string(),
            ),
            ("SEATWARDEN__SIGNING__RSA_BITS", "2048".into()),
            ("SEATWARDEN__SIGNING__GENERATE_IF_MISSING", "false".into()),
            // Like the signing key, one access-token key for every node:
            // nothing is generated when generate_if_missing is false.
            (
                "SEATWARDEN__AUTH__ACCESS_TOKEN_SECRET",
                "multi-node-test-access-token-secret-0123456789".into(),
            ),
            ("SEATWARDEN__SEATS__LEASE_TTL_SECS", ttl.to_string()),
            (
                "SEATWARDEN__SEATS__HEARTBEAT_INTERVAL_SECS",
                ttl.min(300).to_string(),
            ),
            (
                "SEATWARDEN__SEATS__SWEEP_INTERVAL_SECS",
                self.opts.sweep_interval_secs.to_string(),
            ),
            (
                "SEATWARDEN__HTTP__SHUTDOWN_GRACE_SECS",
                self.opts.shutdown_grace_secs.to_string(),
            ),
            ("SEATWARDEN__SEATS__LICENSE_WATCH_MS", "100".into()),
            ("SEATWARDEN__LOG__LEVEL", "info".into()),
            // Nodes run in their data dirs, away from the repository's
            // relative default.
            (
                "SEATWARDEN__MAIL__TEMPLATE_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/config/templates/email").into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(self.opts.softhsm.iter().flat_map(|hsm| hsm.env()))
        .collect()
    }

    /// A `seatwarden` command with this cluster's settings and nothing
    /// inherited from the caller's SEATWARDEN__ environment.
    fn command(&self, data_dir: &Path) -> Command {
        let mut cmd = Command::new(BIN);
        for (key, _) in std::env::vars() {
            if key.starts_with("SEATWARDEN__") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env())
            .env("SEATWARDEN__DATA_DIR", data_dir)
            .env("NO_COLOR", "1")
            .current_dir(data_dir)
            .stdin(Stdio::null());
        cmd
    }
}

/// One `seatwarden serve` child process. Dropping it kills the process
/// (SIGKILL) and, when the test is failing, prints what it logged.
struct Node {
    name: &'static str,
    base: String,
    child: Option<Child>,
    stderr_path: PathBuf,
    dir: TempDir,
}

impl Node {
    fn spawn(shared: &Shared, name: &'static str) -> Node {
        let dir = tempfile::tempdir().expect("node data dir");
        let port = free_port();
        let stderr_path = dir.path().join("stderr.log");
        let stderr = File::create(&stderr_path).expect("node stderr file");
        let child = shared
            .command(dir.path())
            .arg("serve")
            .env("SEATWARDEN__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn seatwarden");
        Node {
            name,
            base: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            stderr_path,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Polls /health/ready until it answers 200, failing early (with the
    /// node's log) if the process exits.
    async fn wait_ready(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "node {} exited with {status} before it was ready",
                    self.name
                );
            }
            let probe = client
                .get(self.url("/health/ready"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} not ready within {READY_LIMIT:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: the node gets no chance to clean up.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- stderr of node {} ({}, data dir {}) -----\n{}----- end of node {} -----",
                self.name,
                self.base,
                self.dir.path().display(),
                self.log(),
                self.name
            );
        }
    }
}

/// Two nodes on one database and ledger, and a license created with the
/// CLI.
struct Cluster {
    a: Node,
    b: Node,
    client: reqwest::Client,
    license_key: String,
    license_id: String,
    shared: Shared,
}

impl Cluster {
    async fn start(seats: u32) -> Cluster {
        Self::start_with(seats, ClusterOptions::default()).await
    }

    async fn start_with(seats: u32, opts: ClusterOptions) -> Cluster {
        let key_dir = tempfile::tempdir().expect("key dir");
        let key_path = key_dir.path().join("signing-key.pem");
        std::fs::write(&key_path, support::app::test_key_pem()).expect("write shared key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
                .expect("make the key private");
        }
        let shared = Shared {
            database_url: support::services::fresh_postgres_db().await,
            redis_url: support::services::redis_url(),
            key_path,
            opts,
            _key_dir: key_dir,
        };
        // The CLI migrates the fresh database before either node starts.
        let org = cli(&shared, &["org", "create", "--name", "Acme"]);
        let org_id = org["id"].as_str().expect("org id").to_owned();
        let seats = seats.to_string();
        let mut args = vec![
            "license", "create", "--org", &org_id, "--seats", &seats, "--tier", "pro",
        ];
        args.extend(shared.opts.license_args.iter().copied());
        let license = cli(&shared, &args);
        let license_key = license["key"].as_str().expect("license key").to_owned();
        let license_id = license["id"].as_str().expect("license id").to_owned();

        let mut a = Node::spawn(&shared, "A");
        let mut b = Node::spawn(&shared, "B");
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("http client");
        tokio::join!(a.wait_ready(&client), b.wait_ready(&client));
        Cluster {
            a,
            b,
            client,
            license_key,
            license_id,
            shared,
        }
    }

    /// The license's sessions as the store has them, through the CLI.
    fn sessions(&self) -> Vec<Value> {
        let out = cli(
            &self.shared,
            &["license", "sessions", "--license", &self.license_id],
        );
        out["sessions"].as_array().expect("sessions").clone()
    }

    async fn acquire(&self, node: &Node, hardware_id: &str) -> (u16, Value) {
        let response = self
            .client
            .post(node.url("/api/v1/licenses/acquire"))
            .json(&json!({"license_key": self.license_key, "hardware_id": hardware_id}))
            .send()
            .await
            .expect("acquire request");
        status_and_body(response).await
    }

    /// Acquires a seat, asserting a 201; returns (session id, token).
    async fn acquire_ok(&self, node: &Node, hardware_id: &str) -> (String, String) {
        let (status, body) = self.acquire(node, hardware_id).await;
        assert_eq!(
            status, 201,
            "acquire for {hardware_id} on node {}: {body}",
            node.name
        );
        (
            body["session_id"].as_str().expect("session_id").to_owned(),
            body["token"].as_str().expect("token").to_owned(),
        )
    }

    async fn heartbeat(&self, node: &Node, session: &str, token: &str) -> (u16, Value) {
        let response = self
            .client
            .post(node.url(&format!("/api/v1/licenses/sessions/{session}/heartbeat")))
            .bearer_auth(token)
            .send()
            .await
            .expect("heartbeat request");
        status_and_body(response).await
    }

    async fn release(&self, node: &Node, session: &str, token: &str) -> (u16, Value) {
        let response = self
            .client
            .delete(node.url(&format!("/api/v1/licenses/sessions/{session}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("release request");
        status_and_body(response).await
    }
}

async fn status_and_body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Runs a bootstrap command of the real binary and parses what it prints.
/// Runs the CLI with the cluster's settings, in a data dir of its own.
fn run_cli(shared: &Shared, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("cli data dir");
    shared
        .command(dir.path())
        .args(args)
        .output()
        .expect("run seatwarden CLI")
}

fn cli(shared: &Shared, args: &[&str]) -> Value {
    let out = run_cli(shared, args);
    assert!(
        out.status.success(),
        "seatwarden {args:?} failed with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "seatwarden {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_acquires_across_two_nodes_grant_exactly_the_ten_seats() {
    two_hundred_acquires_grant_ten(ClusterOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_redis_cluster_two_hundred_concurrent_acquires_across_two_nodes_grant_exactly_the_ten_seats()
 {
    two_hundred_acquires_grant_ten(ClusterOptions {
        redis_cluster: true,
        ..ClusterOptions::default()
    })
    .await;
}

async fn two_hundred_acquires_grant_ten(opts: ClusterOptions) {
    let cluster = Arc::new(Cluster::start_with(10, opts).await);
    let barrier = Arc::new(Barrier::new(200));

    let attempts = (0..200).map(|i| {
        let cluster = cluster.clone();
        let barrier = barrier.clone();
        tokio::spawn(async move {
            let node = if i % 2 == 0 { &cluster.a } else { &cluster.b };
            barrier.wait().await;
            cluster.acquire(node, &format!("machine-{i}")).await
        })
    });
    let results: Vec<(u16, Value)> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.expect("acquire task"))
        .collect();

    let server_errors: Vec<_> = results.iter().filter(|(s, _)| *s >= 500).collect();
    assert!(server_errors.is_empty(), "5xx responses: {server_errors:?}");
    let granted: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    let refused: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 409)
        .map(|(_, b)| b)
        .collect();
    let other: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s != 201 && *s != 409)
        .collect();
    assert!(other.is_empty(), "unexpected responses: {other:?}");
    assert_eq!(granted.len(), 10, "201s: {granted:?}");
    assert_eq!(refused.len(), 190);
    for body in &refused {
        assert_eq!(body["error"], "no_seats_available", "{body}");
        assert_eq!(body["max_seats"], 10, "{body}");
    }
    let mut sessions: Vec<&str> = granted
        .iter()
        .map(|b| b["session_id"].as_str().unwrap())
        .collect();
    sessions.sort_unstable();
    sessions.dedup();
    assert_eq!(sessions.len(), 10, "every grant is its own session");
    for body in &granted {
        assert_eq!(body["max_seats"], 10, "{body}");
        let used = body["seats_used"].as_u64().unwrap();
        assert!((1..=10).contains(&used), "{body}");
    }
}

#[tokio::test]
async fn a_token_issued_by_one_node_is_accepted_for_heartbeat_and_release_on_the_other() {
    let cluster = Cluster::start(1).await;
    let (session, token) = cluster.acquire_ok(&cluster.a, "machine-1").await;

    let (status, body) = cluster.heartbeat(&cluster.b, &session, &token).await;
    assert_eq!(status, 200, "heartbeat on B: {body}");
    let (status, body) = cluster.release(&cluster.b, &session, &token).await;
    assert_eq!(status, 200, "release on B: {body}");

    // Released for good, as seen from A: the seat is free again.
    let (status, body) = cluster.heartbeat(&cluster.a, &session, &token).await;
    assert_eq!(status, 410, "heartbeat on A after release on B: {body}");
    cluster.acquire_ok(&cluster.a, "machine-2").await;
}

#[tokio::test]
async fn a_seat_released_on_one_node_can_be_granted_by_the_other() {
    let cluster = Cluster::start(1).await;
    let (session, token) = cluster.acquire_ok(&cluster.a, "machine-1").await;
    let (status, body) = cluster.acquire(&cluster.b, "machine-2").await;
    assert_eq!(status, 409, "the only seat is taken on A: {body}");
    assert_eq!(body["error"], "no_seats_available");

    let (status, body) = cluster.release(&cluster.a, &session, &token).await;
    assert_eq!(status, 200, "release on A: {body}");

    cluster.acquire_ok(&cluster.b, "machine-2").await;
}

#[tokio::test]
async fn a_lease_that_stops_heart_beating_on_one_node_frees_its_seat_for_the_other() {
    let cluster = Cluster::start_with(
        1,
        ClusterOptions {
            lease_ttl_secs: 1,
            ..ClusterOptions::default()
        },
    )
    .await;
    let started = Instant::now();
    let (session, token) = cluster.acquire_ok(&cluster.a, "machine-1").await;
    let (status, body) = cluster.acquire(&cluster.b, "machine-2").await;
    // With a one-second lease this only proves the seat was taken if B
    // answered before the lease could lapse.
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(status, 409, "the only seat is taken on A: {body}");
    }

    let granted = eventually(Duration::from_secs(30), || async {
        let (status, body) = cluster.acquire(&cluster.b, "machine-2").await;
        (status == 201 || status == 200).then_some(body)
    })
    .await;
    assert!(granted.is_some(), "B never granted the lapsed seat");

    for node in [&cluster.a, &cluster.b] {
        let (status, body) = cluster.heartbeat(node, &session, &token).await;
        assert_eq!(
            status, 410,
            "heartbeat for the lapsed session on {}: {body}",
            node.name
        );
    }
}

#[tokio::test]
async fn killing_one_node_leaves_the_other_serving_existing_sessions() {
    let mut cluster = Cluster::start(3).await;
    let (on_a, token_a) = cluster.acquire_ok(&cluster.a, "machine-1").await;
    let (on_b, token_b) = cluster.acquire_ok(&cluster.b, "machine-2").await;

    cluster.a.kill();
    assert!(
        cluster
            .client
            .get(cluster.a.url("/health/ready"))
            .send()
            .await
            .is_err(),
        "node A is gone"
    );

    let b = &cluster.b;
    let ready = cluster
        .client
        .get(b.url("/health/ready"))
        .send()
        .await
        .expect("B answers");
    assert_eq!(ready.status(), 200);
    let (status, body) = cluster.heartbeat(b, &on_a, &token_a).await;
    assert_eq!(status, 200, "heartbeat on B for the session from A: {body}");
    let (status, body) = cluster.heartbeat(b, &on_b, &token_b).await;
    assert_eq!(status, 200, "heartbeat on B for its own session: {body}");
    let (status, body) = cluster.acquire(b, "machine-2").await;
    assert_eq!(status, 200, "machine-2 renews its session on B: {body}");
    assert_eq!(body["session_id"], on_b.as_str());
    assert_eq!(body["seats_used"], 2);

    let (status, body) = cluster.release(b, &on_a, &token_a).await;
    assert_eq!(status, 200, "release on B of the session from A: {body}");
    cluster.acquire_ok(b, "machine-3").await;
    cluster.acquire_ok(b, "machine-4").await;
    let (status, body) = cluster.acquire(b, "machine-5").await;
    assert_eq!(status, 409, "all three seats are taken: {body}");
}

/// Fires `count` acquires at once, alternating between the nodes, for the
/// hardware ids `prefix-0..count` (or all the same id with `same`).
async fn burst(
    cluster: &Arc<Cluster>,
    count: usize,
    hardware_id: impl Fn(usize) -> String,
) -> Vec<(u16, Value)> {
    let barrier = Arc::new(Barrier::new(count));
    let attempts = (0..count).map(|i| {
        let cluster = cluster.clone();
        let barrier = barrier.clone();
        let hw = hardware_id(i);
        tokio::spawn(async move {
            let node = if i % 2 == 0 { &cluster.a } else { &cluster.b };
            barrier.wait().await;
            cluster.acquire(node, &hw).await
        })
    });
    futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.expect("acquire task"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_machine_acquiring_on_both_nodes_at_once_ends_with_one_session() {
    let cluster = Arc::new(Cluster::start(40).await);
    // Twenty machines, each asking both nodes at the same instant.
    let results = burst(&cluster, 40, |i| format!("machine-{}", i / 2)).await;
    for pair in results.chunks(2) {
        let [(s1, b1), (s2, b2)] = pair else {
            unreachable!()
        };
        assert!(
            [200, 201].contains(s1) && [200, 201].contains(s2),
            "{b1} {b2}"
        );
        assert_eq!(
            b1["session_id"], b2["session_id"],
            "both answers name one session"
        );
    }
    // And the store agrees: one open session per machine, none discarded.
    let sessions = eventually(Duration::from_secs(30), || async {
        let sessions = cluster.sessions();
        (sessions.len() >= 20).then_some(sessions)
    })
    .await
    .expect("the store never recorded the sessions");
    assert_eq!(sessions.len(), 20, "{sessions:?}");
    assert!(sessions.iter().all(|s| s["live"] == true), "{sessions:?}");
}

#[tokio::test]
async fn sessions_of_a_killed_node_are_closed_by_the_node_that_survives() {
    let mut cluster = Cluster::start_with(
        3,
        ClusterOptions {
            lease_ttl_secs: 2,
            ..ClusterOptions::default()
        },
    )
    .await;
    // Only B ever serves this organization.
    cluster.acquire_ok(&cluster.b, "machine-1").await;
    cluster.acquire_ok(&cluster.b, "machine-2").await;
    cluster.b.kill();

    // A's sweep claims them once their leases lapse: within two sweep
    // intervals (1 s each here) of the lapse, give or take process start.
    let closed = eventually(Duration::from_secs(20), || async {
        let sessions = cluster.sessions();
        sessions
            .iter()
            .all(|s| s["end_reason"] == "expired")
            .then_some(sessions)
    })
    .await;
    assert!(
        closed.is_some(),
        "records left open: {:?}",
        cluster.sessions()
    );
}

#[tokio::test]
async fn a_node_stopped_with_sigterm_flushes_batched_heartbeats_and_exits_cleanly_within_its_grace()
{
    // Beats reach the store only at a tick (an hour here) or at shutdown,
    // so a heartbeat time in the store proves the shutdown flushed it.
    let mut cluster = Cluster::start_with(
        2,
        ClusterOptions {
            sweep_interval_secs: 3600,
            shutdown_grace_secs: 5,
            ..ClusterOptions::default()
        },
    )
    .await;
    let (session, token) = cluster.acquire_ok(&cluster.a, "machine-1").await;
    let acquired_beat = cluster.sessions()[0]["last_heartbeat_at"].clone();
    let (status, body) = cluster.heartbeat(&cluster.a, &session, &token).await;
    assert_eq!(status, 200, "{body}");

    let mut child = cluster.a.child.take().expect("node A runs");
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success(), "kill -TERM: {term}");
    let deadline = Instant::now() + Duration::from_secs(5 + 10);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait for node A") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "node A still runs 10 s past its 5 s shutdown grace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        exit.success(),
        "node A exited with {exit}: {}",
        cluster.a.log()
    );
    let log = cluster.a.log();
    assert!(log.contains("seatwarden stopped"), "{log}");

    let sessions = cluster.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert!(
        sessions[0]["ended_at"].is_null(),
        "no session is lost: {sessions:?}"
    );
    assert_ne!(
        sessions[0]["last_heartbeat_at"], acquired_beat,
        "the batched heartbeat reached the store at shutdown: {sessions:?}"
    );
    // The other node carries on with the session.
    let (status, body) = cluster.heartbeat(&cluster.b, &session, &token).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn suspending_a_license_with_the_cli_stops_heartbeats_on_every_node() {
    let cluster = Cluster::start(3).await;
    let (on_a, token_a) = cluster.acquire_ok(&cluster.a, "machine-1").await;
    let (on_b, token_b) = cluster.acquire_ok(&cluster.b, "machine-2").await;

    cli(
        &cluster.shared,
        &[
            "license",
            "update",
            "--id",
            &cluster.license_id,
            "--status",
            "suspended",
        ],
    );
    for (node, session, token) in [
        (&cluster.a, &on_a, &token_a),
        (&cluster.b, &on_b, &token_b),
        (&cluster.b, &on_a, &token_a),
    ] {
        let (status, body) = cluster.heartbeat(node, session, token).await;
        assert_eq!(
            status, 403,
            "heartbeat on {} after suspension: {body}",
            node.name
        );
        assert_eq!(body["error"], "license_suspended");
    }
    let sessions = cluster.sessions();
    assert!(
        sessions.iter().all(|s| s["end_reason"] == "revoked"),
        "{sessions:?}"
    );
    let (status, body) = cluster.acquire(&cluster.a, "machine-3").await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn valid_tokens_never_exceed_seats_plus_overdraft_across_two_nodes() {
    let cluster = Arc::new(
        Cluster::start_with(
            2,
            ClusterOptions {
                lease_ttl_secs: 1,
                license_args: vec!["--offline-grace-secs", "600", "--offline-overdraft", "1"],
                ..ClusterOptions::default()
            },
        )
        .await,
    );
    let mut valid: Vec<Value> = Vec::new();
    for round in 0..3 {
        let results = burst(&cluster, 20, |i| format!("round-{round}-machine-{i}")).await;
        assert!(
            results.iter().all(|(s, _)| [201, 409].contains(s)),
            "{results:?}"
        );
        let granted: Vec<Value> = results
            .into_iter()
            .filter(|(s, _)| *s == 201)
            .map(|(_, b)| b)
            .collect();
        // Live leases never exceed the seats...
        assert!(granted.len() <= 2, "round {round}: {granted:?}");
        valid.extend(granted);
        let now = chrono::Utc::now();
        let still_valid = valid
            .iter()
            .filter(|b| {
                let exp: chrono::DateTime<chrono::Utc> =
                    b["token_expires_at"].as_str().unwrap().parse().unwrap();
                exp > now
            })
            .count();
        // ...and valid tokens never exceed seats + overdraft.
        assert!(
            still_valid <= 3,
            "round {round}: {still_valid} valid tokens"
        );
        // Let every lease of the round lapse (their tokens stay valid).
        let last_end = valid
            .iter()
            .map(|b| {
                b["expires_at"]
                    .as_str()
                    .unwrap()
                    .parse::<chrono::DateTime<chrono::Utc>>()
                    .unwrap()
            })
            .max();
        if let Some(end) = last_end {
            eventually(Duration::from_secs(10), || async {
                (chrono::Utc::now() > end + chrono::TimeDelta::milliseconds(50)).then_some(())
            })
            .await;
        }
    }
    assert_eq!(
        valid.len(),
        3,
        "2 seats, then 1 more on the overdraft: {valid:?}"
    );
}

/// Runs the CLI expecting it to fail; returns what it printed on stderr.
fn cli_failure(shared: &Shared, args: &[&str]) -> String {
    let out = run_cli(shared, args);
    assert!(!out.status.success(), "seatwarden {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `kid` in a compact JWS's header.
/// The JOSE header of a compact JWS.
fn token_header(token: &str) -> Value {
    use base64::Engine;
    let header = token.split('.').next().expect("a JWS");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .expect("base64url header"),
    )
    .expect("JSON header")
}

fn token_kid(token: &str) -> String {
    token_header(token)["kid"]
        .as_str()
        .expect("a kid")
        .to_owned()
}

impl Cluster {
    async fn jwks(&self, node: &Node) -> Value {
        self.client
            .get(node.url("/.well-known/jwks.json"))
            .send()
            .await
            .expect("jwks request")
            .json()
            .await
            .expect("jwks JSON")
    }

    async fn jwks_kids(&self, node: &Node) -> Vec<String> {
        self.jwks(node).await["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid").to_owned())
            .collect()
    }
}

#[tokio::test]
async fn a_key_rotation_reaches_both_nodes_without_a_restart_and_old_tokens_verify_until_retired() {
    let cluster = Cluster::start(3).await;
    let (session, old_token) = cluster.acquire_ok(&cluster.a, "machine-1").await;
    let old_kid = token_kid(&old_token);

    let listed = cli(&cluster.shared, &["keys", "list"]);
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["keys"][0]["kid"], old_kid.as_str());
    assert_eq!(listed["keys"][0]["active"], true);
    assert_eq!(listed["keys"][0]["algorithm"], "RS256");

    let rotated = cli(&cluster.shared, &["keys", "rotate", "--bits", "2048"]);
    let new_kid = rotated["rotated_to"]["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(rotated["rotated_to"]["active"], true);

    // Both nodes publish both keys and sign with the new one, unrestarted.
    for (node, machine) in [(&cluster.a, "machine-2"), (&cluster.b, "machine-3")] {
        let both = eventually(Duration::from_secs(15), || async {
            let kids = cluster.jwks_kids(node).await;
            (kids.contains(&old_kid) && kids.contains(&new_kid)).then_some(kids)
        })
        .await;
        assert!(
            both.is_some(),
            "node {} did not pick up the rotation",
            node.name
        );
        let (_, token) = cluster.acquire_ok(node, machine).await;
        assert_eq!(
            token_kid(&token),
            new_kid,
            "node {} signs with the new key",
            node.name
        );
    }
    // What the old key signed keeps verifying, on either node.
    let (status, body) = cluster.heartbeat(&cluster.b, &session, &old_token).await;
    assert_eq!(status, 200, "{body}");

    let refused = cli_failure(&cluster.shared, &["keys", "retire", &new_kid]);
    assert!(refused.contains("active key"), "{refused}");
    let retired = cli(&cluster.shared, &["keys", "retire", &old_kid]);
    assert!(
        retired["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == old_kid.as_str() && !k["retired"].is_null()),
        "{retired}"
    );
    for node in [&cluster.a, &cluster.b] {
        let gone = eventually(Duration::from_secs(15), || async {
            let kids = cluster.jwks_kids(node).await;
            (!kids.contains(&old_kid) && kids.contains(&new_kid)).then_some(())
        })
        .await;
        assert!(
            gone.is_some(),
            "node {} still publishes the retired key",
            node.name
        );
    }
    let (status, body) = cluster.heartbeat(&cluster.a, &session, &old_token).await;
    assert_eq!(status, 401, "a retired key's token is refused: {body}");
    // The machine gets its seat back under the new key by acquiring again.
    let (status, body) = cluster.acquire(&cluster.a, "machine-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session_id"], session.as_str());
    assert_eq!(token_kid(body["token"].as_str().unwrap()), new_kid);
}

#[tokio::test]
async fn rotating_to_es256_and_then_eddsa_switches_both_nodes_and_every_tokens_algorithm_verifies()
{
    let cluster = Cluster::start(6).await;
    let (rs_session, rs_token) = cluster.acquire_ok(&cluster.a, "machine-rs").await;
    assert_eq!(token_header(&rs_token)["alg"], "RS256");

    let mut held = vec![(rs_session, rs_token)];
    for (algorithm, kty, crv) in [("ES256", "EC", "P-256"), ("EdDSA", "OKP", "Ed25519")] {
        let rotated = cli(
            &cluster.shared,
            &["keys", "rotate", "--algorithm", algorithm],
        );
        assert_eq!(rotated["rotated_to"]["algorithm"], algorithm, "{rotated}");
        let kid = rotated["rotated_to"]["kid"].as_str().unwrap().to_owned();
        for (node, machine) in [(&cluster.a, "a"), (&cluster.b, "b")] {
            let jwk = eventually(Duration::from_secs(15), || async {
                let jwks = cluster.jwks(node).await;
                jwks["keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|k| k["kid"] == kid.as_str())
                    .cloned()
            })
            .await
            .unwrap_or_else(|| panic!("node {} did not publish {kid}", node.name));
            assert_eq!(jwk["kty"], kty, "{jwk}");
            assert_eq!(jwk["crv"], crv, "{jwk}");
            assert_eq!(jwk["alg"], algorithm, "{jwk}");

            // The JWKS and the signing key change in one swap: a node that
            // publishes the new key signs with it.
            let machine = format!("machine-{algorithm}-{machine}");
            let (session, token) = cluster.acquire_ok(node, &machine).await;
            assert_eq!(
                token_kid(&token),
                kid,
                "node {} signs with the new key",
                node.name
            );
            assert_eq!(token_header(&token)["alg"], algorithm);

            // A client verifies it offline from the published JWK alone.
            let key: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).unwrap();
            let key = jsonwebtoken::DecodingKey::from_jwk(&key).unwrap();
            let mut validation = jsonwebtoken::Validation::new(algorithm.parse().unwrap());
            validation.validate_exp = false;
            let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation)
                .expect("verifies against the JWKS");
            assert_eq!(claims.claims["session_id"], session.as_str());
            held.push((session, token));
        }
    }
    // Every token, whatever its algorithm, heartbeats on either node.
    for (session, token) in &held {
        for node in [&cluster.a, &cluster.b] {
            let (status, body) = cluster.heartbeat(node, session, token).await;
            assert_eq!(
                status,
                200,
                "{} on {}: {body}",
                token_header(token),
                node.name
            );
        }
    }
    // A token whose header claims another algorithm than its key's is
    // refused before any signature work: it cannot choose its check.
    let (_, eddsa_token) = held.last().unwrap();
    let mut header = token_header(eddsa_token);
    header["alg"] = "ES256".into();
    let forged = {
        use base64::Engine;
        let rest = eddsa_token.split_once('.').unwrap().1;
        format!(
            "{}.{rest}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header.to_string())
        )
    };
    let (status, body) = cluster
        .heartbeat(&cluster.a, &held.last().unwrap().0, &forged)
        .await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn a_key_made_in_the_hsm_signs_on_both_nodes_after_one_rotation() {
    let cluster = Cluster::start_with(
        4,
        ClusterOptions {
            softhsm: Some(Arc::new(support::softhsm::SoftHsm::new("multi-node"))),
            ..ClusterOptions::default()
        },
    )
    .await;
    let (old_session, old_token) = cluster.acquire_ok(&cluster.a, "machine-file-key").await;

    let rotated = cli(
        &cluster.shared,
        &["keys", "rotate", "--hsm", "--algorithm", "ES256"],
    );
    assert_eq!(rotated["rotated_to"]["algorithm"], "ES256", "{rotated}");
    let kid = rotated["rotated_to"]["kid"].as_str().unwrap().to_owned();

    let mut held = vec![(old_session, old_token)];
    for (node, machine) in [(&cluster.a, "machine-a"), (&cluster.b, "machine-b")] {
        let published = eventually(Duration::from_secs(15), || async {
            cluster.jwks_kids(node).await.contains(&kid).then_some(())
        })
        .await;
        assert!(
            published.is_some(),
            "node {} did not pick up {kid}",
            node.name
        );
        let (session, token) = cluster.acquire_ok(node, machine).await;
        assert_eq!(
            token_kid(&token),
            kid,
            "node {} signs in the token",
            node.name
        );
        assert_eq!(token_header(&token)["alg"], "ES256");
        held.push((session, token));
    }
    // Each node verifies what the other signed, and the file key's token.
    for (session, token) in &held {
        for node in [&cluster.a, &cluster.b] {
            let (status, body) = cluster.heartbeat(node, session, token).await;
            assert_eq!(status, 200, "{} on {}: {body}", token_kid(token), node.name);
        }
    }
}
