//! People for HTTP tests: registered users (owners of their own
//! organization), platform administrators, licenses in a given
//! organization, and the audit log's actor column.

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use seatwarden::cli::{Command, LicenseCommand, run_admin};
use seatwarden_actors::domain::OrgId;

use super::{TestApp, TestLicense};

pub const PASSWORD: &str = "Correct1Horse";

pub fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Someone logged in: their access token, id and (for registered users)
/// the organization they own.
#[derive(Clone, Debug)]
pub struct Person {
    pub token: String,
    pub id: String,
    pub org: Option<OrgId>,
}

async fn login(app: &TestApp, email: &str) -> Value {
    let response = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), 200, "login of {email}");
    response.json().await.unwrap()
}

async fn me(app: &TestApp, token: &str) -> Value {
    app.client
        .get(app.url("/api/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Registers a user (the owner of a new organization) and logs them in.
pub async fn owner(app: &TestApp, tag: &str) -> Person {
    let email = unique_email(tag);
    let response = app
        .post_json(
            "/api/v1/auth/register",
            &json!({
                "email": email,
                "password": PASSWORD,
                "full_name": format!("{tag} Owner"),
                "organization_name": format!("{tag} Org"),
            }),
        )
        .await;
    assert_eq!(response.status(), 202, "register {email}");
    let token = login(app, &email).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = me(app, &token).await;
    Person {
        id: me["id"].as_str().unwrap().to_owned(),
        org: Some(
            me["organizations"][0]["org_id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        ),
        token,
    }
}

/// A platform administrator, created as `seatwarden admin create` does.
pub async fn platform_admin(app: &TestApp) -> Person {
    let email = unique_email("root");
    seatwarden::cli::create_platform_admin(&*app.store, &email, None, PASSWORD.to_owned())
        .await
        .expect("create platform admin");
    let token = login(app, &email).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = me(app, &token).await;
    Person {
        id: me["id"].as_str().unwrap().to_owned(),
        org: None,
        token,
    }
}

/// A license of `org`, through the CLI's code path.
pub async fn license_of(
    app: &TestApp,
    org: OrgId,
    max_machines: Option<u32>,
    requires_user: bool,
) -> TestLicense {
    let license = run_admin(
        app.store.as_ref(),
        &app.settings.licenses.key_prefix,
        Command::License(LicenseCommand::Create {
            org,
            seats: 5,
            tier: "pro".into(),
            features: vec!["export".into()],
            expires_at: None,
            offline_grace_secs: None,
            offline_overdraft: 0,
            max_machines,
            requires_user,
            max_borrow_hours: 0,
        }),
    )
    .await
    .expect("create license");
    TestLicense {
        org,
        id: license["id"].as_str().unwrap().parse().unwrap(),
        key: license["key"].as_str().unwrap().to_owned(),
    }
}

/// `(event, actor_id)` of every audit entry about the license, oldest first.
pub async fn audit_actors(app: &TestApp, license: &str) -> Vec<(String, Option<String>)> {
    let url = app.settings.database_url();
    let url = url.expose_secret();
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT event, actor_id FROM audit_log WHERE license_id = $1 ORDER BY id",
        )
        .bind(license)
        .fetch_all(&pool)
        .await
        .unwrap()
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let rows = sqlx::query_as::<_, (String, Option<uuid::Uuid>)>(
            "SELECT event, actor_id FROM audit_log WHERE license_id = $1::uuid ORDER BY id",
        )
        .bind(license)
        .fetch_all(&pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(e, a)| (e, a.map(|a| a.to_string())))
            .collect()
    }
}

/// The error code of a JSON error response, checking the shape.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("a JSON error body");
    assert!(body["message"].is_string(), "{body}");
    body["error"].as_str().expect("an error code").to_owned()
}
