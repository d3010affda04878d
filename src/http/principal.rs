//! Who is calling: the bearer credential of a request, checked once.
//!
//! Routes that need a person take [`user`]; routes that also accept other
//! credentials (an organization's API key) take [`principal`]. A missing or
//! invalid credential is a 401 with `WWW-Authenticate: Bearer` and a
//! generic message: the response never says which check failed.

use http::StatusCode;
use warp::Filter;

use seatwarden_actors::domain::{OrgId, Role, UserId};

use super::{ApiError, AppContext};
use crate::auth::AccessClaims;

/// An authenticated caller.
#[derive(Clone, Debug)]
pub enum Principal {
    /// A person, through an access token.
    User(AccessClaims),
}

impl Principal {
    /// The user behind the credential.
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Self::User(c) => Some(c.sub),
        }
    }

    /// A platform administrator.
    pub fn is_platform_admin(&self) -> bool {
        match self {
            Self::User(c) => c.adm,
        }
    }

    /// The role the token was issued with in `org`, if any. Decisions that
    /// change data re-read the role from the store instead.
    pub fn token_role(&self, org: OrgId) -> Option<Role> {
        match self {
            Self::User(c) => c.orgs.iter().find(|o| o.org == org).map(|o| o.role),
        }
    }
}

/// The 401 for a missing, malformed, unknown or expired credential.
pub fn unauthenticated() -> ApiError {
    let mut e = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid bearer credential is required",
    );
    e.www_authenticate = Some("Bearer");
    e
}

/// The 403 for a valid credential that may not do this.
pub fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "your credentials do not allow this",
    )
}

/// The bearer token of the `Authorization` header, if any: `None` when the
/// header is absent, a 401 when it is present but not `Bearer <token>`.
pub fn bearer() -> impl Filter<Extract = (Option<String>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization").and_then(
        |header: Option<String>| async move {
            let Some(header) = header else {
                return Ok(None);
            };
            let (scheme, token) = header.split_once(' ').unwrap_or((header.as_str(), ""));
            let token = token.trim();
            if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > 4096 {
                return Err(warp::reject::custom(unauthenticated()));
            }
            Ok(Some(token.to_owned()))
        },
    )
}

/// Any authenticated caller; 401 otherwise.
pub fn principal(
    ctx: AppContext,
) -> impl Filter<Extract = (Principal,), Error = warp::Rejection> + Clone {
    bearer().and_then(move |token: Option<String>| {
        let ctx = ctx.clone();
        async move {
            let token = token.ok_or_else(|| warp::reject::custom(unauthenticated()))?;
            match ctx.access.verify(&token) {
                Some(claims) => Ok(Principal::User(claims)),
                None => Err(warp::reject::custom(unauthenticated())),
            }
        }
    })
}

/// A person (an access token); 401 for anything else.
pub fn user(
    ctx: AppContext,
) -> impl Filter<Extract = (AccessClaims,), Error = warp::Rejection> + Clone {
    principal(ctx).and_then(|p: Principal| async move {
        match p {
            Principal::User(claims) => Ok::<_, warp::Rejection>(claims),
        }
    })
}
