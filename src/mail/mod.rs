//! The mail transport: [`MailSender`] on lettre.
//!
//! Messages are rendered from template files ([`render`]) and sent over
//! SMTP when `mail.smtp_url` is set; otherwise (the embedded default) they
//! are written as `.eml` files into `<data_dir>/outbox/`, where a developer
//! can open them. Either way a message's `Message-ID` is
//! `<outbox id@from domain>`: a message sent twice (after a crash between
//! the send and its record) carries the same id both times.

pub mod render;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use seatwarden_actors::ports::{MailSender, QueuedMail, SendError};
use secrecy::{ExposeSecret, SecretString};

pub use render::{Rendered, Templates};

use crate::redact::redact_url;

/// What the mail transport needs, from `[mail]` and `http.public_url`.
#[derive(Clone, Debug)]
pub struct MailConfig {
    /// SMTP when set (secret: may carry a password); else `.eml` files.
    pub smtp_url: Option<SecretString>,
    /// The `From` mailbox, e.g. `seatwarden <noreply@example.com>`.
    pub from: String,
    pub template_dir: PathBuf,
    /// Base of the links in mail.
    pub public_url: String,
    /// Where `.eml` files go when there is no SMTP server.
    pub file_dir: PathBuf,
    /// How long one SMTP exchange may take.
    pub send_timeout: Duration,
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(AsyncFileTransport<Tokio1Executor>),
}

/// [`MailSender`] on lettre.
pub struct LettreMailer {
    templates: Templates,
    from: Mailbox,
    transport: Transport,
}

impl LettreMailer {
    /// Loads and checks the templates and sets up the transport. Every
    /// configuration mistake surfaces here, at start-up.
    pub fn new(config: &MailConfig) -> anyhow::Result<Self> {
        let from: Mailbox = config
            .from
            .parse()
            .with_context(|| format!("mail.from {:?} is not a mail address", config.from))?;
        let templates = Templates::load(&config.template_dir, &config.public_url)?;
        let transport = match &config.smtp_url {
            Some(url) => {
                let url = url.expose_secret();
                let smtp = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .with_context(|| format!("mail.smtp_url {} is not usable", redact_url(url)))?
                    .timeout(Some(config.send_timeout))
                    .build();
                tracing::info!(smtp = %redact_url(url), "mail goes out over SMTP");
                Transport::Smtp(smtp)
            }
            None => {
                std::fs::create_dir_all(&config.file_dir).with_context(|| {
                    format!("creating the mail directory {}", config.file_dir.display())
                })?;
                tracing::info!(dir = %config.file_dir.display(),
                    "no mail.smtp_url: mail is written as .eml files");
                Transport::Files(AsyncFileTransport::new(&config.file_dir))
            }
        };
        Ok(Self {
            templates,
            from,
            transport,
        })
    }

    /// The message for a queued mail, as it would be sent.
    pub fn message(&self, mail: &QueuedMail) -> Result<Message, SendError> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|_| SendError::Permanent(format!("{:?} is not a mail address", mail.to)))?;
        let rendered = self
            .templates
            .render(mail.kind, &mail.data)
            .map_err(|e| SendError::Permanent(e.to_string()))?;
        let body = MultiPart::alternative_plain_html(rendered.text, rendered.html);
        let body = match attachment(&mail.data)? {
            Some(file) => MultiPart::mixed().multipart(body).singlepart(file),
            None => body,
        };
        Message::builder()
            .message_id(Some(message_id(mail, &self.from)))
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .multipart(body)
            .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))
    }
}

/// The file a mail carries, if its data names one: `attachment` is
/// `{filename, content_type, content}` with text content (a signed license
/// file is text). The data, content included, is cleared by the outbox once
/// the mail is done, like every secret a mail carries.
fn attachment(data: &serde_json::Value) -> Result<Option<SinglePart>, SendError> {
    let Some(a) = data.get("attachment").filter(|a| !a.is_null()) else {
        return Ok(None);
    };
    let field = |k: &str| {
        a.get(k)
            .and_then(|v| v.as_str())
            .ok_or_else(|| SendError::Permanent(format!("the attachment has no {k}")))
    };
    let content_type = ContentType::parse(field("content_type")?)
        .map_err(|e| SendError::Permanent(format!("the attachment's content type: {e}")))?;
    Ok(Some(
        Attachment::new(field("filename")?.to_owned())
            .body(field("content")?.to_owned(), content_type),
    ))
}

/// `<outbox id@domain of From>`: the same for every attempt at a message.
pub fn message_id(mail: &QueuedMail, from: &Mailbox) -> String {
    format!("<{}@{}>", mail.id.simple(), from.email.domain())
}

#[async_trait]
impl MailSender for LettreMailer {
    async fn send(&self, mail: &QueuedMail) -> Result<(), SendError> {
        let message = self.message(mail)?;
        match &self.transport {
            Transport::Smtp(smtp) => smtp.send(message).await.map(drop).map_err(|e| {
                if e.is_permanent() {
                    SendError::Permanent(e.to_string())
                } else {
                    SendError::Transient(e.to_string())
                }
            }),
            Transport::Files(files) => files
                .send(message)
                .await
                .map(drop)
                .map_err(|e| SendError::Transient(e.to_string())),
        }
    }
}
