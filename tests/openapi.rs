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
//! row per documented status in [`cases`] (or the function of its route
//! module, such as [`org_cases`]). A store-backed route's 503 is one
//! [`stranded`] row.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use seatwarden_actors::{Subsystem, SubsystemStatus};
use support::accounts::{self, Session};
use support::mail::{delivered_to, query_param};
use support::people;
use support::proxy::{CuttableProxy, host_port, via};
use support::services::{fresh_postgres_db, redis_url};
use support::{AppOptions, Backend, TestApp, TestLicense, eventually, ids, spawn_app_with};

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

/// A path template with its `{param}`s filled in with `values`, in order.
fn fill_in<'a>(template: &str, values: impl IntoIterator<Item = &'a str>) -> String {
    let mut values = values.into_iter();
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closed parameter") + start;
        out.push_str(values.next().expect("a value for each parameter"));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A path template with every `{param}` filled in with `value`.
fn fill(template: &str, value: &str) -> String {
    fill_in(template, std::iter::repeat(value))
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
            let allow = response
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_owned());
            let routed = !unrouted(response).await;
            let listed = documented.contains(&(method.to_owned(), template.clone()));
            assert_eq!(
                routed, listed,
                "{method} {template} answered {status}: routed {routed}, documented {listed}"
            );
            // A 405 says which methods the path does take (RFC 9110).
            if status == 405 {
                let mut allowed: Vec<&str> = allow
                    .as_deref()
                    .unwrap_or_else(|| panic!("{method} {template}: a 405 without Allow"))
                    .split(", ")
                    .collect();
                allowed.sort_unstable();
                let mut expected: Vec<&str> = documented
                    .iter()
                    .filter(|(_, p)| p == template)
                    .map(|(m, _)| m.as_str())
                    .collect();
                expected.sort_unstable();
                assert_eq!(allowed, expected, "Allow of {template}");
            }
        }
    }
}

/// Which server a case runs against.
#[derive(Clone, Copy, Debug)]
enum On {
    /// Shipped defaults, with an `ops.token`.
    Plain,
    /// Every rate limit a route applies at one a minute, and no machine
    /// deactivations a day.
    Limited,
    /// The orgs subsystem down (fault hook), so that what needs it answers 503.
    Broken,
    /// On PostgreSQL and Redis, with PostgreSQL cut off; the client IP is
    /// `X-Forwarded-For`'s.
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
    /// `X-Forwarded-For`, which the server without its database reads.
    client_ip: Option<String>,
    /// Send again until the status comes (bounded): for limits that let
    /// the first request through.
    repeat: bool,
    /// Further headers, e.g. `Stripe-Signature`.
    headers: Vec<(&'static str, String)>,
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
            client_ip: None,
            repeat: false,
            headers: Vec::new(),
        }
    }

    /// The documented path with no parameters.
    fn at(method: &'static str, template: &'static str, status: u16) -> Self {
        Self::new(method, template, status, template.to_owned())
    }

    /// The documented path with its parameters, in order.
    fn of(method: &'static str, template: &'static str, status: u16, values: &[&str]) -> Self {
        Self::new(
            method,
            template,
            status,
            fill_in(template, values.iter().copied()),
        )
    }

    /// A query string, e.g. `limit=0`.
    fn query(mut self, query: &str) -> Self {
        self.path = format!("{}?{query}", self.path);
        self
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

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A body of `n` bytes (JSON, but for its size of no interest).
    fn padded(mut self, n: usize) -> Self {
        self.body = Some(json!({"padding": "x".repeat(n)}).to_string().into_bytes());
        self
    }

    /// A JSON body over the 16 KiB limit.
    fn too_large(mut self) -> Self {
        let body = json!({"padding": "x".repeat(17 * 1024)});
        self.body = Some(body.to_string().into_bytes());
        self
    }

    /// From an address no other test uses: limits per client IP count in
    /// the Redis that all tests share.
    fn own_client_ip(mut self) -> Self {
        let b = uuid::Uuid::new_v4().into_bytes();
        self.client_ip = Some(format!(
            "2001:db8::{:x}:{:x}:{:x}",
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
            u16::from_be_bytes([b[4], b[5]]),
        ));
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
        if let Some(ip) = &self.client_ip {
            request = request.header("x-forwarded-for", ip);
        }
        for (name, value) in &self.headers {
            request = request.header(*name, value);
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
    /// Organization A on the plain server, its people and what they made.
    org: OrgFixtures,
    /// A platform administrator's access token.
    root: String,
    /// On the rate-limited server: the limited license's id and a machine
    /// activated on it (which used up the key's activations).
    limited_license: String,
    limited_machine: String,
    /// A platform administrator's access token on the server whose
    /// database is cut off: every store-backed route answers it 503.
    stranded_root: String,
    /// Borrowing: a license that allows 8 hours, whose machine `b0` holds a
    /// seat, and a full one that allows it too.
    borrow_key: String,
    /// A license that requires a signed-in user (`requires_user`).
    user_key: String,
    borrow_full_key: String,
    /// Tickets in the full license's line: one to poll, one to leave; a
    /// well-formed ticket of the suspended license, and of the broken
    /// server's license.
    ticket: String,
    ticket_to_leave: String,
    suspended_ticket: String,
    broken_ticket: String,
    /// A live session a platform administrator revokes.
    to_revoke: String,
}

/// Organization A: one person of each standing, its API keys and
/// invitations, and a license with machines and a seat.
struct OrgFixtures {
    id: String,
    /// The only owner, with a verified address.
    owner: Session,
    member: Session,
    guest: Session,
    /// The user id of a member the table removes.
    leaver: String,
    /// The owner of another organization, whose address is unverified.
    outsider: Session,
    /// An API key with the `member` role, and the id of another to revoke.
    member_key: String,
    key_to_revoke: String,
    /// The id of a pending invitation, and of the guest's accepted one.
    pending_invitation: String,
    accepted_invitation: String,
    /// Someone invited who has not joined yet, and their invitation's token.
    joiner: Session,
    joiner_token: String,
    /// The token of an invitation to an address nobody has.
    foreign_token: String,
    /// The token of the member's second invitation: they joined with the
    /// first.
    second_token: String,
    /// A license of the organization with machine `m-active` activated,
    /// a machine to deactivate and a live seat to force-release.
    license: TestLicense,
    machine: String,
    seat: String,
    /// The key of a license limited to one machine, which is activated.
    capped_key: String,
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

    // Every auth route reads or writes the store: with the database cut
    // off each answers 503 `store_unavailable` (tokens and addresses only
    // need to be well-formed to get that far).
    let no_database = |case: Case| case.on(On::NoDatabase);
    let account = |email: &str| {
        json!({"email": email, "password": PASSWORD,
               "full_name": "Some One", "organization_name": "Someone's"})
    };
    let stranded_auth = [
        no_database(Case::at("POST", REGISTER, 503).json(account("cut@example.com"))),
        no_database(Case::new(
            "GET",
            VERIFY,
            503,
            format!("{VERIFY}?token={}", f.verify_token),
        )),
        no_database(Case::at("POST", LOGIN, 503).json(login("cut@example.com", PASSWORD))),
        no_database(
            Case::at("POST", REFRESH, 503).json(json!({"refresh_token": f.refresh_tokens[1]})),
        ),
        no_database(
            Case::at("POST", LOGOUT, 503).json(json!({"refresh_token": f.refresh_tokens[1]})),
        ),
        no_database(Case::at("GET", ME, 503).bearer(&f.stranded_root)),
        no_database(Case::at("POST", FORGOT, 503).json(json!({"email": "cut@example.com"}))),
        no_database(
            Case::at("POST", RESET, 503)
                .json(json!({"token": f.verify_token, "password": "Fresh2Horses"})),
        ),
    ];
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
    cases.extend(stranded_auth);
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
    cases.extend(borrow_and_queue_cases(f));
    cases.extend(org_cases(f));
    cases.extend(org_license_cases(f));
    cases.extend(machine_cases(f));
    cases.extend(admin_cases(f));
    cases.extend(plan_cases(f));
    cases.extend(webhook_cases(f));
    cases.extend(billing_cases(f));
    cases
}

/// `src/http/licenses.rs`: borrowing and the seat queue.
fn borrow_and_queue_cases(f: &Fixtures) -> Vec<Case> {
    const ACQUIRE: &str = "/api/v1/licenses/acquire";
    const BORROW: &str = "/api/v1/licenses/borrow";
    const QUEUE: &str = "/api/v1/licenses/queue/{ticket}";
    const REVOKE: &str = "/api/v1/admin/sessions/{id}";
    let borrow = |key: &str, machine: &str, hours: u32| json!({"license_key": key, "hardware_id": machine, "hours": hours});
    let queue = |ticket: &str| fill(QUEUE, ticket);
    let revoke = |id: &str| fill(REVOKE, id);
    let unknown = uuid::Uuid::new_v4().to_string();
    vec![
        Case::at("POST", ACQUIRE, 202)
            .json(json!({"license_key": f.full_key, "hardware_id": "q3", "wait": true})),
        Case::at("POST", ACQUIRE, 401)
            .json(json!({"license_key": f.user_key, "hardware_id": "u1"})),
        Case::at("POST", BORROW, 401).json(borrow(&f.user_key, "u1", 1)),
        Case::at("POST", BORROW, 201).json(borrow(&f.borrow_key, "b1", 8)),
        Case::at("POST", BORROW, 200).json(borrow(&f.borrow_key, "b0", 2)),
        Case::at("POST", BORROW, 400).json(borrow(&f.borrow_key, "b2", 9)),
        Case::at("POST", BORROW, 403).json(borrow(&f.license_key, "b1", 1)),
        Case::at("POST", BORROW, 404).json(borrow("NO-SUCH-KEY", "b1", 1)),
        Case::at("POST", BORROW, 409).json(borrow(&f.borrow_full_key, "b1", 1)),
        Case::at("POST", BORROW, 413).too_large(),
        Case::at("POST", BORROW, 429)
            .on(On::Limited)
            .json(borrow(&f.limited_key, "b1", 1))
            .repeated(),
        Case::at("POST", BORROW, 503)
            .on(On::Broken)
            .json(borrow(&f.broken_key, "b1", 1)),
        Case::new("GET", QUEUE, 200, queue(&f.ticket)),
        Case::new("GET", QUEUE, 403, queue(&f.suspended_ticket)),
        Case::new("GET", QUEUE, 404, queue("not-a-ticket")),
        Case::new("GET", QUEUE, 503, queue(&f.broken_ticket)).on(On::Broken),
        Case::new("DELETE", QUEUE, 200, queue(&f.ticket_to_leave)),
        Case::new("DELETE", QUEUE, 404, queue("not-a-ticket")),
        Case::new("DELETE", QUEUE, 503, queue(&f.broken_ticket)).on(On::Broken),
        Case::new("DELETE", REVOKE, 200, revoke(&f.to_revoke)).bearer(&f.root),
        Case::new("DELETE", REVOKE, 401, revoke(&f.to_revoke)),
        Case::new("DELETE", REVOKE, 403, revoke(&f.to_revoke)).bearer(&f.org.owner.access_token),
        Case::new("DELETE", REVOKE, 404, revoke(&unknown)).bearer(&f.root),
        stranded(f, "DELETE", REVOKE),
    ]
}

/// The answer of a store-backed route when its database is cut off: a
/// platform administrator may reach every such route, and the first store
/// read fails. Parameters are any UUID.
fn stranded(f: &Fixtures, method: &'static str, template: &'static str) -> Case {
    let unknown = uuid::Uuid::new_v4().to_string();
    Case::new(method, template, 503, fill(template, &unknown))
        .on(On::NoDatabase)
        .bearer(&f.stranded_root)
}

/// `src/http/orgs.rs`.
fn org_cases(f: &Fixtures) -> Vec<Case> {
    const ORGS: &str = "/api/v1/orgs";
    const ORG: &str = "/api/v1/orgs/{id}";
    const MEMBERS: &str = "/api/v1/orgs/{id}/members";
    const MEMBER: &str = "/api/v1/orgs/{id}/members/{user_id}";
    const INVITATIONS: &str = "/api/v1/orgs/{id}/invitations";
    const INVITATION: &str = "/api/v1/orgs/{id}/invitations/{invitation_id}";
    const ACCEPT: &str = "/api/v1/invitations/accept";
    const API_KEYS: &str = "/api/v1/orgs/{id}/api-keys";
    const API_KEY: &str = "/api/v1/orgs/{id}/api-keys/{key_id}";
    const AUDIT: &str = "/api/v1/orgs/{id}/audit-logs";

    let o = &f.org;
    let org = o.id.as_str();
    let (owner, member, guest) = (
        &o.owner.access_token,
        &o.member.access_token,
        &o.guest.access_token,
    );
    let outsider = &o.outsider.access_token;
    let (owner_id, member_id, guest_id) = (
        o.owner.user_id.to_string(),
        o.member.user_id.to_string(),
        o.guest.user_id.to_string(),
    );
    let outsider_org = o.outsider.org_id.to_string();
    let unknown = uuid::Uuid::new_v4().to_string();
    let name = json!({"name": "Engines Ltd"});
    let role = |role: &str| json!({"role": role});
    let invite = |email: &str| json!({"email": email, "role": "member"});
    let key = |role: &str| json!({"name": "deploy", "role": role});
    let token = |token: &str| json!({"token": token});
    // Well-formed, so that it reaches the store.
    let unknown_token = format!("swe_{}", "A".repeat(43));

    vec![
        // An API key lists its own organization.
        Case::at("GET", ORGS, 200).bearer(&o.member_key),
        Case::at("GET", ORGS, 401),
        stranded(f, "GET", ORGS),
        Case::of("GET", ORG, 200, &[org]).bearer(guest),
        Case::of("GET", ORG, 401, &[org]),
        Case::of("GET", ORG, 404, &[org]).bearer(outsider),
        stranded(f, "GET", ORG),
        Case::of("PATCH", ORG, 200, &[org])
            .bearer(owner)
            .json(name.clone()),
        Case::of("PATCH", ORG, 400, &[org])
            .bearer(owner)
            .json(json!({"name": " "})),
        Case::of("PATCH", ORG, 401, &[org]).json(name.clone()),
        Case::of("PATCH", ORG, 403, &[org])
            .bearer(member)
            .json(name.clone()),
        Case::of("PATCH", ORG, 404, &[org])
            .bearer(outsider)
            .json(name.clone()),
        Case::of("PATCH", ORG, 413, &[org])
            .bearer(owner)
            .too_large(),
        stranded(f, "PATCH", ORG).json(name),
        Case::of("GET", MEMBERS, 200, &[org]).bearer(member),
        Case::of("GET", MEMBERS, 400, &[org])
            .bearer(owner)
            .query("limit=0"),
        Case::of("GET", MEMBERS, 401, &[org]),
        Case::of("GET", MEMBERS, 403, &[org]).bearer(guest),
        Case::of("GET", MEMBERS, 404, &[org]).bearer(outsider),
        stranded(f, "GET", MEMBERS),
        Case::of("PATCH", MEMBER, 200, &[org, &member_id])
            .bearer(owner)
            .json(role("member")),
        Case::of("PATCH", MEMBER, 400, &[org, &member_id])
            .bearer(owner)
            .json(role("boss")),
        Case::of("PATCH", MEMBER, 401, &[org, &member_id]).json(role("guest")),
        Case::of("PATCH", MEMBER, 403, &[org, &guest_id])
            .bearer(member)
            .json(role("member")),
        Case::of("PATCH", MEMBER, 404, &[org, &unknown])
            .bearer(owner)
            .json(role("member")),
        // The last owner may not step down.
        Case::of("PATCH", MEMBER, 409, &[org, &owner_id])
            .bearer(owner)
            .json(role("admin")),
        Case::of("PATCH", MEMBER, 413, &[org, &member_id])
            .bearer(owner)
            .too_large(),
        stranded(f, "PATCH", MEMBER).json(role("member")),
        Case::of("DELETE", MEMBER, 204, &[org, &o.leaver]).bearer(owner),
        Case::of("DELETE", MEMBER, 401, &[org, &o.leaver]),
        Case::of("DELETE", MEMBER, 403, &[org, &guest_id]).bearer(member),
        Case::of("DELETE", MEMBER, 404, &[org, &unknown]).bearer(owner),
        Case::of("DELETE", MEMBER, 409, &[org, &owner_id]).bearer(owner),
        stranded(f, "DELETE", MEMBER),
        Case::of("POST", INVITATIONS, 201, &[org])
            .bearer(owner)
            .json(invite(&accounts::unique_email("invitee"))),
        Case::of("POST", INVITATIONS, 400, &[org])
            .bearer(owner)
            .json(invite("not an address")),
        Case::of("POST", INVITATIONS, 401, &[org]).json(invite("x@example.com")),
        // In their own organization: their address is unverified.
        Case::of("POST", INVITATIONS, 403, &[&outsider_org])
            .bearer(outsider)
            .json(invite("x@example.com")),
        Case::of("POST", INVITATIONS, 404, &[org])
            .bearer(outsider)
            .json(invite("x@example.com")),
        Case::of("POST", INVITATIONS, 409, &[org])
            .bearer(owner)
            .json(invite(&o.member.email)),
        Case::of("POST", INVITATIONS, 413, &[org])
            .bearer(owner)
            .too_large(),
        stranded(f, "POST", INVITATIONS).json(invite("x@example.com")),
        Case::of("GET", INVITATIONS, 200, &[org]).bearer(owner),
        Case::of("GET", INVITATIONS, 400, &[org])
            .bearer(owner)
            .query("cursor=garbage"),
        Case::of("GET", INVITATIONS, 401, &[org]),
        Case::of("GET", INVITATIONS, 403, &[org]).bearer(member),
        Case::of("GET", INVITATIONS, 404, &[org]).bearer(outsider),
        stranded(f, "GET", INVITATIONS),
        Case::of("DELETE", INVITATION, 200, &[org, &o.pending_invitation]).bearer(owner),
        Case::of("DELETE", INVITATION, 401, &[org, &o.pending_invitation]),
        Case::of("DELETE", INVITATION, 403, &[org, &o.pending_invitation]).bearer(member),
        Case::of("DELETE", INVITATION, 404, &[org, &unknown]).bearer(owner),
        Case::of("DELETE", INVITATION, 409, &[org, &o.accepted_invitation]).bearer(owner),
        stranded(f, "DELETE", INVITATION),
        Case::at("POST", ACCEPT, 200)
            .bearer(&o.joiner.access_token)
            .json(token(&o.joiner_token)),
        Case::at("POST", ACCEPT, 400)
            .bearer(owner)
            .json(token("nope")),
        Case::at("POST", ACCEPT, 401).json(token("nope")),
        Case::at("POST", ACCEPT, 403)
            .bearer(member)
            .json(token(&o.foreign_token)),
        Case::at("POST", ACCEPT, 409)
            .bearer(member)
            .json(token(&o.second_token)),
        Case::at("POST", ACCEPT, 413).bearer(owner).too_large(),
        Case::at("POST", ACCEPT, 429)
            .on(On::Limited)
            .json(token("nope"))
            .repeated(),
        stranded(f, "POST", ACCEPT)
            .own_client_ip()
            .json(token(&unknown_token)),
        Case::of("GET", API_KEYS, 200, &[org]).bearer(owner),
        Case::of("GET", API_KEYS, 400, &[org])
            .bearer(owner)
            .query("limit=many"),
        Case::of("GET", API_KEYS, 401, &[org]),
        Case::of("GET", API_KEYS, 403, &[org]).bearer(&o.member_key),
        Case::of("GET", API_KEYS, 404, &[org]).bearer(outsider),
        stranded(f, "GET", API_KEYS),
        Case::of("POST", API_KEYS, 201, &[org])
            .bearer(owner)
            .json(key("guest")),
        // A key is a member or a guest, never more.
        Case::of("POST", API_KEYS, 400, &[org])
            .bearer(owner)
            .json(key("admin")),
        Case::of("POST", API_KEYS, 401, &[org]).json(key("guest")),
        Case::of("POST", API_KEYS, 403, &[org])
            .bearer(member)
            .json(key("guest")),
        Case::of("POST", API_KEYS, 404, &[org])
            .bearer(outsider)
            .json(key("guest")),
        Case::of("POST", API_KEYS, 413, &[org])
            .bearer(owner)
            .too_large(),
        stranded(f, "POST", API_KEYS).json(key("guest")),
        Case::of("DELETE", API_KEY, 200, &[org, &o.key_to_revoke]).bearer(owner),
        Case::of("DELETE", API_KEY, 401, &[org, &o.key_to_revoke]),
        Case::of("DELETE", API_KEY, 403, &[org, &o.key_to_revoke]).bearer(member),
        Case::of("DELETE", API_KEY, 404, &[org, &unknown]).bearer(owner),
        stranded(f, "DELETE", API_KEY),
        Case::of("GET", AUDIT, 200, &[org]).bearer(owner),
        Case::of("GET", AUDIT, 400, &[org])
            .bearer(owner)
            .query("action=NOT_AN_EVENT"),
        Case::of("GET", AUDIT, 401, &[org]),
        Case::of("GET", AUDIT, 403, &[org]).bearer(member),
        Case::of("GET", AUDIT, 404, &[org]).bearer(outsider),
        stranded(f, "GET", AUDIT),
    ]
}

/// `src/http/org_licenses.rs`.
fn org_license_cases(f: &Fixtures) -> Vec<Case> {
    const LICENSES: &str = "/api/v1/orgs/{id}/licenses";
    const LICENSE: &str = "/api/v1/licenses/{id}";
    const SESSIONS: &str = "/api/v1/licenses/{id}/sessions";
    const SESSION: &str = "/api/v1/licenses/{id}/sessions/{session_id}";

    let o = &f.org;
    let (org, license) = (o.id.as_str(), o.license.id.to_string());
    let (owner, member, guest, outsider) = (
        &o.owner.access_token,
        &o.member.access_token,
        &o.guest.access_token,
        &o.outsider.access_token,
    );
    let unknown = uuid::Uuid::new_v4().to_string();

    vec![
        Case::of("GET", LICENSES, 200, &[org]).bearer(member),
        Case::of("GET", LICENSES, 400, &[org])
            .bearer(owner)
            .query("status=lapsed"),
        Case::of("GET", LICENSES, 401, &[org]),
        Case::of("GET", LICENSES, 403, &[org]).bearer(guest),
        Case::of("GET", LICENSES, 404, &[org]).bearer(outsider),
        stranded(f, "GET", LICENSES),
        Case::of("GET", LICENSE, 200, &[&license]).bearer(&o.member_key),
        Case::of("GET", LICENSE, 401, &[&license]),
        Case::of("GET", LICENSE, 403, &[&license]).bearer(guest),
        Case::of("GET", LICENSE, 404, &[&license]).bearer(outsider),
        stranded(f, "GET", LICENSE),
        Case::of("GET", SESSIONS, 200, &[&license]).bearer(owner),
        Case::of("GET", SESSIONS, 400, &[&license])
            .bearer(owner)
            .query("hardware_id="),
        Case::of("GET", SESSIONS, 401, &[&license]),
        Case::of("GET", SESSIONS, 403, &[&license]).bearer(guest),
        Case::of("GET", SESSIONS, 404, &[&unknown]).bearer(owner),
        stranded(f, "GET", SESSIONS),
        Case::of("DELETE", SESSION, 200, &[&license, &o.seat]).bearer(owner),
        Case::of("DELETE", SESSION, 401, &[&license, &o.seat]),
        Case::of("DELETE", SESSION, 403, &[&license, &o.seat]).bearer(member),
        Case::of("DELETE", SESSION, 404, &[&license, &unknown]).bearer(owner),
        stranded(f, "DELETE", SESSION),
    ]
}

/// `src/http/machines.rs`.
fn machine_cases(f: &Fixtures) -> Vec<Case> {
    const ACTIVATE: &str = "/api/v1/licenses/activate";
    const MACHINES: &str = "/api/v1/licenses/{id}/machines";
    const MACHINE: &str = "/api/v1/licenses/{id}/machines/{machine_id}";
    const VALIDATE: &str = "/api/v1/licenses/validate";
    const FILE: &str = "/api/v1/licenses/{id}/file";

    let o = &f.org;
    let (license, key) = (o.license.id.to_string(), o.license.key.as_str());
    let (owner, member, outsider) = (
        &o.owner.access_token,
        &o.member.access_token,
        &o.outsider.access_token,
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    let machine = |key: &str, machine: &str| json!({"license_key": key, "hardware_id": machine});
    let key_only = |key: &str| json!({"license_key": key});
    // Never seen by the server whose database is cut off: looked up there.
    let unseen = "CODITECT-NEVER-SEEN-HERE";

    vec![
        Case::at("POST", ACTIVATE, 201).json(machine(key, "m-new")),
        Case::at("POST", ACTIVATE, 200).json(machine(key, "m-active")),
        Case::at("POST", ACTIVATE, 400).json(key_only(key)),
        Case::at("POST", ACTIVATE, 403).json(machine(&f.suspended_key, "m1")),
        Case::at("POST", ACTIVATE, 404).json(machine("NO-SUCH-KEY", "m1")),
        Case::at("POST", ACTIVATE, 409).json(machine(&o.capped_key, "c2")),
        Case::at("POST", ACTIVATE, 413).too_large(),
        Case::at("POST", ACTIVATE, 429)
            .on(On::Limited)
            .json(machine(&f.limited_key, "a2"))
            .repeated(),
        Case::at("POST", ACTIVATE, 503)
            .on(On::NoDatabase)
            .json(machine(unseen, "m1")),
        Case::of("GET", MACHINES, 200, &[&license]).bearer(owner),
        Case::of("GET", MACHINES, 401, &[&license]),
        Case::of("GET", MACHINES, 403, &[&license]).bearer(member),
        Case::of("GET", MACHINES, 404, &[&license]).bearer(outsider),
        stranded(f, "GET", MACHINES),
        Case::of("DELETE", MACHINE, 200, &[&license, &o.machine]).bearer(owner),
        Case::of("DELETE", MACHINE, 401, &[&license, &o.machine]),
        Case::of("DELETE", MACHINE, 403, &[&license, &o.machine]).bearer(member),
        Case::of("DELETE", MACHINE, 404, &[&license, &unknown]).bearer(owner),
        // The license key itself, held to a daily limit of 0 there.
        Case::of(
            "DELETE",
            MACHINE,
            429,
            &[&f.limited_license, &f.limited_machine],
        )
        .on(On::Limited)
        .bearer(&f.limited_key),
        stranded(f, "DELETE", MACHINE),
        Case::at("POST", VALIDATE, 200).json(machine(key, "m-active")),
        Case::at("POST", VALIDATE, 400).json(json!({"hardware_id": "m1"})),
        Case::at("POST", VALIDATE, 413).too_large(),
        Case::at("POST", VALIDATE, 429)
            .on(On::Limited)
            .json(key_only(&f.limited_key))
            .repeated(),
        Case::at("POST", VALIDATE, 503)
            .on(On::NoDatabase)
            .json(key_only(unseen)),
        // The license key is a credential for its own file.
        Case::of("GET", FILE, 200, &[&license]).bearer(key),
        Case::of("GET", FILE, 401, &[&license]),
        Case::of("GET", FILE, 403, &[&license]).bearer(member),
        Case::of("GET", FILE, 404, &[&license]).bearer(outsider),
        stranded(f, "GET", FILE),
    ]
}

/// `src/http/admin.rs`.
fn admin_cases(f: &Fixtures) -> Vec<Case> {
    const USERS: &str = "/api/v1/admin/users";
    const ORGS: &str = "/api/v1/admin/orgs";
    const LICENSES: &str = "/api/v1/admin/licenses";
    const LICENSE: &str = "/api/v1/admin/licenses/{id}";
    const ANALYTICS: &str = "/api/v1/admin/analytics";
    const EMAILS: &str = "/api/v1/admin/emails";

    let (root, owner) = (&f.root, &f.org.owner.access_token);
    let license = f.org.license.id.to_string();
    let unknown = uuid::Uuid::new_v4().to_string();
    let issue = |org: &str, seats: u32| json!({"org_id": org, "seats": seats});

    let mut cases = Vec::new();
    // The listings answer alike but for what their query refuses.
    for (template, refused) in [
        (USERS, "limit=0"),
        (ORGS, "status=active"),
        (LICENSES, "status=lapsed"),
        (EMAILS, "kind=postcard"),
    ] {
        cases.extend([
            Case::at("GET", template, 200).bearer(root),
            Case::at("GET", template, 400).bearer(root).query(refused),
            Case::at("GET", template, 401),
            Case::at("GET", template, 403).bearer(owner),
            stranded(f, "GET", template),
        ]);
    }
    cases.extend([
        Case::at("POST", LICENSES, 201)
            .bearer(root)
            .json(issue(&f.org.id, 2)),
        Case::at("POST", LICENSES, 400)
            .bearer(root)
            .json(issue(&f.org.id, 0)),
        Case::at("POST", LICENSES, 401).json(issue(&f.org.id, 2)),
        Case::at("POST", LICENSES, 403)
            .bearer(owner)
            .json(issue(&f.org.id, 2)),
        Case::at("POST", LICENSES, 404)
            .bearer(root)
            .json(issue(&unknown, 2)),
        Case::at("POST", LICENSES, 413).bearer(root).too_large(),
        stranded(f, "POST", LICENSES).json(issue(&unknown, 2)),
        Case::of("PATCH", LICENSE, 200, &[&license])
            .bearer(root)
            .json(json!({"requires_user": false})),
        Case::of("PATCH", LICENSE, 400, &[&license])
            .bearer(root)
            .json(json!({})),
        Case::of("PATCH", LICENSE, 401, &[&license]).json(json!({"seats": 6})),
        Case::of("PATCH", LICENSE, 403, &[&license])
            .bearer(owner)
            .json(json!({"seats": 6})),
        Case::of("PATCH", LICENSE, 404, &[&unknown])
            .bearer(root)
            .json(json!({"seats": 6})),
        Case::of("PATCH", LICENSE, 413, &[&license])
            .bearer(root)
            .too_large(),
        stranded(f, "PATCH", LICENSE).json(json!({"seats": 6})),
        Case::at("GET", ANALYTICS, 200).bearer(root),
        Case::at("GET", ANALYTICS, 401),
        Case::at("GET", ANALYTICS, 403).bearer(owner),
        stranded(f, "GET", ANALYTICS),
    ]);
    cases
}

/// `src/http/plans.rs`. The rows run in order: the plan created first is
/// the one found to exist, and then retired.
fn plan_cases(f: &Fixtures) -> Vec<Case> {
    const PLANS: &str = "/api/v1/plans";
    const PLAN: &str = "/api/v1/plans/{id}";
    const ADMIN_PLANS: &str = "/api/v1/admin/plans";
    const ADMIN_PLAN: &str = "/api/v1/admin/plans/{id}";
    const RETIRE: &str = "/api/v1/admin/plans/{id}/retire";

    let (root, owner) = (&f.root, &f.org.owner.access_token);
    let plan = json!({
        "id": "openapi", "name": "OpenAPI", "monthly_price_cents": 1900,
        "seats": 2, "stripe_price_monthly": "price_openapi_monthly",
    });
    let seats = json!({"seats": 12});

    vec![
        Case::at("GET", PLANS, 200),
        stranded(f, "GET", PLANS),
        Case::of("GET", PLAN, 200, &["pro"]),
        Case::of("GET", PLAN, 404, &["platinum"]),
        stranded(f, "GET", PLAN),
        Case::at("GET", ADMIN_PLANS, 200).bearer(root),
        Case::at("GET", ADMIN_PLANS, 401),
        Case::at("GET", ADMIN_PLANS, 403).bearer(owner),
        stranded(f, "GET", ADMIN_PLANS),
        Case::at("POST", ADMIN_PLANS, 201)
            .bearer(root)
            .json(plan.clone()),
        Case::at("POST", ADMIN_PLANS, 400).bearer(root).json(
            json!({"id": "openapi-2", "name": "No seats", "monthly_price_cents": 1900,
                         "seats": 0, "stripe_price_monthly": "price_x"}),
        ),
        Case::at("POST", ADMIN_PLANS, 401).json(plan.clone()),
        Case::at("POST", ADMIN_PLANS, 403)
            .bearer(owner)
            .json(plan.clone()),
        Case::at("POST", ADMIN_PLANS, 409)
            .bearer(root)
            .json(plan.clone()),
        Case::at("POST", ADMIN_PLANS, 413).bearer(root).too_large(),
        stranded(f, "POST", ADMIN_PLANS).json(plan),
        Case::of("PATCH", ADMIN_PLAN, 200, &["openapi"])
            .bearer(root)
            .json(seats.clone()),
        Case::of("PATCH", ADMIN_PLAN, 400, &["openapi"])
            .bearer(root)
            .json(json!({})),
        Case::of("PATCH", ADMIN_PLAN, 401, &["openapi"]).json(seats.clone()),
        Case::of("PATCH", ADMIN_PLAN, 403, &["openapi"])
            .bearer(owner)
            .json(seats.clone()),
        Case::of("PATCH", ADMIN_PLAN, 404, &["platinum"])
            .bearer(root)
            .json(seats.clone()),
        Case::of("PATCH", ADMIN_PLAN, 413, &["openapi"])
            .bearer(root)
            .too_large(),
        stranded(f, "PATCH", ADMIN_PLAN).json(seats),
        Case::of("POST", RETIRE, 200, &["openapi"]).bearer(root),
        Case::of("POST", RETIRE, 401, &["openapi"]),
        Case::of("POST", RETIRE, 403, &["openapi"]).bearer(owner),
        Case::of("POST", RETIRE, 404, &["platinum"]).bearer(root),
        stranded(f, "POST", RETIRE),
    ]
}

/// Organization A buys the Starter plan: a checkout through the API that
/// the fake Stripe completes, so that A has a customer and a subscription.
async fn subscribed(app: &TestApp, stripe: &support::stripe::FakeStripe, f: &Fixtures) {
    let response = app
        .client
        .post(app.url("/api/v1/checkout/session"))
        .bearer_auth(&f.org.owner.access_token)
        .json(&checkout_body(&f.org.id))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let session: Value = response.json().await.unwrap();
    stripe
        .complete_checkout(session["id"].as_str().unwrap())
        .await;
    let org: seatwarden_actors::domain::OrgId = f.org.id.parse().unwrap();
    eventually(Duration::from_secs(15), || async {
        app.store.subscription_for_org(org).await.unwrap()
    })
    .await
    .expect("organization A is subscribed");
}

fn checkout_body(org: &str) -> Value {
    json!({"org_id": org, "plan_id": "starter",
           "success_url": "http://localhost:8080/done", "cancel_url": "http://localhost:8080/"})
}

/// `src/http/billing.rs`.
fn billing_cases(f: &Fixtures) -> Vec<Case> {
    const CHECKOUT: &str = "/api/v1/checkout/session";
    const PORTAL: &str = "/api/v1/billing/portal";
    const SUBSCRIPTION: &str = "/api/v1/orgs/{id}/subscription";

    let owner = &f.org.owner.access_token;
    let member = &f.org.member.access_token;
    let guest = &f.org.guest.access_token;
    let org = f.org.id.as_str();
    let unknown = uuid::Uuid::new_v4().to_string();
    let body = checkout_body(org);
    let mut foreign = body.clone();
    foreign["success_url"] = json!("https://elsewhere.example/");
    let portal = json!({"org_id": org, "return_url": "http://localhost:8080/account"});
    let portal_of = |org: &str| json!({"org_id": org, "return_url": "http://localhost:8080/"});

    vec![
        Case::at("POST", CHECKOUT, 200)
            .bearer(owner)
            .json(body.clone()),
        Case::at("POST", CHECKOUT, 400).bearer(owner).json(foreign),
        Case::at("POST", CHECKOUT, 401).json(body.clone()),
        Case::at("POST", CHECKOUT, 403)
            .bearer(member)
            .json(body.clone()),
        Case::at("POST", CHECKOUT, 404)
            .bearer(owner)
            .json(checkout_body(&unknown)),
        Case::at("POST", CHECKOUT, 413).bearer(owner).too_large(),
        stranded(f, "POST", CHECKOUT).json(checkout_body(&unknown)),
        Case::at("POST", PORTAL, 200)
            .bearer(owner)
            .json(portal.clone()),
        Case::at("POST", PORTAL, 400)
            .bearer(owner)
            .json(json!({"org_id": org})),
        Case::at("POST", PORTAL, 401).json(portal.clone()),
        Case::at("POST", PORTAL, 403).bearer(member).json(portal),
        Case::at("POST", PORTAL, 404)
            .bearer(owner)
            .json(portal_of(&unknown)),
        Case::at("POST", PORTAL, 413).bearer(owner).too_large(),
        stranded(f, "POST", PORTAL).json(portal_of(&unknown)),
        Case::of("GET", SUBSCRIPTION, 200, &[org]).bearer(member),
        Case::of("GET", SUBSCRIPTION, 401, &[org]),
        Case::of("GET", SUBSCRIPTION, 403, &[org]).bearer(guest),
        Case::of("GET", SUBSCRIPTION, 404, &[&unknown]).bearer(owner),
        stranded(f, "GET", SUBSCRIPTION),
    ]
}

/// The plain server's `stripe.webhook_secret`; the other servers have none.
const WEBHOOK_SECRET: &str = support::stripe::TEST_WEBHOOK_SECRET;

/// `src/http/webhooks.rs`.
fn webhook_cases(f: &Fixtures) -> Vec<Case> {
    const WEBHOOK: &str = "/api/v1/webhooks/stripe";
    const EVENTS: &str = "/api/v1/admin/webhook-events";
    const REPLAY: &str = "/api/v1/admin/webhook-events/{id}/replay";

    let (root, owner) = (&f.root, &f.org.owner.access_token);
    let event = json!({
        "id": "evt_openapi", "object": "event", "type": "customer.created",
        "api_version": support::stripe::API_VERSION, "created": support::stripe::now(),
        "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": {"id": "cus_openapi", "object": "customer",
                            "created": support::stripe::now(), "livemode": false,
                            "metadata": {}}},
    });
    let signed = |case: Case| {
        let body = event.to_string();
        let signature =
            support::stripe::signature_header(&body, WEBHOOK_SECRET, support::stripe::now());
        case.json(event.clone())
            .header("stripe-signature", signature)
    };

    vec![
        signed(Case::at("POST", WEBHOOK, 200)),
        Case::at("POST", WEBHOOK, 400)
            .json(event.clone())
            .header("stripe-signature", "t=1,v1=00".into()),
        Case::at("POST", WEBHOOK, 413).padded(300 * 1024),
        signed(Case::at("POST", WEBHOOK, 503)).on(On::Limited),
        Case::at("GET", EVENTS, 200).bearer(root),
        Case::at("GET", EVENTS, 400).bearer(root).query("limit=0"),
        Case::at("GET", EVENTS, 401),
        Case::at("GET", EVENTS, 403).bearer(owner),
        stranded(f, "GET", EVENTS),
        Case::of("POST", REPLAY, 200, &["evt_openapi"]).bearer(root),
        Case::of("POST", REPLAY, 401, &["evt_openapi"]),
        Case::of("POST", REPLAY, 403, &["evt_openapi"]).bearer(owner),
        Case::of("POST", REPLAY, 404, &["evt_unknown"]).bearer(root),
        stranded(f, "POST", REPLAY),
    ]
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

/// Activates `machine` with `key`, expecting a new activation; its id.
async fn activate(app: &TestApp, key: &str, machine: &str) -> String {
    let response = app
        .post_json(
            "/api/v1/licenses/activate",
            &json!({"license_key": key, "hardware_id": machine}),
        )
        .await;
    assert_eq!(response.status(), 201, "activate {machine}");
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// Invites `email` into the owner's organization, without waiting for the
/// mail; the invitation.
async fn invite(app: &TestApp, owner: &Session, email: &str, role: &str) -> Value {
    app.send_as(
        Method::POST,
        &format!("/api/v1/orgs/{}/invitations", owner.org_id),
        &owner.access_token,
        Some(&json!({"email": email, "role": role})),
        201,
    )
    .await
}

/// The tokens of the invitations mailed to `to`, once there are `n`.
async fn invitation_tokens(app: &TestApp, to: &str, n: usize) -> Vec<String> {
    let prefix = format!("{}/api/v1/invitations/accept", app.settings.http.public_url);
    let tokens = eventually(Duration::from_secs(15), || async {
        let tokens: BTreeSet<String> = delivered_to(app, to)
            .iter()
            .filter_map(|m| m.link(&prefix))
            .filter_map(|link| query_param(&link, "token"))
            .collect();
        (tokens.len() >= n).then_some(tokens)
    })
    .await;
    tokens
        .unwrap_or_else(|| panic!("fewer than {n} invitations mailed to {to}"))
        .into_iter()
        .collect()
}

async fn accept(app: &TestApp, person: &Session, token: &str) {
    app.send_as(
        Method::POST,
        "/api/v1/invitations/accept",
        &person.access_token,
        Some(&json!({"token": token})),
        200,
    )
    .await;
}

async fn org_fixtures(app: &TestApp) -> OrgFixtures {
    let owner = accounts::register_and_login(app, &accounts::unique_email("owner")).await;
    let org = owner.org_id;

    // The member joins with the first of two invitations.
    let member = accounts::register_and_login(app, &accounts::unique_email("member")).await;
    invite(app, &owner, &member.email, "member").await;
    invite(app, &owner, &member.email, "member").await;
    let tokens = invitation_tokens(app, &member.email, 2).await;
    accept(app, &member, &tokens[0]).await;

    let guest = accounts::register_unverified(app, &accounts::unique_email("guest")).await;
    let (accepted, token) = app.invite(&owner, org, &guest.email, "guest").await;
    accept(app, &guest, &token).await;
    let leaver = app.member(&owner, org, "leaver", "member").await;
    let outsider = accounts::register_unverified(app, &accounts::unique_email("outsider")).await;
    let joiner = accounts::register_unverified(app, &accounts::unique_email("joiner")).await;
    let (_, joiner_token) = app.invite(&owner, org, &joiner.email, "member").await;
    let nobody = accounts::unique_email("nobody");
    let (_, foreign_token) = app.invite(&owner, org, &nobody, "member").await;
    let pending = invite(app, &owner, &accounts::unique_email("pending"), "guest").await;
    let (_, member_key) = app.api_key(&owner, org, "member").await;
    let (key_to_revoke, _) = app.api_key(&owner, org, "guest").await;

    let license = app.create_license_for(org, 5).await;
    activate(app, &license.key, "m-active").await;
    let machine = activate(app, &license.key, "m-gone").await;
    let seat = app.acquire_ok(&license.key, "m-seat").await;
    let capped = app.create_license_policy(5, Some(1), false).await;
    activate(app, &capped.key, "c1").await;

    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    OrgFixtures {
        id: org.to_string(),
        owner,
        member,
        guest,
        leaver: leaver.user_id.to_string(),
        outsider,
        member_key,
        key_to_revoke,
        pending_invitation: id(&pending),
        accepted_invitation: id(&accepted),
        joiner,
        joiner_token,
        foreign_token,
        second_token: tokens[1].clone(),
        license,
        machine,
        seat: session_of(&seat).0,
        capped_key: capped.key,
    }
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
    let mut tickets = Vec::new();
    for machine in ["q1", "q2"] {
        tickets.push(queue_ticket(plain, &full.key, machine).await);
    }
    // A ticket of a license suspended since.
    let suspended = plain.create_license(1).await;
    plain.acquire_ok(&suspended.key, "s1").await;
    let suspended_ticket = queue_ticket(plain, &suspended.key, "s2").await;
    plain
        .update_license(suspended.id, None, Some("suspended"))
        .await;
    let borrowing = plain.create_license(5).await;
    plain.set_max_borrow_hours(borrowing.id, 8).await;
    plain.acquire_ok(&borrowing.key, "b0").await;
    let borrow_full = plain.create_license(1).await;
    plain.set_max_borrow_hours(borrow_full.id, 8).await;
    plain.acquire_ok(&borrow_full.key, "b0").await;
    let to_revoke = plain.acquire_ok(&lic.key, "m-revoke").await;
    let user_license = plain.create_license_policy(2, None, true).await;
    plain.set_max_borrow_hours(user_license.id, 8).await;

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
    let limited_machine = activate(limited, &limited_lic.key, "a1").await;

    let org = org_fixtures(plain).await;
    let root = people::platform_admin(plain).await.token;

    let broken_lic = broken.create_license(5).await;
    let broken_full = broken.create_license(1).await;
    broken.acquire_ok(&broken_full.key, "f1").await;
    let broken_ticket = queue_ticket(broken, &broken_full.key, "q1").await;
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
    let stranded_root = people::platform_admin(no_database).await.token;
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
        org,
        root,
        limited_license: limited_lic.id.to_string(),
        limited_machine,
        stranded_root,
        borrow_key: borrowing.key,
        user_key: user_license.key,
        borrow_full_key: borrow_full.key,
        ticket: tickets[0].clone(),
        ticket_to_leave: tickets[1].clone(),
        suspended_ticket,
        broken_ticket,
        to_revoke: session_of(&to_revoke).0,
    }
}

/// A machine's ticket in the line of a full license.
async fn queue_ticket(app: &TestApp, key: &str, machine: &str) -> String {
    let body = json!({"license_key": key, "hardware_id": machine, "wait": true});
    let queued = app.post_json("/api/v1/licenses/acquire", &body).await;
    assert_eq!(queued.status(), 202);
    let body: Value = queued.json().await.unwrap();
    body["queue_ticket"].as_str().unwrap().to_owned()
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
    let stripe = support::stripe::FakeStripe::start().await;
    let plain = spawn_app_with(AppOptions {
        ops_token: Some(OPS_TOKEN),
        overrides: vec![
            ("stripe.webhook_secret", WEBHOOK_SECRET.into()),
            ("stripe.secret_key", support::stripe::TEST_SECRET_KEY.into()),
            ("stripe.api_base", stripe.api_base().into()),
            ("webhooks.poll_interval_ms", 100.into()),
            // The fixtures' tickets wait unpolled while the cases run.
            ("queue.poll_secs", 600.into()),
        ],
        ..AppOptions::default()
    })
    .await;
    stripe.add_webhook_url(&plain.url("/api/v1/webhooks/stripe"));
    let limited = spawn_app_with(AppOptions {
        overrides: [
            "acquire_per_machine",
            "heartbeat_per_session",
            "register_per_ip",
            "login_per_ip",
            "forgot_password_per_account",
            "activate_per_key",
            "validate_per_key",
            "accept_invitation_per_ip",
        ]
        .into_iter()
        .map(|name| (limit_key(name), "1/min".into()))
        // Deactivations (by anyone but a platform administrator) never.
        .chain([("licenses.deactivations_per_day", 0.into())])
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
        client_ip: "x_forwarded_for",
        ..AppOptions::default()
    })
    .await;
    let doc = document(&plain).await;
    let f = fixtures(&plain, &limited, &broken, (&no_database, &proxy)).await;
    subscribed(&plain, &stripe, &f).await;

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
