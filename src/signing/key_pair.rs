//! One private signing key of any algorithm we sign with, parsed once.
//!
//! RSA keys are parsed with the `rsa` crate (it reads PKCS#1 as well as
//! PKCS#8 and gives the modulus and exponent the JWK publishes) and then
//! handed to `aws-lc-rs`, which does every private-key operation. P-256 and
//! Ed25519 keys go to `aws-lc-rs` directly. Whatever the algorithm, the
//! rest of the signer sees the same four things: a `kid`, a public JWK, a
//! verifying key, and a `sign` that writes into a caller's buffer.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use rsa::RsaPrivateKey;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::der::pem::{self, LineEnding};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, ObjectIdentifier};
use rsa::traits::PublicKeyParts;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use super::{SigningAlgorithm, SigningError};

/// Largest signature any key makes: 8192-bit RSA, the most aws-lc accepts.
pub(super) const MAX_SIGNATURE_LEN: usize = 8192 / 8;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A private key held in AWS-LC's memory, which AWS-LC cleanses when the
/// key is freed. Never printed.
pub(super) enum KeyPair {
    Rsa {
        pair: RsaKeyPair,
        /// base64url modulus and exponent, for the JWK.
        n: String,
        e: String,
        public_key_pem: String,
    },
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
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
                    ED25519 => Ed25519KeyPair::from_pkcs8(&der)
                        .map(Self::Ed)
                        .map_err(|e| SigningError::InvalidKey(format!("Ed25519 key: {e}"))),
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
        let bits = key.size() * 8;
        if bits < 2048 {
            return Err(SigningError::InvalidKey(format!(
                "RSA key is {bits} bits; at least 2048 are required"
            )));
        }
        if key.size() > MAX_SIGNATURE_LEN {
            return Err(SigningError::InvalidKey(format!(
                "RSA key is {bits} bits; at most 8192 are supported"
            )));
        }
        // The PKCS#1 DER is a zeroizing SecretDocument.
        let der = key
            .to_pkcs1_der()
            .map_err(|e| SigningError::InvalidKey(format!("cannot encode key: {e}")))?;
        let pair = RsaKeyPair::from_der(der.as_bytes()).map_err(|e| {
            SigningError::InvalidKey(format!("rejected by the signing backend: {e}"))
        })?;
        let public_key_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| SigningError::InvalidKey(format!("cannot encode public key: {e}")))?;
        Ok(Self::Rsa {
            pair,
            n: URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            e: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            public_key_pem,
        })
    }

    fn ec(der: &[u8]) -> Result<Self, SigningError> {
        EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map(Self::Ec)
            .map_err(|e| SigningError::InvalidKey(format!("EC key (P-256 expected): {e}")))
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

    pub(super) fn algorithm(&self) -> SigningAlgorithm {
        match self {
            Self::Rsa { .. } => SigningAlgorithm::RS256,
            Self::Ec(_) => SigningAlgorithm::ES256,
            Self::Ed(_) => SigningAlgorithm::EdDSA,
        }
    }

    /// Key size in bits: the RSA modulus, or 256 for P-256 and Ed25519.
    pub(super) fn bits(&self) -> usize {
        match self {
            Self::Rsa { pair, .. } => pair.public_modulus_len() * 8,
            Self::Ec(_) | Self::Ed(_) => 256,
        }
    }

    /// Length of every signature this key makes.
    pub(super) fn signature_len(&self) -> usize {
        match self {
            Self::Rsa { pair, .. } => pair.public_modulus_len(),
            // r || s, 32 bytes each (JWS fixed form); Ed25519 is 64 bytes.
            Self::Ec(_) | Self::Ed(_) => 64,
        }
    }

    /// Signs `message` into `out`, which is [`KeyPair::signature_len`]
    /// long.
    pub(super) fn sign(&self, message: &[u8], out: &mut [u8]) -> Result<(), SigningError> {
        let failed = || SigningError::Sign(format!("{} signing failed", self.algorithm()));
        match self {
            // PKCS#1 v1.5 is deterministic; aws-lc ignores the RNG argument.
            Self::Rsa { pair, .. } => pair
                .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, out)
                .map_err(|_| failed()),
            Self::Ec(pair) => {
                let signature = pair
                    .sign(&SystemRandom::new(), message)
                    .map_err(|_| failed())?;
                out.copy_from_slice(signature.as_ref());
                Ok(())
            }
            Self::Ed(pair) => {
                out.copy_from_slice(pair.sign(message).as_ref());
                Ok(())
            }
        }
    }

    /// The public key as a JWK's key members, and its RFC 7638 thumbprint
    /// (the `kid`): the same on every node that holds the key.
    pub(super) fn public_jwk(&self) -> (String, serde_json::Map<String, serde_json::Value>) {
        let members: Vec<(&str, String)> = match self {
            Self::Rsa { n, e, .. } => {
                vec![("e", e.clone()), ("kty", "RSA".into()), ("n", n.clone())]
            }
            Self::Ec(pair) => {
                let (x, y) = ec_coordinates(pair);
                vec![
                    ("crv", "P-256".into()),
                    ("kty", "EC".into()),
                    ("x", x),
                    ("y", y),
                ]
            }
            Self::Ed(pair) => vec![
                ("crv", "Ed25519".into()),
                ("kty", "OKP".into()),
                ("x", URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())),
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
        let invalid = |e: jsonwebtoken::errors::Error| {
            SigningError::InvalidKey(format!("verifying key rejected: {e}"))
        };
        match self {
            Self::Rsa { n, e, .. } => DecodingKey::from_rsa_components(n, e).map_err(invalid),
            Self::Ec(pair) => {
                let (x, y) = ec_coordinates(pair);
                DecodingKey::from_ec_components(&x, &y).map_err(invalid)
            }
            Self::Ed(pair) => {
                DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()))
                    .map_err(invalid)
            }
        }
    }

    /// The public key as an SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub(super) fn public_key_pem(&self) -> Result<String, SigningError> {
        let spki = match self {
            Self::Rsa { public_key_pem, .. } => return Ok(public_key_pem.clone()),
            Self::Ec(pair) => pair.public_key().as_der().map(|d| d.as_ref().to_vec()),
            Self::Ed(pair) => pair.public_key().as_der().map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| SigningError::InvalidKey("cannot encode the public key".into()))?;
        pem::encode_string("PUBLIC KEY", LineEnding::LF, &spki)
            .map_err(|e| SigningError::InvalidKey(format!("cannot encode the public key: {e}")))
    }
}

/// base64url `x` and `y` of a P-256 public key (uncompressed point
/// `04 || x || y`).
fn ec_coordinates(pair: &EcdsaKeyPair) -> (String, String) {
    let point = pair.public_key().as_ref();
    let (x, y) = point[1..].split_at(32);
    (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y))
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
