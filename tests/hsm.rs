//! The PKCS#11 signer (`seatwarden::signing::pkcs11`) against SoftHSM2:
//! keys made in the token sign there, never leave it, and the key set
//! stores only a sealed reference to them.
//!
//! The module reads `SOFTHSM2_CONF` once, when this process first loads
//! it, so every test here shares one token ([`token`]) and keeps apart by
//! its keys' labels.

mod support;

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use seatwarden::signing::keys::{self, KeySeal, SigningKeys};
use seatwarden::signing::pkcs11::{HSM_REFERENCE_PREFIX, Hsm};
use seatwarden::signing::{SeatClaims, SigningAlgorithm, SigningError, TokenSigner};
use seatwarden_actors::ports::StoredKey;
use support::softhsm::{PIN, SoftHsm};

const SECRET: &[u8] = b"hsm-test-access-token-secret-0123456789";

/// The token every test of this process uses; `SOFTHSM2_CONF` is set
/// before anything loads the module.
fn token() -> &'static SoftHsm {
    static TOKEN: OnceLock<SoftHsm> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let hsm = SoftHsm::new("seatwarden-test");
        // SAFETY: set once, inside the OnceLock's initializer, before any
        // thread of this test binary loads the PKCS#11 module (which is
        // the only reader); other tests wait on the OnceLock meanwhile.
        unsafe { std::env::set_var("SOFTHSM2_CONF", &hsm.conf) };
        hsm
    })
}

fn open_hsm() -> Hsm {
    Hsm::open(&token().settings(PIN)).expect("open the SoftHSM2 token")
}

fn seal_with_hsm() -> KeySeal {
    KeySeal::new(SECRET).with_hsm(open_hsm())
}

fn claims() -> SeatClaims {
    let now = chrono::Utc::now().timestamp();
    let session = uuid::Uuid::new_v4().to_string();
    SeatClaims {
        iss: "seatwarden".into(),
        sub: session.clone(),
        session_id: session,
        license_id: uuid::Uuid::new_v4().to_string(),
        org_id: uuid::Uuid::new_v4().to_string(),
        hardware_id: "hw-hsm".into(),
        tier: "pro".into(),
        features: vec![],
        max_seats: 3,
        iat: now,
        exp: now + 600,
        lease_exp: now + 570,
        borrowed: false,
    }
}

/// A key set of one key, `stored`, made active.
fn ring_of(stored: &StoredKey, seal: &KeySeal) -> SigningKeys {
    let keys = SigningKeys::from(
        TokenSigner::from_pem(support::app::test_key_pem()).expect("a software key"),
    );
    let active = StoredKey {
        active: true,
        ..stored.clone()
    };
    assert!(
        keys.install(&[active], seal)
            .expect("install the token key")
    );
    keys
}

/// The `CKA_SENSITIVE` and `CKA_EXTRACTABLE` of the private key labelled
/// `label`, read through a session of our own.
fn private_key_flags(label: &str) -> (bool, bool) {
    let ctx = Pkcs11::new(&token().module).expect("load the module");
    // The signer already initialized the module in this process.
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == token().label)
        .expect("the test token");
    let session = ctx.open_ro_session(slot).unwrap();
    let _ = session.login(UserType::User, Some(&PIN.to_owned().into()));
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "one private key labelled {label}");
    let attrs = session
        .get_attributes(
            found[0],
            &[AttributeType::Sensitive, AttributeType::Extractable],
        )
        .unwrap();
    match attrs.as_slice() {
        [Attribute::Sensitive(s), Attribute::Extractable(e)] => (*s, *e),
        other => panic!("CKA_SENSITIVE and CKA_EXTRACTABLE expected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_key_generated_in_the_token_signs_tokens_a_client_verifies_and_never_leaves_it() {
    let seal = seal_with_hsm();
    for algorithm in [SigningAlgorithm::RS256, SigningAlgorithm::ES256] {
        let now = chrono::Utc::now();
        let stored = keys::generate_hsm_key(algorithm, 2048, &seal, now).expect("generate");
        assert_eq!(stored.algorithm, algorithm.as_str());

        // The store holds a sealed reference to the key, not the key.
        let plain = KeySeal::new(SECRET)
            .open(&stored.kid, &stored.sealed_private)
            .unwrap();
        let reference = String::from_utf8(plain).expect("a reference is text");
        let label = reference
            .strip_prefix(HSM_REFERENCE_PREFIX)
            .unwrap_or_else(|| panic!("{reference} is no token reference"))
            .to_owned();
        assert!(reference.len() < 80, "{reference}");
        assert!(!reference.contains("PRIVATE"), "{reference}");
        // And the token marks it sensitive and not extractable.
        assert_eq!(private_key_flags(&label), (true, false), "{label}");

        let keys = ring_of(&stored, &seal);
        assert_eq!(keys.algorithm(), algorithm);
        assert_eq!(keys.kid(), stored.kid);
        let c = claims();
        let token = keys.sign(&c).await.expect("the token signs");
        assert_eq!(keys.verify(&token).expect("verifies"), c);

        // A client verifies it from the published JWK alone.
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], algorithm.as_str());
        assert_eq!(header["kid"], stored.kid.as_str());
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&stored.public_jwk).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let validation = jsonwebtoken::Validation::new(match algorithm {
            SigningAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            _ => jsonwebtoken::Algorithm::ES256,
        });
        let decoded = jsonwebtoken::decode::<SeatClaims>(&token, &key, &validation)
            .expect("verifies against the stored public JWK");
        assert_eq!(decoded.claims, c);
    }
}

#[tokio::test]
async fn signatures_from_many_threads_at_once_all_verify() {
    let seal = seal_with_hsm();
    let stored =
        keys::generate_hsm_key(SigningAlgorithm::ES256, 2048, &seal, chrono::Utc::now()).unwrap();
    let keys = ring_of(&stored, &seal);
    let signer = keys.active();
    let tokens: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let signer = signer.clone();
                scope.spawn(move || {
                    (0..25)
                        .map(|_| signer.sign_blocking(&claims()).expect("sign"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(tokens.len(), 200);
    for token in &tokens {
        keys.verify(token)
            .expect("every concurrent signature verifies");
    }
}

#[test]
fn a_key_labelled_by_other_tools_is_adopted_by_its_label() {
    let seal = seal_with_hsm();
    // Made in the token first (here by us, as another tool would), then
    // named by its label alone.
    let made = keys::generate_hsm_key(
        SigningAlgorithm::RS256,
        2048,
        &seal,
        chrono::Utc::now() - chrono::TimeDelta::days(1),
    )
    .unwrap();
    let label = String::from_utf8(
        KeySeal::new(SECRET)
            .open(&made.kid, &made.sealed_private)
            .unwrap(),
    )
    .unwrap()
    .strip_prefix(HSM_REFERENCE_PREFIX)
    .unwrap()
    .to_owned();
    let adopted = keys::stored_hsm_key(&label, &seal, chrono::Utc::now()).unwrap();
    assert_eq!(
        adopted.kid, made.kid,
        "the same key, so the same thumbprint"
    );

    let err = keys::stored_hsm_key("no-such-key", &seal, chrono::Utc::now()).unwrap_err();
    assert!(err.to_string().contains("no-such-key"), "{err}");
}

#[test]
fn a_token_key_does_not_open_without_the_token_and_an_unknown_token_label_stops_the_open() {
    let seal = seal_with_hsm();
    let stored =
        keys::generate_hsm_key(SigningAlgorithm::ES256, 2048, &seal, chrono::Utc::now()).unwrap();
    let keys = SigningKeys::from(TokenSigner::from_pem(support::app::test_key_pem()).unwrap());
    let active = StoredKey {
        active: true,
        ..stored
    };
    let err = keys
        .install(&[active], &KeySeal::new(SECRET))
        .expect_err("no token, no key");
    assert!(err.to_string().contains("signing.pkcs11"), "{err}");

    let mut other = token().settings(PIN);
    other.token_label = "no-such-token".into();
    let err = Hsm::open(&other).expect_err("an unknown token label is refused");
    assert!(matches!(err, SigningError::InvalidKey(_)), "{err:?}");
    assert!(err.to_string().contains("no-such-token"), "{err}");

    let err = keys::generate_hsm_key(SigningAlgorithm::EdDSA, 2048, &seal, chrono::Utc::now())
        .expect_err("EdDSA keys are not made in the token");
    assert!(err.to_string().contains("RS256 or ES256"), "{err}");
}

/// `seatwarden keys list` on `hsm`'s token with a fresh data directory;
/// `pin` replaces the token's PIN when given.
fn keys_list(hsm: &SoftHsm, pin: Option<&str>) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"));
    cmd.args(["keys", "list"])
        .envs(hsm.env())
        .env("SEATWARDEN__DATA_DIR", dir.path())
        .env(
            "SEATWARDEN__AUTH__ACCESS_TOKEN_SECRET",
            std::str::from_utf8(SECRET).unwrap(),
        )
        .env("NO_COLOR", "1");
    if let Some(pin) = pin {
        cmd.env("SEATWARDEN__SIGNING__PKCS11__PIN", pin);
    }
    cmd.output().unwrap()
}

#[test]
fn an_all_digit_pin_with_a_leading_zero_from_the_environment_opens_the_token() {
    // Configuration read from the environment takes `0042` for a number;
    // the PIN must reach the token as the text it is.
    let hsm = SoftHsm::with_pin("digit-pin", "004217");
    let out = keys_list(&hsm, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_wrong_pin_stops_a_process_at_start_with_a_message_that_does_not_show_the_pin() {
    // A process of its own: in this one the token is logged in already,
    // and PKCS#11 answers a second login "already logged in".
    let hsm = SoftHsm::new("pin-check");
    let out = keys_list(&hsm, Some("0000-wrong"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("PIN"), "{stderr}");
    assert!(!stderr.contains("0000-wrong"), "{stderr}");

    // The right PIN opens it, and the empty key set lists.
    let out = keys_list(&hsm, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
