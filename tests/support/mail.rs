//! Reading the mail a test caused: from the SMTP sink that
//! `scripts/services.sh` starts (aiosmtpd, which stores each message as a
//! file of a Maildir, `X-RcptTo` naming its recipients), or from the
//! `.eml` files of the embedded default.
//!
//! Every test's messages land in the one sink, so each test sends to
//! addresses of its own ([`address`]) and looks only for those.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::app::eventually;

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the test suite with scripts/test.sh, which starts an SMTP sink"
        )
    })
}

/// `smtp://127.0.0.1:PORT` of the test SMTP sink.
pub fn smtp_url() -> String {
    required_env("SEATWARDEN_TEST_SMTP_URL")
}

/// Where the sink stores what it receives, one file per message.
pub fn smtp_dir() -> PathBuf {
    PathBuf::from(required_env("SEATWARDEN_TEST_SMTP_DIR")).join("new")
}

/// A recipient address no other test uses.
pub fn address(tag: &str) -> String {
    format!("{tag}-{}@test.example", uuid::Uuid::new_v4().simple())
}

/// A received message, parsed.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: PathBuf,
    pub subject: String,
    pub from: String,
    pub to: String,
    pub message_id: String,
    /// The envelope recipients, as the sink saw them (empty for `.eml`).
    pub envelope_to: String,
    pub text: String,
    pub html: String,
    /// Attached files: `(filename, content)`.
    pub attachments: Vec<(String, String)>,
}

impl Received {
    /// Parses a stored message; `None` if it isn't one (yet).
    pub fn read(path: &Path) -> Option<Self> {
        let raw = std::fs::read(path).ok()?;
        let parsed = mailparse::parse_mail(&raw).ok()?;
        let header = |name: &str| {
            use mailparse::MailHeaderMap;
            parsed.headers.get_first_value(name).unwrap_or_default()
        };
        let part = |mime: &str| {
            parsed
                .parts()
                .find(|p| p.ctype.mimetype == mime)
                .and_then(|p| p.get_body().ok())
                .unwrap_or_default()
        };
        Some(Self {
            path: path.to_owned(),
            subject: header("Subject"),
            from: header("From"),
            to: header("To"),
            message_id: header("Message-ID"),
            envelope_to: header("X-RcptTo"),
            text: part("text/plain"),
            html: part("text/html"),
            attachments: parsed
                .parts()
                .filter_map(|p| {
                    let d = p.get_content_disposition();
                    (d.disposition == mailparse::DispositionType::Attachment).then(|| {
                        (
                            d.params.get("filename").cloned().unwrap_or_default(),
                            p.get_body().unwrap_or_default(),
                        )
                    })
                })
                .collect(),
        })
    }

    /// The first link in the text part that starts with `prefix`.
    pub fn link(&self, prefix: &str) -> Option<String> {
        link_in(&self.text, prefix)
    }
}

/// The first URL in `text` that starts with `prefix`, up to whitespace.
pub fn link_in(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

/// `html` with the entities minijinja's escaping writes decoded, as a
/// mail client reads an `href`.
pub fn html_unescape(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

/// The value of query parameter `name` in `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    parsed
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Every message in `dir` (files only).
pub fn messages_in(dir: &Path) -> Vec<Received> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| Received::read(&p))
        .collect()
}

/// The messages the SMTP sink received for `to`.
pub fn received_by(to: &str) -> Vec<Received> {
    messages_in(&smtp_dir())
        .into_iter()
        .filter(|m| m.envelope_to.split(',').any(|r| r.trim() == to))
        .collect()
}

/// Waits (bounded polling) until the sink holds at least `n` messages for
/// `to`, and returns them all; panics after `limit`.
pub async fn wait_for_n(to: &str, n: usize, limit: Duration) -> Vec<Received> {
    eventually(limit, || async {
        let got = received_by(to);
        (got.len() >= n).then_some(got)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{to} received {} message(s) within {limit:?}, not {n}",
            received_by(to).len()
        )
    })
}

/// Waits for the first message to `to`.
pub async fn wait_for(to: &str, limit: Duration) -> Received {
    wait_for_n(to, 1, limit).await.remove(0)
}

/// Every message `app` has delivered to `to`, newest first: the `.eml`
/// files of the embedded default and, when it sends over SMTP, what the
/// sink received.
pub fn delivered_to(app: &super::TestApp, to: &str) -> Vec<Received> {
    let mut found: Vec<Received> = messages_in(&app.settings.data_dir.join("outbox"));
    if app.settings.mail.smtp_url.is_some() {
        found.extend(messages_in(&smtp_dir()));
    }
    let to = to.to_lowercase();
    let mut found: Vec<(std::time::SystemTime, Received)> = found
        .into_iter()
        .filter(|m| m.to.to_lowercase().contains(&to) || m.envelope_to.to_lowercase().contains(&to))
        .map(|m| {
            let at = std::fs::metadata(&m.path)
                .and_then(|md| md.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (at, m)
        })
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.0));
    found.into_iter().map(|(_, m)| m).collect()
}

/// The `token` of the newest link to `path` (e.g. `/api/v1/auth/verify-email`)
/// in mail delivered to `to`, waiting for it to arrive; panics after 15 s.
pub async fn mailed_token(app: &super::TestApp, to: &str, path: &str) -> String {
    let prefix = format!("{}{path}", app.settings.http.public_url);
    eventually(Duration::from_secs(15), || async {
        delivered_to(app, to)
            .iter()
            .find_map(|m| m.link(&prefix))
            .and_then(|link| query_param(&link, "token"))
    })
    .await
    .unwrap_or_else(|| panic!("no mail to {to} with a link to {path}"))
}
