//! `seatwarden-bench`, the load generator behind `scripts/bench.sh`, run
//! small against a live server: it must drive every phase to the end and
//! count what the server answered. It speaks HTTP/1.1 on connections of
//! its own (not through a client library), so this is what keeps its
//! requests well-formed. No timing is asserted here; rates belong to the
//! benchmark command.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{TestApp, spawn_app};

/// The phases run on `keys` (round-robin): `sessions` acquires, that many
/// heartbeats per session, and a release each, `concurrency` at a time.
fn phase_args<'a>(
    keys: &[&'a str],
    sessions: &'a str,
    beats: &'a str,
    concurrency: &'a str,
) -> Vec<&'a str> {
    let mut args: Vec<&str> = keys.iter().flat_map(|k| ["--license-key", k]).collect();
    args.extend([
        "--sessions",
        sessions,
        "--heartbeats-per-session",
        beats,
        "--concurrency",
        concurrency,
    ]);
    args
}

/// Runs the bench against `app` with `args` and returns its JSON line.
fn run_bench(app: &TestApp, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden-bench"))
        .arg("--url")
        .arg(app.url(""))
        .args(args)
        .output()
        .expect("run seatwarden-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "seatwarden-bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in {stdout}"));
    serde_json::from_str(line).expect("the JSON line parses")
}

fn phase<'a>(report: &'a Value, name: &str) -> &'a Value {
    &report["phases"][name]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_runs_every_phase_to_the_end_with_no_error_answers() {
    let app = spawn_app().await;
    let a = app.create_license(50).await;
    let b = app.create_license(50).await;
    let report = tokio::task::block_in_place(|| {
        run_bench(&app, &phase_args(&[&a.key, &b.key], "12", "3", "4"))
    });
    for (name, planned) in [("acquire", 12), ("heartbeat", 36), ("release", 12)] {
        let p = phase(&report, name);
        assert_eq!(p["requests"], planned, "{name}: {p}");
        assert_eq!(p["non_2xx"], 0, "{name}: {p}");
    }
    // Every session went back: both licenses are free again.
    for lic in [&a, &b] {
        assert_eq!(app.seats_in_use(lic.id).await, Some(0.0), "{}", lic.key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_is_counted_as_such_and_not_as_a_success() {
    let app = spawn_app().await;
    // One seat for three sessions: two acquires get 409.
    let one = app.create_license(1).await;
    let report =
        tokio::task::block_in_place(|| run_bench(&app, &phase_args(&[&one.key], "3", "1", "1")));
    let acquire = phase(&report, "acquire");
    assert_eq!(acquire["requests"], 3, "{acquire}");
    assert_eq!(acquire["non_2xx"], 2, "{acquire}");
    assert_eq!(acquire["non_2xx_by_status"]["409"], 2, "{acquire}");
    // Only the one session acquired is beaten and released.
    assert_eq!(phase(&report, "heartbeat")["requests"], 1);
    assert_eq!(phase(&report, "release")["non_2xx"], 0);
}
