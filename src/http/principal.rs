//! Who is calling: the bearer credential of a request, checked once.
//!
//! Routes that need a person take [`user`]; routes that also accept other
//! credentials (an organization's API key) take [`principal`]. A missing or
//! invalid credential is a 401 with `WWW-Authenticate: Bearer` and a
//! generic message: the response never says which check failed.

use http::StatusCode;
use warp::Filter;

use seatwarden_actors::domain::{ApiKeyId, OrgId, Role, UserId};

use super::{ApiError, AppContext};
use crate::auth::{AccessClaims, tokens};

/// An authenticated caller.
#[derive(Clone, Debug)]
pub enum Principal {
    /// A person, through an access token.
    User(AccessClaims),
    /// A machine, through one of its organization's API keys. Read from
    /// the store on every request (one indexed lookup, no cache), so a
    /// revoked key stops working on every node at once.
    ApiKey {
        id: ApiKeyId,
        org_id: OrgId,
        role: Role,
    },
}

impl Principal {
    /// The user behind the credential; `None` for an API key.
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Self::User(c) => Some(c.sub),
            Self::ApiKey { .. } => None,
        }
    }

    /// A platform administrator.
    pub fn is_platform_admin(&self) -> bool {
        match self {
            Self::User(c) => c.adm,
            Self::ApiKey { .. } => false,
        }
    }

    /// The role the credential was issued with in `org`, if any. Decisions
    /// re-read a person's role from the store instead (see [`org_access`]).
    pub fn token_role(&self, org: OrgId) -> Option<Role> {
        match self {
            Self::User(c) => c.orgs.iter().find(|o| o.org == org).map(|o| o.role),
            Self::ApiKey { org_id, role, .. } => (*org_id == org).then_some(*role),
        }
    }

    /// Who to name as the actor of an audit entry: a user, or a key's id.
    pub fn actor_id(&self) -> uuid::Uuid {
        match self {
            Self::User(c) => c.sub.0,
            Self::ApiKey { id, .. } => id.0,
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
            match bearer_token(&header) {
                Some(token) => Ok(Some(token.to_owned())),
                None => Err(warp::reject::custom(unauthenticated())),
            }
        },
    )
}

/// The token of an `Authorization: Bearer <token>` header value (at most
/// 4 KiB), or `None` when the header has another form. The one parser of
/// bearer credentials, for every route that reads them.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 4096)
        .then_some(token)
}

/// Any authenticated caller, a person or an API key; 401 otherwise.
pub fn principal(
    ctx: AppContext,
) -> impl Filter<Extract = (Principal,), Error = warp::Rejection> + Clone {
    bearer().and_then(move |token: Option<String>| {
        let ctx = ctx.clone();
        async move {
            let token = token.ok_or_else(|| warp::reject::custom(unauthenticated()))?;
            authenticate(&ctx, &token)
                .await
                .map_err(warp::reject::custom)
        }
    })
}

/// The principal of a bearer token: an org API key (looked up on every
/// call, so a revocation holds at once) or an access token.
pub async fn authenticate(ctx: &AppContext, token: &str) -> Result<Principal, ApiError> {
    if token.starts_with(tokens::API_KEY_PREFIX) {
        if !tokens::well_formed(token, tokens::API_KEY_PREFIX) {
            return Err(unauthenticated());
        }
        return match ctx.store.api_key_by_hash(&tokens::digest(token)).await? {
            Some(key) => Ok(Principal::ApiKey {
                id: key.id,
                org_id: key.org_id,
                role: key.role,
            }),
            None => Err(unauthenticated()),
        };
    }
    ctx.access
        .verify(token)
        .map(Principal::User)
        .ok_or_else(unauthenticated)
}

/// A person (an access token); 401 without a credential, 403 for an API
/// key, which never stands in for a person.
pub fn user(
    ctx: AppContext,
) -> impl Filter<Extract = (AccessClaims,), Error = warp::Rejection> + Clone {
    principal(ctx).and_then(|p: Principal| async move {
        match p {
            Principal::User(claims) => Ok::<_, warp::Rejection>(claims),
            Principal::ApiKey { .. } => Err(warp::reject::custom(
                forbidden().with_message("an API key cannot do this; log in as a person"),
            )),
        }
    })
}

/// What an organization-scoped request needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The organization itself: any member, and the org's API keys.
    View,
    /// Licenses and their sessions: members and above, and member keys.
    Licenses,
    /// The member list: people who are members and above.
    Members,
    /// The audit log: owners and admins.
    Audit,
    /// Changes to members, invitations, keys, the org and sessions: owners
    /// and admins, never a key.
    Manage,
}

/// Who is acting in an organization, as the store says now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A member, with their current role.
    Member { user: UserId, role: Role },
    /// One of the organization's API keys.
    Key { id: ApiKeyId, role: Role },
    /// A platform administrator who is not a member: reads only.
    PlatformAdmin { user: UserId },
}

impl Caller {
    /// The caller's role in the organization (none for a platform admin
    /// who is not a member).
    pub fn role(&self) -> Option<Role> {
        match self {
            Self::Member { role, .. } | Self::Key { role, .. } => Some(*role),
            Self::PlatformAdmin { .. } => None,
        }
    }

    /// The acting person, if the caller is one.
    pub fn user(&self) -> Option<UserId> {
        match self {
            Self::Member { user, .. } | Self::PlatformAdmin { user } => Some(*user),
            Self::Key { .. } => None,
        }
    }

    fn allows(&self, need: Need) -> bool {
        match self {
            Self::Member { role, .. } => match need {
                Need::View => true,
                Need::Licenses | Need::Members => role.sees_licenses(),
                Need::Audit | Need::Manage => role.manages(),
            },
            Self::Key { role, .. } => match need {
                Need::View => true,
                Need::Licenses => role.sees_licenses(),
                Need::Members | Need::Audit | Need::Manage => false,
            },
            Self::PlatformAdmin { .. } => need != Need::Manage,
        }
    }
}

/// Decides whether `principal` may do what `need` says in `org`, from the
/// caller's role as the store has it now (never from the access token's
/// claims, so a removal or demotion takes effect on the next request).
///
/// Anyone outside the organization gets `not_found`, exactly as for an
/// organization that does not exist, so that no caller learns what other
/// organizations hold; a member whose role is too low gets a 403.
pub async fn org_access(
    ctx: &AppContext,
    principal: &Principal,
    org: OrgId,
    need: Need,
    not_found: fn() -> ApiError,
) -> Result<Caller, ApiError> {
    let caller = match principal {
        Principal::ApiKey { id, org_id, role } if *org_id == org => Caller::Key {
            id: *id,
            role: *role,
        },
        Principal::ApiKey { .. } => return Err(not_found()),
        Principal::User(claims) => match ctx.store.org_role(org, claims.sub).await? {
            Some(role) => Caller::Member {
                user: claims.sub,
                role,
            },
            // Platform administrators may read any organization that
            // exists; they never change one they are not a member of.
            None if claims.adm && ctx.store.org(org).await?.is_some() => {
                Caller::PlatformAdmin { user: claims.sub }
            }
            None => return Err(not_found()),
        },
    };
    if caller.allows(need) {
        Ok(caller)
    } else {
        Err(forbidden())
    }
}
