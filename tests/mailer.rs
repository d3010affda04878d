//! The mailer subsystem end to end: mail enqueued in the outbox reaches a
//! real SMTP server (the aiosmtpd sink of `scripts/services.sh`), or `.eml`
//! files on the embedded default, once, through outages, restarts and a
//! second node.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use seatwarden::mail::Templates;
use seatwarden::mail::render::sample_data;
use seatwarden::startup::Application;
use seatwarden_actors::ports::{MailFilter, MailKind, MailRecord, MailStatus, NewMail, Outbox};
use serde_json::json;
use support::mail::{self as mail, address, html_unescape, link_in, query_param};
use support::proxy::{CuttableProxy, host_port};
use support::{AppOptions, Backend, TestApp, eventually, spawn_app_with};

const WAIT: Duration = Duration::from_secs(20);

/// The repository's templates.
fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates/email")
}

fn smtp_options() -> AppOptions {
    AppOptions {
        smtp_url: Some(mail::smtp_url()),
        mail_poll_ms: 100,
        ..AppOptions::default()
    }
}

/// A verification email to `to` carrying `token`.
fn verify_mail(to: &str, token: &str) -> NewMail {
    NewMail::new(
        MailKind::Verify,
        to,
        json!({"full_name": "Ada Lovelace", "token": token}),
    )
}

/// Enqueues `m` as a request would, then kicks the mailer.
async fn enqueue(app: &TestApp, m: &NewMail) {
    app.outbox.enqueue(m).await.expect("enqueue");
    app.coordinator.kick_mailer();
}

/// The message's email-log entry.
async fn entry(outbox: &dyn Outbox, m: &NewMail) -> Option<MailRecord> {
    let page = outbox
        .email_log(&MailFilter {
            recipient: Some(m.to.clone()),
            limit: 100,
            ..MailFilter::default()
        })
        .await
        .expect("email log");
    page.entries.into_iter().find(|e| e.id == m.id)
}

/// Waits until the message's entry satisfies `done`.
async fn entry_when(
    outbox: &dyn Outbox,
    m: &NewMail,
    what: &str,
    done: impl Fn(&MailRecord) -> bool,
) -> MailRecord {
    if let Some(e) = eventually(WAIT, || async {
        entry(outbox, m).await.filter(|e| done(e))
    })
    .await
    {
        return e;
    }
    panic!(
        "{what} never happened to {}: {:?}",
        m.id,
        entry(outbox, m).await
    )
}

async fn sent(outbox: &dyn Outbox, m: &NewMail) -> MailRecord {
    entry_when(outbox, m, "delivery", |e| e.status == MailStatus::Sent).await
}

#[tokio::test]
async fn an_enqueued_verification_reaches_the_smtp_server_once_with_its_link() {
    let app = spawn_app_with(AppOptions {
        public_url: Some("https://licenses.example.test/".into()),
        ..smtp_options()
    })
    .await;
    let to = address("verify");
    let m = verify_mail(&to, "tok+en/1");
    enqueue(&app, &m).await;

    let got = mail::wait_for(&to, WAIT).await;
    assert_eq!(got.subject, "Confirm your email address");
    assert!(got.to.contains(&to), "To: {}", got.to);
    assert!(got.from.contains("noreply@localhost"), "From: {}", got.from);
    assert_eq!(
        got.message_id,
        format!("<{}@localhost>", m.id.simple()),
        "the Message-ID names the outbox row"
    );
    let link = got
        .link("https://licenses.example.test/api/v1/auth/verify-email?")
        .expect("the text part carries the verification link");
    assert_eq!(
        query_param(&link, "token").as_deref(),
        Some("tok+en/1"),
        "the token survives the link's encoding: {link}"
    );
    let html_link = link_in(
        &html_unescape(&got.html),
        "https://licenses.example.test/api/v1/auth/verify-email?",
    )
    .expect("the HTML part carries the link too");
    assert_eq!(
        query_param(&html_link, "token").as_deref(),
        Some("tok+en/1")
    );

    let record = sent(app.outbox.as_ref(), &m).await;
    assert_eq!(record.attempts, 1);
    assert_eq!(record.kind, MailKind::Verify);
    assert!(record.sent_at.is_some());
    assert_eq!(mail::received_by(&to).len(), 1, "sent exactly once");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("seatwarden_mail_sent_total{kind=\"verify\"}"),
        "sent mail is counted by kind"
    );
}

#[tokio::test]
async fn every_template_renders_in_text_and_html_with_its_links() {
    let templates =
        Templates::load(&templates_dir(), "https://sw.example.test/").expect("templates load");
    for kind in MailKind::ALL {
        let r = templates
            .render(kind, &sample_data(kind))
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert!(!r.subject.is_empty(), "{kind:?} has a subject");
        assert!(
            !r.text.starts_with("Subject:"),
            "{kind:?}: the subject line is not in the body"
        );
        for (part, body) in [("text", &r.text), ("html", &r.html)] {
            assert!(
                body.contains("https://sw.example.test"),
                "{kind:?} {part} links to the server"
            );
            if matches!(
                kind,
                MailKind::Verify | MailKind::PasswordReset | MailKind::Invitation
            ) {
                assert!(
                    body.contains("token=sample-token"),
                    "{kind:?} {part} carries the token"
                );
            }
        }
        assert!(r.html.contains("<p>"), "{kind:?} html is HTML");
    }
    let invitation = templates
        .render(MailKind::Invitation, &sample_data(MailKind::Invitation))
        .unwrap();
    assert_eq!(
        invitation.subject,
        "Grace Hopper invited you to Acme Corp on seatwarden"
    );
    assert!(invitation.text.contains("as member"));
}

#[tokio::test]
async fn html_parts_escape_data_and_text_parts_keep_it() {
    let templates = Templates::load(&templates_dir(), "http://127.0.0.1:8080").unwrap();
    let r = templates
        .render(
            MailKind::Welcome,
            &json!({"full_name": "<script>alert(1)</script> & co"}),
        )
        .unwrap();
    assert!(r.html.contains("&lt;script&gt;alert(1)"), "{}", r.html);
    assert!(r.html.contains("&amp; co"), "{}", r.html);
    assert!(!r.html.contains("<script>"));
    assert!(r.text.contains("<script>alert(1)</script> & co"));
}

#[tokio::test]
async fn data_missing_a_templates_variable_does_not_render() {
    let templates = Templates::load(&templates_dir(), "http://127.0.0.1:8080").unwrap();
    let err = templates
        .render(MailKind::Verify, &json!({"full_name": "Ada"}))
        .expect_err("strict undefined");
    assert!(err.to_string().contains("verify"), "{err}");
    assert!(templates.render(MailKind::Welcome, &json!("Ada")).is_err());
}

#[tokio::test]
async fn a_missing_template_directory_stops_the_server_at_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-templates-here");
    let settings = support::app::settings_for(
        &AppOptions {
            template_dir: Some(missing.clone()),
            ..AppOptions::default()
        },
        dir.path(),
    );
    let err = Application::build(settings)
        .await
        .err()
        .expect("the server refuses to start");
    let shown = format!("{err:#}");
    assert!(shown.contains(&missing.display().to_string()), "{shown}");
    assert!(shown.contains("mail.template_dir"), "{shown}");
}

#[tokio::test]
async fn a_template_using_a_variable_the_code_does_not_pass_stops_the_server_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(templates_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.path().join("welcome.html"),
        "<p>Hello {{ nickname }}</p>\n",
    )
    .unwrap();
    let err = Templates::load(dir.path(), "http://127.0.0.1:8080").expect_err("refused");
    let shown = err.to_string();
    assert!(shown.contains("welcome"), "{shown}");
    std::fs::remove_file(dir.path().join("welcome.html")).unwrap();
    let err = Templates::load(dir.path(), "http://127.0.0.1:8080").expect_err("refused");
    assert!(err.to_string().contains("welcome.html"), "{err}");
}

#[tokio::test]
async fn without_an_smtp_url_mail_is_written_as_eml_files_in_the_data_dir() {
    let app = spawn_app_with(AppOptions {
        mail_poll_ms: 100,
        ..AppOptions::default()
    })
    .await;
    let to = address("eml");
    let m = NewMail::new(
        MailKind::PasswordReset,
        &to,
        json!({"full_name": "Ada", "token": "reset-me"}),
    );
    enqueue(&app, &m).await;
    let dir = app.settings.data_dir.join("outbox");
    let got = eventually(WAIT, || async {
        mail::messages_in(&dir)
            .into_iter()
            .find(|r| r.to.contains(&to))
    })
    .await
    .expect("an .eml file for the message");
    assert_eq!(got.path.extension().and_then(|e| e.to_str()), Some("eml"));
    assert_eq!(got.subject, "Reset your seatwarden password");
    let link = got
        .link("http://127.0.0.1:8080/api/v1/auth/reset-password?")
        .expect("reset link");
    assert_eq!(query_param(&link, "token").as_deref(), Some("reset-me"));
    assert_eq!(sent(app.outbox.as_ref(), &m).await.attempts, 1);
}

#[tokio::test]
async fn an_unreachable_smtp_server_gets_retries_that_back_off_then_the_message_once() {
    let proxy = CuttableProxy::start(host_port(&mail::smtp_url())).await;
    proxy.cut();
    let app = spawn_app_with(AppOptions {
        smtp_url: Some(format!("smtp://127.0.0.1:{}", proxy.port)),
        mail_poll_ms: 50,
        mail_retry_base_secs: 1,
        mail_max_attempts: 10,
        mail_send_timeout_secs: 2,
        mail_claim_secs: 30,
        ..AppOptions::default()
    })
    .await;
    let to = address("backoff");
    let m = verify_mail(&to, "later");
    enqueue(&app, &m).await;

    let first = entry_when(app.outbox.as_ref(), &m, "a first failure", |e| {
        e.attempts == 1 && e.last_error.is_some() && e.next_attempt_at > e.created_at
    })
    .await;
    // Settled, not merely claimed: a claim in flight also shows two
    // attempts and the first error, but is due only when its 30 s lease
    // ends, while the settled failure is due again about 2 s later.
    let second = entry_when(app.outbox.as_ref(), &m, "a second failure", |e| {
        e.attempts == 2
            && e.last_error.is_some()
            && e.next_attempt_at < first.next_attempt_at + chrono::TimeDelta::seconds(15)
    })
    .await;
    assert_eq!(second.status, MailStatus::Pending);
    // The second attempt ran no earlier than the first retry was due, and
    // waits twice as long: the third is due at least 2 s after the second.
    let gap = second.next_attempt_at - first.next_attempt_at;
    assert!(
        gap >= chrono::TimeDelta::seconds(2),
        "backoff doubles: retries due {} then {}",
        first.next_attempt_at,
        second.next_attempt_at
    );
    assert!(mail::received_by(&to).is_empty());

    proxy.restore();
    mail::wait_for(&to, WAIT).await;
    let record = sent(app.outbox.as_ref(), &m).await;
    assert!(record.attempts >= 3, "attempts: {}", record.attempts);
    assert_eq!(mail::received_by(&to).len(), 1, "delivered once");
    assert!(
        app.metrics()
            .await
            .contains("seatwarden_mail_retried_total{kind=\"verify\"}")
    );
}

#[tokio::test]
async fn after_its_last_attempt_a_message_is_failed_with_its_error_and_loses_its_data() {
    // Nothing listens there: every attempt is refused.
    let port = support::services::free_port();
    let app = spawn_app_with(AppOptions {
        smtp_url: Some(format!("smtp://127.0.0.1:{port}")),
        mail_poll_ms: 50,
        mail_retry_base_secs: 1,
        mail_max_attempts: 2,
        ..AppOptions::default()
    })
    .await;
    let m = verify_mail(&address("failed"), "never-delivered");
    enqueue(&app, &m).await;
    let record = entry_when(app.outbox.as_ref(), &m, "giving up", |e| {
        e.status == MailStatus::Failed
    })
    .await;
    assert_eq!(record.attempts, 2);
    let error = record.last_error.expect("the error is kept");
    assert!(error.contains("after 2 attempts"), "{error}");
    assert!(!error.contains("never-delivered"), "no token in errors");

    let db = format!(
        "sqlite://{}",
        app.settings.data_dir.join("seatwarden.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let data: String = sqlx::query_scalar("SELECT data FROM outbox WHERE id = ?1")
        .bind(m.id.hyphenated().to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(data, "{}", "the token is gone");
}

#[tokio::test]
async fn a_message_the_server_refuses_for_good_is_failed_at_once() {
    let app = spawn_app_with(smtp_options()).await;
    // Strict templates: a verification without its token can never render.
    let m = NewMail::new(
        MailKind::Verify,
        address("broken"),
        json!({"full_name": "Ada"}),
    );
    enqueue(&app, &m).await;
    let record = entry_when(app.outbox.as_ref(), &m, "giving up", |e| {
        e.status == MailStatus::Failed
    })
    .await;
    assert_eq!(record.attempts, 1, "no retries for what can't succeed");
    assert!(mail::received_by(&m.to).is_empty());
}

#[tokio::test]
async fn two_nodes_sharing_postgresql_deliver_every_message_exactly_once() {
    let backend = Backend::Shared {
        database_url: support::services::fresh_postgres_db().await,
        redis_url: support::services::redis_url(),
    };
    let options = AppOptions {
        backend,
        mail_poll_ms: 20,
        ..smtp_options()
    };
    let a = spawn_app_with(options.clone()).await;
    let b = spawn_app_with(options).await;
    let messages: Vec<NewMail> = (0..40)
        .map(|i| verify_mail(&address(&format!("node{i}")), &format!("t{i}")))
        .collect();
    for (i, m) in messages.iter().enumerate() {
        // Half through each node, as requests would arrive.
        let node = if i % 2 == 0 { &a } else { &b };
        enqueue(node, m).await;
    }
    for m in &messages {
        sent(a.outbox.as_ref(), m).await;
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for m in &messages {
        counts.insert(&m.to, mail::received_by(&m.to).len());
    }
    assert!(
        counts.values().all(|&n| n == 1),
        "each message exactly once: {counts:?}"
    );
}

#[tokio::test]
async fn restarting_the_mailer_while_mail_is_pending_loses_none_and_sends_none_twice() {
    let app = spawn_app_with(AppOptions {
        // No poll during the test: only kicks and restarts move mail.
        mail_poll_ms: 600_000,
        ..smtp_options()
    })
    .await;
    let before = app.coordinator.mailer_id().expect("the mailer runs");
    let messages: Vec<NewMail> = (0..60)
        .map(|i| verify_mail(&address(&format!("restart{i}")), &format!("t{i}")))
        .collect();
    for m in &messages {
        app.outbox.enqueue(m).await.unwrap();
    }
    // Restarts at the start of a batch and while batches are being sent
    // (each restart's new mailer picks up at once).
    app.coordinator.kick_mailer();
    app.coordinator
        .restart_subsystem(seatwarden_actors::Subsystem::Mailer)
        .await
        .expect("restart");
    for threshold in [10, 30] {
        let sent_count = || async {
            let page = app
                .outbox
                .email_log(&MailFilter {
                    status: Some(MailStatus::Sent),
                    limit: 1000,
                    ..MailFilter::default()
                })
                .await
                .unwrap();
            (page.entries.len() >= threshold).then_some(())
        };
        eventually(WAIT, sent_count).await.expect("mail goes out");
        app.coordinator
            .restart_subsystem(seatwarden_actors::Subsystem::Mailer)
            .await
            .expect("restart");
    }
    let after = app.coordinator.mailer_id().expect("the mailer runs again");
    assert_ne!(before, after, "a new incarnation");

    for m in &messages {
        let record = sent(app.outbox.as_ref(), m).await;
        assert_eq!(
            record.attempts, 1,
            "mail handed back at a stop costs no attempt"
        );
    }
    for m in &messages {
        assert_eq!(mail::received_by(&m.to).len(), 1, "{} exactly once", m.to);
    }
}

#[tokio::test]
async fn kicking_a_mailer_that_is_not_running_is_harmless() {
    let app = spawn_app_with(smtp_options()).await;
    let outbox: Arc<dyn Outbox> = app.outbox.clone();
    app.coordinator.shutdown(Duration::from_secs(15)).await;
    assert!(app.coordinator.mailer_id().is_none());
    app.coordinator.kick_mailer();
    // The mail waits in the outbox for the next start.
    let m = verify_mail(&address("stopped"), "t");
    outbox.enqueue(&m).await.unwrap();
    app.coordinator.kick_mailer();
    let record = entry(outbox.as_ref(), &m).await.expect("kept");
    assert_eq!(record.status, MailStatus::Pending);
    assert_eq!(record.attempts, 0);
}
