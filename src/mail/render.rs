//! Rendering email from template files with minijinja.
//!
//! Each [`MailKind`] has two templates in the template directory
//! (`mail.template_dir`, by default `config/templates/email`):
//! `<kind>.txt`, the plain-text part, whose first line is the subject
//! (`Subject: ...`, then a blank line, then the body), and `<kind>.html`,
//! the HTML part, auto-escaped. Keeping the subject in the text template
//! keeps each message's wording in the files an operator edits, with the
//! same variables, and no third file per kind.
//!
//! The directory is read once, at start-up, and every template is rendered
//! then with sample data, so a missing file, a syntax error or a variable
//! the code doesn't pass (undefined is strict) stops the server with a
//! message naming the file, instead of failing mail at send time. Other
//! files in the directory are loaded too, for `{% include %}` and
//! `{% extends %}`. Restart to apply changed templates.

use std::path::{Path, PathBuf};

use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior, Value};
use seatwarden_actors::ports::MailKind;
use serde_json::json;

/// The shipped template directory, relative to the working directory.
pub const DEFAULT_DIR: &str = "config/templates/email";

/// The shipped templates, built into the binary: what a server uses when
/// `mail.template_dir` is left at [`DEFAULT_DIR`] and it is started
/// somewhere that directory does not exist (an installed binary, a
/// container). An operator who wants other wording points
/// `mail.template_dir` at a copy.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "account_exists.txt",
        include_str!("../../config/templates/email/account_exists.txt"),
    ),
    (
        "account_exists.html",
        include_str!("../../config/templates/email/account_exists.html"),
    ),
    (
        "account_locked.txt",
        include_str!("../../config/templates/email/account_locked.txt"),
    ),
    (
        "account_locked.html",
        include_str!("../../config/templates/email/account_locked.html"),
    ),
    (
        "expiry_warning.txt",
        include_str!("../../config/templates/email/expiry_warning.txt"),
    ),
    (
        "expiry_warning.html",
        include_str!("../../config/templates/email/expiry_warning.html"),
    ),
    (
        "invitation.txt",
        include_str!("../../config/templates/email/invitation.txt"),
    ),
    (
        "invitation.html",
        include_str!("../../config/templates/email/invitation.html"),
    ),
    (
        "license_issued.txt",
        include_str!("../../config/templates/email/license_issued.txt"),
    ),
    (
        "license_issued.html",
        include_str!("../../config/templates/email/license_issued.html"),
    ),
    (
        "license_reactivated.txt",
        include_str!("../../config/templates/email/license_reactivated.txt"),
    ),
    (
        "license_reactivated.html",
        include_str!("../../config/templates/email/license_reactivated.html"),
    ),
    (
        "license_renewed.txt",
        include_str!("../../config/templates/email/license_renewed.txt"),
    ),
    (
        "license_renewed.html",
        include_str!("../../config/templates/email/license_renewed.html"),
    ),
    (
        "license_suspended.txt",
        include_str!("../../config/templates/email/license_suspended.txt"),
    ),
    (
        "license_suspended.html",
        include_str!("../../config/templates/email/license_suspended.html"),
    ),
    (
        "password_reset.txt",
        include_str!("../../config/templates/email/password_reset.txt"),
    ),
    (
        "password_reset.html",
        include_str!("../../config/templates/email/password_reset.html"),
    ),
    (
        "payment_failed.txt",
        include_str!("../../config/templates/email/payment_failed.txt"),
    ),
    (
        "payment_failed.html",
        include_str!("../../config/templates/email/payment_failed.html"),
    ),
    (
        "subscription_cancelled.txt",
        include_str!("../../config/templates/email/subscription_cancelled.txt"),
    ),
    (
        "subscription_cancelled.html",
        include_str!("../../config/templates/email/subscription_cancelled.html"),
    ),
    (
        "subscription_confirmed.txt",
        include_str!("../../config/templates/email/subscription_confirmed.txt"),
    ),
    (
        "subscription_confirmed.html",
        include_str!("../../config/templates/email/subscription_confirmed.html"),
    ),
    (
        "trial_ending.txt",
        include_str!("../../config/templates/email/trial_ending.txt"),
    ),
    (
        "trial_ending.html",
        include_str!("../../config/templates/email/trial_ending.html"),
    ),
    (
        "verify.txt",
        include_str!("../../config/templates/email/verify.txt"),
    ),
    (
        "verify.html",
        include_str!("../../config/templates/email/verify.html"),
    ),
    (
        "welcome.txt",
        include_str!("../../config/templates/email/welcome.txt"),
    ),
    (
        "welcome.html",
        include_str!("../../config/templates/email/welcome.html"),
    ),
];

/// A rendered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A template set that could not be used; raised at start-up.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "cannot read the email template directory {dir} (set by mail.template_dir, \
         SEATWARDEN__MAIL__TEMPLATE_DIR)"
    )]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("email template {file} is missing from {dir} (set by mail.template_dir)")]
    Missing { dir: PathBuf, file: String },
    #[error("email template {file} in {dir} is not usable: {reason}")]
    Invalid {
        dir: PathBuf,
        file: String,
        reason: String,
    },
}

/// Why one message could not be rendered: its data does not fit its
/// templates. Never worth a retry.
#[derive(Debug, thiserror::Error)]
#[error("cannot render the {kind} email: {reason}")]
pub struct RenderError {
    kind: &'static str,
    reason: String,
}

/// The loaded templates.
pub struct Templates {
    env: Environment<'static>,
    public_url: String,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// Reads every template in `dir` and checks each kind's pair by
    /// rendering it with [`sample_data`]. `public_url` (no trailing slash)
    /// is handed to every template as `public_url`, for links.
    pub fn load(dir: &Path, public_url: &str) -> Result<Self, TemplateError> {
        let directory = |source| TemplateError::Directory {
            dir: dir.to_owned(),
            source,
        };
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        if dir == Path::new(DEFAULT_DIR) && !dir.exists() {
            tracing::info!(
                dir = DEFAULT_DIR,
                "no template directory here; using the built-in email templates"
            );
            for (name, source) in BUILT_IN {
                env.add_template(name, source)
                    .map_err(|e| TemplateError::Invalid {
                        dir: dir.to_owned(),
                        file: (*name).to_owned(),
                        reason: e.to_string(),
                    })?;
            }
            return Self::checked(env, dir, public_url);
        }
        for entry in std::fs::read_dir(dir).map_err(directory)? {
            let path = entry.map_err(directory)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !path.is_file() || name.starts_with('.') {
                continue;
            }
            let invalid = |reason: String| TemplateError::Invalid {
                dir: dir.to_owned(),
                file: name.to_owned(),
                reason,
            };
            let source = std::fs::read_to_string(&path).map_err(|e| invalid(e.to_string()))?;
            env.add_template_owned(name.to_owned(), source)
                .map_err(|e| invalid(e.to_string()))?;
        }
        Self::checked(env, dir, public_url)
    }

    /// Checks that every kind has its pair of templates and that each
    /// renders with [`sample_data`].
    fn checked(
        env: Environment<'static>,
        dir: &Path,
        public_url: &str,
    ) -> Result<Self, TemplateError> {
        let templates = Self {
            env,
            public_url: public_url.trim_end_matches('/').to_owned(),
        };
        for kind in MailKind::ALL {
            for ext in ["txt", "html"] {
                let file = format!("{}.{ext}", kind.as_str());
                if templates.env.get_template(&file).is_err() {
                    return Err(TemplateError::Missing {
                        dir: dir.to_owned(),
                        file,
                    });
                }
            }
            templates
                .render(kind, &sample_data(kind))
                .map_err(|e| TemplateError::Invalid {
                    dir: dir.to_owned(),
                    file: format!("{}.txt or {}.html", kind.as_str(), kind.as_str()),
                    reason: e.reason,
                })?;
        }
        Ok(templates)
    }

    /// Renders a message of `kind` from its data (a JSON object; see
    /// [`MailKind`] for each kind's fields).
    pub fn render(
        &self,
        kind: MailKind,
        data: &serde_json::Value,
    ) -> Result<Rendered, RenderError> {
        let fail = |reason: String| RenderError {
            kind: kind.as_str(),
            reason,
        };
        let serde_json::Value::Object(fields) = data else {
            return Err(fail("its data is not a JSON object".into()));
        };
        // The operator's own, validated URL: trusted, so HTML keeps its
        // slashes instead of escaping them.
        let public_url = Value::from_safe_string(self.public_url.clone());
        let context = Value::from_pairs(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(Serde(v))))
                .chain([("public_url".to_owned(), public_url)]),
        );
        let render = |ext: &str| {
            let name = format!("{}.{ext}", kind.as_str());
            let template = self
                .env
                .get_template(&name)
                .map_err(|e| fail(e.to_string()))?;
            // Strict undefined does not reach values only passed through
            // filters (`{{ token|urlencode }}` renders an absent token as
            // ""), so every variable a template reads must be in the data.
            let mut missing: Vec<String> = template
                .undeclared_variables(false)
                .into_iter()
                .filter(|v| {
                    v != "public_url"
                        && !fields.contains_key(v)
                        && !self.env.globals().any(|(g, _)| g == v)
                })
                .collect();
            if !missing.is_empty() {
                missing.sort();
                return Err(fail(format!(
                    "{name} needs {} in its data",
                    missing.join(", ")
                )));
            }
            template.render(&context).map_err(|e| fail(e.to_string()))
        };
        let text = render("txt")?;
        let html = render("html")?;
        let (subject, body) = split_subject(&text).ok_or_else(|| {
            fail(format!(
                "{}.txt must start with a line `Subject: ...`",
                kind.as_str()
            ))
        })?;
        Ok(Rendered {
            subject,
            text: body,
            html,
        })
    }
}

/// Splits a rendered text template into its subject line and body. The
/// subject is one line with control characters replaced, so data can't
/// add headers.
fn split_subject(text: &str) -> Option<(String, String)> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let subject = first
        .trim_end_matches('\r')
        .strip_prefix("Subject:")?
        .trim();
    if subject.is_empty() {
        return None;
    }
    let subject = subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let body = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))
        .unwrap_or(rest);
    Some((subject, body.to_owned()))
}

/// Data of the shape each kind is enqueued with, to check templates with.
pub fn sample_data(kind: MailKind) -> serde_json::Value {
    match kind {
        MailKind::Verify | MailKind::PasswordReset => {
            json!({"full_name": "Ada Lovelace", "token": "sample-token"})
        }
        MailKind::Welcome | MailKind::AccountExists => json!({"full_name": "Ada Lovelace"}),
        MailKind::Invitation => json!({
            "org_name": "Acme Corp",
            "inviter_name": "Grace Hopper",
            "role": "member",
            "token": "sample-token",
        }),
        MailKind::AccountLocked => json!({
            "full_name": "Ada Lovelace",
            "locked_until": "2026-01-01T12:00:00Z",
        }),
        MailKind::LicenseIssued => json!({
            "org_name": "Acme Corp",
            "plan_name": "Pro",
            "seats": 10,
            "license_key": "SW-SAMPLE-KEY",
            "expires_at": "2026-02-04",
            "trial_end": "2026-01-15",
        }),
        MailKind::LicenseRenewed => json!({
            "org_name": "Acme Corp",
            "plan_name": "Pro",
            "expires_at": "2026-03-04",
            "reactivated": true,
        }),
        MailKind::SubscriptionCancelled | MailKind::LicenseSuspended => json!({
            "org_name": "Acme Corp",
            "plan_name": "Pro",
        }),
        MailKind::LicenseReactivated => json!({
            "org_name": "Acme Corp",
            "plan_name": "Pro",
            "expires_at": "2026-03-04",
        }),
        MailKind::SubscriptionConfirmed => json!({
            "org_name": "Acme Corp",
            "plan_name": "Pro",
            "seats": 10,
            "quantity": 1,
            "interval": "month",
            "amount": "$99.00",
            "trial_end": "2026-01-15",
            "next_charge": "2026-01-15",
        }),
        MailKind::TrialEnding => json!({
            "org_name": "Acme Corp",
            "plan_name": "Pro",
            "trial_end": "2026-01-15",
        }),
        MailKind::ExpiryWarning => json!({
            "org_name": "Acme Corp",
            "key_hint": "SW-…-ABCD",
            "seats": 10,
            "expires_at": "2026-02-04 12:00 UTC",
        }),
        MailKind::PaymentFailed => json!({
            "org_name": "Acme Corp",
            "plan_name": "Pro",
            "urgent": true,
            "grace_ends_at": "2026-02-11",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_is_the_first_line_and_the_blank_line_after_it_is_dropped() {
        let (subject, body) = split_subject("Subject: Hi there\n\nBody\n").unwrap();
        assert_eq!(subject, "Hi there");
        assert_eq!(body, "Body\n");
    }

    #[test]
    fn the_built_in_templates_are_the_shipped_directory_and_all_render() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_DIR);
        let mut shipped: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let name = p.file_name().unwrap().to_str().unwrap().to_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        shipped.sort();
        let mut built_in: Vec<(String, String)> = BUILT_IN
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .collect();
        built_in.sort();
        assert_eq!(built_in, shipped, "BUILT_IN lists every shipped template");

        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in BUILT_IN {
            env.add_template(name, source).unwrap();
        }
        Templates::checked(env, Path::new(DEFAULT_DIR), "http://x").unwrap();
    }

    #[test]
    fn a_text_template_without_a_subject_line_is_refused() {
        assert!(split_subject("Hello\n\nBody").is_none());
        assert!(split_subject("Subject:   \n\nBody").is_none());
    }
}
