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
//! blocking call into the module, so signatures run on the blocking pool
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

/// DER of the P-256 curve's OID, as `CKA_EC_PARAMS` names it.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// `signing.pkcs11`: which module and token hold the keys.
#[derive(Clone, Debug, Deserialize)]
pub struct Pkcs11Settings {
    /// The PKCS#11 module (shared library) to load.
    pub module: PathBuf,
    /// The label of the token that holds the keys.
    pub token_label: String,
    /// The token's user PIN.
    pub pin: SecretString,
}

/// The module at `path`, loaded and initialized once per process: a
/// second context would finalize the module under the first when dropped.
fn module(path: &std::path::Path) -> Result<Pkcs11, SigningError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(ctx) = modules.get(path) {
        return Ok(ctx.clone());
    }
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
    modules.insert(path.to_path_buf(), ctx.clone());
    Ok(ctx)
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
        let ctx = module(&settings.module)?;
        let mut slot = None;
        for candidate in ctx
            .get_slots_with_token()
            .map_err(hsm_error("listing the slots"))?
        {
            let info = ctx
                .get_token_info(candidate)
                .map_err(hsm_error("reading a token's label"))?;
            if info.label().trim_end() == settings.token_label {
                slot = Some(candidate);
                break;
            }
        }
        let slot = slot.ok_or_else(|| {
            SigningError::InvalidKey(format!(
                "PKCS#11: no token labelled {:?} in {}",
                settings.token_label,
                settings.module.display()
            ))
        })?;
        let hsm = Self {
            inner: Arc::new(HsmInner {
                ctx,
                slot,
                pin: settings.pin.clone(),
                token_label: settings.token_label.clone(),
                idle: Mutex::new(Vec::new()),
            }),
        };
        let session = hsm.session()?;
        hsm.give_back(session);
        Ok(hsm)
    }

    /// An idle session, or a new one logged in.
    fn session(&self) -> Result<Session, SigningError> {
        if let Some(session) = self.lock_idle().pop() {
            return Ok(session);
        }
        let session = self
            .inner
            .ctx
            .open_rw_session(self.inner.slot)
            .map_err(hsm_error("opening a session"))?;
        match session.login(UserType::User, Some(&self.inner.pin)) {
            Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(Pkcs11Error::Pkcs11(RvError::PinIncorrect, _)) => {
                Err(SigningError::InvalidKey(format!(
                    "PKCS#11: the PIN of token {:?} is wrong",
                    self.inner.token_label
                )))
            }
            Err(e) => Err(hsm_error("logging in")(e)),
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
            let (mut n, mut e) = (None, None);
            for attr in attrs {
                match attr {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            match (n, e) {
                (Some(n), Some(e)) => PublicKey::rsa(&n, &e)?,
                _ => {
                    return Err(SigningError::InvalidKey(
                        "PKCS#11: the RSA key shows no modulus or exponent".into(),
                    ));
                }
            }
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
            let (mut params, mut point) = (None, None);
            for attr in attrs {
                match attr {
                    Attribute::EcParams(v) => params = Some(v),
                    Attribute::EcPoint(v) => point = Some(v),
                    _ => {}
                }
            }
            if params.as_deref() != Some(&P256_PARAMS[..]) {
                return Err(SigningError::InvalidKey(
                    "PKCS#11: the EC key is not on P-256".into(),
                ));
            }
            PublicKey::ec_point(&unwrap_octet_string(point.as_deref().unwrap_or_default()))?
        } else {
            return Err(SigningError::InvalidKey(format!(
                "PKCS#11: key {label:?} is neither RSA nor EC"
            )));
        };
        let key = HsmKey {
            hsm: self.clone(),
            label: label.to_owned(),
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
    label: String,
    handle: ObjectHandle,
    algorithm: SigningAlgorithm,
}

impl HsmKey {
    /// The key's `CKA_LABEL`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// What a stored key row seals in place of the private key.
    pub fn reference(&self) -> String {
        format!("{HSM_REFERENCE_PREFIX}{}", self.label)
    }

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
