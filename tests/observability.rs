//! What operators watch: the Grafana dashboard
//! (`helm/seatwarden/files/dashboard.json`) and the alerting rules
//! (`helm/seatwarden/files/alerts.yaml`) query only metrics a running server
//! exports, and every alert links to a section of `docs/runbook.md`.
//!
//! Metrics appear in the exposition only once they are first recorded, so
//! the test drives what records each of them on an embedded server (seat
//! traffic with a 409 and a queued acquire, a borrowed seat, an operator
//! restart, Stripe events applied, given up and refused) before it scrapes.
//! A metric renamed in the code, or misspelt in a query, fails it.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use support::stripe::{FakeStripe, RetryPolicy, TEST_WEBHOOK_SECRET};
use support::{AppOptions, TestApp, eventually, spawn_app_with};

const DASHBOARD: &str = include_str!("../helm/seatwarden/files/dashboard.json");
const ALERTS: &str = include_str!("../helm/seatwarden/files/alerts.yaml");
const RUNBOOK: &str = include_str!("../docs/runbook.md");

const OPS_TOKEN: &str = "ops-token-for-observability-0123";
const WAIT: Duration = Duration::from_secs(15);

/// The series a Prometheus histogram (or summary) is exposed as, besides
/// its own name.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_count", "_sum"];

/// The `seatwarden_*` names in a PromQL expression, with a histogram's
/// series (`_bucket`, `_count`, `_sum`) folded into the histogram's name.
/// A name counts only where it starts a token: not inside
/// `not_seatwarden_x`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const PREFIX: &str = "seatwarden_";
    let bytes = expr.as_bytes();
    let is_name_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = expr[from..].find(PREFIX) {
        let start = from + at;
        let mut end = start + PREFIX.len();
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if start == 0 || !is_name_byte(bytes[start - 1]) {
            let name = &expr[start..end];
            let name = HISTOGRAM_SUFFIXES
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(name.to_owned());
        }
        from = end;
    }
    names
}

/// Every query of the dashboard: panel targets' `expr`, and the template
/// variables' `query` and `definition`.
fn dashboard_queries() -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("dashboard.json is JSON");
    let mut out = Vec::new();
    walk(&dashboard, &mut out);
    out
}

/// Every rule's `expr` in the rule file, read as text (there is no YAML
/// parser among the dependencies): a one-line value, or a block scalar
/// (`expr: |`), which runs while lines are indented deeper than `expr:`.
fn alert_exprs() -> Vec<String> {
    let lines: Vec<&str> = ALERTS.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let Some(value) = trimmed
            .strip_prefix("- ")
            .unwrap_or(trimmed)
            .strip_prefix("expr:")
        else {
            i += 1;
            continue;
        };
        let value = value.trim();
        i += 1;
        if value.starts_with('|') || value.starts_with('>') {
            let mut block = String::new();
            while i < lines.len() {
                let next = lines[i];
                let content = next.trim_start();
                if !content.is_empty() && next.len() - content.len() <= indent {
                    break;
                }
                block.push_str(content);
                block.push('\n');
                i += 1;
            }
            out.push(block);
        } else {
            out.push(value.trim_matches(|c| c == '"' || c == '\'').to_owned());
        }
    }
    out
}

fn names_in(queries: &[String]) -> BTreeSet<String> {
    queries.iter().flat_map(|q| metric_names(q)).collect()
}

/// Whether the exposition has `name`: its `# TYPE` line, or a sample of it
/// (of a histogram or summary, also its `_bucket`, `_count` or `_sum`).
fn exported(exposition: &str, name: &str) -> bool {
    exposition.lines().any(|line| {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            return rest.split_whitespace().next() == Some(name);
        }
        if line.starts_with('#') {
            return false;
        }
        let sample = line.split(['{', ' ']).next().unwrap_or("");
        sample == name
            || HISTOGRAM_SUFFIXES
                .iter()
                .any(|suffix| sample.strip_suffix(suffix) == Some(name))
    })
}

fn missing(queried: &BTreeSet<String>, exposition: &str) -> Vec<String> {
    queried
        .iter()
        .filter(|name| !exported(exposition, name))
        .cloned()
        .collect()
}

/// Records everything the dashboard and the alerts look at.
async fn drive_traffic(app: &TestApp, fake: &FakeStripe) {
    // Seats: a full license refuses one machine and queues another.
    let license = app.create_license(1).await;
    let held = app.acquire_ok(&license.key, "machine-1").await;
    let refused = app.acquire(&license.key, "machine-2").await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let queued = app
        .post_json(
            "/api/v1/licenses/acquire",
            &json!({"license_key": license.key, "hardware_id": "machine-3", "wait": true}),
        )
        .await;
    assert_eq!(queued.status(), StatusCode::ACCEPTED);
    assert_eq!(app.heartbeat_of(&held).await.status(), StatusCode::OK);
    assert_eq!(app.release_of(&held).await.status(), StatusCode::OK);

    // A borrowed seat (its gauge comes from the store at each scrape).
    let lending = app.create_license(2).await;
    app.set_max_borrow_hours(lending.id, 24).await;
    let borrowed = app
        .post_json(
            "/api/v1/licenses/borrow",
            &json!({"license_key": lending.key, "hardware_id": "laptop", "hours": 8}),
        )
        .await;
    assert_eq!(borrowed.status(), StatusCode::CREATED);

    // An operator restart.
    let restarted = app
        .client
        .post(app.url("/api/v1/ops/subsystems/sweeper/restart"))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(restarted.status(), StatusCode::OK);

    // Stripe: an event applied, one this version does not apply (given up
    // for good), and a delivery refused for want of a signature.
    let customer = support::stripe::customer_object();
    let applied = fake.build_event("customer.created", customer.clone());
    let given_up = fake.build_event("customer.deleted", customer);
    for event in [&applied, &given_up] {
        let attempts = fake.deliver(event).await;
        assert_eq!(attempts[0].status, Some(200), "{}", event.event_type);
    }
    let unsigned = app
        .client
        .post(app.url("/api/v1/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(applied.body())
        .send()
        .await
        .expect("request");
    assert_eq!(unsigned.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn the_scan_finds_metric_names_and_folds_histogram_series() {
    let expr = r#"histogram_quantile(0.99, sum by (le, route) (rate(seatwarden_http_request_duration_seconds_bucket{route=~"$route"}[5m])))
        / on () max(seatwarden_seat_limit) + not_seatwarden_a_metric + seatwarden_queue_wait_seconds_count"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(
        names,
        [
            "seatwarden_http_request_duration_seconds",
            "seatwarden_queue_wait_seconds",
            "seatwarden_seat_limit",
        ]
    );
}

#[test]
fn the_rule_file_is_read_one_line_and_block_expressions_alike() {
    let exprs = alert_exprs();
    assert_eq!(
        exprs.len(),
        ALERTS.matches("- alert:").count(),
        "one expr per alert: {exprs:#?}"
    );
    assert!(exprs.iter().all(|e| !e.trim().is_empty()), "{exprs:#?}");
    assert!(
        exprs
            .iter()
            .any(|e| e.contains('\n') && e.contains("seatwarden_seat_limit")),
        "the block scalar of the seat alert is read whole: {exprs:#?}"
    );
}

#[test]
fn every_alert_has_a_severity_and_links_to_a_section_of_the_runbook() {
    assert!(
        ALERTS.lines().any(|l| l.trim_end() == "groups:"),
        "a standard rule file starts with `groups:`"
    );
    let alerts = ALERTS.matches("- alert:").count();
    assert!(alerts > 0);
    for field in ["severity:", "summary:", "description:", "runbook_url:"] {
        let count = ALERTS
            .lines()
            .filter(|l| l.trim_start().starts_with(field))
            .count();
        assert_eq!(count, alerts, "every alert has `{field}`");
    }

    // GitHub's anchors: the heading in lower case, spaces as hyphens, other
    // punctuation dropped. Headings inside code blocks are none.
    let slug = |heading: &str| -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                'a'..='z' | '0'..='9' | '_' | '-' => Some(c),
                ' ' => Some('-'),
                _ => None,
            })
            .collect()
    };
    let mut anchors = BTreeSet::new();
    let mut in_code = false;
    for line in RUNBOOK.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            let heading = line.trim_start_matches('#');
            if heading.starts_with(' ') {
                anchors.insert(slug(heading));
            }
        }
    }

    let mut links: Vec<String> = ALERTS
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("runbook_url:"))
        .map(|url| {
            let url = url.trim().trim_matches('"');
            let (page, anchor) = url.split_once('#').expect("a runbook_url names a section");
            assert_eq!(page, "docs/runbook.md", "{url}");
            anchor.to_owned()
        })
        .collect();
    assert_eq!(links.len(), alerts);
    // The runbook's own links between its sections too.
    links.extend(
        RUNBOOK
            .split("](#")
            .skip(1)
            .map(|rest| rest.split(')').next().unwrap_or_default().to_owned()),
    );
    for anchor in &links {
        assert!(
            anchors.contains(anchor),
            "#{anchor} is a section of docs/runbook.md; sections: {anchors:?}"
        );
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_query_is_one_the_server_exports() {
    let from_dashboard = names_in(&dashboard_queries());
    let from_alerts = names_in(&alert_exprs());
    // The scans found what they must, so a broken scan can't pass by
    // finding nothing.
    for name in [
        "seatwarden_seats_in_use",
        "seatwarden_seat_limit",
        "seatwarden_acquire_total",
        "seatwarden_http_request_duration_seconds",
        "seatwarden_subsystem_up",
        "seatwarden_dependency_up",
    ] {
        assert!(
            from_dashboard.contains(name),
            "the dashboard queries {name}: {from_dashboard:?}"
        );
    }
    for name in [
        "seatwarden_seats_in_use",
        "seatwarden_http_request_duration_seconds",
        "seatwarden_dependency_up",
        "seatwarden_subsystem_up",
        "seatwarden_webhooks_failed_total",
        "seatwarden_outbox_oldest_seconds",
    ] {
        assert!(
            from_alerts.contains(name),
            "the alerts query {name}: {from_alerts:?}"
        );
    }
    let queried: BTreeSet<String> = from_dashboard.union(&from_alerts).cloned().collect();

    let fake = FakeStripe::start().await;
    fake.set_retry_policy(RetryPolicy {
        max_attempts: 1,
        interval: Duration::from_millis(1),
    });
    let app = spawn_app_with(AppOptions {
        ops_token: Some(OPS_TOKEN),
        overrides: vec![
            ("stripe.webhook_secret", TEST_WEBHOOK_SECRET.into()),
            ("webhooks.poll_interval_ms", 100.into()),
        ],
        ..AppOptions::default()
    })
    .await;
    fake.add_webhook_url(&app.url("/api/v1/webhooks/stripe"));

    drive_traffic(&app, &fake).await;

    // Webhook events are applied after their answer: scrape until every
    // name is there, then say which are not.
    let complete = eventually(WAIT, || async {
        let exposition = app.metrics().await;
        missing(&queried, &exposition)
            .is_empty()
            .then_some(exposition)
    })
    .await;
    let exposition = match complete {
        Some(exposition) => exposition,
        None => {
            let exposition = app.metrics().await;
            panic!(
                "queried by the dashboard or the alerts but not exported: {:?}\n\n{exposition}",
                missing(&queried, &exposition)
            );
        }
    };
    // And the check can tell an exported name from one that is not.
    assert!(exported(&exposition, "seatwarden_seats_in_use"));
    assert!(!exported(&exposition, "seatwarden_seats_in_us"));
    assert!(!exported(&exposition, "seatwarden_no_such_metric_total"));
}
