//! People for tests, made the way real ones are: register, verify the
//! address with the emailed token, log in, all over HTTP.
//!
//! Emailed tokens are read from the delivered mail (see `support::mail`),
//! which is where the mailer finds them too.

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::Connection;

use seatwarden_actors::domain::{OrgId, UserId};

use super::TestApp;

/// The password every test person has.
pub const PASSWORD: &str = "Correct1Horse";

/// A logged-in person and the organization they registered with.
#[derive(Clone, Debug)]
pub struct Session {
    pub email: String,
    pub access_token: String,
    pub user_id: UserId,
    /// The organization created at registration, which they own.
    pub org_id: OrgId,
}

/// A fresh address with `tag` in it, unique across tests and runs.
pub fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// The `data` of the newest outbox message of `kind` to `recipient`.
pub async fn outbox_data(app: &TestApp, recipient: &str, kind: &str) -> Option<Value> {
    const SQL: &str = "SELECT CAST(data AS TEXT) FROM outbox \
         WHERE recipient = $1 AND kind = $2 ORDER BY created_at DESC LIMIT 1";
    let url = app.settings.database_url();
    let url = url.expose_secret();
    let text: Option<String> = if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url)
            .await
            .expect("open the test database");
        sqlx::query_scalar(SQL)
            .bind(recipient)
            .bind(kind)
            .fetch_optional(&mut conn)
            .await
            .expect("read the outbox")
    } else {
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .expect("connect to the test database");
        sqlx::query_scalar(SQL)
            .bind(recipient)
            .bind(kind)
            .fetch_optional(&mut conn)
            .await
            .expect("read the outbox")
    };
    text.map(|t| serde_json::from_str(&t).expect("outbox data is JSON"))
}

/// How many messages of `kind` were enqueued for `recipient`, read from
/// the email log (the outbox port's own listing).
pub async fn outbox_count(app: &TestApp, recipient: &str, kind: &str) -> usize {
    let filter = seatwarden_actors::ports::MailFilter {
        status: None,
        kind: Some(kind.parse().expect("a mail kind")),
        recipient: Some(recipient.to_owned()),
        after: None,
        limit: 1000,
    };
    app.outbox
        .email_log(&filter)
        .await
        .expect("read the email log")
        .entries
        .len()
}

/// The token of the newest message of `kind` to `recipient`, read from
/// the delivered mail (the outbox forgets tokens once a message is sent).
pub async fn emailed_token(app: &TestApp, recipient: &str, kind: &str) -> String {
    let path = match kind {
        "verify" => "/api/v1/auth/verify-email",
        "password_reset" => "/api/v1/auth/reset-password",
        "invitation" => "/api/v1/invitations/accept",
        other => panic!("{other} mail carries no link"),
    };
    super::mail::mailed_token(app, recipient, path).await
}

/// Registers `email` (password [`PASSWORD`]) with an organization of its
/// own, without verifying the address.
pub async fn register(app: &TestApp, email: &str) {
    let r = app
        .post_json(
            "/api/v1/auth/register",
            &json!({
                "email": email,
                "password": PASSWORD,
                "full_name": format!("Test {email}"),
                "organization_name": format!("Org of {email}"),
            }),
        )
        .await;
    assert_eq!(r.status(), 202, "register {email}");
}

/// Verifies `email` with the token the registration mailed.
pub async fn verify(app: &TestApp, email: &str) {
    let token = emailed_token(app, email, "verify").await;
    let r = app
        .get(&format!("/api/v1/auth/verify-email?token={token}"))
        .await;
    assert_eq!(r.status(), 200, "verify {email}");
}

/// Logs `email` in and says who they are.
pub async fn login(app: &TestApp, email: &str) -> Session {
    let r = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 200, "login {email}");
    let body: Value = r.json().await.unwrap();
    let access_token = body["access_token"].as_str().unwrap().to_owned();
    let me: Value = app
        .client
        .get(app.url("/api/v1/auth/me"))
        .bearer_auth(&access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user_id = me["id"].as_str().unwrap().parse().unwrap();
    // The organization they registered with is the one they own.
    let org_id = me["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["role"] == "owner")
        .map(|o| o["org_id"].as_str().unwrap().parse().unwrap())
        .unwrap_or_default();
    Session {
        email: email.to_owned(),
        access_token,
        user_id,
        org_id,
    }
}

/// Registers, verifies and logs in `email`.
pub async fn register_and_login(app: &TestApp, email: &str) -> Session {
    register(app, email).await;
    verify(app, email).await;
    login(app, email).await
}

/// Registers and logs in `email` without verifying the address.
pub async fn register_unverified(app: &TestApp, email: &str) -> Session {
    register(app, email).await;
    login(app, email).await
}

impl TestApp {
    /// A request with `token` as its bearer credential.
    pub fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    /// `GET path` as `token`, expecting `status`; the body.
    pub async fn get_as(&self, path: &str, token: &str, status: u16) -> Value {
        let r = self
            .authed(reqwest::Method::GET, path, token)
            .send()
            .await
            .unwrap();
        let got = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(got, status, "GET {path}: {body}");
        body
    }

    /// `method path` with a JSON body as `token`, expecting `status`; the
    /// body (`null` when there is none).
    pub async fn send_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
        status: u16,
    ) -> Value {
        let mut request = self.authed(method.clone(), path, token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let r = request.send().await.unwrap();
        let got = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(got, status, "{method} {path}: {body}");
        body
    }

    /// Invites `email` into `org` as `role` (as `inviter`), and returns
    /// the invitation and its emailed token.
    pub async fn invite(
        &self,
        inviter: &Session,
        org: OrgId,
        email: &str,
        role: &str,
    ) -> (Value, String) {
        let invitation = self
            .send_as(
                reqwest::Method::POST,
                &format!("/api/v1/orgs/{org}/invitations"),
                &inviter.access_token,
                Some(&json!({"email": email, "role": role})),
                201,
            )
            .await;
        let token = emailed_token(self, email, "invitation").await;
        (invitation, token)
    }

    /// A new verified person who joined `org` as `role` through an
    /// invitation from `inviter`.
    pub async fn member(&self, inviter: &Session, org: OrgId, tag: &str, role: &str) -> Session {
        let email = unique_email(tag);
        let person = register_and_login(self, &email).await;
        let (_, token) = self.invite(inviter, org, &email, role).await;
        self.send_as(
            reqwest::Method::POST,
            "/api/v1/invitations/accept",
            &person.access_token,
            Some(&json!({"token": token})),
            200,
        )
        .await;
        person
    }

    /// An API key of `org` with `role`, created by `owner`: (its id, the key).
    pub async fn api_key(&self, owner: &Session, org: OrgId, role: &str) -> (String, String) {
        let body = self
            .send_as(
                reqwest::Method::POST,
                &format!("/api/v1/orgs/{org}/api-keys"),
                &owner.access_token,
                Some(&json!({"name": "ci", "role": role})),
                201,
            )
            .await;
        (
            body["id"].as_str().unwrap().to_owned(),
            body["key"].as_str().unwrap().to_owned(),
        )
    }
}
