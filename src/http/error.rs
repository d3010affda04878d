//! One error type for every endpoint, and the one `recover` that turns it,
//! and warp's own rejections, into `{"error": "<code>", "message": "<text>"}`.

use std::convert::Infallible;

use http::StatusCode;
use serde_json::{Map, Value, json};
use warp::reply::{Reply, Response};
use warp::{Rejection, reject::Reject};

use seatwarden_actors::CoordinatorError;

/// An API error: a status, a stable machine-readable code, a message for
/// people, and optional extra fields (e.g. `seats_used`).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Map<String, Value>,
    pub retry_after_secs: Option<u64>,
}

impl Reject for ApiError {}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.extend(self.extra);
        let reply = warp::reply::with_status(warp::reply::json(&body), self.status);
        let mut response = reply.into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        response
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(e: CoordinatorError) -> Self {
        use CoordinatorError as E;
        let message = e.to_string();
        match e {
            E::LicenseNotFound => Self::new(StatusCode::NOT_FOUND, "license_not_found", message),
            E::LicenseSuspended => Self::new(StatusCode::FORBIDDEN, "license_suspended", message),
            E::LicenseExpired => Self::new(StatusCode::FORBIDDEN, "license_expired", message),
            E::LicenseInactive => Self::new(StatusCode::FORBIDDEN, "license_inactive", message),
            E::NoSeatsAvailable {
                seats_used,
                max_seats,
            } => Self::new(StatusCode::CONFLICT, "no_seats_available", message)
                .with("seats_used", seats_used)
                .with("max_seats", max_seats),
            E::SessionNotFound => Self::new(StatusCode::NOT_FOUND, "session_not_found", message),
            E::SessionExpired => Self::new(StatusCode::GONE, "session_expired", message),
            E::SessionEnded(reason) => Self::new(StatusCode::GONE, "session_ended", message)
                .with("end_reason", reason.as_str()),
            E::LedgerUnavailable(detail) => {
                tracing::warn!(%detail, "seat ledger unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ledger_unavailable",
                    "the seat ledger is unavailable; retry shortly",
                )
                .retry_after(2)
            }
            E::StoreUnavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the database is unavailable; retry shortly",
                )
                .retry_after(2)
            }
            E::Busy(detail) => {
                tracing::warn!(%detail, "coordinator busy");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the server is busy; retry shortly",
                )
                .retry_after(1)
            }
        }
    }
}

/// Maps every rejection to a JSON error. Unknown rejections are logged and
/// answered with a generic 500 that reveals nothing internal.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if let Some(e) = rejection.find::<ApiError>() {
        ApiError {
            status: e.status,
            code: e.code,
            message: e.message.clone(),
            extra: e.extra.clone(),
            retry_after_secs: e.retry_after_secs,
        }
    } else if rejection.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "that method is not allowed on this endpoint",
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        too_large()
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::bad_request("invalid_header", format!("invalid header {}", e.name()))
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        ApiError::internal("internal error")
    };
    Ok(error.into_response())
}

pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body must be at most {} bytes", super::MAX_BODY_BYTES),
    )
}
