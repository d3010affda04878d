//! A stateful fake of Stripe for tests: the API calls seatwarden makes, and
//! signed webhook deliveries back to the server, in the shapes of the API
//! version async-stripe `1.0.0-rc.10` is built for (`2026-09-30.endive`).
//!
//! **API** (`FakeStripe::api_base()`, form-encoded requests, JSON answers):
//! `POST /v1/customers`, `POST /v1/checkout/sessions`,
//! `POST /v1/billing_portal/sessions`, `GET /v1/subscriptions/{id}`. Every request is recorded
//! ([`FakeStripe::requests`]); a wrong or missing `Authorization: Bearer`
//! key is answered 401; a repeated `Idempotency-Key` replays the first
//! answer (`Idempotent-Replayed: true`), or is refused 400
//! `idempotency_error` when the parameters differ, as Stripe does. Unknown
//! prices are created on first use (1000 per month, `usd`) unless
//! [`FakeStripe::add_price`] set them first; an unknown customer is 400
//! `resource_missing`.
//!
//! **Webhooks**: [`FakeStripe::complete_checkout`] creates the
//! subscription and its first invoice and delivers
//! `checkout.session.completed` then `invoice.paid` to every configured URL,
//! signed like Stripe (`Stripe-Signature: t=...,v1=HMAC-SHA256("{t}.{body}")`).
//! The `build_*` methods change the fake's state and return the event
//! without delivering it; the `emit_*` methods build and deliver. Deliveries
//! can be repeated, reordered, sent to one URL, signed with another secret
//! or timestamp, or tampered with ([`Delivery`]); a non-2xx answer is
//! retried per the [`RetryPolicy`], and every attempt is recorded
//! ([`FakeStripe::attempts`]).
//!
//! Out of scope: the other ~500 endpoints, expansions, list calls, real
//! payments, Stripe's own clock (test clocks). Objects carry the fields
//! billing reads and whatever else the SDK's types require.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Months, TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The API key the fake accepts unless told otherwise.
pub const TEST_SECRET_KEY: &str = "sk_test_51FakeSeatwardenKeyDoNotUse0000";
/// The secret the fake signs webhooks with unless told otherwise.
pub const TEST_WEBHOOK_SECRET: &str = "whsec_fake_seatwarden_signing_secret";
/// The API version of every event and answer.
pub const API_VERSION: &str = "2026-09-30.endive";

/// How a delivery answered with a non-2xx status (or no answer) is retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; at least 1.
    pub max_attempts: u32,
    /// Wait between attempts.
    pub interval: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            interval: Duration::from_millis(50),
        }
    }
}

/// One API request as the fake saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// E.g. `/v1/checkout/sessions`.
    pub path: String,
    /// The form fields, decoded, in order: `line_items[0][price]`, ...
    pub params: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
    pub authorized: bool,
    pub status: u16,
    /// Answered from the idempotency store rather than executed.
    pub replayed: bool,
}

impl RecordedRequest {
    /// The first value of form field `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An event as Stripe would send it.
#[derive(Clone, Debug)]
pub struct FakeEvent {
    pub id: String,
    pub event_type: String,
    pub json: Value,
}

impl FakeEvent {
    /// The body a delivery sends (and signs).
    pub fn body(&self) -> String {
        self.json.to_string()
    }

    /// `data.object`.
    pub fn object(&self) -> &Value {
        &self.json["data"]["object"]
    }
}

/// How to deliver an event; the default is what Stripe does: every
/// configured URL, the fake's secret, signed at the moment of each attempt,
/// the fake's retry policy.
#[derive(Clone, Debug, Default)]
pub struct Delivery {
    /// Only this URL instead of every configured one.
    pub url: Option<String>,
    /// Sign with this secret instead of the fake's.
    pub secret: Option<String>,
    /// Sign with this `t` (Unix seconds) instead of now.
    pub timestamp: Option<i64>,
    /// Change the body after signing it (the signature no longer matches).
    pub tamper: bool,
    pub retry: Option<RetryPolicy>,
}

/// One POST of an event to one URL.
#[derive(Clone, Debug)]
pub struct DeliveryAttempt {
    pub event_id: String,
    pub event_type: String,
    pub url: String,
    /// 1 for the first attempt of this delivery to this URL.
    pub attempt: u32,
    /// `None`: no HTTP answer (refused, timed out).
    pub status: Option<u16>,
    pub response_body: String,
}

impl DeliveryAttempt {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// What completing a checkout made.
#[derive(Clone, Debug)]
pub struct Completion {
    pub session_id: String,
    pub subscription_id: String,
    pub invoice_id: String,
    /// `checkout.session.completed`, then `invoice.paid`.
    pub events: Vec<FakeEvent>,
}

/// A change to a subscription, as the dashboard, the portal or the API
/// would make it; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct SubscriptionChange {
    /// Switch the (single) item to this price.
    pub price: Option<String>,
    pub quantity: Option<u32>,
    pub status: Option<String>,
    pub cancel_at_period_end: Option<bool>,
    /// Replace these metadata keys.
    pub metadata: Vec<(String, String)>,
}

/// An answer to force on the next API request, before it runs (so it is
/// not stored under its idempotency key: a retry with the same key runs).
#[derive(Clone, Debug)]
pub struct Failure {
    pub status: u16,
    pub error_type: String,
    pub code: Option<String>,
    pub message: String,
}

impl Failure {
    pub fn server_error() -> Self {
        Self {
            status: 500,
            error_type: "api_error".into(),
            code: None,
            message: "An unknown error occurred".into(),
        }
    }

    pub fn card_declined() -> Self {
        Self {
            status: 402,
            error_type: "card_error".into(),
            code: Some("card_declined".into()),
            message: "Your card was declined.".into(),
        }
    }
}

#[derive(Clone, Debug)]
struct Price {
    unit_amount: i64,
    interval: String,
    product: String,
    created: i64,
}

/// The first answer to an idempotency key, and what it was for.
#[derive(Clone)]
struct Stored {
    path: String,
    params: Vec<(String, String)>,
    status: u16,
    body: String,
}

#[derive(Default)]
struct State {
    api_key: String,
    webhook_secret: String,
    webhook_urls: Vec<String>,
    retry: RetryPolicy,
    delay: Duration,
    failures: Vec<Failure>,
    requests: Vec<RecordedRequest>,
    idempotency: HashMap<String, Stored>,
    prices: HashMap<String, Price>,
    customers: HashMap<String, Value>,
    sessions: HashMap<String, Value>,
    subscriptions: HashMap<String, Value>,
    invoices: HashMap<String, Value>,
    events: Vec<FakeEvent>,
    attempts: Vec<DeliveryAttempt>,
    invoice_numbers: u32,
}

struct Inner {
    addr: SocketAddr,
    state: Mutex<State>,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The fake. Cheap to clone (clones share the server and state), so a test
/// can deliver from a spawned task.
#[derive(Clone)]
pub struct FakeStripe {
    inner: Arc<Inner>,
}

impl FakeStripe {
    /// Starts on a free loopback port, with [`TEST_SECRET_KEY`],
    /// [`TEST_WEBHOOK_SECRET`] and no webhook URL.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake Stripe");
        let addr = listener.local_addr().expect("fake Stripe address");
        let fake = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let weak = weak.clone();
            let server = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let weak = weak.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let weak = weak.clone();
                            async move {
                                let Some(inner) = weak.upgrade() else {
                                    return Ok::<_, Infallible>(
                                        Response::builder()
                                            .status(503)
                                            .body(Full::new(Bytes::new()))
                                            .expect("response"),
                                    );
                                };
                                Ok(FakeStripe { inner }.handle(req).await)
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Inner {
                addr,
                state: Mutex::new(State {
                    api_key: TEST_SECRET_KEY.into(),
                    webhook_secret: TEST_WEBHOOK_SECRET.into(),
                    ..State::default()
                }),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("reqwest client"),
                server,
            }
        });
        Self { inner: fake }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().expect("fake Stripe state")
    }

    // ----- configuration -------------------------------------------------

    /// What `stripe.api_base` must be set to: `http://127.0.0.1:PORT/`.
    pub fn api_base(&self) -> String {
        format!("http://{}/", self.inner.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Accept this API key instead of [`TEST_SECRET_KEY`].
    pub fn set_api_key(&self, key: &str) {
        self.state().api_key = key.into();
    }

    /// Sign webhooks with this secret instead of [`TEST_WEBHOOK_SECRET`].
    pub fn set_webhook_secret(&self, secret: &str) {
        self.state().webhook_secret = secret.into();
    }

    pub fn webhook_secret(&self) -> String {
        self.state().webhook_secret.clone()
    }

    /// Adds an endpoint every delivery goes to (e.g.
    /// `http://127.0.0.1:PORT/api/v1/billing/webhook` of each test node).
    pub fn add_webhook_url(&self, url: &str) {
        self.state().webhook_urls.push(url.into());
    }

    pub fn set_webhook_urls(&self, urls: &[&str]) {
        self.state().webhook_urls = urls.iter().map(|u| (*u).to_owned()).collect();
    }

    pub fn set_retry_policy(&self, retry: RetryPolicy) {
        self.state().retry = retry;
    }

    /// Waits this long before answering each API request (for timeouts).
    pub fn set_response_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// Answers the next API request with `failure` instead of running it.
    pub fn fail_next(&self, failure: Failure) {
        self.state().failures.push(failure);
    }

    /// Sets a price's amount (in cents) and interval (`day`, `week`,
    /// `month`, `year`) before it is used.
    pub fn add_price(&self, price_id: &str, unit_amount: i64, interval: &str) {
        let now = now();
        self.state().prices.insert(
            price_id.into(),
            Price {
                unit_amount,
                interval: interval.into(),
                product: format!("prod_{}", suffix(price_id)),
                created: now,
            },
        );
    }

    // ----- what happened -------------------------------------------------

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// The requests to one path, e.g. `/v1/checkout/sessions`.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn customer(&self, id: &str) -> Option<Value> {
        self.state().customers.get(id).cloned()
    }

    pub fn customers(&self) -> Vec<Value> {
        self.state().customers.values().cloned().collect()
    }

    pub fn session(&self, id: &str) -> Option<Value> {
        self.state().sessions.get(id).cloned()
    }

    pub fn sessions(&self) -> Vec<Value> {
        self.state().sessions.values().cloned().collect()
    }

    pub fn subscription(&self, id: &str) -> Option<Value> {
        self.state().subscriptions.get(id).cloned()
    }

    pub fn invoice(&self, id: &str) -> Option<Value> {
        self.state().invoices.get(id).cloned()
    }

    /// Every event built, in order.
    pub fn events(&self) -> Vec<FakeEvent> {
        self.state().events.clone()
    }

    /// Every delivery attempt, in order.
    pub fn attempts(&self) -> Vec<DeliveryAttempt> {
        self.state().attempts.clone()
    }

    pub fn attempts_for(&self, event_id: &str) -> Vec<DeliveryAttempt> {
        self.state()
            .attempts
            .iter()
            .filter(|a| a.event_id == event_id)
            .cloned()
            .collect()
    }

    // ----- the API -------------------------------------------------------

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let authorization = header("authorization");
        let idempotency_key = header("idempotency-key");
        let stripe_version = header("stripe-version");
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let params: Vec<(String, String)> = url::form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let delay = self.state().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }

        let mut state = self.state();
        let presented = authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        let authorized = presented == state.api_key;
        let mut record = RecordedRequest {
            method: method.clone(),
            path: path.clone(),
            params: params.clone(),
            idempotency_key: idempotency_key.clone(),
            stripe_version,
            authorized,
            status: 0,
            replayed: false,
        };
        let (status, body) = if !authorized {
            (
                401,
                error_body(
                    "invalid_request_error",
                    None,
                    &format!("Invalid API Key provided: {}", mask(presented)),
                    None,
                ),
            )
        } else if !state.failures.is_empty() {
            let f = state.failures.remove(0);
            (
                f.status,
                error_body(&f.error_type, f.code.as_deref(), &f.message, None),
            )
        } else if let Some(first) = idempotency_key
            .as_ref()
            .and_then(|k| state.idempotency.get(k))
            .cloned()
        {
            // Stripe compares the parameters, not their order (a client's
            // metadata map may serialize in any order).
            let sorted = |p: &[(String, String)]| {
                let mut p = p.to_vec();
                p.sort();
                p
            };
            if first.path == path && sorted(&first.params) == sorted(&params) {
                record.replayed = true;
                (first.status, first.body)
            } else {
                let message = format!(
                    "Keys for idempotent requests can only be used with the same parameters \
                     they were first used with. Try using a key other than '{}' if you meant \
                     to execute a different request.",
                    idempotency_key.as_deref().unwrap_or_default()
                );
                (400, error_body("idempotency_error", None, &message, None))
            }
        } else {
            let (status, body) = match (method.as_str(), path.as_str()) {
                ("POST", "/v1/customers") => state.create_customer(&params),
                ("POST", "/v1/checkout/sessions") => state.create_session(&params, self.inner.addr),
                ("POST", "/v1/billing_portal/sessions") => {
                    state.create_portal_session(&params, self.inner.addr)
                }
                ("GET", p) if p.starts_with("/v1/subscriptions/") => {
                    let id = &p["/v1/subscriptions/".len()..];
                    match state.subscriptions.get(id) {
                        Some(sub) => (200, sub.to_string()),
                        None => (
                            404,
                            error_body(
                                "invalid_request_error",
                                Some("resource_missing"),
                                &format!("No such subscription: '{id}'"),
                                Some("id"),
                            ),
                        ),
                    }
                }
                _ => (
                    404,
                    error_body(
                        "invalid_request_error",
                        None,
                        &format!("Unrecognized request URL ({method}: {path})."),
                        None,
                    ),
                ),
            };
            if let Some(key) = &idempotency_key {
                let stored = Stored {
                    path: path.clone(),
                    params: params.clone(),
                    status,
                    body: body.clone(),
                };
                state.idempotency.insert(key.clone(), stored);
            }
            (status, body)
        };
        record.status = status;
        state.requests.push(record.clone());
        drop(state);

        let mut response = Response::builder()
            .status(StatusCode::from_u16(status).expect("status"))
            .header("content-type", "application/json")
            .header("request-id", new_id("req_"))
            .header("stripe-version", API_VERSION);
        if record.replayed {
            response = response.header("idempotent-replayed", "true");
        }
        if let Some(key) = idempotency_key {
            response = response.header("idempotency-key", key);
        }
        response
            .body(Full::new(Bytes::from(body)))
            .expect("response")
    }

    // ----- webhooks: building --------------------------------------------

    /// Completes a checkout as a customer paying would (the subscription
    /// and its first invoice are created) and returns its events without
    /// delivering them.
    pub fn build_checkout_completion(&self, session_id: &str) -> Completion {
        let mut state = self.state();
        let mut session = state
            .sessions
            .get(session_id)
            .cloned()
            .unwrap_or_else(|| panic!("no checkout session {session_id}"));
        assert_eq!(
            session["status"], "open",
            "session {session_id} is not open"
        );
        let now = now();
        let customer = session["customer"].as_str().unwrap_or_default().to_owned();
        let price_id = session["__price"].as_str().unwrap_or_default().to_owned();
        let quantity = session["__quantity"].as_u64().unwrap_or(1);
        let trial_days = session["__trial_days"].as_u64().unwrap_or(0);
        let sub_metadata = session["__subscription_metadata"].clone();
        let price = state.price(&price_id);

        let sub_id = new_id("sub_");
        let (status, period_end, trial_end) = if trial_days > 0 {
            let end = now + i64::try_from(trial_days).unwrap_or(0) * 86_400;
            ("trialing", end, Some(end))
        } else {
            ("active", advance(now, &price.interval), None)
        };
        let item = subscription_item(&sub_id, &price_id, &price, quantity, now, period_end);
        let subscription = merged([
            json!({
                "id": sub_id,
                "object": "subscription",
                "application": null,
                "application_fee_percent": null,
                "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null},
                "billing_cycle_anchor": period_end,
                "billing_cycle_anchor_config": null,
                "billing_mode": {"flexible": null, "type": "classic"},
                "billing_schedules": [],
                "billing_thresholds": null,
                "cancel_at": null,
                "cancel_at_period_end": false,
                "canceled_at": null,
                "cancellation_details": {"comment": null, "feedback": null, "reason": null},
                "collection_method": "charge_automatically",
                "created": now,
                "currency": "usd",
                "customer": customer,
                "customer_account": null,
                "days_until_due": null
            }),
            json!({
                "default_payment_method": "pm_fake_card_visa",
                "default_source": null,
                "default_tax_rates": [],
                "description": null,
                "discounts": [],
                "ended_at": null,
                "invoice_settings": {"account_tax_ids": null, "issuer": {"type": "self"}},
                "items": {
                "object": "list",
                "data": [item],
                "has_more": false,
                "total_count": 1,
                "url": format!("/v1/subscription_items?subscription={sub_id}")
            },
                "latest_invoice": null,
                "livemode": false,
                "metadata": sub_metadata,
                "next_pending_invoice_item_invoice": null,
                "on_behalf_of": null,
                "pause_collection": null,
                "payment_settings": {
                "payment_method_options": null,
                "payment_method_types": null,
                "save_default_payment_method": "off"
            },
                "pending_invoice_item_interval": null,
                "pending_setup_intent": null,
                "pending_update": null,
                "schedule": null,
                "start_date": now
            }),
            json!({
                "status": status,
                "test_clock": null,
                "transfer_data": null,
                "trial_end": trial_end,
                "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
                "trial_start": trial_end.map(|_| now)
            }),
        ]);
        let amount = if trial_days > 0 {
            0
        } else {
            price.unit_amount * i64::try_from(quantity).unwrap_or(1)
        };
        let invoice = state.new_invoice(
            &subscription,
            "subscription_create",
            (now, now),
            (now, period_end),
            amount,
            true,
        );
        let invoice_id = invoice["id"].as_str().unwrap_or_default().to_owned();
        let mut subscription = subscription;
        subscription["latest_invoice"] = json!(invoice_id);

        session["status"] = json!("complete");
        session["payment_status"] = json!(if amount == 0 {
            "no_payment_required"
        } else {
            "paid"
        });
        session["subscription"] = json!(sub_id);
        session["invoice"] = json!(invoice_id);
        session["amount_subtotal"] = json!(amount);
        session["amount_total"] = json!(amount);
        session["url"] = Value::Null;
        session["customer_details"] = json!({
            "address": null,
            "business_name": null,
            "email": state.customers.get(&customer).map_or(Value::Null, |c| c["email"].clone()),
            "individual_name": null,
            "name": state.customers.get(&customer).map_or(Value::Null, |c| c["name"].clone()),
            "phone": null,
            "tax_exempt": "none",
            "tax_ids": []
        });
        state.sessions.insert(session_id.into(), session.clone());
        state.subscriptions.insert(sub_id.clone(), subscription);
        state.invoices.insert(invoice_id.clone(), invoice.clone());

        let completed = state.event("checkout.session.completed", public(&session), None, None);
        let paid = state.event("invoice.paid", invoice, None, None);
        Completion {
            session_id: session_id.into(),
            subscription_id: sub_id,
            invoice_id,
            events: vec![completed, paid],
        }
    }

    /// The next period of a subscription paid: the period advances (a
    /// trial ends) and `invoice.paid` comes for a `subscription_cycle`
    /// invoice. While an invoice is overdue (open after a failed payment),
    /// that invoice is the one paid, and the period stays.
    pub fn build_renewal_paid(&self, subscription_id: &str) -> FakeEvent {
        let mut state = self.state();
        // An overdue invoice is paid first: its period started already.
        let open = state.open_invoice(subscription_id);
        if let Some(id) = open {
            let invoice = state.invoices.get_mut(&id).expect("the open invoice");
            invoice["status"] = json!("paid");
            invoice["next_payment_attempt"] = Value::Null;
            let invoice = invoice.clone();
            state.set_subscription(subscription_id, |s| s["status"] = json!("active"));
            return state.event("invoice.paid", invoice, None, None);
        }
        let (sub, old, new) = state.advance_period(subscription_id);
        let amount = state.amount_of(&sub);
        let mut invoice = state.new_invoice(&sub, "subscription_cycle", old, new, amount, true);
        invoice["created"] = json!(new.0);
        let id = invoice["id"].as_str().unwrap_or_default().to_owned();
        state.set_subscription(subscription_id, |s| {
            s["status"] = json!("active");
            s["latest_invoice"] = json!(id);
        });
        state.invoices.insert(id, invoice.clone());
        state.event("invoice.paid", invoice, None, None)
    }

    /// The charge for the next period fails: an open invoice and
    /// `invoice.payment_failed`; the subscription becomes `past_due`. Called
    /// again while that invoice is open, it is Stripe's next retry of it:
    /// `attempt_count` grows and the period stays.
    pub fn build_payment_failed(&self, subscription_id: &str) -> FakeEvent {
        let mut state = self.state();
        // A retry of the same unpaid invoice (Stripe's Smart Retries): one
        // more attempt on it, the period unchanged.
        let open = state.open_invoice(subscription_id);
        if let Some(id) = open {
            let invoice = state.invoices.get_mut(&id).expect("the open invoice");
            let attempts = invoice["attempt_count"].as_i64().unwrap_or(1) + 1;
            invoice["attempt_count"] = json!(attempts);
            invoice["next_payment_attempt"] = json!(now() + 3 * 86_400);
            let invoice = invoice.clone();
            return state.event("invoice.payment_failed", invoice, None, None);
        }
        let (sub, old, new) = state.advance_period(subscription_id);
        let amount = state.amount_of(&sub);
        let mut invoice = state.new_invoice(&sub, "subscription_cycle", old, new, amount, false);
        invoice["next_payment_attempt"] = json!(now() + 3 * 86_400);
        let id = invoice["id"].as_str().unwrap_or_default().to_owned();
        state.set_subscription(subscription_id, |s| {
            s["status"] = json!("past_due");
            s["latest_invoice"] = json!(id);
        });
        state.invoices.insert(id, invoice.clone());
        state.event("invoice.payment_failed", invoice, None, None)
    }

    /// `customer.subscription.updated` for `change`, with
    /// `previous_attributes` as Stripe sends them.
    pub fn build_subscription_updated(
        &self,
        subscription_id: &str,
        change: SubscriptionChange,
    ) -> FakeEvent {
        let mut state = self.state();
        let before = state.subscription(subscription_id);
        let mut previous = serde_json::Map::new();
        let new_price = change.price.as_ref().map(|p| (p.clone(), state.price(p)));
        state.set_subscription(subscription_id, |s| {
            if new_price.is_some() || change.quantity.is_some() {
                previous.insert("items".into(), s["items"].clone());
                let item = &mut s["items"]["data"][0];
                if let Some((price_id, price)) = &new_price {
                    previous.insert("plan".into(), item["plan"].clone());
                    let fresh = subscription_item(
                        subscription_id,
                        price_id,
                        price,
                        item["quantity"].as_u64().unwrap_or(1),
                        item["current_period_start"].as_i64().unwrap_or_default(),
                        item["current_period_end"].as_i64().unwrap_or_default(),
                    );
                    item["price"] = fresh["price"].clone();
                    item["plan"] = fresh["plan"].clone();
                }
                if let Some(quantity) = change.quantity {
                    previous.insert("quantity".into(), item["quantity"].clone());
                    item["quantity"] = json!(quantity);
                }
            }
            if let Some(status) = &change.status {
                previous.insert("status".into(), s["status"].clone());
                s["status"] = json!(status);
            }
            if let Some(cancel) = change.cancel_at_period_end {
                previous.insert(
                    "cancel_at_period_end".into(),
                    s["cancel_at_period_end"].clone(),
                );
                s["cancel_at_period_end"] = json!(cancel);
                s["cancel_at"] = if cancel {
                    s["items"]["data"][0]["current_period_end"].clone()
                } else {
                    Value::Null
                };
            }
            if !change.metadata.is_empty() {
                previous.insert("metadata".into(), s["metadata"].clone());
                for (k, v) in &change.metadata {
                    s["metadata"][k] = json!(v);
                }
            }
        });
        let after = state.subscription(subscription_id);
        assert_ne!(before, after, "the change changed nothing");
        state.event(
            "customer.subscription.updated",
            after,
            Some(Value::Object(previous)),
            Some(new_id("req_")),
        )
    }

    /// The subscription ends now: `customer.subscription.deleted`.
    pub fn build_subscription_deleted(&self, subscription_id: &str) -> FakeEvent {
        let mut state = self.state();
        let now = now();
        state.set_subscription(subscription_id, |s| {
            s["status"] = json!("canceled");
            s["canceled_at"] = json!(now);
            s["ended_at"] = json!(now);
            s["cancellation_details"] =
                json!({"comment": null, "feedback": null, "reason": "cancellation_requested"});
        });
        let sub = state.subscription(subscription_id);
        state.event("customer.subscription.deleted", sub, None, None)
    }

    /// `customer.subscription.trial_will_end` (Stripe sends it three days
    /// before the trial ends); no state changes.
    pub fn build_trial_will_end(&self, subscription_id: &str) -> FakeEvent {
        let mut state = self.state();
        let sub = state.subscription(subscription_id);
        state.event("customer.subscription.trial_will_end", sub, None, None)
    }

    /// Any event around any object, e.g. one of an API version seatwarden
    /// doesn't read; recorded like the others.
    pub fn build_event(&self, event_type: &str, object: Value) -> FakeEvent {
        self.state().event(event_type, object, None, None)
    }

    // ----- webhooks: delivering ------------------------------------------

    /// Completes a checkout and delivers `checkout.session.completed`,
    /// then `invoice.paid`, each to every configured URL.
    pub async fn complete_checkout(&self, session_id: &str) -> Completion {
        let completion = self.build_checkout_completion(session_id);
        self.deliver_all(&completion.events).await;
        completion
    }

    pub async fn emit_renewal_paid(&self, subscription_id: &str) -> FakeEvent {
        let event = self.build_renewal_paid(subscription_id);
        self.deliver(&event).await;
        event
    }

    pub async fn emit_payment_failed(&self, subscription_id: &str) -> FakeEvent {
        let event = self.build_payment_failed(subscription_id);
        self.deliver(&event).await;
        event
    }

    pub async fn emit_subscription_updated(
        &self,
        subscription_id: &str,
        change: SubscriptionChange,
    ) -> FakeEvent {
        let event = self.build_subscription_updated(subscription_id, change);
        self.deliver(&event).await;
        event
    }

    pub async fn emit_subscription_deleted(&self, subscription_id: &str) -> FakeEvent {
        let event = self.build_subscription_deleted(subscription_id);
        self.deliver(&event).await;
        event
    }

    pub async fn emit_trial_will_end(&self, subscription_id: &str) -> FakeEvent {
        let event = self.build_trial_will_end(subscription_id);
        self.deliver(&event).await;
        event
    }

    /// Delivers as Stripe does (see [`Delivery::default`]); returns this
    /// delivery's attempts.
    pub async fn deliver(&self, event: &FakeEvent) -> Vec<DeliveryAttempt> {
        self.deliver_with(event, &Delivery::default()).await
    }

    /// Delivers the same event `times` times, one after the other (Stripe's
    /// duplicates).
    pub async fn deliver_times(&self, event: &FakeEvent, times: usize) -> Vec<DeliveryAttempt> {
        let mut attempts = Vec::new();
        for _ in 0..times {
            attempts.extend(self.deliver(event).await);
        }
        attempts
    }

    /// Delivers `events` in the order given (e.g. reversed, to test
    /// out-of-order arrival).
    pub async fn deliver_all(&self, events: &[FakeEvent]) -> Vec<DeliveryAttempt> {
        let mut attempts = Vec::new();
        for event in events {
            attempts.extend(self.deliver(event).await);
        }
        attempts
    }

    /// Delivers to `url` only (e.g. one of two test nodes).
    pub async fn deliver_to(&self, event: &FakeEvent, url: &str) -> Vec<DeliveryAttempt> {
        self.deliver_with(
            event,
            &Delivery {
                url: Some(url.into()),
                ..Delivery::default()
            },
        )
        .await
    }

    /// Delivers with the given choices, retrying a non-2xx answer (or
    /// none) per the retry policy; every attempt is recorded.
    pub async fn deliver_with(&self, event: &FakeEvent, how: &Delivery) -> Vec<DeliveryAttempt> {
        let (urls, secret, retry) = {
            let state = self.state();
            let urls = how
                .url
                .clone()
                .map_or_else(|| state.webhook_urls.clone(), |u| vec![u]);
            (
                urls,
                how.secret
                    .clone()
                    .unwrap_or_else(|| state.webhook_secret.clone()),
                how.retry.unwrap_or(state.retry),
            )
        };
        assert!(
            !urls.is_empty(),
            "no webhook URL to deliver {} to",
            event.id
        );
        let body = event.body();
        let mut attempts = Vec::new();
        for url in urls {
            for attempt in 1..=retry.max_attempts.max(1) {
                if attempt > 1 {
                    tokio::time::sleep(retry.interval).await;
                }
                let t = how.timestamp.unwrap_or_else(now);
                let header = signature_header(&body, &secret, t);
                let sent = if how.tamper {
                    tamper(&body)
                } else {
                    body.clone()
                };
                let answer = self
                    .inner
                    .http
                    .post(&url)
                    .header("content-type", "application/json; charset=utf-8")
                    .header(
                        "user-agent",
                        "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                    )
                    .header("stripe-signature", header)
                    .body(sent)
                    .send()
                    .await;
                let (status, response_body) = match answer {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        (Some(status), r.text().await.unwrap_or_default())
                    }
                    Err(e) => (None, e.to_string()),
                };
                let record = DeliveryAttempt {
                    event_id: event.id.clone(),
                    event_type: event.event_type.clone(),
                    url: url.clone(),
                    attempt,
                    status,
                    response_body,
                };
                let done = record.succeeded();
                self.state().attempts.push(record.clone());
                attempts.push(record);
                if done {
                    break;
                }
            }
        }
        attempts
    }
}

// ----- the state machine ---------------------------------------------------

impl State {
    fn price(&mut self, id: &str) -> Price {
        self.prices
            .entry(id.to_owned())
            .or_insert_with(|| Price {
                unit_amount: 1000,
                interval: "month".into(),
                product: format!("prod_{}", suffix(id)),
                created: now(),
            })
            .clone()
    }

    fn subscription(&self, id: &str) -> Value {
        self.subscriptions
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("no subscription {id}"))
    }

    fn set_subscription(&mut self, id: &str, change: impl FnOnce(&mut Value)) {
        let sub = self
            .subscriptions
            .get_mut(id)
            .unwrap_or_else(|| panic!("no subscription {id}"));
        change(sub);
    }

    fn amount_of(&mut self, sub: &Value) -> i64 {
        let item = &sub["items"]["data"][0];
        item["price"]["unit_amount"].as_i64().unwrap_or_default()
            * item["quantity"].as_i64().unwrap_or(1)
    }

    /// Moves the subscription's (single item's) period on by one interval;
    /// returns it (after) with the old and new periods.
    fn advance_period(&mut self, id: &str) -> (Value, (i64, i64), (i64, i64)) {
        let mut sub = self.subscription(id);
        let item = &mut sub["items"]["data"][0];
        let interval = item["price"]["recurring"]["interval"]
            .as_str()
            .unwrap_or("month")
            .to_owned();
        let old = (
            item["current_period_start"].as_i64().unwrap_or_default(),
            item["current_period_end"].as_i64().unwrap_or_default(),
        );
        let new = (old.1, advance(old.1, &interval));
        item["current_period_start"] = json!(new.0);
        item["current_period_end"] = json!(new.1);
        sub["billing_cycle_anchor"] = json!(old.1);
        self.subscriptions.insert(id.into(), sub.clone());
        (sub, old, new)
    }

    /// The subscription's latest invoice, if it is still open (unpaid
    /// after a failed payment).
    fn open_invoice(&self, subscription_id: &str) -> Option<String> {
        self.subscriptions
            .get(subscription_id)
            .and_then(|s| s["latest_invoice"].as_str().map(str::to_owned))
            .filter(|id| self.invoices.get(id).is_some_and(|i| i["status"] == "open"))
    }

    fn new_invoice(
        &mut self,
        sub: &Value,
        billing_reason: &str,
        period: (i64, i64),
        line_period: (i64, i64),
        amount: i64,
        paid: bool,
    ) -> Value {
        self.invoice_numbers += 1;
        let now = now();
        let id = new_id("in_");
        let item = &sub["items"]["data"][0];
        let customer = sub["customer"].as_str().unwrap_or_default();
        let (email, name) = self
            .customers
            .get(customer)
            .map_or((Value::Null, Value::Null), |c| {
                (c["email"].clone(), c["name"].clone())
            });
        let line = json!({
            "id": new_id("il_"),
            "object": "line_item",
            "amount": amount,
            "currency": "usd",
            "description": format!("{} × {}", item["quantity"], item["price"]["product"].as_str().unwrap_or_default()),
            "discount_amounts": [],
            "discountable": true,
            "discounts": [],
            "invoice": id,
            "livemode": false,
            "metadata": sub["metadata"],
            "parent": {
                "invoice_item_details": null,
                "subscription_item_details": {
                    "invoice_item": null,
                    "proration": false,
                    "proration_details": {"credited_items": null},
                    "subscription": sub["id"],
                    "subscription_item": item["id"]
                },
                "type": "subscription_item_details"
            },
            "period": {"end": line_period.1, "start": line_period.0},
            "pretax_credit_amounts": [],
            "pricing": {
                "price_details": {"price": item["price"]["id"], "product": item["price"]["product"]},
                "type": "price_details",
                "unit_amount_decimal": item["price"]["unit_amount_decimal"]
            },
            "quantity": item["quantity"],
            "subtotal": amount,
            "taxes": []
        });
        merged([
            json!({
                "id": id,
                "object": "invoice",
                "account_country": "US",
                "account_name": "Seatwarden Test",
                "account_tax_ids": null,
                "amount_due": amount,
                "amount_overpaid": 0,
                "amount_paid": if paid { amount } else { 0 },
                "amount_remaining": if paid { 0 } else { amount },
                "amount_shipping": 0,
                "application": null,
                "attempt_count": 1,
                "attempted": true,
                "auto_advance": !paid,
                "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null},
                "automatically_finalizes_at": null,
                "billing_reason": billing_reason,
                "collection_method": "charge_automatically",
                "created": now,
                "currency": "usd"
            }),
            json!({
                "custom_fields": null,
                "customer": customer,
                "customer_account": null,
                "customer_address": null,
                "customer_email": email,
                "customer_name": name,
                "customer_phone": null,
                "customer_shipping": null,
                "customer_tax_exempt": "none",
                "customer_tax_ids": [],
                "default_payment_method": null,
                "default_source": null,
                "default_tax_rates": [],
                "description": null,
                "discounts": [],
                "due_date": null,
                "effective_at": now,
                "ending_balance": 0,
                "footer": null,
                "from_invoice": null
            }),
            json!({
                "hosted_invoice_url": format!("https://invoice.stripe.com/i/fake/{id}"),
                "invoice_pdf": format!("https://pay.stripe.com/invoice/fake/{id}/pdf"),
                "issuer": {"type": "self"},
                "last_finalization_error": null,
                "latest_revision": null,
                "lines": {
                "object": "list",
                "data": [line],
                "has_more": false,
                "total_count": 1,
                "url": format!("/v1/invoices/{id}/lines")
            },
                "livemode": false,
                "metadata": {},
                "next_payment_attempt": null,
                "number": format!("FAKE-{:04}", self.invoice_numbers),
                "on_behalf_of": null,
                "parent": {
                "quote_details": null,
                "subscription_details": {
                    "metadata": sub["metadata"],
                    "subscription": sub["id"]
                },
                "type": "subscription_details"
            },
                "payment_settings": {"default_mandate": null, "payment_method_options": null, "payment_method_types": null},
                "period_end": period.1,
                "period_start": period.0,
                "post_payment_credit_notes_amount": 0,
                "pre_payment_credit_notes_amount": 0,
                "receipt_number": null,
                "rendering": null,
                "shipping_cost": null
            }),
            json!({
                "shipping_details": null,
                "starting_balance": 0,
                "statement_descriptor": null,
                "status": if paid { "paid" } else { "open" },
                "status_transitions": {
                "finalized_at": now,
                "marked_uncollectible_at": null,
                "paid_at": if paid { Some(now) } else { None },
                "voided_at": null
            },
                "subtotal": amount,
                "subtotal_excluding_tax": amount,
                "test_clock": null,
                "total": amount,
                "total_discount_amounts": [],
                "total_excluding_tax": amount,
                "total_pretax_credit_amounts": [],
                "total_taxes": [],
                "webhooks_delivered_at": now
            }),
        ])
    }

    fn event(
        &mut self,
        event_type: &str,
        object: Value,
        previous_attributes: Option<Value>,
        request_id: Option<String>,
    ) -> FakeEvent {
        let id = new_id("evt_");
        let mut data = json!({ "object": object });
        if let Some(previous) = previous_attributes {
            data["previous_attributes"] = previous;
        }
        let json = json!({
            "id": id,
            "object": "event",
            "api_version": API_VERSION,
            "created": now(),
            "data": data,
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": request_id, "idempotency_key": null},
            "type": event_type
        });
        let event = FakeEvent {
            id,
            event_type: event_type.into(),
            json,
        };
        self.events.push(event.clone());
        event
    }

    fn create_customer(&mut self, params: &[(String, String)]) -> (u16, String) {
        let id = new_id("cus_");
        let get = |k: &str| param(params, k).map_or(Value::Null, |v| json!(v));
        let customer = json!({
            "id": id,
            "object": "customer",
            "address": null,
            "balance": 0,
            "created": now(),
            "currency": null,
            "customer_account": null,
            "default_source": null,
            "delinquent": false,
            "description": get("description"),
            "discount": null,
            "email": get("email"),
            "invoice_prefix": suffix(&id).to_uppercase().chars().take(8).collect::<String>(),
            "invoice_settings": {
                "custom_fields": null,
                "default_payment_method": null,
                "footer": null,
                "rendering_options": null
            },
            "livemode": false,
            "metadata": map_param(params, "metadata"),
            "name": get("name"),
            "next_invoice_sequence": 1,
            "phone": null,
            "preferred_locales": [],
            "shipping": null,
            "tax_exempt": "none",
            "test_clock": null
        });
        self.customers.insert(id, customer.clone());
        (200, customer.to_string())
    }

    fn create_session(&mut self, params: &[(String, String)], addr: SocketAddr) -> (u16, String) {
        let Some(mode) = param(params, "mode") else {
            return missing("mode");
        };
        if !["payment", "setup", "subscription"].contains(&mode) {
            return invalid(
                "mode",
                "Invalid mode: must be one of payment, setup, or subscription",
            );
        }
        if mode != "subscription" {
            return invalid("mode", "The fake Stripe only supports mode=subscription.");
        }
        let customer = param(params, "customer").unwrap_or_default().to_owned();
        if !customer.is_empty() && !self.customers.contains_key(&customer) {
            return no_such("customer", &customer);
        }
        let Some(price_id) = param(params, "line_items[0][price]") else {
            return missing("line_items");
        };
        if param(params, "line_items[1][price]").is_some() {
            return invalid("line_items", "The fake Stripe takes one line item.");
        }
        let quantity: u64 = match param(params, "line_items[0][quantity]").map(str::parse) {
            None => 1,
            Some(Ok(q)) if q >= 1 => q,
            Some(_) => return invalid("line_items[0][quantity]", "Invalid positive integer"),
        };
        let trial_days: u64 =
            match param(params, "subscription_data[trial_period_days]").map(str::parse) {
                None => 0,
                Some(Ok(d)) if d >= 1 => d,
                Some(_) => {
                    return invalid(
                        "subscription_data[trial_period_days]",
                        "Invalid positive integer",
                    );
                }
            };
        let Some(success_url) = param(params, "success_url") else {
            return missing("success_url");
        };
        let metadata = map_param(params, "metadata");
        let sub_metadata = map_param(params, "subscription_data[metadata]");
        for m in [&metadata, &sub_metadata] {
            let map = m.as_object().expect("object");
            if map.len() > 50
                || map
                    .iter()
                    .any(|(k, v)| k.len() > 40 || v.as_str().unwrap_or_default().len() > 500)
            {
                return invalid(
                    "metadata",
                    "Metadata: at most 50 keys, keys up to 40 characters, values up to 500.",
                );
            }
        }
        let price = self.price(price_id);
        let now = now();
        let id = new_id("cs_test_a1");
        let session = merged([
            json!({
                "id": id,
                "object": "checkout.session",
                "adaptive_pricing": null,
                "after_expiration": null,
                "allow_promotion_codes": null,
                "amount_subtotal": price.unit_amount * i64::try_from(quantity).unwrap_or(1),
                "amount_total": price.unit_amount * i64::try_from(quantity).unwrap_or(1),
                "automatic_tax": {"enabled": false, "liability": null, "provider": null, "status": null},
                "billing_address_collection": null,
                "cancel_url": param(params, "cancel_url"),
                "client_reference_id": param(params, "client_reference_id"),
                "client_secret": null,
                "collected_information": null,
                "consent": null,
                "consent_collection": null,
                "created": now,
                "currency": "usd",
                "currency_conversion": null,
                "custom_fields": [],
                "custom_text": {
                "after_submit": null,
                "shipping_address": null,
                "submit": null,
                "terms_of_service_acceptance": null
            }
            }),
            json!({
                "customer": if customer.is_empty() { Value::Null } else { json!(customer) },
                "customer_account": null,
                "customer_creation": null,
                "customer_details": null,
                "customer_email": null,
                "discounts": [],
                "expires_at": now + 86_400,
                "invoice": null,
                "invoice_creation": null,
                "livemode": false,
                "locale": null,
                "metadata": metadata,
                "mode": "subscription",
                "origin_context": null,
                "payment_intent": null,
                "payment_link": null,
                "payment_method_collection": "always",
                "payment_method_configuration_details": null,
                "payment_method_options": {},
                "payment_method_types": ["card"]
            }),
            json!({
                "payment_status": "unpaid",
                "permissions": null,
                "phone_number_collection": {"enabled": false},
                "presentment_details": null,
                "recovered_from": null,
                "saved_payment_method_options": {
                "allow_redisplay_filters": ["always"],
                "payment_method_remove": "disabled",
                "payment_method_save": null
            },
                "setup_intent": null,
                "shipping_address_collection": null,
                "shipping_cost": null,
                "shipping_options": [],
                "status": "open",
                "submit_type": null,
                "subscription": null,
                "success_url": success_url,
                "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
                "ui_mode": "hosted",
                "url": format!("http://{addr}/c/pay/{id}"),
                "wallet_options": null
            }),
            // Private to the fake, stripped from what it shows.
            json!({
                "__price": price_id,
                "__quantity": quantity,
                "__trial_days": trial_days,
                "__subscription_metadata": sub_metadata
            }),
        ]);
        self.sessions.insert(id, session.clone());
        (200, public(&session).to_string())
    }

    fn create_portal_session(
        &mut self,
        params: &[(String, String)],
        addr: SocketAddr,
    ) -> (u16, String) {
        let Some(customer) = param(params, "customer") else {
            return missing("customer");
        };
        if !self.customers.contains_key(customer) {
            return no_such("customer", customer);
        }
        let id = new_id("bps_");
        let session = json!({
            "id": id,
            "object": "billing_portal.session",
            "configuration": "bpc_fake_default",
            "created": now(),
            "customer": customer,
            "customer_account": null,
            "flow": null,
            "livemode": false,
            "locale": null,
            "on_behalf_of": null,
            "return_url": param(params, "return_url"),
            "url": format!("http://{addr}/p/session/{id}")
        });
        (200, session.to_string())
    }
}

fn subscription_item(
    sub_id: &str,
    price_id: &str,
    price: &Price,
    quantity: u64,
    start: i64,
    end: i64,
) -> Value {
    json!({
        "id": new_id("si_"),
        "object": "subscription_item",
        "billing_thresholds": null,
        "created": start,
        "current_period_end": end,
        "current_period_start": start,
        "discounts": [],
        "metadata": {},
        "plan": {
            "id": price_id,
            "object": "plan",
            "active": true,
            "amount": price.unit_amount,
            "amount_decimal": price.unit_amount.to_string(),
            "billing_scheme": "per_unit",
            "created": price.created,
            "currency": "usd",
            "interval": price.interval,
            "interval_count": 1,
            "livemode": false,
            "metadata": {},
            "meter": null,
            "nickname": null,
            "product": price.product,
            "tiers_mode": null,
            "transform_usage": null,
            "trial_period_days": null,
            "usage_type": "licensed"
        },
        "price": {
            "id": price_id,
            "object": "price",
            "active": true,
            "billing_scheme": "per_unit",
            "created": price.created,
            "currency": "usd",
            "custom_unit_amount": null,
            "livemode": false,
            "lookup_key": null,
            "metadata": {},
            "nickname": null,
            "product": price.product,
            "recurring": {
                "interval": price.interval,
                "interval_count": 1,
                "meter": null,
                "trial_period_days": null,
                "usage_type": "licensed"
            },
            "tax_behavior": "unspecified",
            "tiers_mode": null,
            "transform_quantity": null,
            "type": "recurring",
            "unit_amount": price.unit_amount,
            "unit_amount_decimal": price.unit_amount.to_string()
        },
        "quantity": quantity,
        "subscription": sub_id,
        "tax_rates": []
    })
}

// ----- helpers ---------------------------------------------------------------

/// `Stripe-Signature` for `body` signed with `secret` at `t`: HMAC-SHA256
/// over `"{t}.{body}"`, computed here independently of async-stripe.
pub fn signature_header(body: &str, secret: &str, t: i64) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, format!("{t}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// The body with one meaningful change (still valid JSON).
pub fn tamper(body: &str) -> String {
    let tampered = body.replacen("\"pending_webhooks\":1", "\"pending_webhooks\":2", 1);
    assert_ne!(tampered, body, "nothing to tamper with");
    tampered
}

pub fn now() -> i64 {
    Utc::now().timestamp()
}

/// A fresh Stripe customer object, as `customer.*` events carry it.
pub fn customer_object() -> serde_json::Value {
    serde_json::json!({
        "id": format!("cus_{}", uuid::Uuid::new_v4().simple()),
        "object": "customer",
        "created": now(),
        "livemode": false,
        "email": "ada@example.com",
        "metadata": {},
    })
}

fn advance(t: i64, interval: &str) -> i64 {
    let at: DateTime<Utc> = Utc.timestamp_opt(t, 0).single().expect("timestamp");
    let next = match interval {
        "day" => at + chrono::Duration::days(1),
        "week" => at + chrono::Duration::weeks(1),
        "year" => at.checked_add_months(Months::new(12)).expect("date"),
        _ => at.checked_add_months(Months::new(1)).expect("date"),
    };
    next.timestamp()
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn suffix(id: &str) -> &str {
    id.split_once('_').map_or(id, |(_, s)| s)
}

/// One object from several (`json!` of a whole Stripe object is deeper
/// than the default recursion limit).
fn merged<const N: usize>(parts: [Value; N]) -> Value {
    let mut all = serde_json::Map::new();
    for part in parts {
        if let Value::Object(map) = part {
            all.extend(map);
        }
    }
    Value::Object(all)
}

/// The object without the fake's private `__` fields.
fn public(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.retain(|k, _| !k.starts_with("__"));
    }
    object
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `prefix[key]=value` fields as a JSON object.
fn map_param(params: &[(String, String)], prefix: &str) -> Value {
    let start = format!("{prefix}[");
    let map: serde_json::Map<String, Value> = params
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix(&start)?.strip_suffix(']')?;
            (!key.contains('[')).then(|| (key.to_owned(), json!(v)))
        })
        .collect();
    Value::Object(map)
}

/// Stripe shows only the end of a wrong key.
fn mask(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let head: String = key.chars().take(8).collect();
    format!("{head}{}{tail}", "*".repeat(key.len().saturating_sub(12)))
}

fn error_body(error_type: &str, code: Option<&str>, message: &str, param: Option<&str>) -> String {
    json!({
        "error": {
            "code": code,
            "doc_url": code.map(|c| format!("https://stripe.com/docs/error-codes/{}", c.replace('_', "-"))),
            "message": message,
            "param": param,
            "request_log_url": format!("https://dashboard.stripe.com/test/logs/{}", new_id("req_")),
            "type": error_type
        }
    })
    .to_string()
}

fn missing(param: &str) -> (u16, String) {
    (
        400,
        error_body(
            "invalid_request_error",
            Some("parameter_missing"),
            &format!("Missing required param: {param}."),
            Some(param),
        ),
    )
}

fn invalid(param: &str, message: &str) -> (u16, String) {
    (
        400,
        error_body(
            "invalid_request_error",
            Some("parameter_invalid"),
            message,
            Some(param),
        ),
    )
}

fn no_such(what: &str, id: &str) -> (u16, String) {
    (
        400,
        error_body(
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such {what}: '{id}'"),
            Some(what),
        ),
    )
}
