//! The `seatwarden` binary: bootstrap commands, configuration errors, and
//! refusing to start without the shared signing key.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn seatwarden(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SEATWARDEN__DATA_DIR", data_dir)
        .env("SEATWARDEN__SIGNING__RSA_BITS", "2048")
        .env("SEATWARDEN__HTTP__LISTEN", "127.0.0.1:0")
        .output()
        .expect("run seatwarden")
}

fn json_stdout(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

#[test]
fn bootstrap_commands_create_and_list_orgs_licenses_and_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let org = json_stdout(&seatwarden(
        dir.path(),
        &["org", "create", "--name", "Acme"],
    ));
    let org_id = org["id"].as_str().unwrap();

    let license = json_stdout(&seatwarden(
        dir.path(),
        &[
            "license",
            "create",
            "--org",
            org_id,
            "--seats",
            "5",
            "--tier",
            "pro",
            "--features",
            "export,sso",
            "--expires-at",
            "2030-01-01T00:00:00Z",
        ],
    ));
    let key = license["key"].as_str().unwrap();
    let groups: Vec<&str> = key.split('-').collect();
    assert_eq!(groups[0], "CODITECT");
    assert_eq!(groups.len(), 6, "{key}");
    assert!(groups[1..].iter().all(|g| {
        g.len() == 4
            && g.chars()
                .all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !"OILU".contains(c)))
    }));
    assert_eq!(license["seats"], 5);
    assert_eq!(license["features"], serde_json::json!(["export", "sso"]));
    let license_id = license["id"].as_str().unwrap();

    let listed = json_stdout(&seatwarden(
        dir.path(),
        &["license", "list", "--org", org_id],
    ));
    let listed = listed["licenses"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], license_id);
    assert!(listed[0].get("key").is_none(), "the key is shown only once");

    let updated = json_stdout(&seatwarden(
        dir.path(),
        &[
            "license",
            "update",
            "--id",
            license_id,
            "--seats",
            "2",
            "--status",
            "suspended",
        ],
    ));
    assert_eq!(updated["seats"], 2);
    assert_eq!(updated["status"], "suspended");

    let sessions = json_stdout(&seatwarden(
        dir.path(),
        &["license", "sessions", "--license", license_id],
    ));
    assert_eq!(sessions["sessions"], serde_json::json!([]));
}

#[test]
fn bad_bootstrap_input_fails_with_a_json_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let org = json_stdout(&seatwarden(
        dir.path(),
        &["org", "create", "--name", "Acme"],
    ));
    let org_id = org["id"].as_str().unwrap();

    for args in [
        vec!["license", "create", "--org", org_id, "--seats", "0"],
        vec![
            "license",
            "create",
            "--org",
            "00000000-0000-0000-0000-000000000000",
            "--seats",
            "1",
        ],
        vec![
            "license",
            "list",
            "--org",
            "00000000-0000-0000-0000-000000000000",
        ],
    ] {
        let out = seatwarden(dir.path(), &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err: Value = serde_json::from_slice(&out.stderr).expect("stderr is a JSON error");
        assert!(
            err["error"].is_string() && err["message"].is_string(),
            "{err}"
        );
    }
    let listed = json_stdout(&seatwarden(
        dir.path(),
        &["license", "list", "--org", org_id],
    ));
    assert_eq!(listed["licenses"], serde_json::json!([]));
}

#[test]
fn an_invalid_setting_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["org", "create", "--name", "x"])
        .env("SEATWARDEN__DATA_DIR", dir.path())
        .env("SEATWARDEN__SEATS__LEASE_TTL_SECS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"], "invalid_config");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("seats.lease_ttl_secs"),
        "{err}"
    );
}

#[test]
fn in_production_a_missing_signing_key_stops_the_node_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("missing.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["--config", "config/production.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SEATWARDEN__DATA_DIR", dir.path())
        .env(
            "SEATWARDEN__DATABASE__URL",
            format!("sqlite://{}/db.sqlite", dir.path().display()),
        )
        .env("SEATWARDEN__SIGNING__KEY_PATH", &key_path)
        .env(
            "SEATWARDEN__AUTH__ACCESS_TOKEN_SECRET",
            "production-test-access-token-secret-0123456789",
        )
        .env("SEATWARDEN__HTTP__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success(), "started without its key");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("signing key"), "{stderr}");
    assert!(
        !key_path.exists(),
        "a key was generated although generation is off"
    );
}

#[test]
fn database_passwords_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .env("SEATWARDEN__DATA_DIR", dir.path())
        .env("SEATWARDEN__SIGNING__RSA_BITS", "2048")
        .env(
            "SEATWARDEN__DATABASE__URL",
            "postgres://sw:hunter2-secret@127.0.0.1:1/sw",
        )
        .env("SEATWARDEN__HTTP__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("postgres://sw:***@127.0.0.1:1/sw"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_second_embedded_server_on_the_same_data_dir_refuses_to_serve() {
    let dir = tempfile::tempdir().unwrap();
    // A key up front, so the first server starts in moments.
    let key = dir.path().join("signing-key.pem");
    {
        use rsa::pkcs8::EncodePrivateKey;
        let k = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        std::fs::write(
            &key,
            k.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
    }
    let serve = || {
        Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("serve")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("SEATWARDEN__DATA_DIR", dir.path())
            .env("SEATWARDEN__HTTP__LISTEN", "127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run seatwarden serve")
    };
    let mut first = serve();
    // The first server holds the lock once its log says it listens.
    let mut stderr = std::io::BufReader::new(first.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "the first server exited before listening");
        if line.contains("listening") {
            break;
        }
    }

    // The second must give up by itself; one still serving after 60 s has
    // taken the seats' ledger twice.
    let mut second = serve();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while second.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            let _ = first.kill();
            panic!("a second server is serving the same data directory");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = second.wait_with_output().expect("second server");
    assert!(!second.status.success(), "a second server started");
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(
        message.contains(&dir.path().display().to_string()),
        "the refusal names the data directory: {message}"
    );

    // Bootstrap commands keep working beside the running server.
    let org = json_stdout(&seatwarden(
        dir.path(),
        &["org", "create", "--name", "Beside"],
    ));
    assert_eq!(org["name"], "Beside");

    let _ = first.kill();
    let _ = first.wait();
}

#[test]
fn a_key_whose_kid_begins_with_a_dash_is_retired_by_that_kid() {
    use seatwarden::signing::{SigningAlgorithm, TokenSigner, keys};
    use secrecy::ExposeSecret;
    // A kid is base64url: one in 64 begins with '-', which a command line
    // parser takes for a flag unless told otherwise.
    let pem = (0..10_000)
        .map(|_| keys::generate_pem(SigningAlgorithm::ES256, 2048).unwrap())
        .find(|pem| {
            TokenSigner::from_pem(pem.expose_secret())
                .unwrap()
                .kid()
                .starts_with('-')
        })
        .expect("a kid beginning with '-' within 10,000 keys");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("dashed.pem");
    std::fs::write(&key_file, pem.expose_secret()).unwrap();

    let imported = json_stdout(&seatwarden(
        dir.path(),
        &["keys", "rotate", "--import", key_file.to_str().unwrap()],
    ));
    let kid = imported["rotated_to"]["kid"].as_str().unwrap().to_owned();
    assert!(kid.starts_with('-'), "{kid}");
    json_stdout(&seatwarden(
        dir.path(),
        &["keys", "rotate", "--algorithm", "EdDSA"],
    ));
    let retired = json_stdout(&seatwarden(dir.path(), &["keys", "retire", &kid]));
    let entry = retired["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .cloned()
        .expect("the dashed key is listed");
    assert!(!entry["retired"].is_null(), "{entry}");
}

#[test]
fn after_keys_reseal_every_key_opens_under_the_new_access_token_secret() {
    let dir = tempfile::tempdir().unwrap();
    let old = "the-old-access-token-secret-0123456789abcdef";
    let new = "the-new-access-token-secret-0123456789abcdef";
    let with_secret = |secret: &str, args: &[&str], old_env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_seatwarden"));
        cmd.args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("SEATWARDEN__DATA_DIR", dir.path())
            .env("SEATWARDEN__AUTH__ACCESS_TOKEN_SECRET", secret);
        if let Some(old) = old_env {
            cmd.env("SW_OLD_SECRET", old);
        }
        cmd.output().expect("run seatwarden")
    };
    // A key sealed under the old secret, then (the secret changed) one
    // under the new.
    json_stdout(&with_secret(
        old,
        &["keys", "rotate", "--algorithm", "ES256"],
        None,
    ));
    json_stdout(&with_secret(
        new,
        &["keys", "rotate", "--algorithm", "EdDSA"],
        None,
    ));
    let before = json_stdout(&with_secret(new, &["keys", "list"], None));

    // A wrong old secret: the old key opens under neither; nothing changes.
    let wrong = with_secret(
        new,
        &["keys", "reseal", "--old-secret-env", "SW_OLD_SECRET"],
        Some("not-the-old-secret-0123456789abcdef-xyz"),
    );
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert!(!stderr.contains("not-the-old-secret"), "{stderr}");

    let reseal = || {
        json_stdout(&with_secret(
            new,
            &["keys", "reseal", "--old-secret-env", "SW_OLD_SECRET"],
            Some(old),
        ))
    };
    let resealed = reseal();
    assert_eq!(resealed["resealed"], 1, "{resealed}");
    assert_eq!(resealed["already_current"], 1, "{resealed}");
    // Run again: every key now opens under the new secret alone.
    let again = reseal();
    assert_eq!(again["resealed"], 0, "{again}");
    assert_eq!(again["already_current"], 2, "{again}");
    // The set itself is unchanged: same kids, same active key.
    assert_eq!(
        json_stdout(&with_secret(new, &["keys", "list"], None)),
        before
    );
}
