//! Accounts: register, verify the address, log in and out, refresh, reset
//! a forgotten password, and who am I.
//!
//! What these answers never reveal: whether an address has an account
//! (register and forgot-password answer the same 202 either way, and a
//! login for an unknown address costs the same argon2 time as a wrong
//! password), and why a login failed (a locked account, an unknown address
//! and a wrong password all get the same 401).

use chrono::Utc;
use http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use warp::Filter;
use warp::reply::{Reply, Response};

use seatwarden_actors::domain::{
    ActionAudit, AuditEvent, ClientInfo, Membership, NewAccount, NewRefreshToken, NewUserToken,
    OrgId, Role, TokenPurpose, User, UserId,
};
use seatwarden_actors::ports::{MailKind, NewMail, RefreshOutcome};

use super::openapi::{
    AcceptedBody, BadRequest, ErrorBody, PayloadTooLarge, RateLimited, StatusBody, Unauthorized,
    Unavailable,
};
use super::principal::{self, unauthenticated};
use super::{ApiError, AppContext, client, json_body, with_ctx};
use crate::auth::{AccessClaims, passwords, tokens};
use crate::ratelimit::{Limit, RateKey};

const MAX_EMAIL: usize = 254;
const MAX_NAME: usize = 200;
/// Longer than any password the policy accepts, so that policy errors come
/// from the policy; anything beyond is refused as a malformed body.
const MAX_PASSWORD_BYTES: usize = 1024;

/// `/api/v1/auth/<name>`.
fn path(name: &'static str) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "auth" / ..)
        .and(warp::path(name))
        .and(warp::path::end())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(format = Email, min_length = 3, max_length = 254, example = "ada@example.com")]
    email: String,
    /// The password policy (`weak_password` otherwise): 8 to 128
    /// characters with an upper-case letter, a lower-case letter and a digit.
    #[schema(format = Password, min_length = 8, max_length = 128)]
    password: String,
    #[schema(min_length = 1, max_length = 200)]
    full_name: String,
    /// The organization created with the account, owned by it.
    #[schema(min_length = 1, max_length = 200)]
    organization_name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    #[schema(format = Password)]
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotRequest {
    #[schema(format = Email, min_length = 3, max_length = 254)]
    email: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The token of the reset email.
    token: String,
    /// The new password; must pass the password policy.
    #[schema(format = Password, min_length = 8, max_length = 128)]
    password: String,
}

/// What login and refresh return.
#[derive(Serialize, ToSchema)]
struct TokenResponse {
    /// A short-lived access token (JWT) for `Authorization: Bearer`.
    access_token: String,
    /// Single use: refresh answers a new one with each access token.
    refresh_token: String,
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
}

#[derive(Serialize, ToSchema)]
struct MeResponse {
    #[schema(value_type = uuid::Uuid)]
    id: UserId,
    email: String,
    full_name: String,
    email_verified: bool,
    platform_admin: bool,
    created_at: chrono::DateTime<Utc>,
    organizations: Vec<MembershipView>,
}

#[derive(Serialize, ToSchema)]
struct MembershipView {
    #[schema(value_type = uuid::Uuid)]
    org_id: OrgId,
    name: String,
    /// `owner`, `admin`, `member` or `guest`.
    #[schema(value_type = String, example = "owner")]
    role: Role,
}

/// An email address: at most 254 characters, one `@` between a local part
/// and a dotted domain, no spaces or control characters. Deliverability is
/// what the verification email proves; this only keeps garbage out.
pub fn validate_email(email: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_email",
            "email must be a valid address of at most 254 characters",
        )
    };
    if email.is_empty() || email.chars().count() > MAX_EMAIL {
        return Err(bad());
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || local.len() > 64
        || local.contains('@')
        || domain.len() < 3
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return Err(bad());
    }
    Ok(())
}

/// A display name: 1 to 200 printable characters.
pub fn validate_name(field: &'static str, value: &str) -> Result<(), ApiError> {
    let n = value.chars().count();
    if value.trim().is_empty() || n > MAX_NAME || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("{field} must be 1 to {MAX_NAME} printable characters"),
        ));
    }
    Ok(())
}

fn validate_password(password: &str) -> Result<(), ApiError> {
    match passwords::policy_violation(password) {
        Some(why) => Err(ApiError::bad_request("weak_password", why)),
        None => Ok(()),
    }
}

fn password_bytes(password: &str) -> Result<(), ApiError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the password is too long",
        ));
    }
    Ok(())
}

/// The rate-limit key of an account: its address, as the store compares
/// them (case-insensitively).
fn account_key(email: &str) -> RateKey {
    RateKey::of(email.to_lowercase())
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "invalid email or password",
    )
}

fn invalid_token() -> ApiError {
    ApiError::bad_request("invalid_token", "the token is invalid, used or expired")
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "auth request failed");
    ApiError::internal("internal error")
}

fn audit(event: AuditEvent, actor: Option<UserId>, client: &ClientInfo) -> ActionAudit {
    ActionAudit {
        at: Utc::now(),
        event,
        actor_id: actor.map(|u| u.0),
        org_id: None,
        license_id: None,
        client: client.clone(),
        detail: None,
    }
}

fn accepted(message: &str) -> Response {
    warp::reply::with_status(
        warp::reply::json(&json!({"status": "accepted", "message": message})),
        StatusCode::ACCEPTED,
    )
    .into_response()
}

/// Tells the mailer that mail is waiting, after the transaction that wrote
/// it committed.
fn mail_enqueued(ctx: &AppContext) {
    ctx.coordinator.kick_mailer();
}

/// `POST /api/v1/auth/register`
#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "auth",
    operation_id = "register",
    summary = "Register an account and its organization",
    description = "Answers 202 whether or not the address is taken (its owner is mailed instead), so that nobody learns which addresses have accounts.",
    request_body = RegisterRequest,
    responses(
        (status = 202, description = "A verification email is on its way, if the address can be registered.", body = AcceptedBody),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub fn register(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    path("register")
        .and(warp::post())
        .and(super::rate_limit_by_ip(&ctx, Limit::RegisterPerIp))
        .and(with_ctx(ctx.clone()))
        .and(client(ctx.client_ip))
        .and(json_body::<RegisterRequest>())
        .and_then(
            |ctx: AppContext, client: ClientInfo, req: RegisterRequest| async move {
                handle_register(ctx, client, req)
                    .await
                    .map_err(warp::reject::custom)
            },
        )
}

async fn handle_register(
    ctx: AppContext,
    client: ClientInfo,
    req: RegisterRequest,
) -> Result<Response, ApiError> {
    validate_email(&req.email)?;
    password_bytes(&req.password)?;
    validate_password(&req.password)?;
    validate_name("full_name", &req.full_name)?;
    validate_name("organization_name", &req.organization_name)?;
    // Hashed whether or not the address is taken, so both answers take
    // the same time.
    let password_hash = passwords::hash(SecretString::from(req.password))
        .await
        .map_err(internal)?;
    let (token, token_hash) = tokens::generate(tokens::EMAIL_PREFIX);
    let verify = NewUserToken {
        token_hash,
        purpose: TokenPurpose::VerifyEmail,
        expires_at: Utc::now()
            + chrono::Duration::hours(i64::try_from(ctx.auth.verify_token_ttl_hours).unwrap_or(24)),
    };
    let mail = NewMail::new(
        MailKind::Verify,
        req.email.clone(),
        json!({"full_name": req.full_name, "token": token}),
    );
    let account = NewAccount {
        email: req.email.clone(),
        password_hash,
        full_name: req.full_name,
        org_name: req.organization_name,
    };
    let entry = audit(AuditEvent::UserRegistered, None, &client);
    match ctx.store.create_account(account, verify, mail, entry).await {
        Ok(_) => {}
        Err(seatwarden_actors::ports::StoreError::Conflict(_)) => {
            let exists = |u: &User| {
                NewMail::new(
                    MailKind::AccountExists,
                    u.email.clone(),
                    json!({"full_name": u.full_name}),
                )
            };
            ctx.store.notify_existing(&req.email, &exists).await?;
        }
        Err(e) => return Err(e.into()),
    }
    mail_enqueued(&ctx);
    Ok(accepted(
        "if the address can be registered, a verification email is on its way",
    ))
}

/// `GET /api/v1/auth/verify-email?token=`
#[utoipa::path(
    get,
    path = "/api/v1/auth/verify-email",
    tag = "auth",
    operation_id = "verify_email",
    summary = "Verify an email address with the token mailed to it",
    params(("token" = String, Query, description = "The token of the verification email; the only parameter.")),
    responses(
        (status = 200, description = "`{\"status\": \"verified\"}`.", body = StatusBody),
        (status = 400, description = "`invalid_token` (invalid, used or expired) or `invalid_query`.", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub fn verify_email(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    path("verify-email")
        .and(warp::get())
        .and(with_ctx(ctx))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and_then(|ctx: AppContext, query: String| async move {
            handle_verify(ctx, query)
                .await
                .map_err(warp::reject::custom)
        })
}

/// The `token` parameter, the only one allowed. Parsed here rather than by
/// `warp::query`, whose rejection would lose to the other routes' 405.
fn verify_token_param(query: &str) -> Result<String, ApiError> {
    let mut token = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "token" if token.is_none() => token = Some(value.into_owned()),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "the only parameter is a single token",
                ));
            }
        }
    }
    token.ok_or_else(|| ApiError::bad_request("invalid_query", "the token parameter is required"))
}

async fn handle_verify(ctx: AppContext, query: String) -> Result<Response, ApiError> {
    let token = verify_token_param(&query)?;
    if !tokens::well_formed(&token, tokens::EMAIL_PREFIX) {
        return Err(invalid_token());
    }
    let welcome = |u: &User| {
        NewMail::new(
            MailKind::Welcome,
            u.email.clone(),
            json!({"full_name": u.full_name}),
        )
    };
    let verified = ctx
        .store
        .verify_email(&tokens::digest(&token), Utc::now(), &welcome)
        .await?;
    match verified {
        Some(_) => {
            mail_enqueued(&ctx);
            Ok(warp::reply::json(&json!({"status": "verified"})).into_response())
        }
        None => Err(invalid_token()),
    }
}

/// `POST /api/v1/auth/login`
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    operation_id = "login",
    summary = "Log in with email and password",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "An access token and a refresh token.", body = TokenResponse),
        (status = 400, response = BadRequest),
        (status = 401, description = "`invalid_credentials`: unknown address, wrong password and locked account alike.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub fn login(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    path("login")
        .and(warp::post())
        .and(super::rate_limit_by_ip(&ctx, Limit::LoginPerIp))
        .and(with_ctx(ctx.clone()))
        .and(client(ctx.client_ip))
        .and(json_body::<LoginRequest>())
        .and_then(
            |ctx: AppContext, client: ClientInfo, req: LoginRequest| async move {
                handle_login(ctx, client, req)
                    .await
                    .map_err(warp::reject::custom)
            },
        )
}

async fn handle_login(
    ctx: AppContext,
    client: ClientInfo,
    req: LoginRequest,
) -> Result<Response, ApiError> {
    if req.email.chars().count() > MAX_EMAIL || req.password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid_credentials());
    }
    // Per account, whatever the IP: a botnet guessing one account's
    // password from many addresses meets this limit, then the lockout.
    ctx.rate_limit(Limit::LoginPerAccount, &account_key(&req.email))
        .await?;
    let password = SecretString::from(req.password);
    let Some(creds) = ctx.store.credentials(&req.email).await? else {
        passwords::verify_nothing(password).await;
        let mut entry = audit(AuditEvent::LoginFailed, None, &client);
        entry.detail = Some("unknown_account".to_owned());
        ctx.store.append_action(&entry).await?;
        return Err(invalid_credentials());
    };
    let now = Utc::now();
    let user = creds.user.clone();
    let matches = passwords::verify(password, creds.password_hash.clone()).await;
    if creds.locked_until.is_some_and(|until| until > now) {
        let mut entry = audit(AuditEvent::LoginFailed, Some(user.id), &client);
        entry.detail = Some("locked".to_owned());
        ctx.store.append_action(&entry).await?;
        return Err(invalid_credentials());
    }
    if !matches {
        let mut entry = audit(AuditEvent::LoginFailed, Some(user.id), &client);
        entry.detail = Some("wrong_password".to_owned());
        let locked = |u: &User| {
            let until = Utc::now() + ctx.auth.lockout().lock_for;
            NewMail::new(
                MailKind::AccountLocked,
                u.email.clone(),
                json!({"full_name": u.full_name, "locked_until": until.to_rfc3339()}),
            )
        };
        let lock = ctx
            .store
            .record_login_failure(user.id, ctx.auth.lockout(), entry, &locked)
            .await?;
        if lock.is_some() {
            mail_enqueued(&ctx);
        }
        return Err(invalid_credentials());
    }
    ctx.store.clear_login_failures(user.id).await?;
    ctx.store
        .append_action(&audit(AuditEvent::LoginSucceeded, Some(user.id), &client))
        .await?;
    issue_tokens(&ctx, &user).await
}

/// Issues an access token and the first refresh token of a new family.
async fn issue_tokens(ctx: &AppContext, user: &User) -> Result<Response, ApiError> {
    let memberships: Vec<Membership> = ctx.store.memberships(user.id).await?;
    let access_token = ctx.access.issue(user, &memberships).map_err(internal)?;
    let (refresh_token, refresh_hash) = tokens::generate(tokens::REFRESH_PREFIX);
    ctx.store
        .issue_refresh_token(NewRefreshToken {
            token_hash: refresh_hash,
            family_id: uuid::Uuid::new_v4(),
            user_id: user.id,
            expires_at: refresh_expiry(ctx),
        })
        .await?;
    Ok(token_response(ctx, access_token, refresh_token))
}

fn refresh_expiry(ctx: &AppContext) -> chrono::DateTime<Utc> {
    Utc::now()
        + chrono::Duration::days(i64::try_from(ctx.auth.refresh_token_ttl_days).unwrap_or(30))
}

fn token_response(ctx: &AppContext, access_token: String, refresh_token: String) -> Response {
    let body = TokenResponse {
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: ctx.access.ttl().as_secs(),
    };
    let mut response = warp::reply::json(&body).into_response();
    // Tokens must not be cached by anything between us and the client.
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

/// `POST /api/v1/auth/refresh`
#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    tag = "auth",
    operation_id = "refresh",
    summary = "Trade a refresh token for new tokens",
    description = "A refresh token works once; presenting a used one again revokes its whole family.",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new access token and a new refresh token.", body = TokenResponse),
        (status = 400, response = BadRequest),
        (status = 401, description = "`invalid_refresh_token`: invalid, used or expired.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub fn refresh(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    path("refresh")
        .and(warp::post())
        .and(with_ctx(ctx))
        .and(json_body::<RefreshRequest>())
        .and_then(|ctx: AppContext, req: RefreshRequest| async move {
            handle_refresh(ctx, req).await.map_err(warp::reject::custom)
        })
}

async fn handle_refresh(ctx: AppContext, req: RefreshRequest) -> Result<Response, ApiError> {
    let refused = || {
        let mut e = unauthenticated();
        e.code = "invalid_refresh_token";
        e.message = "the refresh token is invalid, used or expired".to_owned();
        e
    };
    if !tokens::well_formed(&req.refresh_token, tokens::REFRESH_PREFIX) {
        return Err(refused());
    }
    let (refresh_token, refresh_hash) = tokens::generate(tokens::REFRESH_PREFIX);
    let next = NewRefreshToken {
        token_hash: refresh_hash,
        // Both taken from the presented token by the store.
        family_id: uuid::Uuid::nil(),
        user_id: UserId(uuid::Uuid::nil()),
        expires_at: refresh_expiry(&ctx),
    };
    let outcome = ctx
        .store
        .rotate_refresh_token(&tokens::digest(&req.refresh_token), next, Utc::now())
        .await?;
    let user_id = match outcome {
        RefreshOutcome::Rotated(user) => user,
        RefreshOutcome::Reused(user) => {
            tracing::warn!(user = %user, "a used refresh token was presented again; its family is revoked");
            return Err(refused());
        }
        RefreshOutcome::Invalid => return Err(refused()),
    };
    let Some(user) = ctx.store.user(user_id).await? else {
        return Err(refused());
    };
    let memberships = ctx.store.memberships(user.id).await?;
    let access_token = ctx.access.issue(&user, &memberships).map_err(internal)?;
    Ok(token_response(&ctx, access_token, refresh_token))
}

/// `POST /api/v1/auth/logout`
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    operation_id = "logout",
    summary = "Revoke a refresh token and its family",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "The refresh token is unusable now, whether or not it was known."),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub fn logout(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    path("logout")
        .and(warp::post())
        .and(with_ctx(ctx))
        .and(json_body::<RefreshRequest>())
        .and_then(|ctx: AppContext, req: RefreshRequest| async move {
            // Well-formed or not, known or not: the token is not usable
            // afterwards, which is all a client needs to know.
            if tokens::well_formed(&req.refresh_token, tokens::REFRESH_PREFIX) {
                ctx.store
                    .revoke_refresh_family(&tokens::digest(&req.refresh_token), Utc::now())
                    .await
                    .map_err(|e| warp::reject::custom(ApiError::from(e)))?;
            }
            Ok::<_, warp::Rejection>(
                warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response(),
            )
        })
}

/// `GET /api/v1/auth/me`
#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "auth",
    operation_id = "me",
    summary = "Who the access token belongs to",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account and its organizations.", body = MeResponse),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
pub fn me(ctx: AppContext) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    path("me")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(principal::user(ctx))
        .and_then(|ctx: AppContext, claims: AccessClaims| async move {
            handle_me(ctx, claims).await.map_err(warp::reject::custom)
        })
}

async fn handle_me(ctx: AppContext, claims: AccessClaims) -> Result<Response, ApiError> {
    let Some(user) = ctx.store.user(claims.sub).await? else {
        return Err(unauthenticated());
    };
    let organizations = ctx
        .store
        .memberships(user.id)
        .await?
        .into_iter()
        .map(|m| MembershipView {
            org_id: m.org_id,
            name: m.org_name,
            role: m.role,
        })
        .collect();
    Ok(warp::reply::json(&MeResponse {
        id: user.id,
        email_verified: user.email_verified(),
        email: user.email,
        full_name: user.full_name,
        platform_admin: user.platform_admin,
        created_at: user.created_at,
        organizations,
    })
    .into_response())
}

/// `POST /api/v1/auth/forgot-password`
#[utoipa::path(
    post,
    path = "/api/v1/auth/forgot-password",
    tag = "auth",
    operation_id = "forgot_password",
    summary = "Mail a password-reset token",
    description = "Answers 202 whether or not the address has an account.",
    request_body = ForgotRequest,
    responses(
        (status = 202, description = "A reset email is on its way, if the address has an account.", body = AcceptedBody),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub fn forgot_password(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    path("forgot-password")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(client(ctx.client_ip))
        .and(json_body::<ForgotRequest>())
        .and_then(
            |ctx: AppContext, client: ClientInfo, req: ForgotRequest| async move {
                handle_forgot(ctx, client, req)
                    .await
                    .map_err(warp::reject::custom)
            },
        )
}

async fn handle_forgot(
    ctx: AppContext,
    client: ClientInfo,
    req: ForgotRequest,
) -> Result<Response, ApiError> {
    validate_email(&req.email)?;
    ctx.rate_limit(Limit::ForgotPasswordPerAccount, &account_key(&req.email))
        .await?;
    if let Some(creds) = ctx.store.credentials(&req.email).await? {
        let (token, token_hash) = tokens::generate(tokens::EMAIL_PREFIX);
        let reset = NewUserToken {
            token_hash,
            purpose: TokenPurpose::ResetPassword,
            expires_at: Utc::now()
                + chrono::Duration::minutes(
                    i64::try_from(ctx.auth.reset_token_ttl_mins).unwrap_or(60),
                ),
        };
        let mail = |u: &User| {
            NewMail::new(
                MailKind::PasswordReset,
                u.email.clone(),
                json!({"full_name": u.full_name, "token": token}),
            )
        };
        let entry = audit(
            AuditEvent::PasswordResetRequested,
            Some(creds.user.id),
            &client,
        );
        ctx.store
            .issue_user_token(creds.user.id, reset, &mail, Some(entry))
            .await?;
        mail_enqueued(&ctx);
    }
    Ok(accepted(
        "if the address has an account, a reset email is on its way",
    ))
}

/// `POST /api/v1/auth/reset-password`
#[utoipa::path(
    post,
    path = "/api/v1/auth/reset-password",
    tag = "auth",
    operation_id = "reset_password",
    summary = "Set a new password with a reset token",
    description = "Logs the account out everywhere: every refresh token is revoked.",
    request_body = ResetRequest,
    responses(
        (status = 200, description = "`{\"status\": \"password_reset\"}`.", body = StatusBody),
        (status = 400, description = "`invalid_token`, `weak_password` or `invalid_body`.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub fn reset_password(
    ctx: AppContext,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    path("reset-password")
        .and(warp::post())
        .and(with_ctx(ctx))
        .and(json_body::<ResetRequest>())
        .and_then(|ctx: AppContext, req: ResetRequest| async move {
            handle_reset(ctx, req).await.map_err(warp::reject::custom)
        })
}

async fn handle_reset(ctx: AppContext, req: ResetRequest) -> Result<Response, ApiError> {
    if !tokens::well_formed(&req.token, tokens::EMAIL_PREFIX) {
        return Err(invalid_token());
    }
    // A refused password leaves the token unused: check it first.
    password_bytes(&req.password)?;
    validate_password(&req.password)?;
    let token_hash = tokens::digest(&req.token);
    let now = Utc::now();
    // Cheap check before the expensive hash, so bad tokens cost no argon2.
    if !ctx
        .store
        .user_token_live(&token_hash, TokenPurpose::ResetPassword, now)
        .await?
    {
        return Err(invalid_token());
    }
    let password_hash = passwords::hash(SecretString::from(req.password))
        .await
        .map_err(internal)?;
    match ctx
        .store
        .reset_password(&token_hash, &password_hash, Utc::now())
        .await?
    {
        Some(_) => Ok(warp::reply::json(&json!({"status": "password_reset"})).into_response()),
        None => Err(invalid_token()),
    }
}
