//! No secret reaches a log line: the real binary runs at `debug` (every
//! crate's debug output, ours, hyper's and sqlx's included) through the
//! flows that handle secrets, including failed ones, and then its whole
//! output is searched for every secret it was given or gave out.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;

const PASSWORD: &str = "Secret1Password";
const WRONG_PASSWORD: &str = "Wrong2Password";
const NEW_PASSWORD: &str = "Fresh3Password";
const OPS_TOKEN: &str = "ops-token-that-must-never-be-logged";
const ACCESS_SECRET: &str = "access-token-secret-that-must-never-be-logged";

fn write_test_key(dir: &Path) {
    use rsa::pkcs8::EncodePrivateKey;
    let k = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let pem = k.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    std::fs::write(dir.join("signing-key.pem"), pem.as_bytes()).unwrap();
}

fn command(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_seatwarden"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SEATWARDEN__DATA_DIR", dir)
        .env("SEATWARDEN__HTTP__LISTEN", "127.0.0.1:0")
        .env("SEATWARDEN__SIGNING__RSA_BITS", "2048")
        .env("SEATWARDEN__OPS__TOKEN", OPS_TOKEN)
        .env("SEATWARDEN__AUTH__ACCESS_TOKEN_SECRET", ACCESS_SECRET)
        .env("SEATWARDEN__LOG__FORMAT", "json")
        .env("RUST_LOG", "debug");
    c
}

/// Starts `serve`, logging to `dir/server.log`, and returns it with its
/// base URL once it listens.
// The child is handed to the caller, which kills and waits for it.
#[allow(clippy::zombie_processes)]
fn serve(dir: &Path) -> (Child, String) {
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut child = command(dir)
        .arg("serve")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("run seatwarden serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        let addr = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["fields"]["message"] == "seatwarden listening")
            .and_then(|l| l["fields"]["addr"].as_str().map(str::to_owned));
        if let Some(addr) = addr {
            return (child, format!("http://{addr}"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server never listened:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The token of the link to `path` in the mail to `to`, from the `.eml`
/// files the embedded default writes.
async fn mail_token(dir: &Path, to: &str, path: &str) -> String {
    let prefix = format!("http://127.0.0.1:8080{path}");
    support::eventually(Duration::from_secs(15), || async {
        support::mail::messages_in(&dir.join("outbox"))
            .into_iter()
            .filter(|m| m.to.contains(to))
            .find_map(|m| m.link(&prefix))
            .and_then(|link| support::mail::query_param(&link, "token"))
    })
    .await
    .unwrap_or_else(|| panic!("no mail to {to} linking {path}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_token_key_or_secret_appears_in_the_servers_logs() {
    let dir = tempfile::tempdir().unwrap();
    write_test_key(dir.path());

    // A license key from the bootstrap commands.
    let out = command(dir.path())
        .args(["org", "create", "--name", "Logs"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let org: Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = command(dir.path())
        .args([
            "license",
            "create",
            "--org",
            org["id"].as_str().unwrap(),
            "--seats",
            "1",
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let license: Value = serde_json::from_slice(&out.stdout).unwrap();
    let license_key = license["key"].as_str().unwrap().to_owned();

    let (mut server, base) = serve(dir.path());
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    let mut secrets: Vec<String> = vec![
        PASSWORD.into(),
        WRONG_PASSWORD.into(),
        NEW_PASSWORD.into(),
        OPS_TOKEN.into(),
        ACCESS_SECRET.into(),
        license_key.clone(),
    ];

    let email = "logs@example.com";
    let r = post(
        "/api/v1/auth/register",
        json!({"email": email, "password": PASSWORD, "full_name": "L", "organization_name": "O"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let verify = mail_token(dir.path(), email, "/api/v1/auth/verify-email").await;
    secrets.push(verify.clone());
    let r = http
        .get(format!("{base}/api/v1/auth/verify-email?token={verify}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = post(
        "/api/v1/auth/login",
        json!({"email": email, "password": WRONG_PASSWORD}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    let tokens: Value = post(
        "/api/v1/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    secrets.push(access.clone());
    secrets.push(refresh.clone());
    let rotated: Value = post("/api/v1/auth/refresh", json!({"refresh_token": refresh}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    secrets.push(rotated["refresh_token"].as_str().unwrap().to_owned());
    // Reusing the old one revokes the family: a logged warning, no token.
    let r = post("/api/v1/auth/refresh", json!({"refresh_token": refresh}))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = post("/api/v1/auth/forgot-password", json!({"email": email}))
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let reset = mail_token(dir.path(), email, "/api/v1/auth/reset-password").await;
    secrets.push(reset.clone());
    let r = post(
        "/api/v1/auth/reset-password",
        json!({"token": reset, "password": NEW_PASSWORD}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);

    let acquired: Value = post(
        "/api/v1/licenses/acquire",
        json!({"license_key": license_key, "hardware_id": "m-1"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let seat_token = acquired["token"].as_str().unwrap().to_owned();
    secrets.push(seat_token.clone());
    let session = acquired["session_id"].as_str().unwrap();
    let r = http
        .post(format!(
            "{base}/api/v1/licenses/sessions/{session}/heartbeat"
        ))
        .bearer_auth(&seat_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Credentials in the wrong places: refused, and not echoed into logs.
    for token in [&access, &license_key, &OPS_TOKEN.to_owned()] {
        let r = http
            .post(format!(
                "{base}/api/v1/licenses/sessions/{session}/heartbeat"
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = http
        .get(format!("{base}/api/v1/ops/subsystems"))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{base}/api/v1/ops/subsystems"))
        .bearer_auth(&seat_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let _ = server.kill();
    let _ = server.wait();
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(
        log.lines().count() > 20,
        "debug logging was on and said something"
    );
    for secret in &secrets {
        if let Some(line) = log.lines().find(|l| l.contains(secret.as_str())) {
            panic!("a secret reached the log: {line}");
        }
    }
    // Nor the raw pieces a token is made of.
    let seat_signature = seat_token.rsplit('.').next().unwrap();
    assert!(!log.contains(seat_signature));
}
