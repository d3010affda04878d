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
        "cannot read the email template directory {dir}; run the server from the repository \
         root or set mail.template_dir (SEATWARDEN__MAIL__TEMPLATE_DIR)"
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
    fn a_text_template_without_a_subject_line_is_refused() {
        assert!(split_subject("Hello\n\nBody").is_none());
        assert!(split_subject("Subject:   \n\nBody").is_none());
    }
}
