//! The OpenAPI document against the code and a running server.
//!
//! Two promises: every route the server has is in the document (and
//! nothing else is), and every response code the document lists for an
//! operation is one the server really answers with. The routes come from
//! the code: the `/// METHOD /path` doc line every endpoint's filter fn
//! carries in `src/http/`, checked against the running server by probing.
//! The codes come from [`cases`], a table of requests that each trigger one
//! documented (operation, status); a documented code without a row fails,
//! and so does a row whose request answers anything else.
//!
//! Adding a route: its `#[utoipa::path]` and `paths(...)` line, then one
//! row per documented status in [`cases`].

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use seatwarden_actors::{Subsystem, SubsystemStatus};
use support::accounts;
use support::proxy::{CuttableProxy, host_port, via};
use support::services::{fresh_postgres_db, redis_url};
use support::{AppOptions, Backend, TestApp, eventually, ids, spawn_app_with};

const OPS_TOKEN: &str = "openapi-test-ops-token-0123456789";
const PASSWORD: &str = "Correct1Horse";
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// (METHOD, path template), e.g. `("DELETE", "/api/v1/licenses/sessions/{id}")`.
type Operation = (String, String);

async fn document(app: &TestApp) -> Value {
    let response = app.get("/api/v1/openapi.json").await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("the document is JSON")
}

/// Every operation of the document.
fn documented_operations(doc: &Value) -> BTreeSet<Operation> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// Every (operation, status) of the document.
fn documented_statuses(doc: &Value) -> BTreeSet<(Operation, u16)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for status in op["responses"].as_object().expect("responses").keys() {
                let status = status.parse().expect("numeric status codes only");
                out.insert(((method.to_uppercase(), path.clone()), status));
            }
        }
    }
    out
}

/// The routes the code declares: each `/// METHOD /path` doc line in
/// `src/http/` (backticks, a query string and a trailing `:` or `,`
/// allowed, as in `` /// `GET /api/v1/auth/verify-email?token=` `` and
/// `` /// `GET /api/v1/orgs`: the caller's organizations ``).
fn routes_in_code() -> BTreeSet<Operation> {
    let mut routes = BTreeSet::new();
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/http"
    ))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/http") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for line in source.lines() {
                let Some(doc) = line.trim().strip_prefix("///") else {
                    continue;
                };
                let doc = doc.trim().trim_start_matches('`');
                let mut words = doc.split_whitespace();
                let (Some(method), Some(target)) = (words.next(), words.next()) else {
                    continue;
                };
                if !METHODS.contains(&method) || !target.starts_with('/') {
                    continue;
                }
                let target = target.split('`').next().unwrap();
                let target = target.trim_end_matches([':', ',']);
                let template = target.split('?').next().unwrap();
                routes.insert((method.to_owned(), template.to_owned()));
            }
        }
    }
    routes
}

/// A path template with every `{param}` filled in with `value`.
fn fill(template: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closed parameter") + start;
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Whether a response is the router's own "no route here" (404
/// `not_found` "no such endpoint", or 405), as opposed to an endpoint's.
async fn unrouted(response: reqwest::Response) -> bool {
    match response.status().as_u16() {
        405 => true,
        404 => {
            let body: Value = response.json().await.unwrap_or_default();
            body["error"] == "not_found" && body["message"] == "no such endpoint"
        }
        _ => false,
    }
}

#[tokio::test]
async fn every_route_in_the_code_is_in_the_document_and_nothing_else_is() {
    let app = spawn_app_with(AppOptions::default()).await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let documented = documented_operations(&doc);
    let in_code = routes_in_code();
    assert!(in_code.len() >= 50, "found only {in_code:?} in src/http");

    let undocumented: Vec<_> = in_code.difference(&documented).collect();
    let not_in_code: Vec<_> = documented.difference(&in_code).collect();
    assert!(
        undocumented.is_empty() && not_in_code.is_empty(),
        "routes missing from the document: {undocumented:?}; \
         documented but no `/// METHOD /path` line in src/http: {not_in_code:?}"
    );

    // The doc lines are true: each documented operation is routed, and no
    // other method is routed on its paths. The probe is a UUID, since most
    // path parameters must be one for the route to match at all.
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    let probe = uuid::Uuid::new_v4().to_string();
    for template in paths {
        let url = app.url(&fill(template, &probe));
        for method in METHODS {
            let response = app
                .client
                .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let routed = !unrouted(response).await;
            let listed = documented.contains(&(method.to_owned(), template.clone()));
            assert_eq!(
                routed, listed,
                "{method} {template} answered {status}: routed {routed}, documented {listed}"
            );
        }
    }
}

/// Which server a case runs against.
#[derive(Clone, Copy, Debug)]
enum On {
    /// Shipped defaults, with an `ops.token`.
    Plain,
    /// Every rate limit a route applies at one a minute.
    Limited,
    /// The orgs subsystem down (fault hook), so that what needs it answers 503.
    Broken,
    /// On PostgreSQL and Redis, with PostgreSQL cut off.
    NoDatabase,
}

/// One request that must answer one documented (operation, status).
struct Case {
    method: &'static str,
    template: &'static str,
    status: u16,
    on: On,
    path: String,
    bearer: Option<String>,
    body: Option<Vec<u8>>,
    /// Send again until the status comes (bounded): for limits that let
    /// the first request through.
    repeat: bool,
}

impl Case {
    fn new(method: &'static str, template: &'static str, status: u16, path: String) -> Self {
        Self {
            method,
            template,
            status,
            on: On::Plain,
            path,
            bearer: None,
            body: None,
            repeat: false,
        }
    }

    /// The documented path with no parameters.
    fn at(method: &'static str, template: &'static str, status: u16) -> Self {
        Self::new(method, template, status, template.to_owned())
    }

    fn on(mut self, on: On) -> Self {
        self.on = on;
        self
    }

    fn bearer(mut self, token: &str) -> Self {
        self.bearer = Some(token.to_owned());
        self
    }

    fn json(mut self, body: Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self
    }

    /// A JSON body over the 16 KiB limit.
    fn too_large(mut self) -> Self {
        let body = json!({"padding": "x".repeat(17 * 1024)});
        self.body = Some(body.to_string().into_bytes());
        self
    }

    fn repeated(mut self) -> Self {
        self.repeat = true;
        self
    }

    fn operation(&self) -> Operation {
        (self.method.to_owned(), self.template.to_owned())
    }

    async fn send(&self, app: &TestApp) -> reqwest::Response {
        let method = Method::from_bytes(self.method.as_bytes()).unwrap();
        let mut request = app.client.request(method, app.url(&self.path));
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = &self.body {
            request = request
                .header("content-type", "application/json")
                .body(body.clone());
        }
        request.send().await.expect("request")
    }
}

/// What the cases need to exist before they run.
struct Fixtures {
    license_key: String,
    full_key: String,
    suspended_key: String,
    /// A live session (id, seat token) acquired by machine `m1`.
    live: (String, String),
    /// A session to release.
    to_release: (String, String),
    /// A session released already.
    released: (String, String),
    access_token: String,
    refresh_tokens: [String; 2],
    verify_token: String,
    reset_token: String,
    limited_key: String,
    limited_session: (String, String),
    broken_key: String,
    /// A live session on the server whose database is cut off.
    stranded_session: (String, String),
}

/// Every documented (operation, status), as a request that triggers it.
fn cases(f: &Fixtures) -> Vec<Case> {
    const ACQUIRE: &str = "/api/v1/licenses/acquire";
    const HEARTBEAT: &str = "/api/v1/licenses/sessions/{id}/heartbeat";
    const SESSION: &str = "/api/v1/licenses/sessions/{id}";
    const REGISTER: &str = "/api/v1/auth/register";
    const VERIFY: &str = "/api/v1/auth/verify-email";
    const LOGIN: &str = "/api/v1/auth/login";
    const REFRESH: &str = "/api/v1/auth/refresh";
    const LOGOUT: &str = "/api/v1/auth/logout";
    const ME: &str = "/api/v1/auth/me";
    const FORGOT: &str = "/api/v1/auth/forgot-password";
    const RESET: &str = "/api/v1/auth/reset-password";
    const SUBSYSTEMS: &str = "/api/v1/ops/subsystems";
    const RESTART: &str = "/api/v1/ops/subsystems/{name}/restart";

    let acquire = |key: &str, machine: &str| json!({"license_key": key, "hardware_id": machine});
    let beat = |id: &str| fill(HEARTBEAT, id);
    let session = |id: &str| fill(SESSION, id);
    let restart = |name: &str| fill(RESTART, name);
    let (live, live_token) = (&f.live.0, &f.live.1);
    let (released, released_token) = (&f.released.0, &f.released.1);
    let unknown = uuid::Uuid::new_v4().to_string();
    let login = |email: &str, password: &str| json!({"email": email, "password": password});

    let mut cases = vec![
        Case::at("POST", ACQUIRE, 201).json(acquire(&f.license_key, "m2")),
        Case::at("POST", ACQUIRE, 200).json(acquire(&f.license_key, "m1")),
        Case::at("POST", ACQUIRE, 400).json(json!({"license_key": f.license_key})),
        Case::at("POST", ACQUIRE, 403).json(acquire(&f.suspended_key, "m1")),
        Case::at("POST", ACQUIRE, 404).json(acquire("NO-SUCH-KEY", "m1")),
        Case::at("POST", ACQUIRE, 409).json(acquire(&f.full_key, "f2")),
        Case::at("POST", ACQUIRE, 413).too_large(),
        Case::at("POST", ACQUIRE, 429)
            .on(On::Limited)
            .json(acquire(&f.limited_key, "m1"))
            .repeated(),
        Case::at("POST", ACQUIRE, 503)
            .on(On::Broken)
            .json(acquire(&f.broken_key, "m2")),
        Case::new("DELETE", SESSION, 200, session(&f.to_release.0)).bearer(&f.to_release.1),
        Case::new("DELETE", SESSION, 401, session(live)),
        Case::new("DELETE", SESSION, 404, session(&unknown)),
        Case::new("DELETE", SESSION, 503, session(&f.stranded_session.0))
            .on(On::NoDatabase)
            .bearer(&f.stranded_session.1),
        Case::at("GET", "/api/v1/licenses/public-key", 200),
        Case::at("GET", "/.well-known/jwks.json", 200),
        Case::at("POST", REGISTER, 202).json(json!({
            "email": "someone@example.com", "password": PASSWORD,
            "full_name": "Some One", "organization_name": "Someone's",
        })),
        Case::at("POST", REGISTER, 400).json(json!({
            "email": "not an address", "password": PASSWORD,
            "full_name": "Some One", "organization_name": "Someone's",
        })),
        Case::at("POST", REGISTER, 413).too_large(),
        Case::at("POST", REGISTER, 429)
            .on(On::Limited)
            .json(json!({
                "email": "limited@example.com", "password": PASSWORD,
                "full_name": "Some One", "organization_name": "Someone's",
            }))
            .repeated(),
        Case::new(
            "GET",
            VERIFY,
            200,
            format!("{VERIFY}?token={}", f.verify_token),
        ),
        Case::new("GET", VERIFY, 400, format!("{VERIFY}?token=nope")),
        Case::at("POST", LOGIN, 200).json(login("ada@example.com", PASSWORD)),
        Case::at("POST", LOGIN, 400).json(json!({"email": "ada@example.com"})),
        Case::at("POST", LOGIN, 401).json(login("ada@example.com", "Wrong1Horse")),
        Case::at("POST", LOGIN, 413).too_large(),
        Case::at("POST", LOGIN, 429)
            .on(On::Limited)
            .json(login("nobody@example.com", PASSWORD))
            .repeated(),
        Case::at("POST", REFRESH, 200).json(json!({"refresh_token": f.refresh_tokens[0]})),
        Case::at("POST", REFRESH, 400).json(json!({})),
        Case::at("POST", REFRESH, 401).json(json!({"refresh_token": "nope"})),
        Case::at("POST", REFRESH, 413).too_large(),
        Case::at("POST", LOGOUT, 204).json(json!({"refresh_token": f.refresh_tokens[1]})),
        Case::at("POST", LOGOUT, 400).json(json!({"token": "misnamed"})),
        Case::at("POST", LOGOUT, 413).too_large(),
        Case::at("GET", ME, 200).bearer(&f.access_token),
        Case::at("GET", ME, 401).bearer("not-a-token"),
        Case::at("POST", FORGOT, 202).json(json!({"email": "ada@example.com"})),
        Case::at("POST", FORGOT, 400).json(json!({"email": "not an address"})),
        Case::at("POST", FORGOT, 413).too_large(),
        Case::at("POST", FORGOT, 429)
            .on(On::Limited)
            .json(json!({"email": "limited@example.com"}))
            .repeated(),
        Case::at("POST", RESET, 200)
            .json(json!({"token": f.reset_token, "password": "Fresh2Horses"})),
        Case::at("POST", RESET, 400).json(json!({"token": "nope", "password": "Fresh2Horses"})),
        Case::at("POST", RESET, 413).too_large(),
        Case::at("GET", SUBSYSTEMS, 200).bearer(OPS_TOKEN),
        Case::at("GET", SUBSYSTEMS, 401),
        Case::at("GET", SUBSYSTEMS, 403).bearer(&f.access_token),
        Case::new("POST", RESTART, 200, restart("sweeper")).bearer(OPS_TOKEN),
        Case::new("POST", RESTART, 401, restart("sweeper")).bearer("wrong-token"),
        Case::new("POST", RESTART, 403, restart("sweeper")).bearer(&f.access_token),
        Case::new("POST", RESTART, 404, restart("nope")).bearer(OPS_TOKEN),
        Case::at("GET", "/health/live", 200),
        Case::at("GET", "/health/ready", 200),
        Case::at("GET", "/health/ready", 503).on(On::Broken),
        Case::at("GET", "/metrics", 200),
        Case::at("GET", "/api/v1/openapi.json", 200),
    ];
    // Heartbeats answer alike by POST and by PATCH.
    for method in ["POST", "PATCH"] {
        cases.extend([
            Case::new(method, HEARTBEAT, 200, beat(live)).bearer(live_token),
            Case::new(method, HEARTBEAT, 401, beat(live)),
            Case::new(method, HEARTBEAT, 404, beat(&unknown)).bearer(live_token),
            Case::new(method, HEARTBEAT, 410, beat(released)).bearer(released_token),
            Case::new(method, HEARTBEAT, 429, beat(&f.limited_session.0))
                .on(On::Limited)
                .bearer(&f.limited_session.1)
                .repeated(),
        ]);
    }
    cases
}

async fn register(app: &TestApp, email: &str) {
    let response = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": email, "password": PASSWORD,
                    "full_name": "Ada Lovelace", "organization_name": "Engines"}),
        )
        .await;
    assert_eq!(response.status(), 202);
}

/// Registers and verifies `email`.
async fn verified(app: &TestApp, email: &str) {
    register(app, email).await;
    let token = accounts::emailed_token(app, email, "verify").await;
    let response = app
        .get(&format!("/api/v1/auth/verify-email?token={token}"))
        .await;
    assert_eq!(response.status(), 200);
}

async fn log_in(app: &TestApp, email: &str) -> Value {
    let response = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn session_of(acquired: &Value) -> (String, String) {
    let (id, token) = ids(acquired);
    (id.to_owned(), token.to_owned())
}

async fn fixtures(
    plain: &TestApp,
    limited: &TestApp,
    broken: &TestApp,
    (no_database, proxy): (&TestApp, &CuttableProxy),
) -> Fixtures {
    let lic = plain.create_license(5).await;
    let live = plain.acquire_ok(&lic.key, "m1").await;
    let to_release = plain.acquire_ok(&lic.key, "m3").await;
    let released = plain.acquire_ok(&lic.key, "m4").await;
    assert_eq!(plain.release_of(&released).await.status(), 200);
    let full = plain.create_license(1).await;
    plain.acquire_ok(&full.key, "f1").await;
    let suspended = plain.create_license(1).await;
    plain
        .update_license(suspended.id, None, Some("suspended"))
        .await;

    verified(plain, "ada@example.com").await;
    let first = log_in(plain, "ada@example.com").await;
    let second = log_in(plain, "ada@example.com").await;
    register(plain, "grace@example.com").await;
    let verify_token = accounts::emailed_token(plain, "grace@example.com", "verify").await;
    verified(plain, "reset@example.com").await;
    let forgot = plain
        .post_json(
            "/api/v1/auth/forgot-password",
            &json!({"email": "reset@example.com"}),
        )
        .await;
    assert_eq!(forgot.status(), 202);
    let reset_token = accounts::emailed_token(plain, "reset@example.com", "password_reset").await;

    let limited_lic = limited.create_license(5).await;
    let limited_session = limited.acquire_ok(&limited_lic.key, "hb").await;

    let broken_lic = broken.create_license(5).await;
    assert!(
        broken
            .coordinator
            .set_subsystem_fault(Subsystem::Orgs, true)
            .await
    );
    let down = eventually(Duration::from_secs(20), || async {
        let orgs = broken.coordinator.subsystem(Subsystem::Orgs)?;
        (orgs.status == SubsystemStatus::Down).then_some(())
    })
    .await;
    assert!(down.is_some(), "the orgs subsystem never went down");

    let stranded_lic = no_database.create_license(5).await;
    let stranded_session = no_database.acquire_ok(&stranded_lic.key, "m1").await;
    proxy.cut();

    let token = |v: &Value, k: &str| v[k].as_str().unwrap().to_owned();
    Fixtures {
        license_key: lic.key,
        full_key: full.key,
        suspended_key: suspended.key,
        live: session_of(&live),
        to_release: session_of(&to_release),
        released: session_of(&released),
        access_token: token(&first, "access_token"),
        refresh_tokens: [
            token(&first, "refresh_token"),
            token(&second, "refresh_token"),
        ],
        verify_token,
        reset_token,
        limited_key: limited_lic.key,
        limited_session: session_of(&limited_session),
        broken_key: broken_lic.key,
        stranded_session: session_of(&stranded_session),
    }
}

/// The documented response of an (operation, status), `$ref` resolved.
fn documented_response<'a>(doc: &'a Value, (method, path): &Operation, status: u16) -> &'a Value {
    let response = &doc["paths"][path][method.to_lowercase()]["responses"][status.to_string()];
    match response["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            &doc["components"]["responses"][name]
        }
        None => response,
    }
}

/// What is wrong with `response` for a case, if anything: its status, its
/// content type against the document, and the shape of an error body.
async fn mismatch(doc: &Value, case: &Case, response: reqwest::Response) -> Option<String> {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap().trim().to_owned());
    let body = response.bytes().await.unwrap_or_default();
    if status != case.status {
        let text = String::from_utf8_lossy(&body);
        return Some(format!("answered {status}: {text:.300}"));
    }
    let documented = documented_response(doc, &case.operation(), status);
    let types: Vec<&str> = documented["content"]
        .as_object()
        .map(|c| c.keys().map(|k| k.split(';').next().unwrap()).collect())
        .unwrap_or_default();
    if !types.is_empty() && !types.contains(&content_type.as_deref().unwrap_or("")) {
        return Some(format!(
            "content type {content_type:?}, documented {types:?}"
        ));
    }
    if status >= 400 {
        let error: Value = serde_json::from_slice(&body).unwrap_or_default();
        if !error["error"].is_string() || !error["message"].is_string() {
            return Some(format!("not an error body: {error}"));
        }
    }
    None
}

/// The setting of a rate limit, e.g. `rate_limits.login_per_ip`.
fn limit_key(name: &str) -> &'static str {
    Box::leak(format!("rate_limits.{name}").into_boxed_str())
}

#[tokio::test]
async fn every_documented_response_code_is_produced_by_a_real_request() {
    let plain = spawn_app_with(AppOptions {
        ops_token: Some(OPS_TOKEN),
        ..AppOptions::default()
    })
    .await;
    let limited = spawn_app_with(AppOptions {
        overrides: [
            "acquire_per_machine",
            "heartbeat_per_session",
            "register_per_ip",
            "login_per_ip",
            "forgot_password_per_account",
        ]
        .into_iter()
        .map(|name| (limit_key(name), "1/min".into()))
        .collect(),
        ..AppOptions::default()
    })
    .await;
    let broken = spawn_app_with(AppOptions {
        fault_hooks: true,
        max_restarts: 1,
        ..AppOptions::default()
    })
    .await;
    let database_url = fresh_postgres_db().await;
    let proxy = CuttableProxy::start(host_port(&database_url)).await;
    let no_database = spawn_app_with(AppOptions {
        backend: Backend::Shared {
            database_url: via(&database_url, &proxy),
            redis_url: redis_url(),
        },
        ..AppOptions::default()
    })
    .await;
    let doc = document(&plain).await;
    let f = fixtures(&plain, &limited, &broken, (&no_database, &proxy)).await;

    let mut failures = Vec::new();
    let mut produced = BTreeSet::new();
    for case in cases(&f) {
        let app = match case.on {
            On::Plain => &plain,
            On::Limited => &limited,
            On::Broken => &broken,
            On::NoDatabase => &no_database,
        };
        let label = format!("{} {} -> {}", case.method, case.path, case.status);
        let outcome = if case.repeat {
            // At most a few requests: each limit here lets one through.
            let mut last = None;
            for _ in 0..3 {
                last = mismatch(&doc, &case, case.send(app).await).await;
                if last.is_none() {
                    break;
                }
            }
            last
        } else {
            mismatch(&doc, &case, case.send(app).await).await
        };
        match outcome {
            Some(why) => failures.push(format!("{label}: {why}")),
            None => {
                produced.insert((case.operation(), case.status));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "cases failed:\n{}",
        failures.join("\n")
    );

    let documented = documented_statuses(&doc);
    let untriggered: Vec<_> = documented.difference(&produced).collect();
    let undocumented: Vec<_> = produced.difference(&documented).collect();
    assert!(
        untriggered.is_empty(),
        "documented codes no case produces (add a row to `cases`, or drop the code): {untriggered:#?}"
    );
    assert!(
        undocumented.is_empty(),
        "cases for codes the document does not list: {undocumented:#?}"
    );
}

#[tokio::test]
async fn the_document_is_served_as_json_with_every_security_scheme() {
    let app = spawn_app_with(AppOptions::default()).await;
    let response = app.get("/api/v1/openapi.json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes: BTreeMap<String, Value> =
        serde_json::from_value(doc["components"]["securitySchemes"].clone()).unwrap();
    assert_eq!(
        schemes.keys().collect::<Vec<_>>(),
        ["bearer", "ops_token", "seat_token"]
    );
    assert!(schemes.values().all(|s| s["scheme"] == "bearer"));
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"], json!(["error", "message"]));
    // The seat routes say which token they take.
    let heartbeat = &doc["paths"]["/api/v1/licenses/sessions/{id}/heartbeat"]["post"];
    assert_eq!(heartbeat["security"], json!([{"seat_token": []}]));
}
