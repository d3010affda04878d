//! One shape for every list: `{"items": [...], "next_cursor": "..."|null}`,
//! read with `?limit=` (default 50, at most 200) and `?cursor=`.
//!
//! A cursor is opaque to clients: base64url of the last row's sort key
//! (its time and id, or an audit entry's id). The store reads strictly
//! after it, so a cursor stays valid however many rows are added, and a
//! forged one only moves where a page starts within the caller's own
//! organization: every query is bounded by the organization first.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;
use warp::Filter;
use warp::reply::{Reply, Response};

use seatwarden_actors::domain::{KeyCursor, Page, PageRequest};

use super::ApiError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;
/// Longer than any cursor we hand out.
const MAX_CURSOR: usize = 200;

/// The query string parsed into `T`; 400 `invalid_query` otherwise.
///
/// A custom rejection, unlike warp's own `InvalidQuery`: when the same
/// path also has routes for other methods, warp would combine their
/// `MethodNotAllowed` with this and `recover` would answer 405 for what is
/// a bad query.
pub fn query<T: DeserializeOwned + Send + 'static>()
-> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    warp::query::<T>().or_else(|_| async {
        Err(warp::reject::custom(ApiError::bad_request(
            "invalid_query",
            "the query string is not valid for this endpoint",
        )))
    })
}

/// What every list answers.
#[derive(Serialize, ToSchema)]
pub struct PageBody<T> {
    pub items: Vec<T>,
    /// The `cursor` of the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

impl<T: Serialize> PageBody<T> {
    pub fn into_response(self) -> Response {
        warp::reply::json(&self).into_response()
    }
}

/// A cursor's two forms: the sort key of a time-ordered list, or an
/// audit entry's id.
pub trait Cursor: Sized {
    fn encode(&self) -> String;
    fn decode(text: &str) -> Option<Self>;
}

impl Cursor for KeyCursor {
    fn encode(&self) -> String {
        let at = self.at.to_rfc3339_opts(SecondsFormat::Micros, true);
        URL_SAFE_NO_PAD.encode(format!("k,{at},{}", self.id))
    }

    fn decode(text: &str) -> Option<Self> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
        let mut parts = raw.splitn(3, ',');
        if parts.next()? != "k" {
            return None;
        }
        let at: DateTime<Utc> = parts.next()?.parse().ok()?;
        let id = parts.next()?.parse().ok()?;
        Some(KeyCursor { at, id })
    }
}

impl Cursor for i64 {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("a,{self}"))
    }

    fn decode(text: &str) -> Option<Self> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
        raw.strip_prefix("a,")?.parse().ok()
    }
}

/// The page a request asks for: 400 `invalid_limit` or `invalid_cursor`
/// for values we did not hand out.
pub fn request<C: Cursor>(
    cursor: Option<&str>,
    limit: Option<u32>,
) -> Result<PageRequest<C>, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    let after = match cursor {
        None => None,
        Some(text) => Some(
            (text.len() <= MAX_CURSOR)
                .then(|| C::decode(text))
                .flatten()
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_cursor", "the cursor is not one we handed out")
                })?,
        ),
    };
    Ok(PageRequest { after, limit })
}

/// A page of domain rows as the body of a list.
pub fn body<T, C: Cursor, V>(page: Page<T, C>, view: impl FnMut(T) -> V) -> PageBody<V> {
    PageBody {
        next_cursor: page.next.as_ref().map(Cursor::encode),
        items: page.items.into_iter().map(view).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let c = KeyCursor {
            at: "2026-11-27T10:00:00.123456Z".parse().unwrap(),
            id: uuid::Uuid::new_v4(),
        };
        assert_eq!(KeyCursor::decode(&c.encode()), Some(c));
        assert_eq!(i64::decode(&42i64.encode()), Some(42));
        assert_eq!(KeyCursor::decode(&42i64.encode()), None);
        assert_eq!(i64::decode(&c.encode()), None);
        assert_eq!(KeyCursor::decode("not base64!"), None);
        assert!(request::<i64>(Some("garbage"), None).is_err());
        assert!(request::<i64>(None, Some(0)).is_err());
        assert!(request::<i64>(None, Some(201)).is_err());
        assert_eq!(request::<i64>(None, None).unwrap().limit, DEFAULT_LIMIT);
    }
}
