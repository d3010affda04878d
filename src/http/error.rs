//! One error type for every endpoint, and the one `recover` that turns it,
//! and warp's own rejections, into `{"error": "<code>", "message": "<text>"}`.

use std::convert::Infallible;

use http::StatusCode;
use serde_json::{Map, Value, json};
use warp::reply::{Reply, Response};
use warp::{Rejection, reject::Reject};

use seatwarden_actors::CoordinatorError;
use seatwarden_actors::domain::EndReason;
use seatwarden_actors::ports::StoreError;

/// An API error: a status, a stable machine-readable code, a message for
/// people, and optional extra fields (e.g. `seats_used`).
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Map<String, Value>,
    pub retry_after_secs: Option<u64>,
    /// The `WWW-Authenticate` challenge of a 401, e.g. `Bearer`.
    pub www_authenticate: Option<&'static str>,
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
            www_authenticate: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
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
        if let Some(challenge) = self.www_authenticate {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl From<CoordinatorError> for ApiError {
    /// The status for each coordinator error; the code is the error's own
    /// [`CoordinatorError::code`]. Outages keep their detail in the log and
    /// tell the client only to retry.
    fn from(e: CoordinatorError) -> Self {
        use CoordinatorError as E;
        let (status, retry_after, public_message) = match &e {
            E::LicenseNotFound | E::SessionNotFound | E::TicketNotFound => {
                (StatusCode::NOT_FOUND, None, None)
            }
            E::BorrowTooLong { .. } => (StatusCode::BAD_REQUEST, None, None),
            E::BorrowingDisabled
            | E::LicenseSuspended
            | E::LicenseExpired
            | E::LicenseInactive
            | E::MachineNotActivated
            | E::IdentityForbidden => (StatusCode::FORBIDDEN, None, None),
            E::IdentityRequired | E::IdentityInvalid => (StatusCode::UNAUTHORIZED, None, None),
            E::NoSeatsAvailable { .. } => (StatusCode::CONFLICT, None, None),
            E::SessionExpired | E::SessionEnded(_) | E::SessionRevoked => {
                (StatusCode::GONE, None, None)
            }
            E::LedgerUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(2),
                Some("the seat ledger is unavailable; retry shortly"),
            ),
            E::StoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(2),
                Some("the database is unavailable; retry shortly"),
            ),
            E::Busy(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(1),
                Some("the server is busy; retry shortly"),
            ),
            // Answered like every other rate limit.
            E::Throttled { retry_after } => return rate_limited(*retry_after),
            E::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                Some("internal error"),
            ),
        };
        if matches!(e, E::Internal(_)) {
            tracing::error!(error = %e, "request failed on an internal error");
        } else if public_message.is_some() {
            tracing::warn!(error = %e, "request failed on an outage");
        }
        let message = public_message.map_or_else(|| e.to_string(), str::to_owned);
        let mut error = Self::new(status, e.code(), message);
        error.retry_after_secs = retry_after;
        if status == StatusCode::UNAUTHORIZED {
            error.www_authenticate = Some("Bearer");
        }
        match e {
            E::NoSeatsAvailable {
                seats_used,
                max_seats,
            } => error
                .with("seats_used", seats_used)
                .with("max_seats", max_seats),
            E::SessionEnded(reason) => error.with("end_reason", reason.as_str()),
            E::BorrowTooLong { max_hours } => error.with("max_borrow_hours", max_hours),
            E::SessionRevoked => error.with("end_reason", EndReason::Revoked.as_str()),
            _ => error,
        }
    }
}

impl From<StoreError> for ApiError {
    /// Store failures outside the seat paths: an outage is a 503 to retry,
    /// a broken rule a 409, a corrupt row a 500; details stay in the log.
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", "not found"),
            StoreError::Conflict(_) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "that conflicts with existing data",
            ),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "request failed on a store outage");
                let mut error = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the database is unavailable; retry shortly",
                );
                error.retry_after_secs = Some(2);
                error
            }
            StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "request failed on corrupt data");
                Self::internal("internal error")
            }
        }
    }
}

/// Maps every rejection to a JSON error. Unknown rejections are logged and
/// answered with a generic 500 that reveals nothing internal.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
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
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        ApiError::bad_request(
            "invalid_query",
            "the query string is not valid for this endpoint",
        )
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::bad_request("missing_header", format!("missing header {}", e.name()))
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::bad_request("invalid_header", format!("invalid header {}", e.name()))
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        ApiError::internal("internal error")
    };
    Ok(error.into_response())
}

/// The 404 of a license id that does not exist or that the caller may not
/// see: the two are told apart by no one.
pub fn license_not_found() -> ApiError {
    ApiError::not_found("license_not_found", "no such license")
}

pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body must be at most {} bytes", super::MAX_BODY_BYTES),
    )
}

/// A request body that did not arrive within `http.body_timeout_secs`.
pub fn request_timeout() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request body did not arrive in time",
    )
}

/// Over a rate limit: 429 with `Retry-After` in whole seconds, rounded up
/// and at least 1, so that a client that waits that long is let in.
pub fn rate_limited(retry_after: std::time::Duration) -> ApiError {
    let secs = retry_after.as_millis().div_ceil(1000).max(1);
    let secs = u64::try_from(secs).unwrap_or(u64::MAX);
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests; retry in {secs} s"),
    );
    error.retry_after_secs = Some(secs);
    error
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::rate_limited;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let secs = |ms| rate_limited(Duration::from_millis(ms)).retry_after_secs;
        assert_eq!(secs(1), Some(1));
        assert_eq!(secs(999), Some(1));
        assert_eq!(secs(1000), Some(1));
        assert_eq!(secs(1001), Some(2));
        assert_eq!(secs(12_000), Some(12));
        assert_eq!(secs(0), Some(1));
    }
}
