//! Access tokens: short-lived JWTs that say who a user is.
//!
//! HS256 under a key of their own (never the seat-signing key), issuer
//! `seatwarden`, audience `seatwarden-api` and header `typ` `at+jwt`
//! (RFC 9068). They carry the user's organizations and roles as of issue,
//! for clients to show; the server itself re-reads a member's role from
//! the store on every organization-scoped request, so a removal or demotion
//! takes effect at once, not at the token's expiry.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use seatwarden_actors::domain::{Membership, OrgId, Role, User, UserId};

pub const ISSUER: &str = "seatwarden";
pub const AUDIENCE: &str = "seatwarden-api";
pub const TYP: &str = "at+jwt";

/// One organization and the user's role in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgRole {
    pub org: OrgId,
    pub role: Role,
}

/// What an access token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: UserId,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
    /// Organizations and roles when the token was issued.
    pub orgs: Vec<OrgRole>,
    /// A platform administrator.
    pub adm: bool,
    /// Whether the email address was verified when the token was issued.
    pub ev: bool,
}

/// Issues and checks access tokens.
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    /// Queue tickets, under a key derived from the same secret.
    tickets: super::TicketSeal,
    /// Stored signing keys, under another key derived from it.
    key_seal: crate::signing::keys::KeySeal,
}

/// The key, once loaded; redacted.
impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    pub fn new(secret: &SecretString, ttl: Duration) -> Self {
        let key = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            ttl,
            tickets: super::TicketSeal::new(key),
            key_seal: crate::signing::keys::KeySeal::new(key),
        }
    }

    /// The seal of stored signing keys, keyed from this secret (which every
    /// node shares).
    pub fn key_seal(&self) -> crate::signing::keys::KeySeal {
        self.key_seal.clone()
    }

    /// The seal of queue tickets, keyed from this secret (which every node
    /// shares).
    pub fn tickets(&self) -> &super::TicketSeal {
        &self.tickets
    }

    /// The configured secret, or the one in `<data_dir>/access-token.key`,
    /// generated there first when `generate` allows.
    pub fn load(
        configured: Option<&SecretString>,
        data_dir: &Path,
        generate: bool,
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        if let Some(secret) = configured {
            return Ok(Self::new(secret, ttl));
        }
        let path = data_dir.join("access-token.key");
        match std::fs::read_to_string(&path) {
            Ok(s) if s.trim().len() >= 32 => {
                return Ok(Self::new(&SecretString::from(s.trim().to_owned()), ttl));
            }
            Ok(_) => anyhow::bail!("{} is too short to be a key", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && generate => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                "no auth.access_token_secret is set and {} does not exist \
                 (signing.generate_if_missing is false)",
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let mut bytes = [0u8; 48];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = URL_SAFE_NO_PAD.encode(bytes);
        let mut builder = tempfile::Builder::new();
        builder.prefix(".access-token-").suffix(".tmp");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o600));
        }
        let mut tmp = builder.tempfile_in(data_dir)?;
        tmp.write_all(secret.as_bytes())?;
        tmp.as_file().sync_all()?;
        match tmp.persist_noclobber(&path) {
            Ok(_) => Ok(Self::new(&SecretString::from(secret), ttl)),
            // Another process won the race: use its key.
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::load(None, data_dir, false, ttl)
            }
            Err(e) => Err(e.error).with_context(|| format!("writing {}", path.display())),
        }
    }

    /// How long a token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `user` with their memberships as of now.
    pub fn issue(&self, user: &User, memberships: &[Membership]) -> anyhow::Result<String> {
        let now = Utc::now().timestamp();
        let claims = AccessClaims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: user.id,
            iat: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
            jti: Uuid::new_v4(),
            orgs: memberships
                .iter()
                .map(|m| OrgRole {
                    org: m.org_id,
                    role: m.role,
                })
                .collect(),
            adm: user.platform_admin,
            ev: user.email_verified(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(TYP.to_owned());
        jsonwebtoken::encode(&header, &claims, &self.encoding).context("signing an access token")
    }

    /// The claims of a valid, unexpired access token of ours; `None` for
    /// anything else, seat tokens and license files included.
    pub fn verify(&self, token: &str) -> Option<AccessClaims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::HS256 || header.typ.as_deref() != Some(TYP) {
            return None;
        }
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            id: UserId::new(),
            email: "a@example.com".into(),
            full_name: "A".into(),
            email_verified_at: None,
            platform_admin: false,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn a_token_verifies_under_its_key_only() {
        let a = AccessTokens::new(&SecretString::from("a".repeat(32)), Duration::from_secs(60));
        let b = AccessTokens::new(&SecretString::from("b".repeat(32)), Duration::from_secs(60));
        let u = user();
        let token = a.issue(&u, &[]).unwrap();
        assert_eq!(a.verify(&token).unwrap().sub, u.id);
        assert!(b.verify(&token).is_none());
        assert!(a.verify("not.a.token").is_none());
    }

    #[test]
    fn a_generated_key_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(60);
        let a = AccessTokens::load(None, dir.path(), true, ttl).unwrap();
        let b = AccessTokens::load(None, dir.path(), false, ttl).unwrap();
        let token = a.issue(&user(), &[]).unwrap();
        assert!(b.verify(&token).is_some());
    }
}
