//! One signing key of any algorithm we sign with: a private half that
//! signs, and a public half that the JWKS publishes and that verifies.
//!
//! RSA keys are parsed with the `rsa` crate (it reads PKCS#1 as well as
//! PKCS#8 and gives the modulus and exponent the JWK publishes) and then
//! handed to `aws-lc-rs`, which does every private-key operation. P-256 and
//! Ed25519 keys go to `aws-lc-rs` directly. A key in a PKCS#11 token signs
//! in the token (see [`pkcs11`](super::pkcs11)). Whatever the kind, the
//! rest of the signer sees the same things: a `kid`, a public JWK, a
//! verifying key, and a `sign` that writes into a caller's buffer.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::der::pem::{self, LineEnding};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, ObjectIdentifier};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use super::pkcs11::HsmKey;
use super::{SigningAlgorithm, SigningError};

/// Largest signature any key makes: 8192-bit RSA, the most aws-lc accepts.
pub(super) const MAX_SIGNATURE_LEN: usize = 8192 / 8;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The SubjectPublicKeyInfo DER of a P-256 key up to its point
/// (`04 || x || y` follows): id-ecPublicKey, prime256v1, a 66-byte BIT STRING.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// The SubjectPublicKeyInfo DER of an Ed25519 key up to its 32 bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The public half of a signing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PublicKey {
    /// Big-endian modulus and exponent, without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// A P-256 point.
    Ec {
        x: [u8; 32],
        y: [u8; 32],
    },
    Ed {
        x: [u8; 32],
    },
}

impl PublicKey {
    /// An RSA key of big-endian `n` and `e`, 2048 to 8192 bits.
    pub(super) fn rsa(n: &[u8], e: &[u8]) -> Result<Self, SigningError> {
        let strip = |v: &[u8]| v[v.iter().take_while(|b| **b == 0).count()..].to_vec();
        let (n, e) = (strip(n), strip(e));
        let bits = n.len() * 8;
        if bits < 2048 {
            return Err(SigningError::InvalidKey(format!(
                "RSA key is {bits} bits; at least 2048 are required"
            )));
        }
        if n.len() > MAX_SIGNATURE_LEN {
            return Err(SigningError::InvalidKey(format!(
                "RSA key is {bits} bits; at most 8192 are supported"
            )));
        }
        Ok(Self::Rsa { n, e })
    }

    /// A P-256 key from its uncompressed point `04 || x || y`.
    pub(super) fn ec_point(point: &[u8]) -> Result<Self, SigningError> {
        match point {
            [0x04, coordinates @ ..] if coordinates.len() == 64 => {
                let (x, y) = coordinates.split_at(32);
                Ok(Self::Ec {
                    x: x.try_into().expect("32 bytes"),
                    y: y.try_into().expect("32 bytes"),
                })
            }
            _ => Err(SigningError::InvalidKey(
                "not an uncompressed P-256 point".into(),
            )),
        }
    }

    /// The algorithm this key verifies.
    pub(super) fn algorithm(&self) -> SigningAlgorithm {
        match self {
            Self::Rsa { .. } => SigningAlgorithm::RS256,
            Self::Ec { .. } => SigningAlgorithm::ES256,
            Self::Ed { .. } => SigningAlgorithm::EdDSA,
        }
    }

    /// Key size in bits: the RSA modulus, or 256 for P-256 and Ed25519.
    pub(super) fn bits(&self) -> usize {
        match self {
            Self::Rsa { n, .. } => n.len() * 8,
            Self::Ec { .. } | Self::Ed { .. } => 256,
        }
    }

    /// Length of every signature this key verifies.
    pub(super) fn signature_len(&self) -> usize {
        match self {
            Self::Rsa { n, .. } => n.len(),
            // r || s, 32 bytes each (JWS's fixed form); Ed25519 is 64 bytes.
            Self::Ec { .. } | Self::Ed { .. } => 64,
        }
    }

    /// The JWK's key members (sorted, as RFC 7638 hashes them), and the
    /// RFC 7638 thumbprint (the `kid`): the same on every node.
    pub(super) fn jwk(&self) -> (String, serde_json::Map<String, serde_json::Value>) {
        let b64 = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let members: Vec<(&str, String)> = match self {
            Self::Rsa { n, e } => vec![("e", b64(e)), ("kty", "RSA".into()), ("n", b64(n))],
            Self::Ec { x, y } => vec![
                ("crv", "P-256".into()),
                ("kty", "EC".into()),
                ("x", b64(x)),
                ("y", b64(y)),
            ],
            Self::Ed { x } => vec![
                ("crv", "Ed25519".into()),
                ("kty", "OKP".into()),
                ("x", b64(x)),
            ],
        };
        (
            jwk_thumbprint(&members),
            members
                .into_iter()
                .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
                .collect(),
        )
    }

    /// What verifies this key's signatures.
    pub(super) fn decoding_key(&self) -> Result<DecodingKey, SigningError> {
        let (_, jwk) = self.jwk();
        let member = |name: &str| jwk[name].as_str().unwrap_or_default().to_owned();
        match self {
            Self::Rsa { n, e } => Ok(DecodingKey::from_rsa_raw_components(n, e)),
            Self::Ec { .. } => DecodingKey::from_ec_components(&member("x"), &member("y")),
            Self::Ed { .. } => DecodingKey::from_ed_components(&member("x")),
        }
        .map_err(|e| SigningError::InvalidKey(format!("verifying key rejected: {e}")))
    }

    /// The public key as an SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub(super) fn pem(&self) -> Result<String, SigningError> {
        let failed = |e: &dyn std::fmt::Display| {
            SigningError::InvalidKey(format!("cannot encode the public key: {e}"))
        };
        let spki = match self {
            Self::Rsa { n, e } => {
                let key = RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
                    .map_err(|e| failed(&e))?;
                return key
                    .to_public_key_pem(LineEnding::LF)
                    .map_err(|e| failed(&e));
            }
            Self::Ec { x, y } => [&P256_SPKI_PREFIX[..], &[0x04], x, y].concat(),
            Self::Ed { x } => [&ED25519_SPKI_PREFIX[..], x].concat(),
        };
        pem::encode_string("PUBLIC KEY", LineEnding::LF, &spki).map_err(|e| failed(&e))
    }
}

/// The private half: held in AWS-LC's memory (which AWS-LC cleanses when
/// the key is freed), or in a PKCS#11 token. Never printed.
enum PrivateKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Hsm(HsmKey),
}

/// A private key and its public half.
pub(super) struct KeyPair {
    private: PrivateKey,
    public: PublicKey,
}

impl KeyPair {
    /// Parses a PEM private key: PKCS#8 `PRIVATE KEY` (RSA, P-256 or
    /// Ed25519), PKCS#1 `RSA PRIVATE KEY`, or SEC1 `EC PRIVATE KEY` (P-256).
    pub(super) fn from_pem(text: &str) -> Result<Self, SigningError> {
        let (label, der) = pem::decode_vec(text.trim().as_bytes()).map_err(|_| {
            SigningError::InvalidKey(
                "expected a PEM \"PRIVATE KEY\" (PKCS#8), \"RSA PRIVATE KEY\" (PKCS#1) or \
                 \"EC PRIVATE KEY\" (SEC1) block"
                    .into(),
            )
        })?;
        let der = secrecy::zeroize::Zeroizing::new(der);
        match label {
            "RSA PRIVATE KEY" => Self::rsa(
                &RsaPrivateKey::from_pkcs1_der(&der)
                    .map_err(|e| SigningError::InvalidKey(format!("PKCS#1 PEM: {e}")))?,
            ),
            "EC PRIVATE KEY" => Self::ec(&der),
            "PRIVATE KEY" => {
                let info = rsa::pkcs8::PrivateKeyInfo::try_from(der.as_slice())
                    .map_err(|e| SigningError::InvalidKey(format!("PKCS#8 PEM: {e}")))?;
                match info.algorithm.oid {
                    RSA_ENCRYPTION => Self::rsa(
                        &RsaPrivateKey::from_pkcs8_der(&der)
                            .map_err(|e| SigningError::InvalidKey(format!("PKCS#8 PEM: {e}")))?,
                    ),
                    EC_PUBLIC_KEY => Self::ec(&der),
                    ED25519 => {
                        let pair = Ed25519KeyPair::from_pkcs8(&der)
                            .map_err(|e| SigningError::InvalidKey(format!("Ed25519 key: {e}")))?;
                        let x = pair.public_key().as_ref().try_into().map_err(|_| {
                            SigningError::InvalidKey("Ed25519 public key is not 32 bytes".into())
                        })?;
                        Ok(Self {
                            private: PrivateKey::Ed(pair),
                            public: PublicKey::Ed { x },
                        })
                    }
                    other => Err(SigningError::InvalidKey(format!(
                        "unsupported key type {other}: expected RSA, P-256 or Ed25519"
                    ))),
                }
            }
            other => Err(SigningError::InvalidKey(format!(
                "unsupported PEM block {other:?}: expected \"PRIVATE KEY\", \"RSA PRIVATE KEY\" \
                 or \"EC PRIVATE KEY\""
            ))),
        }
    }

    fn rsa(key: &RsaPrivateKey) -> Result<Self, SigningError> {
        let public = PublicKey::rsa(&key.n().to_bytes_be(), &key.e().to_bytes_be())?;
        // The PKCS#1 DER is a zeroizing SecretDocument.
        let der = key
            .to_pkcs1_der()
            .map_err(|e| SigningError::InvalidKey(format!("cannot encode key: {e}")))?;
        let pair = RsaKeyPair::from_der(der.as_bytes()).map_err(|e| {
            SigningError::InvalidKey(format!("rejected by the signing backend: {e}"))
        })?;
        Ok(Self {
            private: PrivateKey::Rsa(pair),
            public,
        })
    }

    fn ec(der: &[u8]) -> Result<Self, SigningError> {
        let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| SigningError::InvalidKey(format!("EC key (P-256 expected): {e}")))?;
        Ok(Self {
            public: PublicKey::ec_point(pair.public_key().as_ref())?,
            private: PrivateKey::Ec(pair),
        })
    }

    /// A key that signs in a PKCS#11 token.
    pub(super) fn in_hsm(key: HsmKey, public: PublicKey) -> Self {
        Self {
            private: PrivateKey::Hsm(key),
            public,
        }
    }

    /// A new key for `algorithm` as PKCS#8 PEM; `rsa_bits` sizes an RSA
    /// key (2048, 3072 or 4096). Blocking: seconds of CPU for RSA-4096,
    /// microseconds otherwise.
    pub(super) fn generate_pem(
        algorithm: SigningAlgorithm,
        rsa_bits: usize,
    ) -> Result<SecretString, SigningError> {
        let failed = |e: &dyn std::fmt::Display| SigningError::KeyGeneration(e.to_string());
        let der = match algorithm {
            SigningAlgorithm::RS256 => {
                if !super::SUPPORTED_RSA_BITS.contains(&rsa_bits) {
                    return Err(SigningError::UnsupportedKeySize(rsa_bits));
                }
                let key = RsaPrivateKey::new(&mut rand::thread_rng(), rsa_bits)
                    .map_err(|e| failed(&e))?;
                let pem = key
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| failed(&format!("cannot encode key: {e}")))?;
                return Ok(SecretString::from(pem.as_str().to_owned()));
            }
            SigningAlgorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                    .map_err(|e| failed(&e))?
            }
            SigningAlgorithm::EdDSA => {
                Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).map_err(|e| failed(&e))?
            }
        };
        pem::encode_string("PRIVATE KEY", LineEnding::LF, der.as_ref())
            .map(SecretString::from)
            .map_err(|e| failed(&format!("cannot encode key: {e}")))
    }

    pub(super) fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Whether the private key lives in a PKCS#11 token.
    pub(super) fn in_token(&self) -> bool {
        matches!(self.private, PrivateKey::Hsm(_))
    }

    /// Signs `message` into `out`, which is the public key's
    /// [`PublicKey::signature_len`] long.
    pub(super) fn sign(&self, message: &[u8], out: &mut [u8]) -> Result<(), SigningError> {
        let failed = || SigningError::Sign(format!("{} signing failed", self.public.algorithm()));
        match &self.private {
            // PKCS#1 v1.5 is deterministic; aws-lc ignores the RNG argument.
            PrivateKey::Rsa(pair) => pair
                .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, out)
                .map_err(|_| failed()),
            PrivateKey::Ec(pair) => {
                let signature = pair
                    .sign(&SystemRandom::new(), message)
                    .map_err(|_| failed())?;
                out.copy_from_slice(signature.as_ref());
                Ok(())
            }
            PrivateKey::Ed(pair) => {
                out.copy_from_slice(pair.sign(message).as_ref());
                Ok(())
            }
            PrivateKey::Hsm(key) => key.sign(message, out),
        }
    }
}

/// RFC 7638 thumbprint of a JWK given its required members in
/// lexicographic order.
fn jwk_thumbprint(members: &[(&str, String)]) -> String {
    // No whitespace; neither the names nor base64url need JSON escaping.
    let canonical = members
        .iter()
        .map(|(k, v)| format!(r#""{k}":"{v}""#))
        .collect::<Vec<_>>()
        .join(",");
    URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{{{canonical}}}").as_bytes()))
}

/// RFC 7638 thumbprint of an RSA JWK given its base64url `n` and `e`.
pub fn rsa_jwk_thumbprint(n_b64url: &str, e_b64url: &str) -> String {
    jwk_thumbprint(&[
        ("e", e_b64url.to_owned()),
        ("kty", "RSA".into()),
        ("n", n_b64url.to_owned()),
    ])
}
