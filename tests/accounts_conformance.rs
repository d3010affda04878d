//! The conformance suite of [`AccountStore`], run on SQLite (file and
//! memory) and PostgreSQL, like `store_conformance`.

mod support;

use std::sync::Arc;

use chrono::{Duration, Utc};
use futures::future::join_all;
use serde_json::json;

use seatwarden_actors::domain::{
    ActionAudit, AuditEvent, ClientInfo, LockoutPolicy, NewAccount, NewRefreshToken, NewUserToken,
    Role, TokenPurpose, User, UserId,
};
use seatwarden_actors::ports::{MailKind, NewMail, RefreshOutcome, Store, StoreError};

store_conformance! {
    an_account_is_a_user_an_org_it_owns_a_token_and_a_mail => check_create_account,
    an_address_taken_in_any_case_is_a_conflict_and_writes_nothing => check_duplicate_email,
    a_verification_token_works_once_and_only_before_it_expires => check_verify_once,
    a_token_of_one_purpose_does_not_serve_another => check_token_purpose,
    a_reset_sets_the_password_and_revokes_every_refresh_token => check_reset,
    failures_within_the_window_lock_the_account_once => check_lockout,
    failures_outside_the_window_do_not_add_up => check_lockout_window,
    concurrent_failures_lock_the_account_exactly_once => check_concurrent_lockout,
    a_refresh_token_rotates_once_and_its_reuse_revokes_the_family => check_refresh_rotation,
    of_racing_presentations_of_one_refresh_token_exactly_one_rotates => check_refresh_race,
    logout_revokes_the_family => check_logout,
    an_expired_refresh_token_is_invalid => check_refresh_expiry,
    notify_existing_mails_only_an_existing_account => check_notify_existing,
    a_platform_admin_is_verified_and_has_no_org => check_platform_admin,
}

// ---------------------------------------------------------------------------
// Fixtures

fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@Example.COM", uuid::Uuid::new_v4().simple())
}

fn client() -> ClientInfo {
    ClientInfo {
        ip: Some("192.0.2.7".into()),
        user_agent: Some("tests".into()),
    }
}

fn action(event: AuditEvent) -> ActionAudit {
    ActionAudit {
        at: Utc::now(),
        event,
        actor_id: None,
        org_id: None,
        license_id: None,
        client: client(),
        detail: None,
    }
}

fn token(purpose: TokenPurpose, ttl: Duration) -> (String, NewUserToken) {
    let raw = format!("tok-{}", uuid::Uuid::new_v4());
    let t = NewUserToken {
        token_hash: format!("hash-{raw}"),
        purpose,
        expires_at: Utc::now() + ttl,
    };
    (raw, t)
}

async fn register(store: &dyn Store, email: &str) -> (User, String) {
    let (_, verify) = token(TokenPurpose::VerifyEmail, Duration::hours(24));
    let hash = verify.token_hash.clone();
    let account = NewAccount {
        email: email.to_owned(),
        password_hash: "$argon2id$v=19$fake".into(),
        full_name: "Ada Lovelace".into(),
        org_name: "Analytical Engines".into(),
    };
    let mail = NewMail::new(MailKind::Verify, email, json!({"token": "x"}));
    let (user, _) = store
        .create_account(account, verify, mail, action(AuditEvent::UserRegistered))
        .await
        .expect("create account");
    (user, hash)
}

fn mail_for(kind: MailKind) -> impl Fn(&User) -> NewMail + Send + Sync {
    move |u: &User| NewMail::new(kind, u.email.clone(), json!({"full_name": u.full_name}))
}

fn refresh(user: UserId, family: uuid::Uuid, ttl: Duration) -> NewRefreshToken {
    NewRefreshToken {
        token_hash: format!("r-{}", uuid::Uuid::new_v4()),
        family_id: family,
        user_id: user,
        expires_at: Utc::now() + ttl,
    }
}

// ---------------------------------------------------------------------------
// Checks

async fn check_create_account(store: Arc<dyn Store>) {
    let email = unique_email("ada");
    let (user, _) = register(&*store, &email).await;
    assert_eq!(user.email, email, "the address is kept as written");
    assert!(!user.email_verified());
    assert!(!user.platform_admin);
    let creds = store
        .credentials(&email.to_lowercase())
        .await
        .unwrap()
        .expect("found by the lower-case address");
    assert_eq!(creds.user, user);
    assert_eq!(creds.password_hash, "$argon2id$v=19$fake");
    let members = store.memberships(user.id).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].role, Role::Owner);
    assert_eq!(members[0].org_name, "Analytical Engines");
    assert_eq!(store.user(user.id).await.unwrap(), Some(user));
}

async fn check_duplicate_email(store: Arc<dyn Store>) {
    let email = unique_email("dup");
    let (first, _) = register(&*store, &email).await;
    let (_, verify) = token(TokenPurpose::VerifyEmail, Duration::hours(1));
    let account = NewAccount {
        email: email.to_uppercase(),
        password_hash: "other".into(),
        full_name: "Mallory".into(),
        org_name: "Should Not Exist".into(),
    };
    let mail = NewMail::new(MailKind::Verify, email.to_uppercase(), json!({}));
    let err = store
        .create_account(account, verify, mail, action(AuditEvent::UserRegistered))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let creds = store.credentials(&email).await.unwrap().unwrap();
    assert_eq!(creds.user.id, first.id);
    assert_eq!(creds.password_hash, "$argon2id$v=19$fake", "unchanged");
    assert_eq!(store.memberships(first.id).await.unwrap().len(), 1);
}

async fn check_verify_once(store: Arc<dyn Store>) {
    let (user, hash) = register(&*store, &unique_email("v")).await;
    let welcome = mail_for(MailKind::Welcome);
    let later = Utc::now() + Duration::hours(25);
    assert_eq!(
        store.verify_email(&hash, later, &welcome).await.unwrap(),
        None,
        "expired at 24 h"
    );
    let verified = store
        .verify_email(&hash, Utc::now(), &welcome)
        .await
        .unwrap()
        .expect("a live token verifies");
    assert_eq!(verified.id, user.id);
    assert!(verified.email_verified());
    assert_eq!(
        store
            .verify_email(&hash, Utc::now(), &welcome)
            .await
            .unwrap(),
        None,
        "single use"
    );
    assert!(store.user(user.id).await.unwrap().unwrap().email_verified());
}

async fn check_token_purpose(store: Arc<dyn Store>) {
    let (user, verify_hash) = register(&*store, &unique_email("p")).await;
    let now = Utc::now();
    assert!(
        store
            .user_token_live(&verify_hash, TokenPurpose::VerifyEmail, now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .user_token_live(&verify_hash, TokenPurpose::ResetPassword, now)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .reset_password(&verify_hash, "new", now)
            .await
            .unwrap(),
        None,
        "a verification token does not reset a password"
    );
    let (_, reset) = token(TokenPurpose::ResetPassword, Duration::hours(1));
    let reset_hash = reset.token_hash.clone();
    store
        .issue_user_token(user.id, reset, &mail_for(MailKind::PasswordReset), None)
        .await
        .unwrap();
    let welcome = mail_for(MailKind::Welcome);
    assert_eq!(
        store
            .verify_email(&reset_hash, now, &welcome)
            .await
            .unwrap(),
        None,
        "a reset token does not verify an address"
    );
}

async fn check_reset(store: Arc<dyn Store>) {
    let email = unique_email("r");
    let (user, _) = register(&*store, &email).await;
    let family = uuid::Uuid::new_v4();
    let first = refresh(user.id, family, Duration::days(1));
    let first_hash = first.token_hash.clone();
    store.issue_refresh_token(first).await.unwrap();
    let (_, reset) = token(TokenPurpose::ResetPassword, Duration::hours(1));
    let reset_hash = reset.token_hash.clone();
    store
        .issue_user_token(user.id, reset, &mail_for(MailKind::PasswordReset), None)
        .await
        .unwrap();
    let done = store
        .reset_password(&reset_hash, "new-hash", Utc::now())
        .await
        .unwrap();
    assert_eq!(done, Some(user.id));
    let creds = store.credentials(&email).await.unwrap().unwrap();
    assert_eq!(creds.password_hash, "new-hash");
    let outcome = store
        .rotate_refresh_token(
            &first_hash,
            refresh(user.id, family, Duration::days(1)),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(outcome, RefreshOutcome::Invalid, "revoked by the reset");
    assert_eq!(
        store
            .reset_password(&reset_hash, "again", Utc::now())
            .await
            .unwrap(),
        None,
        "single use"
    );
}

fn policy() -> LockoutPolicy {
    LockoutPolicy {
        max_failures: 3,
        window: Duration::minutes(15),
        lock_for: Duration::minutes(15),
    }
}

fn failure(user: UserId, at: chrono::DateTime<Utc>) -> ActionAudit {
    ActionAudit {
        at,
        actor_id: Some(user.0),
        ..action(AuditEvent::LoginFailed)
    }
}

async fn check_lockout(store: Arc<dyn Store>) {
    let email = unique_email("l");
    let (user, _) = register(&*store, &email).await;
    let locked = mail_for(MailKind::AccountLocked);
    let t0 = Utc::now();
    for i in 0..2 {
        let r = store
            .record_login_failure(
                user.id,
                policy(),
                failure(user.id, t0 + Duration::seconds(i)),
                &locked,
            )
            .await
            .unwrap();
        assert_eq!(r, None, "failure {i} does not lock");
    }
    let until = store
        .record_login_failure(
            user.id,
            policy(),
            failure(user.id, t0 + Duration::seconds(2)),
            &locked,
        )
        .await
        .unwrap()
        .expect("the third failure locks");
    assert_eq!(until, t0 + Duration::seconds(2) + Duration::minutes(15));
    let creds = store.credentials(&email).await.unwrap().unwrap();
    assert!(
        creds
            .locked_until
            .is_some_and(|u| (u - until).num_milliseconds().abs() < 1)
    );
    let again = store
        .record_login_failure(
            user.id,
            policy(),
            failure(user.id, t0 + Duration::seconds(3)),
            &locked,
        )
        .await
        .unwrap();
    assert_eq!(again, None, "a locked account is not locked again");
}

async fn check_lockout_window(store: Arc<dyn Store>) {
    let (user, _) = register(&*store, &unique_email("w")).await;
    let locked = mail_for(MailKind::AccountLocked);
    let t0 = Utc::now();
    for i in 0..4 {
        // Each failure 10 minutes after the last: never 3 within 15 min.
        let at = t0 + Duration::minutes(10 * i);
        let r = store
            .record_login_failure(user.id, policy(), failure(user.id, at), &locked)
            .await
            .unwrap();
        assert_eq!(r, None, "failure {i} is outside the others' window");
    }
    store.clear_login_failures(user.id).await.unwrap();
}

async fn check_concurrent_lockout(store: Arc<dyn Store>) {
    let (user, _) = register(&*store, &unique_email("c")).await;
    let t0 = Utc::now();
    let results = join_all((0..8).map(|i| {
        let store = store.clone();
        async move {
            let locked = mail_for(MailKind::AccountLocked);
            store
                .record_login_failure(
                    user.id,
                    policy(),
                    failure(user.id, t0 + Duration::milliseconds(i)),
                    &locked,
                )
                .await
                .unwrap()
        }
    }))
    .await;
    let locks = results.iter().filter(|r| r.is_some()).count();
    assert_eq!(locks, 1, "exactly one failure locks: {results:?}");
}

async fn check_refresh_rotation(store: Arc<dyn Store>) {
    let (user, _) = register(&*store, &unique_email("rt")).await;
    let family = uuid::Uuid::new_v4();
    let first = refresh(user.id, family, Duration::days(1));
    let first_hash = first.token_hash.clone();
    store.issue_refresh_token(first).await.unwrap();
    let second = refresh(UserId::new(), uuid::Uuid::nil(), Duration::days(1));
    let second_hash = second.token_hash.clone();
    assert_eq!(
        store
            .rotate_refresh_token(&first_hash, second, Utc::now())
            .await
            .unwrap(),
        RefreshOutcome::Rotated(user.id)
    );
    // The first comes back: someone kept a copy.
    let third = refresh(user.id, family, Duration::days(1));
    let third_hash = third.token_hash.clone();
    assert_eq!(
        store
            .rotate_refresh_token(&first_hash, third, Utc::now())
            .await
            .unwrap(),
        RefreshOutcome::Reused(user.id)
    );
    // The whole family is revoked: the live second one is dead too, and
    // the third was never stored.
    for hash in [&second_hash, &third_hash] {
        assert_eq!(
            store
                .rotate_refresh_token(
                    hash,
                    refresh(user.id, family, Duration::days(1)),
                    Utc::now()
                )
                .await
                .unwrap(),
            RefreshOutcome::Invalid
        );
    }
}

async fn check_refresh_race(store: Arc<dyn Store>) {
    let (user, _) = register(&*store, &unique_email("race")).await;
    let first = refresh(user.id, uuid::Uuid::new_v4(), Duration::days(1));
    let hash = first.token_hash.clone();
    store.issue_refresh_token(first).await.unwrap();
    let outcomes = join_all((0..8).map(|_| {
        let store = store.clone();
        let hash = hash.clone();
        async move {
            store
                .rotate_refresh_token(
                    &hash,
                    refresh(user.id, uuid::Uuid::nil(), Duration::days(1)),
                    Utc::now(),
                )
                .await
                .unwrap()
        }
    }))
    .await;
    let rotated = outcomes
        .iter()
        .filter(|o| matches!(o, RefreshOutcome::Rotated(_)))
        .count();
    assert_eq!(rotated, 1, "{outcomes:?}");
}

async fn check_logout(store: Arc<dyn Store>) {
    let (user, _) = register(&*store, &unique_email("out")).await;
    let family = uuid::Uuid::new_v4();
    let first = refresh(user.id, family, Duration::days(1));
    let hash = first.token_hash.clone();
    store.issue_refresh_token(first).await.unwrap();
    assert!(
        store
            .revoke_refresh_family(&hash, Utc::now())
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_refresh_family("unknown", Utc::now())
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .rotate_refresh_token(
                &hash,
                refresh(user.id, family, Duration::days(1)),
                Utc::now()
            )
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
}

async fn check_refresh_expiry(store: Arc<dyn Store>) {
    let (user, _) = register(&*store, &unique_email("exp")).await;
    let family = uuid::Uuid::new_v4();
    let first = refresh(user.id, family, Duration::minutes(1));
    let hash = first.token_hash.clone();
    store.issue_refresh_token(first).await.unwrap();
    let later = Utc::now() + Duration::minutes(2);
    assert_eq!(
        store
            .rotate_refresh_token(&hash, refresh(user.id, family, Duration::days(1)), later)
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
}

async fn check_notify_existing(store: Arc<dyn Store>) {
    let email = unique_email("n");
    register(&*store, &email).await;
    let exists = mail_for(MailKind::AccountExists);
    assert!(
        store
            .notify_existing(&email.to_lowercase(), &exists)
            .await
            .unwrap()
    );
    assert!(
        !store
            .notify_existing(&unique_email("nobody"), &exists)
            .await
            .unwrap()
    );
}

async fn check_platform_admin(store: Arc<dyn Store>) {
    let email = unique_email("admin");
    let admin = store
        .create_platform_admin(&email, "Root", "hash")
        .await
        .unwrap();
    assert!(admin.platform_admin && admin.email_verified());
    assert!(store.memberships(admin.id).await.unwrap().is_empty());
    let err = store
        .create_platform_admin(&email.to_lowercase(), "Again", "hash")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)));
}
