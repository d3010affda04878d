//! The root's named subsystems through the operator API and the `ops`
//! commands: listing, restarting, the restart policy's limit, and that
//! restarting under load loses no live session.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use seatwarden_actors::Subsystem;
use support::services::{free_port, fresh_postgres_db, redis_url};
use support::{AppOptions, Backend, TestApp, eventually, spawn_app_with};

const TOKEN: &str = "ops-token-for-tests-0123456789";

async fn ops_app(opts: AppOptions) -> TestApp {
    spawn_app_with(AppOptions {
        ops_token: Some(TOKEN),
        ..opts
    })
    .await
}

async fn list_with(app: &TestApp, auth: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url("/api/v1/ops/subsystems"));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.expect("request")
}

async fn restart_with(app: &TestApp, name: &str, auth: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(&format!("/api/v1/ops/subsystems/{name}/restart")));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.expect("request")
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

async fn subsystems(app: &TestApp) -> Vec<Value> {
    let response = list_with(app, Some(&bearer())).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["subsystems"].as_array().expect("a list").clone()
}

async fn line(app: &TestApp, name: &str) -> Value {
    subsystems(app)
        .await
        .into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no subsystem {name}"))
}

async fn restart(app: &TestApp, name: &str) -> reqwest::Response {
    restart_with(app, name, Some(&bearer())).await
}

#[tokio::test]
async fn the_subsystem_list_shows_orgs_sweeper_watcher_and_mailer_running() {
    let app = ops_app(AppOptions::default()).await;
    let list = subsystems(&app).await;
    let names: Vec<&str> = list.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "orgs", "sweeper", "watcher", "mailer", "webhooks", "renewals"
        ]
    );
    for s in &list {
        assert_eq!(s["status"], "running", "{s}");
        assert_eq!(s["restarts"], 0, "{s}");
        let started: chrono::DateTime<chrono::Utc> =
            s["started_at"].as_str().unwrap().parse().unwrap();
        assert!(started <= chrono::Utc::now(), "{s}");
    }
}

#[tokio::test]
async fn restarting_a_subsystem_answers_once_it_runs_and_counts_the_restart() {
    let app = ops_app(AppOptions::default()).await;
    for name in ["orgs", "sweeper", "watcher"] {
        let before = line(&app, name).await;

        let response = restart(&app, name).await;

        assert_eq!(response.status(), 200, "{name}");
        let answered: Value = response.json().await.unwrap();
        assert_eq!(answered["name"], name);
        assert_eq!(answered["status"], "running");
        assert_eq!(answered["restarts"], 1);
        assert_ne!(answered["started_at"], before["started_at"], "{name}");
        assert_eq!(line(&app, name).await, answered);
    }
    // The org subsystem works after its restart.
    let lic = app.create_license(1).await;
    app.acquire_ok(&lic.key, "m1").await;
}

#[tokio::test]
async fn restarting_an_unknown_subsystem_is_a_404_that_names_the_known_ones() {
    let app = ops_app(AppOptions::default()).await;
    let response = restart(&app, "nope").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "subsystem_not_found");
    assert!(body["message"].as_str().unwrap().contains("orgs"), "{body}");
}

#[tokio::test]
async fn calls_without_the_token_or_with_a_wrong_one_get_401_with_a_json_body() {
    let app = ops_app(AppOptions::default()).await;
    let wrong = [
        None,
        Some("Bearer"),
        Some("Bearer "),
        Some("Basic b3BzOnRva2Vu"),
        Some(TOKEN),
        Some("Bearer not-the-ops-token-at-all"),
        Some("Bearer ops-token-for-tests-012345678"),
    ];
    for auth in wrong {
        for response in [
            list_with(&app, auth).await,
            restart_with(&app, "orgs", auth).await,
            restart_with(&app, "nope", auth).await,
        ] {
            assert_eq!(response.status(), 401, "{auth:?}");
            assert_eq!(
                response.headers().get("www-authenticate").unwrap(),
                "Bearer",
                "{auth:?}"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "unauthorized", "{auth:?}");
            assert!(body["message"].is_string(), "{body}");
            assert!(!body.to_string().contains(TOKEN), "{body}");
        }
    }
    // None of the refused restarts ran.
    assert_eq!(line(&app, "orgs").await["restarts"], 0);
}

#[tokio::test]
async fn without_an_ops_token_configured_every_operator_call_is_refused() {
    let app = spawn_app_with(AppOptions::default()).await;
    for auth in [None, Some("Bearer "), Some(bearer().as_str())] {
        assert_eq!(list_with(&app, auth).await.status(), 401, "{auth:?}");
        let response = restart_with(&app, "orgs", auth).await;
        assert_eq!(response.status(), 401, "{auth:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
    assert_eq!(
        app.coordinator.subsystem(Subsystem::Orgs).unwrap().restarts,
        0
    );
}

#[tokio::test]
async fn a_subsystem_that_keeps_panicking_goes_down_and_an_operator_restart_brings_it_back() {
    let app = ops_app(AppOptions {
        fault_hooks: true,
        ..AppOptions::default()
    })
    .await;
    let lic = app.create_license(2).await;
    let held = app.acquire_ok(&lic.key, "m1").await;

    assert!(
        app.coordinator
            .set_subsystem_fault(Subsystem::Orgs, true)
            .await
    );

    let down = eventually(Duration::from_secs(10), || async {
        let orgs = line(&app, "orgs").await;
        (orgs["status"] == "down").then_some(orgs)
    })
    .await
    .expect("orgs never went down");
    // Five restarts allowed in the window, then it gave up.
    assert!(down["restarts"].as_u64().unwrap() >= 5, "{down}");
    assert_eq!(line(&app, "sweeper").await["status"], "running");

    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["error"], "not_ready");
    assert!(
        ready["message"].as_str().unwrap().contains("orgs"),
        "{ready}"
    );
    assert_eq!(ready["down"], json!(["orgs"]));
    assert_eq!(ready["subsystems"]["orgs"], "down");
    assert_eq!(ready["ledger"], "ok");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("seatwarden_subsystem_up{name=\"orgs\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("seatwarden_subsystem_up{name=\"sweeper\"} 1"),
        "{metrics}"
    );
    // New seats need the org subsystem; live ones need only the ledger.
    assert_eq!(app.acquire(&lic.key, "m2").await.status(), 503);
    assert_eq!(app.heartbeat_of(&held).await.status(), 200);

    assert!(
        app.coordinator
            .set_subsystem_fault(Subsystem::Orgs, false)
            .await
    );
    // Clearing the fault alone does not bring it back: down is down.
    assert_eq!(line(&app, "orgs").await["status"], "down");
    let restarted = restart(&app, "orgs").await;
    assert_eq!(restarted.status(), 200);
    let restarted: Value = restarted.json().await.unwrap();
    assert_eq!(restarted["status"], "running");

    assert_eq!(app.get("/health/ready").await.status(), 200);
    assert!(
        app.metrics()
            .await
            .contains("seatwarden_subsystem_up{name=\"orgs\"} 1")
    );
    assert_eq!(app.acquire(&lic.key, "m2").await.status(), 201);
    assert_eq!(app.heartbeat_of(&held).await.status(), 200);
}

#[tokio::test]
async fn the_subsystem_fault_hook_does_nothing_unless_enabled() {
    let app = ops_app(AppOptions::default()).await;
    assert!(
        !app.coordinator
            .set_subsystem_fault(Subsystem::Orgs, true)
            .await
    );
    // A restart goes through the root's mailbox after the refused hook:
    // had the hook been set, orgs would now be failing.
    assert_eq!(restart(&app, "orgs").await.status(), 200);
    let orgs = app.coordinator.subsystem(Subsystem::Orgs).unwrap();
    assert_eq!(orgs.restarts, 1, "{orgs:?}");
    let lic = app.create_license(1).await;
    app.acquire_ok(&lic.key, "m1").await;
    assert_eq!(line(&app, "orgs").await["status"], "running");
}

/// A seat taken by the load, with the node it was taken on.
struct Held {
    session: String,
    token: String,
}

/// Load tasks: each keeps acquiring until it holds `per_task` seats and
/// heartbeats all of them every round, on `nodes` in turn. Any answer but
/// 201 or a retryable 503 to an acquire, and any but 200 to a heartbeat,
/// fails the task.
struct Load {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    /// Seats taken so far.
    acquired: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Held>>>,
}

impl Load {
    fn start(nodes: Vec<String>, key: String, workers: usize, per_task: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let acquired = Arc::new(AtomicU64::new(0));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let tasks = (0..workers)
            .map(|w| {
                let (stop, rounds, client) = (stop.clone(), rounds.clone(), client.clone());
                let acquired = acquired.clone();
                let (nodes, key) = (nodes.clone(), key.clone());
                tokio::spawn(async move {
                    let mut held: Vec<Held> = Vec::new();
                    let mut n = 0usize;
                    while !stop.load(Ordering::SeqCst) {
                        if held.len() < per_task {
                            let node = &nodes[(w + n) % nodes.len()];
                            let r = client
                                .post(format!("{node}/api/v1/licenses/acquire"))
                                .json(&json!({"license_key": key, "hardware_id": format!("w{w}-m{n}")}))
                                .send()
                                .await
                                .expect("acquire request");
                            let status = r.status().as_u16();
                            let body: Value = r.json().await.unwrap_or(Value::Null);
                            match status {
                                201 => {
                                    held.push(Held {
                                        session: body["session_id"].as_str().unwrap().to_owned(),
                                        token: body["token"].as_str().unwrap().to_owned(),
                                    });
                                    acquired.fetch_add(1, Ordering::SeqCst);
                                }
                                // The org subsystem restarting: retry.
                                503 => assert_eq!(body["error"], "busy", "{body}"),
                                _ => panic!("acquire answered {status}: {body}"),
                            }
                            n += 1;
                        }
                        for (i, h) in held.iter().enumerate() {
                            // Each session heartbeats on every node in turn.
                            let node = &nodes[(w + i + n) % nodes.len()];
                            let r = client
                                .post(format!(
                                    "{node}/api/v1/licenses/sessions/{}/heartbeat",
                                    h.session
                                ))
                                .bearer_auth(&h.token)
                                .send()
                                .await
                                .expect("heartbeat request");
                            let status = r.status();
                            assert_eq!(
                                status,
                                200,
                                "heartbeat of {} on {node}: {}",
                                h.session,
                                r.text().await.unwrap_or_default()
                            );
                        }
                        rounds.fetch_add(1, Ordering::SeqCst);
                        // Pacing, not correctness: leave the two cores some
                        // room for the restart itself.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    held
                })
            })
            .collect();
        Self {
            stop,
            rounds,
            acquired,
            tasks,
        }
    }

    /// Waits until the tasks have done `more` rounds past now.
    async fn wait_rounds(&self, more: u64) {
        let target = self.rounds.load(Ordering::SeqCst) + more;
        let reached = eventually(Duration::from_secs(60), || async {
            (self.rounds.load(Ordering::SeqCst) >= target).then_some(())
        })
        .await;
        assert!(reached.is_some(), "the load stalled");
    }

    async fn finish(self) -> Vec<Held> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.expect("a load task failed"));
        }
        all
    }
}

/// Restarts `orgs` on `restarted` while load runs on every node of
/// `apps`, then checks that every session taken before or during the
/// restart still heartbeats and that the ledger and the store agree on
/// which sessions are live.
async fn restart_orgs_under_load(apps: &[&TestApp], restarted: &TestApp) {
    const WORKERS: usize = 6;
    // More seats than rounds before the restart: acquires go on through it.
    const PER_TASK: usize = 5;
    let lic = apps[0].create_license(40).await;
    let nodes: Vec<String> = apps.iter().map(|a| a.url("")).collect();
    let load = Load::start(nodes, lic.key.clone(), WORKERS, PER_TASK);
    load.wait_rounds(2 * WORKERS as u64).await;
    let before = load.acquired.load(Ordering::SeqCst);

    let response = restart(restarted, "orgs").await;
    assert_eq!(response.status(), 200);
    let orgs: Value = response.json().await.unwrap();
    assert_eq!(orgs["status"], "running");
    assert_eq!(orgs["restarts"], 1);

    load.wait_rounds(8 * WORKERS as u64).await;
    let held = load.finish().await;
    assert!(before > 0, "no seat was taken before the restart");
    assert!(
        held.len() as u64 > before,
        "no seat was taken during or after the restart"
    );

    for h in &held {
        for app in apps {
            assert_eq!(app.heartbeat(&h.session, &h.token).await.status(), 200);
        }
    }
    // The ledger counts exactly the sessions the load holds ...
    let extra = apps[0].acquire_ok(&lic.key, "after-restart").await;
    assert_eq!(extra["seats_used"], held.len() + 1);
    // ... and the store has exactly those open.
    let mut expected: BTreeSet<String> = held.iter().map(|h| h.session.clone()).collect();
    expected.insert(extra["session_id"].as_str().unwrap().to_owned());
    let open: BTreeSet<String> = apps[0]
        .store
        .sessions_for_license(lic.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.is_open())
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(open, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_orgs_under_acquire_and_heartbeat_load_loses_no_live_session() {
    let app = ops_app(AppOptions::default()).await;
    restart_orgs_under_load(&[&app], &app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_orgs_on_one_of_two_redis_and_postgres_nodes_under_load_loses_no_live_session() {
    let backend = Backend::Shared {
        database_url: fresh_postgres_db().await,
        redis_url: redis_url(),
    };
    let a = ops_app(AppOptions {
        backend: backend.clone(),
        ..AppOptions::default()
    })
    .await;
    let b = ops_app(AppOptions {
        backend,
        ..AppOptions::default()
    })
    .await;
    restart_orgs_under_load(&[&a, &b], &a).await;
    assert_eq!(line(&b, "orgs").await["restarts"], 0);
}

/// Runs `seatwarden ops ...` with the token in the environment (or none).
async fn ops_cli(args: &[&str], token: Option<&str>) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"));
    command
        .arg("ops")
        .args(args)
        .env_remove("SEATWARDEN_OPS_TOKEN");
    if let Some(token) = token {
        command.env("SEATWARDEN_OPS_TOKEN", token);
    }
    command.output().await.expect("run seatwarden ops")
}

/// The one JSON line a failed command prints on stderr.
fn cli_error(out: &std::process::Output) -> Value {
    assert!(!out.status.success(), "the command succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    serde_json::from_str(stderr.trim()).expect("stderr is one JSON object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_commands_list_and_restart_subsystems_of_a_running_server() {
    let app = ops_app(AppOptions::default()).await;
    let url = app.url("");

    let out = ops_cli(&["subsystems", "--url", &url], Some(TOKEN)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["subsystems"].as_array().unwrap().len(), 6);
    assert_eq!(listed["subsystems"][0]["status"], "running");

    let out = ops_cli(&["restart", "sweeper", "--url", &url], Some(TOKEN)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restarted: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(restarted["name"], "sweeper");
    assert_eq!(restarted["restarts"], 1);
    assert_eq!(line(&app, "sweeper").await["restarts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_commands_fail_with_one_line_on_a_wrong_token_an_unknown_name_or_no_server() {
    let app = ops_app(AppOptions::default()).await;
    let url = app.url("");
    let wrong = "wrong-token-that-must-not-be-printed";

    let out = ops_cli(&["subsystems", "--url", &url], Some(wrong)).await;
    let err = cli_error(&out);
    assert_eq!(err["error"], "unauthorized", "{err}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!printed.contains(wrong), "{printed}");

    let out = ops_cli(&["restart", "nope", "--url", &url], Some(TOKEN)).await;
    assert_eq!(cli_error(&out)["error"], "subsystem_not_found");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(TOKEN));

    let out = ops_cli(&["subsystems", "--url", &url], None).await;
    assert_eq!(cli_error(&out)["error"], "missing_token");

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let out = ops_cli(&["subsystems", "--url", &nowhere], Some(TOKEN)).await;
    let err = cli_error(&out);
    assert_eq!(err["error"], "connection_failed", "{err}");
    assert!(err["message"].as_str().unwrap().contains(&nowhere), "{err}");
    assert!(!err.to_string().contains(TOKEN), "{err}");

    // None of it restarted anything.
    assert_eq!(line(&app, "orgs").await["restarts"], 0);
}

async fn access_token(app: &TestApp, email: &str, password: &str) -> String {
    let response = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!(response.status(), 200, "login of {email}");
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_platform_administrator_is_an_operator_and_any_other_user_gets_403() {
    let app = ops_app(AppOptions::default()).await;
    let password = "Admin1Password";
    seatwarden::cli::create_platform_admin(
        &*app.store,
        "root@example.com",
        None,
        password.to_owned(),
    )
    .await
    .expect("create the administrator");
    let admin = access_token(&app, "root@example.com", password).await;
    let admin = format!("Bearer {admin}");
    assert_eq!(list_with(&app, Some(&admin)).await.status(), 200);
    assert_eq!(
        restart_with(&app, "sweeper", Some(&admin)).await.status(),
        200
    );

    let registered = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": "user@example.com", "password": password,
                    "full_name": "U", "organization_name": "O"}),
        )
        .await;
    assert_eq!(registered.status(), 202);
    let user = access_token(&app, "user@example.com", password).await;
    let user = format!("Bearer {user}");
    let refused = list_with(&app, Some(&user)).await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    assert_eq!(
        restart_with(&app, "sweeper", Some(&user)).await.status(),
        403
    );
}
