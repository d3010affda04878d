//! The public port under hostile or sloppy clients: slow headers, stalled
//! bodies, idle keep-alive connections, too many connections, metrics
//! kept off the public port, security headers on every response, and
//! strict request bodies.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use serde_json::{Value, json};
use support::{AppOptions, eventually, spawn_app, spawn_app_with};

/// Slack on top of a configured timeout: the test machine is shared and slow.
const MARGIN: Duration = Duration::from_secs(4);

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection (EOF or reset), for at most
/// `limit`. Returns what was read and when the close was seen, or `None` if
/// the connection was still open at the deadline.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<(String, Instant)> {
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    Some((String::from_utf8_lossy(&seen).into_owned(), Instant::now()))
}

/// Reads one response with a `Content-Length` body, leaving the connection
/// open: its status and body.
async fn read_response(stream: &mut TcpStream, limit: Duration) -> (u16, String) {
    let read = async {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().expect("content-length"));
                let body = end + 4;
                if seen.len() >= body + length {
                    let status = head[9..12].parse().expect("status code");
                    let text = String::from_utf8_lossy(&seen[body..body + length]).into_owned();
                    return (status, text);
                }
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed before a whole response: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("no response in time")
}

/// Sends `GET path` on a kept-alive connection and reads the answer.
async fn get(stream: &mut TcpStream, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(stream, Duration::from_secs(10)).await
}

#[tokio::test]
async fn a_connection_that_stalls_halfway_through_the_request_line_is_closed() {
    let app = spawn_app_with(AppOptions {
        header_timeout_secs: 1,
        ..AppOptions::default()
    })
    .await;
    let mut stream = connect(app.addr).await;
    let sent = Instant::now();
    stream.write_all(b"GET /health/li").await.unwrap();

    let closed = read_until_closed(&mut stream, Duration::from_secs(1) + MARGIN).await;

    let (_, at) = closed.expect("the server kept a stalled request line open");
    assert!(
        at - sent >= Duration::from_millis(900),
        "closed before the header timeout: {:?}",
        at - sent
    );
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(AppOptions {
        header_timeout_secs: 1,
        ..AppOptions::default()
    })
    .await;
    let opened = Instant::now();
    let mut stream = connect(app.addr).await;

    let closed = read_until_closed(&mut stream, Duration::from_secs(1) + MARGIN).await;

    let (_, at) = closed.expect("the server kept a silent connection open");
    assert!(
        at - opened >= Duration::from_millis(900),
        "{:?}",
        at - opened
    );
}

#[tokio::test]
async fn a_request_whose_body_stalls_is_answered_408_after_the_body_timeout() {
    let app = spawn_app_with(AppOptions {
        body_timeout_secs: 1,
        ..AppOptions::default()
    })
    .await;
    let mut stream = connect(app.addr).await;
    let sent = Instant::now();
    stream
        .write_all(
            b"POST /api/v1/licenses/acquire HTTP/1.1\r\nHost: test\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n\
              {\"license_key\": ",
        )
        .await
        .unwrap();

    let (status, body) = read_response(&mut stream, Duration::from_secs(1) + MARGIN).await;

    assert!(sent.elapsed() >= Duration::from_millis(900));
    assert_eq!(status, 408, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "request_timeout");
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_keep_alive_idle_secs() {
    let app = spawn_app_with(AppOptions {
        keep_alive_idle_secs: 1,
        ..AppOptions::default()
    })
    .await;
    let mut stream = connect(app.addr).await;
    assert_eq!(get(&mut stream, "/health/live").await.0, 200);
    assert_eq!(get(&mut stream, "/health/live").await.0, 200, "kept alive");
    let idle_from = Instant::now();

    let closed = read_until_closed(&mut stream, Duration::from_secs(1) + MARGIN).await;

    let (_, at) = closed.expect("the idle connection was never closed");
    assert!(
        at - idle_from >= Duration::from_millis(900),
        "{:?}",
        at - idle_from
    );
}

/// hyper's header timer starts again as soon as an HTTP/1 connection goes
/// idle, so it bounds the wait for the next request too.
#[tokio::test]
async fn an_idle_http1_connection_is_closed_by_a_shorter_header_timeout() {
    let app = spawn_app_with(AppOptions {
        header_timeout_secs: 1,
        keep_alive_idle_secs: 75,
        ..AppOptions::default()
    })
    .await;
    let mut stream = connect(app.addr).await;
    assert_eq!(get(&mut stream, "/health/live").await.0, 200);

    let closed = read_until_closed(&mut stream, Duration::from_secs(1) + MARGIN).await;

    assert!(closed.is_some(), "the idle connection was never closed");
}

#[tokio::test]
async fn a_kept_alive_connection_that_stalls_in_its_next_request_head_is_closed() {
    let app = spawn_app_with(AppOptions {
        header_timeout_secs: 1,
        keep_alive_idle_secs: 75,
        ..AppOptions::default()
    })
    .await;
    let mut stream = connect(app.addr).await;
    assert_eq!(get(&mut stream, "/health/live").await.0, 200);
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: te")
        .await
        .unwrap();

    let closed = read_until_closed(&mut stream, Duration::from_secs(1) + MARGIN).await;

    assert!(closed.is_some(), "the stalled request head was kept open");
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_until_one_ends() {
    let app = spawn_app_with(AppOptions {
        max_connections: 2,
        ..AppOptions::default()
    })
    .await;
    let mut first = connect(app.addr).await;
    let mut second = connect(app.addr).await;
    assert_eq!(get(&mut first, "/health/live").await.0, 200);
    assert_eq!(get(&mut second, "/health/live").await.0, 200);

    let mut third = connect(app.addr).await;
    let refused = read_until_closed(&mut third, MARGIN).await;
    let (said, _) = refused.expect("a third connection was kept open");
    assert_eq!(said, "", "refused connections are closed without an answer");

    drop(first);
    let served = eventually(Duration::from_secs(5), || async {
        let mut stream = connect(app.addr).await;
        let request = b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n";
        stream.write_all(request).await.ok()?;
        let mut buf = [0u8; 12];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut buf));
        read.await.ok()?.ok()?;
        (&buf == b"HTTP/1.1 200").then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "no connection was served after one closed"
    );
    assert_eq!(get(&mut second, "/health/live").await.0, 200);
}

#[tokio::test]
async fn with_metrics_listen_set_metrics_are_served_only_on_the_metrics_port() {
    let app = spawn_app_with(AppOptions {
        metrics_listen: Some("127.0.0.1:0"),
        ..AppOptions::default()
    })
    .await;
    let metrics_addr = app.metrics_addr.expect("a metrics port");
    assert_ne!(metrics_addr, app.addr);

    let public = app.get("/metrics").await;
    assert_eq!(public.status(), 404);
    let body: Value = public.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert_eq!(app.get("/health/live").await.status(), 200);

    let internal = app
        .client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(internal.status(), 200);
    let text = internal.text().await.unwrap();
    assert!(text.lines().any(|l| l.starts_with("seatwarden_")), "{text}");
    let other = app
        .client
        .get(format!("http://{metrics_addr}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "the metrics port serves only /metrics");
}

#[tokio::test]
async fn an_unknown_method_is_labelled_other_in_metrics() {
    let app = spawn_app_with(AppOptions::default()).await;
    let method = reqwest::Method::from_bytes(b"FOO").unwrap();
    let response = app
        .client
        .request(method, app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());

    let text = app.metrics().await;

    let latency = |l: &&str| l.starts_with("seatwarden_http_request_duration_seconds");
    assert!(
        text.lines()
            .filter(latency)
            .any(|l| l.contains(r#"method="other""#) && l.contains(r#"route="/health/live""#)),
        "{text}"
    );
    assert!(!text.contains(r#"method="FOO""#), "{text}");
}

const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
];

const HSTS: &str = "max-age=63072000; includeSubDomains";

/// Asserts the security headers on `response` (HSTS as `hsts` says), and
/// returns its status.
fn assert_security_headers(response: &reqwest::Response, hsts: bool, what: &str) -> u16 {
    let headers = response.headers();
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(
            headers.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name} on {what} ({})",
            response.status()
        );
    }
    let sts = headers
        .get("strict-transport-security")
        .and_then(|v| v.to_str().ok());
    assert_eq!(sts, hsts.then_some(HSTS), "HSTS on {what}");
    response.status().as_u16()
}

#[tokio::test]
async fn every_kind_of_response_carries_the_security_headers_and_no_hsts_by_default() {
    let app = spawn_app().await;
    let lic = app.create_license(1).await;
    let acquired = app.acquire(&lic.key, "m1").await;
    assert_eq!(assert_security_headers(&acquired, false, "acquire"), 201);
    let acquired: Value = acquired.json().await.unwrap();
    let heartbeat = app.heartbeat_of(&acquired).await;
    assert_eq!(assert_security_headers(&heartbeat, false, "heartbeat"), 200);

    let session = acquired["session_id"].as_str().unwrap();
    let url = app.url("/api/v1/licenses/acquire");
    let cases = [
        ("/health/live", app.get("/health/live").await, 200),
        ("/health/ready", app.get("/health/ready").await, 200),
        ("/metrics", app.get("/metrics").await, 200),
        (
            "public key",
            app.get("/api/v1/licenses/public-key").await,
            200,
        ),
        ("jwks", app.get("/.well-known/jwks.json").await, 200),
        ("unknown path", app.get("/nope").await, 404),
        (
            "wrong method",
            app.client.get(&url).send().await.unwrap(),
            405,
        ),
        (
            "bad body",
            app.client.post(&url).body("{").send().await.unwrap(),
            400,
        ),
        ("bad token", app.heartbeat(session, "forged").await, 401),
        (
            "too large",
            app.client
                .post(&url)
                .body(vec![b' '; 17 * 1024])
                .send()
                .await
                .unwrap(),
            413,
        ),
    ];
    for (what, response, status) in cases {
        assert_eq!(
            assert_security_headers(&response, false, what),
            status,
            "{what}"
        );
    }
}

#[tokio::test]
async fn with_hsts_on_every_response_carries_it_on_both_ports() {
    let app = spawn_app_with(AppOptions {
        metrics_listen: Some("127.0.0.1:0"),
        overrides: vec![("http.hsts", true.into())],
        ..AppOptions::default()
    })
    .await;
    let metrics_url = format!("http://{}/metrics", app.metrics_addr.unwrap());

    let live = app.get("/health/live").await;
    let missing = app.get("/metrics").await;
    let metrics = app.client.get(metrics_url).send().await.unwrap();

    assert_eq!(assert_security_headers(&live, true, "live"), 200);
    assert_eq!(
        assert_security_headers(&missing, true, "public /metrics"),
        404
    );
    assert_eq!(assert_security_headers(&metrics, true, "metrics port"), 200);
}

async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert_eq!(body["error"], code, "{body}");
    body["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_acquire_body_with_a_field_we_do_not_know_is_refused_with_400() {
    let app = spawn_app().await;
    let lic = app.create_license(1).await;

    let misspelled = app
        .post_json(
            "/api/v1/licenses/acquire",
            &json!({"license_key": lic.key, "hardware_id": "m1", "hostnmae": "box"}),
        )
        .await;
    let message = assert_error(misspelled, 400, "invalid_body").await;
    assert!(message.contains("hostnmae"), "{message}");

    // Every field we do know is still accepted, and nothing was taken.
    let full = app
        .post_json(
            "/api/v1/licenses/acquire",
            &json!({
                "license_key": lic.key, "hardware_id": "m1", "metadata": {"seat": "a"},
                "client_version": "4.2", "os": "linux", "hostname": "box",
            }),
        )
        .await;
    assert_eq!(full.status(), 201);
}

#[tokio::test]
async fn client_facts_beyond_their_length_limits_are_refused_with_their_own_codes() {
    let app = spawn_app().await;
    let lic = app.create_license(1).await;
    let acquire = |field: &str, value: String| {
        let mut body = json!({"license_key": lic.key, "hardware_id": "m1"});
        body[field] = Value::String(value);
        body
    };
    for (field, max, code) in [
        ("client_version", 64, "invalid_client_version"),
        ("os", 128, "invalid_os"),
        ("hostname", 253, "invalid_hostname"),
    ] {
        let long = app
            .post_json(
                "/api/v1/licenses/acquire",
                &acquire(field, "v".repeat(max + 1)),
            )
            .await;
        let message = assert_error(long, 400, code).await;
        assert!(message.contains(&max.to_string()), "{message}");
        let control = app
            .post_json("/api/v1/licenses/acquire", &acquire(field, "a\nb".into()))
            .await;
        assert_error(control, 400, code).await;
    }

    let mut at_limits = json!({"license_key": lic.key, "hardware_id": "m1"});
    at_limits["client_version"] = "v".repeat(64).into();
    at_limits["os"] = "o".repeat(128).into();
    at_limits["hostname"] = "h".repeat(253).into();
    let ok = app.post_json("/api/v1/licenses/acquire", &at_limits).await;
    assert_eq!(ok.status(), 201);
}

/// A NUL character cannot be stored as PostgreSQL text or jsonb: before
/// this was checked at the edge, such a value reached the database and the
/// client got a 503 "retry shortly" for a request that can never succeed.
/// Found by `scripts/fuzz.sh` (Schemathesis).
#[tokio::test]
async fn a_nul_character_in_a_query_or_a_json_body_is_a_400_on_postgresql_too() {
    let app = spawn_app_with(AppOptions {
        backend: support::Backend::Shared {
            database_url: support::services::fresh_postgres_db().await,
            redis_url: support::services::redis_url(),
        },
        ..AppOptions::default()
    })
    .await;
    let root = support::people::platform_admin(&app).await;
    let lic = app.create_license(2).await;

    for path in [
        "/api/v1/admin/users?q=a%00".to_owned(),
        "/api/v1/admin/orgs?q=%F0%A3%82%90%00".to_owned(),
        format!("/api/v1/licenses/{}/sessions?hardware_id=v%00", lic.id),
    ] {
        let response = app
            .client
            .get(app.url(&path))
            .bearer_auth(&root.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_query", "{path}: {body}");
    }

    let login = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "ada@example.com\u{0}", "password": "x"}),
        )
        .await;
    assert_eq!(login.status(), 400);
    let body: Value = login.json().await.unwrap();
    assert_eq!(body["error"], "invalid_body", "{body}");

    let acquire = app
        .post_json(
            "/api/v1/licenses/acquire",
            &json!({"license_key": lic.key, "hardware_id": "m1", "metadata": {"k": "a\u{0}b"}}),
        )
        .await;
    assert_eq!(acquire.status(), 400);
    // Nothing was taken: both seats are free.
    app.acquire_ok(&lic.key, "m2").await;
    let second: Value = app.acquire_ok(&lic.key, "m3").await;
    assert_eq!(second["seats_used"], 2);
}

/// RFC 3339 has four year digits: an expiry past 9999-12-31 UTC (reachable
/// from a year-9999 input with a -23:59 offset) would be answered as
/// `+10000-...`, which breaks every client's date parser.
#[tokio::test]
async fn an_expiry_beyond_the_year_9999_is_refused() {
    let app = spawn_app().await;
    let root = support::people::platform_admin(&app).await;
    let lic = app.create_license(2).await;
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/admin/licenses/{}", lic.id)))
        .bearer_auth(&root.token)
        .json(&json!({"expires_at": "9999-12-31T23:59:59-23:59"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_expires_at", "{body}");
    let fine = app
        .client
        .patch(app.url(&format!("/api/v1/admin/licenses/{}", lic.id)))
        .bearer_auth(&root.token)
        .json(&json!({"expires_at": "9999-12-31T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
    let body: Value = fine.json().await.unwrap();
    assert_eq!(body["expires_at"], "9999-12-31T00:00:00Z");
}
