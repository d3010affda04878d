//! Verifying Stripe's webhook deliveries.
//!
//! A delivery is a POST whose raw body is an event and whose
//! `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]` header holds
//! HMAC-SHA256 signatures over `"<t>.<body>"`. [`verify`] accepts it when any
//! `v1` matches any configured secret (the current one, or the previous one
//! while a secret is being rolled) and `t` is within
//! [`TOLERANCE_SECS`] of now.
//!
//! Two outcomes must not be confused:
//! - the signature is missing, wrong or stale: [`WebhookRejection`]; answer
//!   400 and store nothing (anyone can POST);
//! - the signature is good but the object doesn't parse with the SDK's
//!   types (typically an endpoint set to another API version): still
//!   [`Verified`], with the envelope read from the raw JSON and the parse
//!   error in [`Verified::event`], so the caller can record the event as
//!   failed (and answer 2xx, or Stripe retries it for days) instead of
//!   losing it.
//!
//! The checks are async-stripe-webhook's own (`construct_event_with_timestamp`,
//! constant-time comparison), called once per configured secret; its error
//! kinds tell a bad signature from a stale one from an object that doesn't
//! parse (decision 61).

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use stripe_webhook::{Event, Webhook, WebhookError};

use seatwarden_actors::ports::EventId;

use super::PINNED_API_VERSION;

/// How far a signature's timestamp may be from now, either way (Stripe's
/// libraries use the same).
pub const TOLERANCE_SECS: i64 = 300;

/// A delivery whose signature checked out.
#[derive(Debug)]
pub struct Verified {
    /// `evt_...`: deduplicate deliveries by it.
    pub id: EventId,
    /// E.g. `checkout.session.completed`, as sent (also when unparsed).
    pub event_type: String,
    /// When Stripe created the event (Unix seconds): not the delivery time.
    pub created: i64,
    pub livemode: bool,
    /// The API version the event was rendered with, when it says.
    pub api_version: Option<String>,
    /// Which of the secrets passed to [`verify`] matched (0: the first).
    pub secret_index: usize,
    /// The event in the SDK's types, or why it didn't parse.
    pub event: Result<Box<Event>, String>,
}

impl Verified {
    /// The parsed event, if it parsed.
    pub fn parsed(&self) -> Option<&Event> {
        self.event.as_deref().ok()
    }
}

/// Why a delivery was refused. None of them says which secret was tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRejection {
    /// No webhook secret is configured: nothing can be verified.
    #[error("no webhook secret is configured")]
    NoSecret,
    /// The `Stripe-Signature` header is missing or not `t=<int>,v1=<hex>...`.
    #[error("missing or malformed Stripe-Signature header")]
    MalformedHeader,
    /// No `v1` signature matches any configured secret (a forged or
    /// tampered delivery, or one for another endpoint).
    #[error("no matching signature")]
    BadSignature,
    /// The signature matches but its timestamp is more than
    /// [`TOLERANCE_SECS`] from now: possibly a replay.
    #[error("signature timestamp {timestamp} is outside the tolerance")]
    Stale { timestamp: i64 },
    /// The body is not UTF-8 JSON, so it is no event.
    #[error("the body is not UTF-8")]
    MalformedPayload,
    /// Signed, but not even an event envelope (no `id`, `type` or
    /// `created`): nothing to record it under.
    #[error("signed body is not an event: {0}")]
    NotAnEvent(String),
}

/// Verifies one delivery: `payload` is the raw body exactly as received,
/// `header` the `Stripe-Signature` value (empty when absent), `secrets` the
/// endpoint's signing secrets, current first, `now` the clock's time.
pub fn verify(
    payload: &[u8],
    header: &str,
    secrets: &[&SecretString],
    now: DateTime<Utc>,
) -> Result<Verified, WebhookRejection> {
    if secrets.is_empty() {
        return Err(WebhookRejection::NoSecret);
    }
    if !well_formed(header) {
        return Err(WebhookRejection::MalformedHeader);
    }
    let payload = std::str::from_utf8(payload).map_err(|_| WebhookRejection::MalformedPayload)?;
    let now = now.timestamp();
    for (secret_index, secret) in secrets.iter().enumerate() {
        let parsed = match Webhook::construct_event_with_timestamp(
            payload,
            header,
            secret.expose_secret(),
            now,
        ) {
            Ok(event) => Ok(Box::new(event)),
            Err(WebhookError::BadParse(reason)) => Err(reason),
            Err(WebhookError::BadTimestamp(timestamp)) => {
                return Err(WebhookRejection::Stale { timestamp });
            }
            Err(WebhookError::BadHeader(_)) => return Err(WebhookRejection::MalformedHeader),
            Err(WebhookError::BadSignature | WebhookError::BadKey) => continue,
        };
        return envelope(payload, secret_index, parsed);
    }
    Err(WebhookRejection::BadSignature)
}

/// Parses a payload that [`verify`] accepted earlier (a recorded event),
/// with the SDK's own event parsing.
///
/// The SDK parses only inside its verification, so this signs the payload
/// with a throwaway secret and verifies that: the payload's authenticity
/// was established at receipt, and the stored payload is the verified
/// bytes. It costs one HMAC.
pub fn parse_recorded(payload: &str) -> Result<Event, String> {
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let now = Utc::now().timestamp();
    let header = Webhook::generate_test_header(payload, &secret, Some(now));
    Webhook::construct_event_with_timestamp(payload, &header, &secret, now).map_err(|e| match e {
        WebhookError::BadParse(reason) => format!("the event does not parse: {reason}"),
        other => format!("the event could not be read: {other}"),
    })
}

/// `t=<int>` and at least one `v1=`: what Stripe always sends.
fn well_formed(header: &str) -> bool {
    let mut t = false;
    let mut v1 = false;
    for pair in header.split(',') {
        match pair.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().is_ok(),
            Some(("v1", value)) => v1 |= !value.is_empty(),
            _ => {}
        }
    }
    t && v1
}

/// The fields every event has, read from the raw JSON so that they survive
/// an object the SDK can't parse.
#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    #[serde(default)]
    livemode: bool,
    #[serde(default)]
    api_version: Option<String>,
}

fn envelope(
    payload: &str,
    secret_index: usize,
    parsed: Result<Box<Event>, String>,
) -> Result<Verified, WebhookRejection> {
    let raw: Envelope = serde_json::from_str(payload).map_err(|e| {
        let reason = parsed
            .as_ref()
            .err()
            .map_or_else(|| e.to_string(), Clone::clone);
        WebhookRejection::NotAnEvent(reason)
    })?;
    let event = parsed.map_err(|reason| {
        let mut why = format!("{} {}: {reason}", raw.event_type, raw.id);
        if let Some(version) = raw
            .api_version
            .as_deref()
            .filter(|v| *v != PINNED_API_VERSION)
        {
            why.push_str(&format!(
                " (rendered for API version {version}; seatwarden reads {PINNED_API_VERSION})"
            ));
        }
        why
    });
    Ok(Verified {
        id: EventId::new(raw.id),
        event_type: raw.event_type,
        created: raw.created,
        livemode: raw.livemode,
        api_version: raw.api_version,
        secret_index,
        event,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use stripe_webhook::EventObject;

    use super::*;

    const NOW: i64 = 1_790_000_000;

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(NOW, 0).unwrap()
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    fn sign(payload: &str, secret: &str, t: i64) -> String {
        Webhook::generate_test_header(payload, secret, Some(t))
    }

    /// A `customer.created` event: its object is small and parses.
    fn customer_created(id: &str) -> String {
        serde_json::json!({
            "id": id,
            "object": "event",
            "api_version": PINNED_API_VERSION,
            "created": NOW - 5,
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "type": "customer.created",
            "data": {"object": {
                "id": "cus_T1",
                "object": "customer",
                "created": NOW - 5,
                "livemode": false,
                "email": "billing@example.com",
                "metadata": {"org_id": "o1"}
            }}
        })
        .to_string()
    }

    #[test]
    fn a_delivery_signed_with_the_current_secret_verifies_and_parses() {
        let body = customer_created("evt_1");
        let header = sign(&body, "whsec_current", NOW);
        let current = secret("whsec_current");
        let v = verify(body.as_bytes(), &header, &[&current], now()).unwrap();
        assert_eq!(v.id.as_str(), "evt_1");
        assert_eq!(v.event_type, "customer.created");
        assert_eq!(v.created, NOW - 5);
        assert_eq!(v.secret_index, 0);
        let event = v.parsed().expect("parses");
        assert!(
            matches!(&event.data.object, EventObject::CustomerCreated(c) if c.id.as_str() == "cus_T1")
        );
    }

    #[test]
    fn a_delivery_signed_with_the_previous_secret_verifies_while_rolling() {
        let body = customer_created("evt_2");
        let header = sign(&body, "whsec_old", NOW);
        let (current, previous) = (secret("whsec_new"), secret("whsec_old"));
        let v = verify(body.as_bytes(), &header, &[&current, &previous], now()).unwrap();
        assert_eq!(v.secret_index, 1);
        assert!(v.parsed().is_some());
    }

    #[test]
    fn any_matching_v1_among_several_is_enough_and_v0_is_ignored() {
        let body = customer_created("evt_3");
        let good = sign(&body, "whsec_new", NOW);
        let good_v1 = good.split_once(",v1=").unwrap().1;
        let header = format!("t={NOW},v1={},v1={good_v1},v0=abc", "0".repeat(64));
        let current = secret("whsec_new");
        assert!(verify(body.as_bytes(), &header, &[&current], now()).is_ok());
    }

    #[test]
    fn a_wrong_secret_or_a_tampered_body_is_a_bad_signature() {
        let body = customer_created("evt_4");
        let header = sign(&body, "whsec_attacker", NOW);
        let current = secret("whsec_current");
        assert_eq!(
            verify(body.as_bytes(), &header, &[&current], now()).unwrap_err(),
            WebhookRejection::BadSignature
        );
        let header = sign(&body, "whsec_current", NOW);
        let tampered = body.replace("cus_T1", "cus_T2");
        assert_eq!(
            verify(tampered.as_bytes(), &header, &[&current], now()).unwrap_err(),
            WebhookRejection::BadSignature
        );
    }

    #[test]
    fn a_signature_older_or_newer_than_five_minutes_is_stale() {
        let body = customer_created("evt_5");
        let current = secret("whsec_current");
        for t in [NOW - TOLERANCE_SECS - 1, NOW + TOLERANCE_SECS + 1] {
            let header = sign(&body, "whsec_current", t);
            assert_eq!(
                verify(body.as_bytes(), &header, &[&current], now()).unwrap_err(),
                WebhookRejection::Stale { timestamp: t }
            );
        }
        let header = sign(&body, "whsec_current", NOW - TOLERANCE_SECS);
        assert!(verify(body.as_bytes(), &header, &[&current], now()).is_ok());
    }

    #[test]
    fn a_missing_or_malformed_header_is_refused_before_any_check() {
        let body = customer_created("evt_6");
        let current = secret("whsec_current");
        for header in ["", "garbage", "t=abc,v1=00", "v1=00", &format!("t={NOW}")] {
            assert_eq!(
                verify(body.as_bytes(), header, &[&current], now()).unwrap_err(),
                WebhookRejection::MalformedHeader,
                "{header}"
            );
        }
        assert_eq!(
            verify(body.as_bytes(), &sign(&body, "x", NOW), &[], now()).unwrap_err(),
            WebhookRejection::NoSecret
        );
    }

    #[test]
    fn a_signed_event_whose_object_does_not_parse_is_verified_with_the_reason() {
        let mut event: serde_json::Value =
            serde_json::from_str(&customer_created("evt_7")).unwrap();
        event["api_version"] = "2019-02-19".into();
        // A customer without `created` is not a customer of the pinned version.
        event["data"]["object"]
            .as_object_mut()
            .unwrap()
            .remove("created");
        let body = event.to_string();
        let header = sign(&body, "whsec_current", NOW);
        let current = secret("whsec_current");
        let v = verify(body.as_bytes(), &header, &[&current], now()).unwrap();
        assert_eq!(v.id.as_str(), "evt_7");
        assert_eq!(v.event_type, "customer.created");
        assert_eq!(v.created, NOW - 5);
        assert_eq!(v.api_version.as_deref(), Some("2019-02-19"));
        let reason = v.event.unwrap_err();
        assert!(
            reason.contains("evt_7") && reason.contains("2019-02-19"),
            "{reason}"
        );
    }

    #[test]
    fn a_signed_body_that_is_no_event_is_refused() {
        let body = r#"{"hello":"world"}"#;
        let header = sign(body, "whsec_current", NOW);
        let current = secret("whsec_current");
        assert!(matches!(
            verify(body.as_bytes(), &header, &[&current], now()),
            Err(WebhookRejection::NotAnEvent(_))
        ));
        assert_eq!(
            verify(&[0xff, 0xfe], &header, &[&current], now()).unwrap_err(),
            WebhookRejection::MalformedPayload
        );
    }
}
