//! The conformance suite of [`OrgStore`] (and of
//! `SessionStore::revoke_session`), run on SQLite (file and memory) and
//! PostgreSQL, like `accounts_conformance`.

mod support;

use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use futures::future::join_all;
use serde_json::json;

use seatwarden_actors::domain::{
    AcceptOutcome, ActionAudit, AuditEntry, AuditEvent, AuditFilter, ClientInfo, EndReason,
    InvitationRevoke, InviteOutcome, KeyCursor, License, LicenseFilter, LicenseStatus,
    LicenseUpdate, MemberChange, NewAccount, NewApiKey, NewInvitation, NewLicense, NewUserToken,
    Org, OrgId, PageRequest, Role, SessionFilter, SessionId, SessionRecord, TokenPurpose, User,
};
use seatwarden_actors::ports::{EndOutcome, MailKind, NewMail, Store, StoreError};

store_conformance! {
    a_registered_user_owns_their_org_and_strangers_have_no_role => check_roles,
    an_invitation_joins_its_addressee_once_with_its_role => check_invitation_single_use,
    racing_acceptances_of_one_invitation_join_once => check_racing_accepts,
    expired_revoked_and_misaddressed_invitations_join_no_one => check_invitation_refusals,
    an_address_that_is_a_member_already_is_not_invited => check_invite_member,
    changes_to_members_keep_an_owner_and_only_owners_touch_owners => check_member_changes,
    two_owners_demoting_each_other_at_once_leave_one_owner => check_racing_demotions,
    two_owners_removing_each_other_at_once_leave_one_owner => check_racing_removals,
    an_api_key_is_found_by_its_hash_until_it_is_revoked => check_api_keys,
    another_orgs_ids_are_unknown_inside_an_org => check_scoping,
    pages_of_licenses_neither_repeat_nor_skip_while_rows_are_added => check_license_pages,
    licenses_filter_by_status_tier_and_expiry => check_license_filters,
    sessions_page_newest_first_and_filter => check_session_pages,
    a_revoked_session_ends_once_with_its_actor_in_the_audit_log => check_revoke_session,
    the_audit_log_pages_newest_first_and_filters => check_audit_pages,
    every_change_is_audited_with_its_actor => check_change_audits,
}

// ---------------------------------------------------------------------------
// Fixtures

fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@Example.COM", uuid::Uuid::new_v4().simple())
}

fn client() -> ClientInfo {
    ClientInfo {
        ip: Some("192.0.2.9".into()),
        user_agent: Some("tests".into()),
    }
}

/// An action of `actor`; the store fills in event, org and detail.
fn by(actor: &User) -> ActionAudit {
    ActionAudit {
        at: Utc::now(),
        event: AuditEvent::OrgRenamed,
        actor_id: Some(actor.id.0),
        org_id: None,
        license_id: None,
        client: client(),
        detail: None,
    }
}

async fn register(store: &dyn Store, tag: &str) -> (User, Org) {
    let email = unique_email(tag);
    let verify = NewUserToken {
        token_hash: format!("v-{}", uuid::Uuid::new_v4()),
        purpose: TokenPurpose::VerifyEmail,
        expires_at: Utc::now() + Duration::hours(1),
    };
    let account = NewAccount {
        email: email.clone(),
        password_hash: "$argon2id$fake".into(),
        full_name: format!("Person {tag}"),
        org_name: format!("Org of {tag}"),
    };
    let mail = NewMail::new(MailKind::Verify, email, json!({}));
    let audit = ActionAudit {
        event: AuditEvent::UserRegistered,
        ..by(&User {
            id: seatwarden_actors::domain::UserId::new(),
            email: String::new(),
            full_name: String::new(),
            email_verified_at: None,
            platform_admin: false,
            created_at: Utc::now(),
        })
    };
    store
        .create_account(account, verify, mail, audit)
        .await
        .expect("create account")
}

fn invitation(org: &Org, inviter: &User, email: &str, role: Role, ttl: Duration) -> NewInvitation {
    NewInvitation {
        org_id: org.id,
        email: email.to_owned(),
        role,
        invited_by: inviter.id,
        token_hash: format!("i-{}", uuid::Uuid::new_v4()),
        expires_at: Utc::now() + ttl,
    }
}

fn invitation_mail(email: &str) -> NewMail {
    NewMail::new(MailKind::Invitation, email, json!({"token": "x"}))
}

/// Invites `user` into `org` (by its owner) as `role`; the token hash.
async fn invite(store: &dyn Store, org: &Org, owner: &User, user: &User, role: Role) -> String {
    let new = invitation(org, owner, &user.email, role, Duration::days(7));
    let hash = new.token_hash.clone();
    let outcome = store
        .create_invitation(new, Role::Owner, invitation_mail(&user.email), by(owner))
        .await
        .unwrap();
    assert!(matches!(outcome, InviteOutcome::Invited(_)), "{outcome:?}");
    hash
}

/// A new user who joined `org` as `role`.
async fn join(store: &dyn Store, org: &Org, owner: &User, tag: &str, role: Role) -> User {
    let (user, _) = register(store, tag).await;
    let hash = invite(store, org, owner, &user, role).await;
    let outcome = store
        .accept_invitation(&hash, user.id, Utc::now(), by(&user))
        .await
        .unwrap();
    assert!(
        matches!(outcome, AcceptOutcome::Joined { .. }),
        "{outcome:?}"
    );
    user
}

fn new_license(org: OrgId, tier: &str, expires_at: Option<DateTime<Utc>>) -> NewLicense {
    let key = uuid::Uuid::new_v4().to_string();
    NewLicense {
        org_id: org,
        key_hash: format!("hash-{key}"),
        key_hint: "…TEST".into(),
        seats: 3,
        tier: tier.into(),
        features: vec![],
        expires_at,
        offline_grace_secs: None,
        offline_overdraft: 0,
        max_machines: None,
        requires_user: false,
        max_borrow_hours: 0,
    }
}

fn session(license: &License, hardware_id: &str, started: DateTime<Utc>) -> SessionRecord {
    SessionRecord {
        id: SessionId::new(),
        license_id: license.id,
        org_id: license.org_id,
        hardware_id: hardware_id.into(),
        started_at: started,
        last_heartbeat_at: started,
        lease_expires_at: started + Duration::minutes(6),
        ended_at: None,
        end_reason: None,
        client: ClientInfo::default(),
        metadata: None,
        borrowed_until: None,
    }
}

fn acquired(s: &SessionRecord) -> AuditEntry {
    AuditEntry {
        at: s.started_at,
        event: AuditEvent::LicenseAcquired,
        org_id: s.org_id,
        license_id: s.license_id,
        session_id: Some(s.id),
        hardware_id: Some(s.hardware_id.clone()),
        client: ClientInfo::default(),
        detail: None,
        actor_id: None,
    }
}

async fn start(store: &dyn Store, s: &SessionRecord) {
    assert!(store.start_session(s, &acquired(s)).await.unwrap());
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

async fn owners(store: &dyn Store, org: OrgId) -> usize {
    store
        .members(org, PageRequest::first(200))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|m| m.role == Role::Owner)
        .count()
}

async fn audit_events(store: &dyn Store, org: OrgId, event: AuditEvent) -> usize {
    let filter = AuditFilter {
        event: Some(event),
        ..AuditFilter::default()
    };
    store
        .org_audit(org, &filter, PageRequest::first(200))
        .await
        .unwrap()
        .items
        .len()
}

// ---------------------------------------------------------------------------
// Checks

async fn check_roles(store: Arc<dyn Store>) {
    let (ada, org) = register(&*store, "ada").await;
    let (bob, _) = register(&*store, "bob").await;
    assert_eq!(
        store.org_role(org.id, ada.id).await.unwrap(),
        Some(Role::Owner)
    );
    assert_eq!(store.org_role(org.id, bob.id).await.unwrap(), None);
    assert_eq!(store.org_role(OrgId::new(), ada.id).await.unwrap(), None);
    let members = store.members(org.id, PageRequest::first(50)).await.unwrap();
    assert_eq!(members.items.len(), 1);
    assert_eq!(members.items[0].user_id, ada.id);
    assert_eq!(members.items[0].email, ada.email);
    assert!(!members.items[0].email_verified);
    assert_eq!(members.next, None);
}

async fn check_invitation_single_use(store: Arc<dyn Store>) {
    let (owner, org) = register(&*store, "owner").await;
    let (guest, _) = register(&*store, "guest").await;
    // The address is compared in any case.
    let new = invitation(
        &org,
        &owner,
        &guest.email.to_uppercase(),
        Role::Guest,
        Duration::days(7),
    );
    let hash = new.token_hash.clone();
    let InviteOutcome::Invited(created) = store
        .create_invitation(new, Role::Admin, invitation_mail(&guest.email), by(&owner))
        .await
        .unwrap()
    else {
        panic!("an admin invites a guest");
    };
    assert_eq!(created.role, Role::Guest);
    let listed = store
        .invitations(org.id, PageRequest::first(50))
        .await
        .unwrap();
    assert_eq!(listed.items, vec![created.clone()]);

    let outcome = store
        .accept_invitation(&hash, guest.id, Utc::now(), by(&guest))
        .await
        .unwrap();
    let AcceptOutcome::Joined {
        invitation,
        org_name,
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(org_name, org.name);
    assert_eq!(invitation.accepted_by, Some(guest.id));
    assert_eq!(
        store.org_role(org.id, guest.id).await.unwrap(),
        Some(Role::Guest)
    );
    assert_eq!(
        store
            .accept_invitation(&hash, guest.id, Utc::now(), by(&guest))
            .await
            .unwrap(),
        AcceptOutcome::Invalid,
        "single use"
    );
    assert_eq!(
        audit_events(&*store, org.id, AuditEvent::InvitationAccepted).await,
        1
    );
}

async fn check_racing_accepts(store: Arc<dyn Store>) {
    let (owner, org) = register(&*store, "owner").await;
    let (user, _) = register(&*store, "racer").await;
    let hash = invite(&*store, &org, &owner, &user, Role::Member).await;
    let user_id = user.id;
    let outcomes = join_all((0..4).map(|_| {
        let store = store.clone();
        let hash = hash.clone();
        let who = by(&user);
        async move {
            store
                .accept_invitation(&hash, user_id, Utc::now(), who)
                .await
        }
    }))
    .await;
    let joined = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(AcceptOutcome::Joined { .. })))
        .count();
    assert_eq!(joined, 1, "{outcomes:?}");
    for o in &outcomes {
        assert!(
            matches!(
                o,
                Ok(AcceptOutcome::Joined { .. }
                    | AcceptOutcome::Invalid
                    | AcceptOutcome::AlreadyMember)
            ),
            "{o:?}"
        );
    }
    assert_eq!(
        audit_events(&*store, org.id, AuditEvent::InvitationAccepted).await,
        1
    );
}

async fn check_invitation_refusals(store: Arc<dyn Store>) {
    let (owner, org) = register(&*store, "owner").await;
    let (user, _) = register(&*store, "user").await;
    let (other, _) = register(&*store, "other").await;

    // Expired.
    let new = invitation(
        &org,
        &owner,
        &user.email,
        Role::Member,
        Duration::seconds(-1),
    );
    let expired = new.token_hash.clone();
    store
        .create_invitation(new, Role::Owner, invitation_mail(&user.email), by(&owner))
        .await
        .unwrap();
    assert_eq!(
        store
            .accept_invitation(&expired, user.id, Utc::now(), by(&user))
            .await
            .unwrap(),
        AcceptOutcome::Invalid
    );

    // Revoked.
    let new = invitation(&org, &owner, &user.email, Role::Member, Duration::days(7));
    let revoked_hash = new.token_hash.clone();
    let InviteOutcome::Invited(inv) = store
        .create_invitation(new, Role::Owner, invitation_mail(&user.email), by(&owner))
        .await
        .unwrap()
    else {
        panic!("invited");
    };
    let revoked = store
        .revoke_invitation(org.id, inv.id, by(&owner))
        .await
        .unwrap();
    assert!(matches!(revoked, Some(InvitationRevoke::Revoked(ref i)) if i.revoked_at.is_some()));
    assert_eq!(
        store
            .accept_invitation(&revoked_hash, user.id, Utc::now(), by(&user))
            .await
            .unwrap(),
        AcceptOutcome::Invalid
    );
    // Revoking again writes nothing more.
    store
        .revoke_invitation(org.id, inv.id, by(&owner))
        .await
        .unwrap();
    assert_eq!(
        audit_events(&*store, org.id, AuditEvent::InvitationRevoked).await,
        1
    );

    // For someone else: refused, and still usable by its addressee.
    let hash = invite(&*store, &org, &owner, &user, Role::Member).await;
    assert_eq!(
        store
            .accept_invitation(&hash, other.id, Utc::now(), by(&other))
            .await
            .unwrap(),
        AcceptOutcome::WrongAccount
    );
    assert_eq!(store.org_role(org.id, other.id).await.unwrap(), None);
    assert!(matches!(
        store
            .accept_invitation(&hash, user.id, Utc::now(), by(&user))
            .await
            .unwrap(),
        AcceptOutcome::Joined { .. }
    ));
    // An accepted invitation cannot be revoked.
    let accepted = store
        .invitations(org.id, PageRequest::first(50))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|i| i.accepted_at.is_some())
        .unwrap();
    assert!(matches!(
        store
            .revoke_invitation(org.id, accepted.id, by(&owner))
            .await
            .unwrap(),
        Some(InvitationRevoke::AlreadyAccepted(_))
    ));
    assert_eq!(
        store
            .accept_invitation("unknown", user.id, Utc::now(), by(&user))
            .await
            .unwrap(),
        AcceptOutcome::Invalid
    );
}

async fn check_invite_member(store: Arc<dyn Store>) {
    let (owner, org) = register(&*store, "owner").await;
    let member = join(&*store, &org, &owner, "m", Role::Member).await;
    for email in [member.email.clone(), owner.email.to_lowercase()] {
        let new = invitation(&org, &owner, &email, Role::Guest, Duration::days(7));
        assert_eq!(
            store
                .create_invitation(new, Role::Owner, invitation_mail(&email), by(&owner))
                .await
                .unwrap(),
            InviteOutcome::AlreadyMember
        );
    }
    // Only an owner invites an owner.
    let new = invitation(
        &org,
        &owner,
        "new@example.com",
        Role::Owner,
        Duration::days(7),
    );
    assert_eq!(
        store
            .create_invitation(
                new,
                Role::Admin,
                invitation_mail("new@example.com"),
                by(&owner)
            )
            .await
            .unwrap(),
        InviteOutcome::Forbidden
    );
    assert_eq!(
        store
            .invitations(org.id, PageRequest::first(50))
            .await
            .unwrap()
            .items
            .len(),
        1,
        "only the accepted one"
    );
}

async fn check_member_changes(store: Arc<dyn Store>) {
    let (owner, org) = register(&*store, "owner").await;
    let admin = join(&*store, &org, &owner, "admin", Role::Admin).await;
    let member = join(&*store, &org, &owner, "member", Role::Member).await;
    let (stranger, _) = register(&*store, "stranger").await;

    // The only owner can be neither demoted nor removed.
    assert_eq!(
        store
            .set_member_role(org.id, owner.id, Role::Admin, Role::Owner, by(&owner))
            .await
            .unwrap(),
        MemberChange::LastOwner
    );
    assert_eq!(
        store
            .remove_member(org.id, owner.id, Role::Owner, by(&owner))
            .await
            .unwrap(),
        MemberChange::LastOwner
    );
    // Admins never touch owners, nor make them.
    assert_eq!(
        store
            .set_member_role(org.id, owner.id, Role::Member, Role::Admin, by(&admin))
            .await
            .unwrap(),
        MemberChange::Forbidden
    );
    assert_eq!(
        store
            .set_member_role(org.id, member.id, Role::Owner, Role::Admin, by(&admin))
            .await
            .unwrap(),
        MemberChange::Forbidden
    );
    // Members manage no one.
    assert_eq!(
        store
            .remove_member(org.id, admin.id, Role::Member, by(&member))
            .await
            .unwrap(),
        MemberChange::Forbidden
    );
    // Strangers are not members.
    assert_eq!(
        store
            .set_member_role(org.id, stranger.id, Role::Member, Role::Owner, by(&owner))
            .await
            .unwrap(),
        MemberChange::NotMember
    );
    // An admin manages members.
    let MemberChange::Changed(m) = store
        .set_member_role(org.id, member.id, Role::Guest, Role::Admin, by(&admin))
        .await
        .unwrap()
    else {
        panic!("changed");
    };
    assert_eq!(m.role, Role::Guest);
    assert_eq!(
        store.org_role(org.id, member.id).await.unwrap(),
        Some(Role::Guest)
    );
    // With a second owner, the first may step down.
    store
        .set_member_role(org.id, admin.id, Role::Owner, Role::Owner, by(&owner))
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_member_role(org.id, owner.id, Role::Member, Role::Owner, by(&owner))
            .await
            .unwrap(),
        MemberChange::Changed(_)
    ));
    assert!(matches!(
        store
            .remove_member(org.id, member.id, Role::Owner, by(&admin))
            .await
            .unwrap(),
        MemberChange::Changed(_)
    ));
    assert_eq!(store.org_role(org.id, member.id).await.unwrap(), None);
    assert_eq!(owners(&*store, org.id).await, 1);
}

async fn check_racing_demotions(store: Arc<dyn Store>) {
    for round in 0..5 {
        let (a, org) = register(&*store, &format!("a{round}")).await;
        let b = join(&*store, &org, &a, &format!("b{round}"), Role::Owner).await;
        let (by_a, by_b) = (by(&a), by(&b));
        let (org_id, a_id, b_id) = (org.id, a.id, b.id);
        let (ra, rb) = tokio::join!(
            {
                let store = store.clone();
                async move {
                    store
                        .set_member_role(org_id, b_id, Role::Admin, Role::Owner, by_a)
                        .await
                }
            },
            {
                let store = store.clone();
                async move {
                    store
                        .set_member_role(org_id, a_id, Role::Admin, Role::Owner, by_b)
                        .await
                }
            }
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let refused = [&ra, &rb]
            .iter()
            .filter(|r| ***r == MemberChange::LastOwner)
            .count();
        assert_eq!(refused, 1, "round {round}: {ra:?} / {rb:?}");
        assert_eq!(owners(&*store, org.id).await, 1, "round {round}");
    }
}

async fn check_racing_removals(store: Arc<dyn Store>) {
    for round in 0..5 {
        let (a, org) = register(&*store, &format!("a{round}")).await;
        let b = join(&*store, &org, &a, &format!("b{round}"), Role::Owner).await;
        let (by_a, by_b) = (by(&a), by(&b));
        let (org_id, a_id, b_id) = (org.id, a.id, b.id);
        let (ra, rb) = tokio::join!(
            {
                let store = store.clone();
                async move { store.remove_member(org_id, b_id, Role::Owner, by_a).await }
            },
            {
                let store = store.clone();
                async move { store.remove_member(org_id, a_id, Role::Owner, by_b).await }
            }
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(
            matches!(
                (&ra, &rb),
                (MemberChange::Changed(_), MemberChange::LastOwner)
                    | (MemberChange::LastOwner, MemberChange::Changed(_))
            ),
            "round {round}: {ra:?} / {rb:?}"
        );
        assert_eq!(owners(&*store, org.id).await, 1, "round {round}");
    }
}

async fn check_api_keys(store: Arc<dyn Store>) {
    let (owner, org) = register(&*store, "owner").await;
    let (_, other_org) = register(&*store, "other").await;
    let new = NewApiKey {
        org_id: org.id,
        name: "ci".into(),
        role: Role::Member,
        key_hash: format!("k-{}", uuid::Uuid::new_v4()),
        key_hint: "swk_…abcd".into(),
        created_by: owner.id,
    };
    let hash = new.key_hash.clone();
    let key = store.create_api_key(new, by(&owner)).await.unwrap();
    assert_eq!(key.role, Role::Member);
    assert_eq!(
        store.api_key_by_hash(&hash).await.unwrap(),
        Some(key.clone())
    );
    assert_eq!(store.api_key_by_hash("nope").await.unwrap(), None);
    assert_eq!(
        store
            .revoke_api_key(other_org.id, key.id, by(&owner))
            .await
            .unwrap(),
        None,
        "another organization's key is unknown"
    );
    assert!(store.api_key_by_hash(&hash).await.unwrap().is_some());
    let revoked = store
        .revoke_api_key(org.id, key.id, by(&owner))
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.api_key_by_hash(&hash).await.unwrap(), None);
    let again = store
        .revoke_api_key(org.id, key.id, by(&owner))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, revoked.revoked_at, "idempotent");
    assert_eq!(
        audit_events(&*store, org.id, AuditEvent::ApiKeyRevoked).await,
        1
    );
    let listed = store
        .api_keys(org.id, PageRequest::first(50))
        .await
        .unwrap();
    assert_eq!(listed.items, vec![again]);

    let owner_key = NewApiKey {
        org_id: org.id,
        name: "too strong".into(),
        role: Role::Owner,
        key_hash: "k-owner".into(),
        key_hint: "swk_…wxyz".into(),
        created_by: owner.id,
    };
    assert!(matches!(
        store.create_api_key(owner_key, by(&owner)).await,
        Err(StoreError::Conflict(_))
    ));
}

async fn check_scoping(store: Arc<dyn Store>) {
    let (a, org_a) = register(&*store, "a").await;
    let (b, org_b) = register(&*store, "b").await;
    let (invitee, _) = register(&*store, "invitee").await;
    let new = invitation(&org_a, &a, &invitee.email, Role::Member, Duration::days(7));
    let InviteOutcome::Invited(inv) = store
        .create_invitation(new, Role::Owner, invitation_mail(&invitee.email), by(&a))
        .await
        .unwrap()
    else {
        panic!("invited");
    };
    assert_eq!(
        store
            .revoke_invitation(org_b.id, inv.id, by(&b))
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .invitations(org_b.id, PageRequest::first(50))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        store
            .set_member_role(org_b.id, a.id, Role::Guest, Role::Owner, by(&b))
            .await
            .unwrap(),
        MemberChange::NotMember
    );
    assert_eq!(
        store
            .remove_member(org_b.id, a.id, Role::Owner, by(&b))
            .await
            .unwrap(),
        MemberChange::NotMember
    );
    assert_eq!(
        store.org_role(org_a.id, a.id).await.unwrap(),
        Some(Role::Owner)
    );
    store
        .create_license(new_license(org_a.id, "pro", None))
        .await
        .unwrap();
    assert!(
        store
            .org_licenses(org_b.id, &LicenseFilter::default(), PageRequest::first(50))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let b_audit = store
        .org_audit(org_b.id, &AuditFilter::default(), PageRequest::first(200))
        .await
        .unwrap();
    assert!(b_audit.items.iter().all(|e| e.org_id == Some(org_b.id)));
    assert!(
        b_audit
            .items
            .iter()
            .all(|e| e.event != AuditEvent::InvitationCreated)
    );
}

async fn check_license_pages(store: Arc<dyn Store>) {
    let (_, org) = register(&*store, "pages").await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(
            store
                .create_license(new_license(org.id, "pro", None))
                .await
                .unwrap()
                .id,
        );
    }
    let filter = LicenseFilter::default();
    let mut seen = Vec::new();
    let mut added = Vec::new();
    let mut after: Option<KeyCursor> = None;
    loop {
        let page = store
            .org_licenses(org.id, &filter, PageRequest { after, limit: 3 })
            .await
            .unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|l| l.id));
        // A row added between pages comes after every existing one.
        if added.len() < 2 {
            added.push(
                store
                    .create_license(new_license(org.id, "pro", None))
                    .await
                    .unwrap()
                    .id,
            );
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let expected: Vec<_> = created.iter().chain(added.iter()).copied().collect();
    assert_eq!(seen, expected, "every license once, oldest first");
}

async fn check_license_filters(store: Arc<dyn Store>) {
    let (_, org) = register(&*store, "filters").await;
    let soon = Utc::now() + Duration::days(10);
    let later = Utc::now() + Duration::days(100);
    let pro_soon = store
        .create_license(new_license(org.id, "pro", Some(soon)))
        .await
        .unwrap();
    let basic_later = store
        .create_license(new_license(org.id, "basic", Some(later)))
        .await
        .unwrap();
    let pro_never = store
        .create_license(new_license(org.id, "pro", None))
        .await
        .unwrap();
    store
        .update_license(
            pro_never.id,
            &LicenseUpdate {
                status: Some(LicenseStatus::Suspended),
                ..LicenseUpdate::default()
            },
        )
        .await
        .unwrap();
    let ids = |filter: LicenseFilter| {
        let store = store.clone();
        async move {
            store
                .org_licenses(org.id, &filter, PageRequest::first(50))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|l| l.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        ids(LicenseFilter::default()).await,
        vec![pro_soon.id, basic_later.id, pro_never.id]
    );
    assert_eq!(
        ids(LicenseFilter {
            tier: Some("pro".into()),
            ..Default::default()
        })
        .await,
        vec![pro_soon.id, pro_never.id]
    );
    assert_eq!(
        ids(LicenseFilter {
            status: Some(LicenseStatus::Suspended),
            ..Default::default()
        })
        .await,
        vec![pro_never.id]
    );
    assert_eq!(
        ids(LicenseFilter {
            expires_before: Some(Utc::now() + Duration::days(30)),
            ..Default::default()
        })
        .await,
        vec![pro_soon.id]
    );
    assert_eq!(
        ids(LicenseFilter {
            expires_after: Some(Utc::now() + Duration::days(30)),
            ..Default::default()
        })
        .await,
        vec![basic_later.id]
    );
}

async fn check_session_pages(store: Arc<dyn Store>) {
    let (_, org) = register(&*store, "sessions").await;
    let license = store
        .create_license(new_license(org.id, "pro", None))
        .await
        .unwrap();
    let mut all = Vec::new();
    for i in 0..6 {
        // Two sessions share each start time: the id breaks the tie.
        let s = session(&license, &format!("hw-{i}"), at(i / 2));
        start(&*store, &s).await;
        all.push(s);
    }
    let ended = &all[1];
    let end = AuditEntry {
        event: AuditEvent::LicenseReleased,
        ..acquired(ended)
    };
    store
        .end_session(ended.id, at(10), EndReason::Released, &end)
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .license_sessions(
                license.id,
                &SessionFilter::default(),
                PageRequest { after, limit: 4 },
            )
            .await
            .unwrap();
        seen.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    let mut expected = all.clone();
    expected.sort_by_key(|s| std::cmp::Reverse((s.started_at, s.id)));
    assert_eq!(
        seen.iter().map(|s| s.id).collect::<Vec<_>>(),
        expected.iter().map(|s| s.id).collect::<Vec<_>>(),
        "newest first, each once"
    );

    let filtered = |filter: SessionFilter| {
        let store = store.clone();
        let license = license.id;
        async move {
            store
                .license_sessions(license, &filter, PageRequest::first(50))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        filtered(SessionFilter {
            live: Some(false),
            ..Default::default()
        })
        .await,
        vec![ended.id]
    );
    assert_eq!(
        filtered(SessionFilter {
            live: Some(true),
            ..Default::default()
        })
        .await
        .len(),
        5
    );
    assert_eq!(
        filtered(SessionFilter {
            hardware_id: Some("hw-4".into()),
            ..Default::default()
        })
        .await,
        vec![all[4].id]
    );
    assert_eq!(
        filtered(SessionFilter {
            end_reason: Some(EndReason::Released),
            ..Default::default()
        })
        .await,
        vec![ended.id]
    );
    let mut early = filtered(SessionFilter {
        started_before: Some(at(1)),
        ..Default::default()
    })
    .await;
    early.sort();
    let mut first_two = vec![all[0].id, all[1].id];
    first_two.sort();
    assert_eq!(early, first_two);
    assert_eq!(
        filtered(SessionFilter {
            started_after: Some(at(2)),
            ..Default::default()
        })
        .await
        .len(),
        2
    );
}

async fn check_revoke_session(store: Arc<dyn Store>) {
    let (admin, org) = register(&*store, "admin").await;
    let license = store
        .create_license(new_license(org.id, "pro", None))
        .await
        .unwrap();
    let s = session(&license, "hw-1", Utc::now());
    start(&*store, &s).await;
    // At the precision both backends keep, so that it reads back equal.
    let now = Utc::now().trunc_subsecs(6) + Duration::seconds(1);
    let mut audit = by(&admin);
    audit.detail = Some("force_release".into());
    let outcome = store
        .revoke_session(s.id, now, &audit)
        .await
        .unwrap()
        .unwrap();
    let EndOutcome::Ended(record) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(record.end_reason, Some(EndReason::Revoked));
    assert_eq!(record.ended_at, Some(now));
    let again = store
        .revoke_session(s.id, now + Duration::seconds(5), &audit)
        .await
        .unwrap();
    assert!(
        matches!(again, Some(EndOutcome::AlreadyEnded(ref r)) if r.ended_at == Some(now)),
        "{again:?}"
    );
    assert_eq!(
        store
            .revoke_session(SessionId::new(), now, &audit)
            .await
            .unwrap(),
        None
    );
    let filter = AuditFilter {
        event: Some(AuditEvent::SessionRevoked),
        ..Default::default()
    };
    let entries = store
        .org_audit(org.id, &filter, PageRequest::first(50))
        .await
        .unwrap()
        .items;
    assert_eq!(entries.len(), 1, "written once");
    let e = &entries[0];
    assert_eq!(e.actor_id, Some(admin.id.0));
    assert_eq!(e.session_id, Some(s.id));
    assert_eq!(e.license_id, Some(license.id));
    assert_eq!(e.hardware_id.as_deref(), Some("hw-1"));
    assert_eq!(e.detail.as_deref(), Some("force_release"));
    assert_eq!(e.ip.as_deref(), Some("192.0.2.9"));
    // A released session is not revoked after the fact.
    let t = session(&license, "hw-2", Utc::now());
    start(&*store, &t).await;
    store
        .end_session(t.id, Utc::now(), EndReason::Released, &acquired(&t))
        .await
        .unwrap();
    let after = store
        .revoke_session(t.id, Utc::now(), &audit)
        .await
        .unwrap();
    assert!(
        matches!(after, Some(EndOutcome::AlreadyEnded(ref r)) if r.end_reason == Some(EndReason::Released))
    );
}

async fn check_audit_pages(store: Arc<dyn Store>) {
    let (owner, org) = register(&*store, "audit").await;
    let license = store
        .create_license(new_license(org.id, "pro", None))
        .await
        .unwrap();
    let t0 = Utc::now();
    for i in 0..5 {
        store
            .rename_org(org.id, &format!("Name {i}"), by(&owner))
            .await
            .unwrap();
    }
    let s = session(&license, "hw", Utc::now());
    start(&*store, &s).await;
    let all = store
        .org_audit(org.id, &AuditFilter::default(), PageRequest::first(200))
        .await
        .unwrap()
        .items;
    // Registration, five renames, one acquisition: newest first.
    assert_eq!(all.len(), 7, "{all:?}");
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(all[0].event, AuditEvent::LicenseAcquired);

    let mut seen = Vec::new();
    let mut after = None;
    let mut added = false;
    loop {
        let page = store
            .org_audit(
                org.id,
                &AuditFilter::default(),
                PageRequest { after, limit: 3 },
            )
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|e| e.id));
        if !added {
            // Newer than every page still to come: never shows up in them.
            store.rename_org(org.id, "Later", by(&owner)).await.unwrap();
            added = true;
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, all.iter().map(|e| e.id).collect::<Vec<_>>());

    let count = |filter: AuditFilter| {
        let store = store.clone();
        async move {
            store
                .org_audit(org.id, &filter, PageRequest::first(200))
                .await
                .unwrap()
                .items
        }
    };
    let renames = count(AuditFilter {
        event: Some(AuditEvent::OrgRenamed),
        ..Default::default()
    })
    .await;
    assert_eq!(renames.len(), 6);
    assert!(renames.iter().all(|e| e.actor_id == Some(owner.id.0)));
    let by_owner = count(AuditFilter {
        actor_id: Some(owner.id.0),
        ..Default::default()
    })
    .await;
    assert!(by_owner.iter().all(|e| e.actor_id == Some(owner.id.0)));
    assert!(by_owner.len() >= 6);
    let of_license = count(AuditFilter {
        license_id: Some(license.id),
        ..Default::default()
    })
    .await;
    assert_eq!(of_license.len(), 1);
    assert_eq!(of_license[0].session_id, Some(s.id));
    let none_yet = count(AuditFilter {
        to: Some(t0 - Duration::days(1)),
        ..Default::default()
    })
    .await;
    assert!(none_yet.is_empty());
    let recent = count(AuditFilter {
        from: Some(t0),
        ..Default::default()
    })
    .await;
    assert_eq!(recent.len(), 7, "the renames and the acquisition");
}

async fn check_change_audits(store: Arc<dyn Store>) {
    let (owner, org) = register(&*store, "owner").await;
    let member = join(&*store, &org, &owner, "member", Role::Member).await;
    store
        .set_member_role(org.id, member.id, Role::Admin, Role::Owner, by(&owner))
        .await
        .unwrap();
    // No change, no entry.
    store
        .set_member_role(org.id, member.id, Role::Admin, Role::Owner, by(&owner))
        .await
        .unwrap();
    store
        .remove_member(org.id, member.id, Role::Owner, by(&owner))
        .await
        .unwrap();
    let key = store
        .create_api_key(
            NewApiKey {
                org_id: org.id,
                name: "ci".into(),
                role: Role::Guest,
                key_hash: format!("k-{}", uuid::Uuid::new_v4()),
                key_hint: "swk_…abcd".into(),
                created_by: owner.id,
            },
            by(&owner),
        )
        .await
        .unwrap();
    store
        .revoke_api_key(org.id, key.id, by(&owner))
        .await
        .unwrap();
    store
        .rename_org(org.id, "Renamed", by(&owner))
        .await
        .unwrap();

    let entries = store
        .org_audit(org.id, &AuditFilter::default(), PageRequest::first(200))
        .await
        .unwrap()
        .items;
    let of = |event: AuditEvent| {
        entries
            .iter()
            .filter(|e| e.event == event)
            .collect::<Vec<_>>()
    };
    for (event, n) in [
        (AuditEvent::InvitationCreated, 1),
        (AuditEvent::InvitationAccepted, 1),
        (AuditEvent::MemberRoleChanged, 1),
        (AuditEvent::MemberRemoved, 1),
        (AuditEvent::ApiKeyCreated, 1),
        (AuditEvent::ApiKeyRevoked, 1),
        (AuditEvent::OrgRenamed, 1),
    ] {
        let found = of(event);
        assert_eq!(found.len(), n, "{event:?}: {entries:?}");
        let actor = if event == AuditEvent::InvitationAccepted {
            member.id
        } else {
            owner.id
        };
        assert_eq!(found[0].actor_id, Some(actor.0), "{event:?}");
        assert_eq!(found[0].org_id, Some(org.id));
        assert!(found[0].detail.is_some(), "{event:?}");
    }
    let change = of(AuditEvent::MemberRoleChanged)[0];
    assert_eq!(
        change.detail.as_deref(),
        Some(format!("user_id={} from=member to=admin", member.id).as_str())
    );
    assert_eq!(store.org(org.id).await.unwrap().unwrap().name, "Renamed");
}
