//! Tenant isolation: a caller never sees or changes another organization's
//! data, and another organization's resource answers 404, never 403.
//!
//! One table lists every organization-scoped route. The walk runs each row
//! with organization B's owner token and with B's API key against
//! organization A's ids, expects a 404 every time, and then checks that
//! A's data is exactly as it was. A route added later gets a row here.

mod support;

use reqwest::Method;
use serde_json::Value;

use support::accounts::{Session, register_and_login, unique_email};
use support::{TestApp, ids, spawn_app};

/// Where a row points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// At organization A itself or at A's resources by their own paths.
    Foreign,
    /// At B's own organization, naming A's resources (a member, an
    /// invitation, a key): unknown there. Only people manage, so B's API
    /// key gets a 403 on these before any id is looked at, which says
    /// nothing about A; the owner must get a 404.
    OwnOrgForeignId,
}

/// One route: method, path template, body. Placeholders: `{org}` A's
/// organization, `{own}` B's, `{owner}` A's owner, `{member}` a member of
/// A, `{invitation}` A's pending invitation, `{key}` A's API key,
/// `{license}` A's license, `{session}` its live session, `{machine}` a
/// machine activated on it.
struct Route {
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    target: Target,
}

const fn route(method: &'static str, path: &'static str, body: Option<&'static str>) -> Route {
    Route {
        method,
        path,
        body,
        target: Target::Foreign,
    }
}

const fn own(method: &'static str, path: &'static str, body: Option<&'static str>) -> Route {
    Route {
        method,
        path,
        body,
        target: Target::OwnOrgForeignId,
    }
}

/// Every organization-scoped route. Add new ones here.
const ROUTES: &[Route] = &[
    route("GET", "/api/v1/orgs/{org}", None),
    route(
        "PATCH",
        "/api/v1/orgs/{org}",
        Some(r#"{"name": "Taken over"}"#),
    ),
    route("GET", "/api/v1/orgs/{org}/members", None),
    route("GET", "/api/v1/orgs/{org}/members?limit=1", None),
    route(
        "PATCH",
        "/api/v1/orgs/{org}/members/{member}",
        Some(r#"{"role": "guest"}"#),
    ),
    route(
        "PATCH",
        "/api/v1/orgs/{org}/members/{owner}",
        Some(r#"{"role": "admin"}"#),
    ),
    route("DELETE", "/api/v1/orgs/{org}/members/{member}", None),
    route(
        "POST",
        "/api/v1/orgs/{org}/invitations",
        Some(r#"{"email": "intruder@example.com", "role": "owner"}"#),
    ),
    route("GET", "/api/v1/orgs/{org}/invitations", None),
    route(
        "DELETE",
        "/api/v1/orgs/{org}/invitations/{invitation}",
        None,
    ),
    route("GET", "/api/v1/orgs/{org}/api-keys", None),
    route(
        "POST",
        "/api/v1/orgs/{org}/api-keys",
        Some(r#"{"name": "backdoor", "role": "member"}"#),
    ),
    route("DELETE", "/api/v1/orgs/{org}/api-keys/{key}", None),
    route("GET", "/api/v1/orgs/{org}/licenses", None),
    route("GET", "/api/v1/orgs/{org}/licenses?status=active", None),
    route("GET", "/api/v1/orgs/{org}/audit-logs", None),
    route(
        "GET",
        "/api/v1/orgs/{org}/audit-logs?action=LICENSE_ACQUIRED",
        None,
    ),
    route("GET", "/api/v1/licenses/{license}", None),
    route("GET", "/api/v1/licenses/{license}/sessions", None),
    route(
        "GET",
        "/api/v1/licenses/{license}/sessions?status=live",
        None,
    ),
    route(
        "DELETE",
        "/api/v1/licenses/{license}/sessions/{session}",
        None,
    ),
    own(
        "PATCH",
        "/api/v1/orgs/{own}/members/{owner}",
        Some(r#"{"role": "guest"}"#),
    ),
    own("DELETE", "/api/v1/orgs/{own}/members/{member}", None),
    own(
        "DELETE",
        "/api/v1/orgs/{own}/invitations/{invitation}",
        None,
    ),
    own("DELETE", "/api/v1/orgs/{own}/api-keys/{key}", None),
    route("GET", "/api/v1/licenses/{license}/machines", None),
    route(
        "DELETE",
        "/api/v1/licenses/{license}/machines/{machine}",
        None,
    ),
    route("GET", "/api/v1/licenses/{license}/file", None),
];

/// Organization A's ids, which B's credentials are walked against.
struct Victim {
    owner: Session,
    member: Session,
    invitation: String,
    key_id: String,
    key: String,
    license: String,
    acquired: Value,
    machine: String,
}

async fn victim(app: &TestApp) -> Victim {
    let owner = register_and_login(app, &unique_email("a-owner")).await;
    let member = app.member(&owner, owner.org_id, "a-member", "member").await;
    let (invitation, _) = app
        .invite(&owner, owner.org_id, &unique_email("a-invitee"), "member")
        .await;
    let (key_id, key) = app.api_key(&owner, owner.org_id, "member").await;
    let license = app.create_license_for(owner.org_id, 2).await;
    let acquired = app.acquire_ok(&license.key, "a-laptop").await;
    let activated = app
        .post_json(
            "/api/v1/licenses/activate",
            &serde_json::json!({"license_key": license.key, "hardware_id": "a-laptop"}),
        )
        .await;
    assert_eq!(activated.status(), 201);
    let machine: Value = activated.json().await.unwrap();
    Victim {
        machine: machine["id"].as_str().unwrap().to_owned(),
        owner,
        member,
        invitation: invitation["id"].as_str().unwrap().to_owned(),
        key_id,
        key,
        license: license.id.to_string(),
        acquired,
    }
}

fn fill(template: &str, a: &Victim, b: &Session) -> String {
    template
        .replace("{org}", &a.owner.org_id.to_string())
        .replace("{own}", &b.org_id.to_string())
        .replace("{owner}", &a.owner.user_id.to_string())
        .replace("{member}", &a.member.user_id.to_string())
        .replace("{invitation}", &a.invitation)
        .replace("{key}", &a.key_id)
        .replace("{license}", &a.license)
        .replace("{session}", ids(&a.acquired).0)
        .replace("{machine}", &a.machine)
}

/// Everything A's owner can read of A, to compare before and after.
async fn snapshot(app: &TestApp, a: &Victim) -> Vec<Value> {
    let org = a.owner.org_id;
    let mut views = Vec::new();
    for path in [
        format!("/api/v1/orgs/{org}"),
        format!("/api/v1/orgs/{org}/members"),
        format!("/api/v1/orgs/{org}/invitations"),
        format!("/api/v1/orgs/{org}/api-keys"),
        format!("/api/v1/orgs/{org}/licenses"),
        format!("/api/v1/orgs/{org}/audit-logs?limit=200"),
        format!("/api/v1/licenses/{}", a.license),
        format!("/api/v1/licenses/{}/sessions", a.license),
        format!("/api/v1/licenses/{}/machines", a.license),
    ] {
        views.push(app.get_as(&path, &a.owner.access_token, 200).await);
    }
    views
}

/// Runs every row of `routes` as `token` and returns what answered
/// otherwise than `expected`.
async fn walk(
    app: &TestApp,
    a: &Victim,
    b: &Session,
    token: Option<&str>,
    routes: &[&Route],
    expected: u16,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for r in routes {
        let path = fill(r.path, a, b);
        let method: Method = r.method.parse().unwrap();
        let mut request = app.client.request(method, app.url(&path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = r.body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let only_error = body
            .as_object()
            .is_some_and(|o| o.keys().all(|k| k == "error" || k == "message"));
        if status != expected || !only_error {
            wrong.push(format!("{} {path} -> {status} {body}", r.method));
        }
    }
    wrong
}

#[tokio::test]
async fn another_orgs_owner_and_api_key_get_404_on_every_org_scoped_route_and_change_nothing() {
    let app = spawn_app().await;
    let a = victim(&app).await;
    let b = register_and_login(&app, &unique_email("b-owner")).await;
    let (_, b_key) = app.api_key(&b, b.org_id, "member").await;
    let before = snapshot(&app, &a).await;

    let foreign: Vec<&Route> = ROUTES
        .iter()
        .filter(|r| r.target == Target::Foreign)
        .collect();
    let own_org: Vec<&Route> = ROUTES
        .iter()
        .filter(|r| r.target == Target::OwnOrgForeignId)
        .collect();
    let all: Vec<&Route> = ROUTES.iter().collect();

    let wrong = walk(&app, &a, &b, Some(&b.access_token), &all, 404).await;
    assert!(
        wrong.is_empty(),
        "B's owner saw or touched A:\n{}",
        wrong.join("\n")
    );
    let wrong = walk(&app, &a, &b, Some(&b_key), &foreign, 404).await;
    assert!(
        wrong.is_empty(),
        "B's API key saw or touched A:\n{}",
        wrong.join("\n")
    );
    let wrong = walk(&app, &a, &b, Some(&b_key), &own_org, 403).await;
    assert!(
        wrong.is_empty(),
        "B's API key managed:\n{}",
        wrong.join("\n")
    );

    let after = snapshot(&app, &a).await;
    assert_eq!(before, after, "A's data changed");
    // A's key, member and session still work.
    app.get_as(&format!("/api/v1/orgs/{}", a.owner.org_id), &a.key, 200)
        .await;
    app.get_as(
        &format!("/api/v1/orgs/{}/licenses", a.owner.org_id),
        &a.member.access_token,
        200,
    )
    .await;
    assert_eq!(app.heartbeat_of(&a.acquired).await.status(), 200);
    // A's own API key is a member, not a manager, of A's machines.
    let machines = format!("/api/v1/licenses/{}/machines", a.license);
    app.get_as(&machines, &a.key, 403).await;
    // And B's org gained nothing either.
    let b_members = app
        .get_as(
            &format!("/api/v1/orgs/{}/members", b.org_id),
            &b.access_token,
            200,
        )
        .await;
    assert_eq!(b_members["items"].as_array().unwrap().len(), 1);
    let b_keys = app
        .get_as(
            &format!("/api/v1/orgs/{}/api-keys", b.org_id),
            &b.access_token,
            200,
        )
        .await;
    assert_eq!(b_keys["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn every_org_scoped_route_needs_a_credential() {
    let app = spawn_app().await;
    let a = victim(&app).await;
    let b = register_and_login(&app, &unique_email("b-owner")).await;
    let before = snapshot(&app, &a).await;
    let all: Vec<&Route> = ROUTES.iter().collect();
    let wrong = walk(&app, &a, &b, None, &all, 401).await;
    assert!(
        wrong.is_empty(),
        "answered without a credential:\n{}",
        wrong.join("\n")
    );
    let wrong = walk(
        &app,
        &a,
        &b,
        Some("swk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        &all,
        401,
    )
    .await;
    assert!(
        wrong.is_empty(),
        "answered an unknown key:\n{}",
        wrong.join("\n")
    );
    assert_eq!(before, snapshot(&app, &a).await);
}
