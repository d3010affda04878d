//! Signing keys held in a PKCS#11 token (an HSM, a cloud HSM's PKCS#11
//! library, or SoftHSM2 in tests).
//!
//! The private key is generated inside the token as sensitive and not
//! extractable, and never enters this process: the key set in the store
//! keeps only a reference to it (see [`HSM_REFERENCE_PREFIX`]), and every
//! signature is one `C_Sign` call. What the process does hold is the
//! public half, read from the token once, for the JWKS and for verifying.
//!
//! PKCS#11 sessions are not safe to share between threads, and a sign is a
//! blocking call into the module, so signatures run on the signing threads
//! (as every signature does, see [`TokenSigner::sign`](super::TokenSigner::sign))
//! over a small pool of sessions: one per signature in flight, opened on
//! demand and kept. A login is per application and token, so the first
//! session's login serves every later one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::key_pair::PublicKey;
use super::{SigningAlgorithm, SigningError};

/// What a stored key row holds, sealed, in place of a private key when the
/// key lives in the token: this prefix, then the key's `CKA_LABEL`.
pub const HSM_REFERENCE_PREFIX: &str = "pkcs11:label=";

/// What a stored key row seals in place of the private key of the token's
/// key labelled `label`.
pub fn hsm_reference(label: &str) -> String {
    format!("{HSM_REFERENCE_PREFIX}{label}")
}

/// DER of the P-256 curve's OID, as `CKA_EC_PARAMS` names it.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// `signing.pkcs11`: which module and token hold the keys.
#[derive(Clone, Debug, Deserialize)]
pub struct Pkcs11Settings {
    /// The PKCS#11 module (shared library) to load.
    pub module: PathBuf,
    /// The label of the token that holds the keys.
    pub token_label: String,
    /// The token's user PIN: text, though often all digits (a TOML
    /// integer is taken as its digits).
    #[serde(deserialize_with = "pin_text")]
    pub pin: SecretString,
}

fn pin_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Pin {
        Text(String),
        Digits(u64),
    }
    Ok(match Pin::deserialize(d)? {
        Pin::Text(text) => text.into(),
        Pin::Digits(n) => n.to_string().into(),
    })
}

/// A loaded, initialized module, and how many [`Hsm`]s use it or are
/// being opened on it.
struct Module {
    ctx: Pkcs11,
    users: usize,
}

/// The modules of this process, by path: PKCS#11 allows one
/// `C_Initialize` per process, so each is loaded and initialized once.
fn modules() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Module>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Module>>> = OnceLock::new();
    MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The module at `path`, loaded and initialized on first use, counted as
/// used by one more [`Hsm`] (see [`leave`]).
fn enter(path: &std::path::Path) -> Result<Pkcs11, SigningError> {
    let mut modules = modules();
    if let Some(module) = modules.get_mut(path) {
        module.users += 1;
        return Ok(module.ctx.clone());
    }
    let ctx = load(path)?;
    modules.insert(
        path.to_path_buf(),
        Module {
            ctx: ctx.clone(),
            users: 1,
        },
    );
    Ok(ctx)
}

/// Undoes an [`enter`] whose open failed.
fn leave(path: &std::path::Path) {
    if let Some(module) = modules().get_mut(path) {
        module.users = module.users.saturating_sub(1);
    }
}

/// Re-reads the module's tokens, which a module may read only when it is
/// initialized (SoftHSM2 does): finalizes and initializes it again, but
/// only while the caller's is its only use in this process (the rule at a
/// node's start). Returns the context to use, or `None` when another
/// [`Hsm`] uses the module.
fn reload(path: &std::path::Path) -> Result<Option<Pkcs11>, SigningError> {
    let mut modules = modules();
    let Some(module) = modules.get_mut(path) else {
        return Ok(None);
    };
    if module.users != 1 {
        return Ok(None);
    }
    // Finalizing fails only if the module is not initialized, in which
    // case initializing again is what we want anyway.
    let _ = module.ctx.clone().finalize();
    module.ctx = load(path)?;
    Ok(Some(module.ctx.clone()))
}

fn load(path: &std::path::Path) -> Result<Pkcs11, SigningError> {
    let ctx = Pkcs11::new(path).map_err(|e| {
        SigningError::InvalidKey(format!(
            "PKCS#11: cannot load the module {}: {e}",
            path.display()
        ))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(hsm_error("initializing the module")(e)),
    }
    Ok(ctx)
}

/// How many times [`Hsm::open`] looks for its token, 100 ms apart.
const TOKEN_LOOKUPS: u32 = 30;

/// The slot holding the token labelled `label`, if one does now.
fn find_token(ctx: &Pkcs11, label: &str) -> Result<Option<Slot>, SigningError> {
    for candidate in ctx
        .get_slots_with_token()
        .map_err(hsm_error("listing the slots"))?
    {
        // A token that can't be read now is not the one we look for now.
        if let Ok(info) = ctx.get_token_info(candidate)
            && info.label().trim_end() == label
        {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// Whether the token refused the PIN itself (no point trying again).
fn pin_refused(e: &Pkcs11Error) -> bool {
    matches!(
        e,
        Pkcs11Error::Pkcs11(
            RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired | RvError::PinInvalid,
            _
        )
    )
}

/// An open, logged-in PKCS#11 token. Cheap to clone.
#[derive(Clone)]
pub struct Hsm {
    inner: Arc<HsmInner>,
}

struct HsmInner {
    ctx: Pkcs11,
    slot: Slot,
    pin: SecretString,
    token_label: String,
    /// Idle sessions, each logged in (by the first login, which is the
    /// application's).
    idle: Mutex<Vec<Session>>,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("token", &self.inner.token_label)
            .finish_non_exhaustive()
    }
}

fn hsm_error(doing: &str) -> impl Fn(Pkcs11Error) -> SigningError + '_ {
    move |e| SigningError::InvalidKey(format!("PKCS#11: {doing}: {e}"))
}

impl Hsm {
    /// Loads `settings.module`, finds the token labelled
    /// `settings.token_label` and logs in with the PIN (checked here, so a
    /// wrong PIN fails at start, not at the first acquire). Blocking.
    pub fn open(settings: &Pkcs11Settings) -> Result<Self, SigningError> {
        let ctx = enter(&settings.module)?;
        Self::open_entered(ctx, settings).inspect_err(|_| leave(&settings.module))
    }

    fn open_entered(mut ctx: Pkcs11, settings: &Pkcs11Settings) -> Result<Self, SigningError> {
        // A token another process is writing at the moment this one reads
        // it (SoftHSM2 rewrites its token file on a login) reads as absent
        // or half set up, and SoftHSM2 reads its tokens only when
        // initialized: try again, re-initialized, for a few seconds before
        // giving up. A wrong PIN is final at once.
        let mut last = None;
        for attempt in 0..TOKEN_LOOKUPS {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if let Some(fresh) = reload(&settings.module)? {
                    ctx = fresh;
                }
            }
            let Some(slot) = find_token(&ctx, &settings.token_label)? else {
                last = Some(SigningError::InvalidKey(format!(
                    "PKCS#11: no token labelled {:?} in {}",
                    settings.token_label,
                    settings.module.display()
                )));
                continue;
            };
            let hsm = Self {
                inner: Arc::new(HsmInner {
                    ctx: ctx.clone(),
                    slot,
                    pin: settings.pin.clone(),
                    token_label: settings.token_label.clone(),
                    idle: Mutex::new(Vec::new()),
                }),
            };
            match hsm.logged_in_session() {
                Ok(session) => {
                    hsm.give_back(session);
                    return Ok(hsm);
                }
                Err(e) if pin_refused(&e) => return Err(hsm.login_error(e)),
                Err(e) => last = Some(hsm.login_error(e)),
            }
        }
        Err(last.unwrap_or_else(|| SigningError::InvalidKey("PKCS#11: no token".into())))
    }

    /// An idle session, or a new one logged in.
    fn session(&self) -> Result<Session, SigningError> {
        if let Some(session) = self.lock_idle().pop() {
            return Ok(session);
        }
        self.logged_in_session().map_err(|e| self.login_error(e))
    }

    fn logged_in_session(&self) -> Result<Session, Pkcs11Error> {
        let session = self.inner.ctx.open_rw_session(self.inner.slot)?;
        match session.login(UserType::User, Some(&self.inner.pin)) {
            Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(e),
        }
    }

    fn login_error(&self, e: Pkcs11Error) -> SigningError {
        if pin_refused(&e) {
            SigningError::InvalidKey(format!(
                "PKCS#11: the PIN of token {:?} is wrong or locked",
                self.inner.token_label
            ))
        } else {
            hsm_error("logging in")(e)
        }
    }

    fn give_back(&self, session: Session) {
        self.lock_idle().push(session);
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        // A panic while holding the lock leaves only a list of sessions.
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on a session; the session goes back to the pool unless
    /// the call failed (a failed session may be broken).
    fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, Pkcs11Error>,
        doing: &str,
    ) -> Result<T, SigningError> {
        let session = self.session()?;
        let result = f(&session).map_err(hsm_error(doing))?;
        self.give_back(session);
        Ok(result)
    }

    /// Generates a key pair for `algorithm` (RS256 of `rsa_bits`, or
    /// ES256) inside the token, labelled `label`: the private half
    /// sensitive and never extractable. Blocking.
    pub(super) fn generate(
        &self,
        algorithm: SigningAlgorithm,
        rsa_bits: usize,
        label: &str,
    ) -> Result<(HsmKey, PublicKey), SigningError> {
        let common = |private: bool| {
            let mut attrs = vec![
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(Sha256::digest(label.as_bytes())[..16].to_vec()),
            ];
            if private {
                attrs.extend([
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(true),
                ]);
            } else {
                attrs.extend([Attribute::Private(false), Attribute::Verify(true)]);
            }
            attrs
        };
        let (mechanism, mut public) = match algorithm {
            SigningAlgorithm::RS256 => {
                if !super::SUPPORTED_RSA_BITS.contains(&rsa_bits) {
                    return Err(SigningError::UnsupportedKeySize(rsa_bits));
                }
                (
                    Mechanism::RsaPkcsKeyPairGen,
                    vec![
                        Attribute::ModulusBits((rsa_bits as u64).into()),
                        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    ],
                )
            }
            SigningAlgorithm::ES256 => (
                Mechanism::EccKeyPairGen,
                vec![Attribute::EcParams(P256_PARAMS.to_vec())],
            ),
            SigningAlgorithm::EdDSA => {
                return Err(SigningError::KeyGeneration(
                    "keys in a PKCS#11 token may be RS256 or ES256".into(),
                ));
            }
        };
        public.extend(common(false));
        self.with_session(
            |s| s.generate_key_pair(&mechanism, &public, &common(true)),
            "generating a key pair",
        )?;
        self.key(label)
    }

    /// The key pair labelled `label` in the token: its private key (RSA
    /// or P-256) and, for its public half, the public key object of the
    /// same label (or, for RSA, the private key's public attributes).
    pub(super) fn key(&self, label: &str) -> Result<(HsmKey, PublicKey), SigningError> {
        let find = |class: ObjectClass| {
            self.with_session(
                |s| {
                    s.find_objects(&[
                        Attribute::Class(class),
                        Attribute::Label(label.as_bytes().to_vec()),
                    ])
                },
                "finding the key",
            )
        };
        let private = match find(ObjectClass::PRIVATE_KEY)?.as_slice() {
            [one] => *one,
            [] => {
                return Err(SigningError::InvalidKey(format!(
                    "PKCS#11: no private key labelled {label:?} in token {:?}",
                    self.inner.token_label
                )));
            }
            _ => {
                return Err(SigningError::InvalidKey(format!(
                    "PKCS#11: several private keys are labelled {label:?}"
                )));
            }
        };
        let key_type = self
            .with_session(
                |s| s.get_attributes(private, &[AttributeType::KeyType]),
                "reading the key type",
            )?
            .into_iter()
            .find_map(|a| match a {
                Attribute::KeyType(t) => Some(t),
                _ => None,
            });
        let public = if key_type == Some(KeyType::RSA) {
            let attrs = self.with_session(
                |s| {
                    s.get_attributes(
                        private,
                        &[AttributeType::Modulus, AttributeType::PublicExponent],
                    )
                },
                "reading the RSA public key",
            )?;
            // Answered in the order asked, without the attributes the
            // token can't show.
            let [Attribute::Modulus(n), Attribute::PublicExponent(e)] = attrs.as_slice() else {
                return Err(SigningError::InvalidKey(
                    "PKCS#11: the RSA key shows no modulus or exponent".into(),
                ));
            };
            PublicKey::rsa(n, e)?
        } else if key_type == Some(KeyType::EC) {
            let Some(public) = find(ObjectClass::PUBLIC_KEY)?.first().copied() else {
                return Err(SigningError::InvalidKey(format!(
                    "PKCS#11: no public key labelled {label:?} beside the EC private key"
                )));
            };
            let attrs = self.with_session(
                |s| s.get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint]),
                "reading the EC public key",
            )?;
            let [Attribute::EcParams(params), Attribute::EcPoint(point)] = attrs.as_slice() else {
                return Err(SigningError::InvalidKey(
                    "PKCS#11: the EC key shows no curve or point".into(),
                ));
            };
            if params[..] != P256_PARAMS[..] {
                return Err(SigningError::InvalidKey(
                    "PKCS#11: the EC key is not on P-256".into(),
                ));
            }
            PublicKey::ec_point(&unwrap_octet_string(point))?
        } else {
            return Err(SigningError::InvalidKey(format!(
                "PKCS#11: key {label:?} is neither RSA nor EC"
            )));
        };
        let key = HsmKey {
            hsm: self.clone(),
            handle: private,
            algorithm: public.algorithm(),
        };
        Ok((key, public))
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the point; some modules
/// give the bare point. Returns the point either way.
fn unwrap_octet_string(value: &[u8]) -> Vec<u8> {
    match value {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && rest.len() == 65 => {
            rest.to_vec()
        }
        other => other.to_vec(),
    }
}

/// A private key in the token, by handle, and its public half.
pub struct HsmKey {
    hsm: Hsm,
    handle: ObjectHandle,
    algorithm: SigningAlgorithm,
}

impl HsmKey {
    /// Signs `message` in the token into `out` (the signature's length):
    /// RSASSA-PKCS1-v1_5 with SHA-256 for RS256, or ECDSA over the
    /// message's SHA-256 for ES256, whose raw `r || s` is JWS's form.
    pub(super) fn sign(&self, message: &[u8], out: &mut [u8]) -> Result<(), SigningError> {
        let signature = match self.algorithm {
            SigningAlgorithm::RS256 => self.hsm.with_session(
                |s| s.sign(&Mechanism::Sha256RsaPkcs, self.handle, message),
                "signing",
            )?,
            _ => {
                let digest = Sha256::digest(message);
                self.hsm.with_session(
                    |s| s.sign(&Mechanism::Ecdsa, self.handle, &digest),
                    "signing",
                )?
            }
        };
        if signature.len() != out.len() {
            return Err(SigningError::Sign(format!(
                "PKCS#11 gave a {}-byte signature where {} were expected",
                signature.len(),
                out.len()
            )));
        }
        out.copy_from_slice(&signature);
        Ok(())
    }
}
