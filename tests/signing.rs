//! Behaviour of seat-token signing and verification (`seatwarden::signing`).
//!
//! Keys are 2048 bits and generated once per test binary where possible:
//! RSA key generation is the slow part of this suite.

use std::sync::{Arc, Barrier, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use seatwarden::signing::{
    SeatClaims, SigningAlgorithm, SigningConfig, SigningError, TokenSigner, keys,
    rsa_jwk_thumbprint,
};

fn rsa_key(slot: &'static OnceLock<RsaPrivateKey>) -> &'static RsaPrivateKey {
    slot.get_or_init(|| {
        RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("generate test key")
    })
}

fn key_a() -> &'static RsaPrivateKey {
    static K: OnceLock<RsaPrivateKey> = OnceLock::new();
    rsa_key(&K)
}

fn key_b() -> &'static RsaPrivateKey {
    static K: OnceLock<RsaPrivateKey> = OnceLock::new();
    rsa_key(&K)
}

fn pkcs8_pem(key: &RsaPrivateKey) -> String {
    key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
}

fn signer_a() -> &'static TokenSigner {
    static S: OnceLock<TokenSigner> = OnceLock::new();
    S.get_or_init(|| TokenSigner::from_pem(&pkcs8_pem(key_a())).unwrap())
}

fn signer_b() -> &'static TokenSigner {
    static S: OnceLock<TokenSigner> = OnceLock::new();
    S.get_or_init(|| TokenSigner::from_pem(&pkcs8_pem(key_b())).unwrap())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims() -> SeatClaims {
    let session = uuid::Uuid::new_v4().to_string();
    SeatClaims {
        iss: "seatwarden-test".into(),
        sub: session.clone(),
        session_id: session,
        license_id: uuid::Uuid::new_v4().to_string(),
        org_id: uuid::Uuid::new_v4().to_string(),
        hardware_id: "hw-1234".into(),
        tier: "pro".into(),
        features: vec!["export".into(), "render".into()],
        max_seats: 5,
        iat: now(),
        exp: now() + 600,
        lease_exp: now() + 570,
        borrowed: false,
    }
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
}

fn header_of(token: &str) -> serde_json::Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

fn assert_rejected(result: Result<SeatClaims, SigningError>) -> SigningError {
    let err = result.expect_err("token must be rejected");
    assert!(
        err.is_token_rejected(),
        "expected a 401-class rejection, got {err:?}"
    );
    err
}

#[tokio::test]
async fn a_signed_token_verifies_and_returns_the_same_claims() {
    let signer = signer_a();
    let c = claims();
    let token = signer.sign(&c).await.unwrap();
    assert_eq!(signer.verify(&token).unwrap(), c);

    let blocking = signer.sign_blocking(&c).unwrap();
    assert_eq!(signer.verify(&blocking).unwrap(), c);
}

#[test]
fn the_token_header_says_rs256_jwt_and_carries_the_kid() {
    let token = signer_a().sign_blocking(&claims()).unwrap();
    let header = header_of(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], signer_a().kid());
}

#[test]
fn the_kid_in_the_header_matches_the_jwks_kid() {
    let signer = signer_a();
    let token = signer.sign_blocking(&claims()).unwrap();
    let jwks = signer.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let jwk = &keys[0];
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["alg"], "RS256");
    assert_eq!(jwk["kid"], header_of(&token)["kid"]);
    assert_eq!(jwk["e"], "AQAB");
    let n = jwk["n"].as_str().unwrap();
    assert!(!n.contains('='), "n must be unpadded base64url");
    assert_eq!(URL_SAFE_NO_PAD.decode(n).unwrap().len(), 256);
    // The kid is the RFC 7638 thumbprint of exactly these n and e.
    assert_eq!(
        signer.kid(),
        rsa_jwk_thumbprint(n, jwk["e"].as_str().unwrap())
    );
}

#[test]
fn the_kid_is_the_rfc7638_thumbprint() {
    // RFC 7638 §3.1 worked example.
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    assert_eq!(
        rsa_jwk_thumbprint(n, "AQAB"),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn a_client_verifies_a_token_offline_from_the_jwks_n_and_e() {
    let signer = signer_a();
    let c = claims();
    let token = signer.sign_blocking(&c).unwrap();

    let jwks = signer.jwks();
    let jwk = &jwks["keys"][0];
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    // A client uses the library defaults: RS256 and an `exp` check.
    let data = jsonwebtoken::decode::<SeatClaims>(&token, &key, &Validation::new(Algorithm::RS256))
        .unwrap();
    assert_eq!(data.claims, c);
    assert_eq!(data.header.kid.as_deref(), Some(signer.kid()));

    // The SPKI PEM works too.
    assert!(
        signer
            .public_key_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let key = DecodingKey::from_rsa_pem(signer.public_key_pem().as_bytes()).unwrap();
    let data = jsonwebtoken::decode::<SeatClaims>(&token, &key, &Validation::new(Algorithm::RS256))
        .unwrap();
    assert_eq!(data.claims, c);
}

#[test]
fn the_held_key_signs_exactly_what_jsonwebtoken_signs_over_the_same_input() {
    // RS256 (PKCS#1 v1.5) is deterministic, so the signature over our
    // `header.claims` must be byte-identical to jsonwebtoken's.
    let token = signer_a().sign_blocking(&claims()).unwrap();
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let der = key_a().to_pkcs1_der().unwrap();
    let theirs = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_rsa_der(der.as_bytes()),
        Algorithm::RS256,
    )
    .unwrap();
    assert_eq!(signature, theirs);
    assert_eq!(URL_SAFE_NO_PAD.decode(signature).unwrap().len(), 256);
}

#[test]
fn a_token_verifies_with_an_independent_rsa_implementation() {
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier;

    let c = claims();
    let token = signer_a().sign_blocking(&c).unwrap();
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature = Signature::try_from(&URL_SAFE_NO_PAD.decode(signature).unwrap()[..]).unwrap();
    VerifyingKey::<sha2::Sha256>::new(key_a().to_public_key())
        .verify(signing_input.as_bytes(), &signature)
        .expect("RS256 signature verifies with the rsa crate");
    let payload = signing_input.split_once('.').unwrap().1;
    let decoded: SeatClaims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(decoded, c);
    assert_eq!(
        header_of(&token),
        serde_json::json!({"alg": "RS256", "kid": signer_a().kid(), "typ": "JWT"})
    );
}

#[test]
fn a_token_with_an_altered_signature_is_rejected() {
    let signer = signer_a();
    let token = signer.sign_blocking(&claims()).unwrap();
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
    for i in [0, raw.len() / 2, raw.len() - 1] {
        raw[i] ^= 0x01;
        let forged = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&raw));
        let err = assert_rejected(signer.verify(&forged));
        assert!(matches!(err, SigningError::BadSignature), "{err:?}");
        raw[i] ^= 0x01;
    }
    // A truncated signature is rejected too.
    let short = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&raw[1..]));
    assert_rejected(signer.verify(&short));
}

#[test]
fn a_token_signed_by_another_key_is_rejected() {
    let token = signer_b().sign_blocking(&claims()).unwrap();
    let err = assert_rejected(signer_a().verify(&token));
    assert!(matches!(err, SigningError::UnknownKey), "{err:?}");
}

#[test]
fn a_token_signed_by_another_key_under_our_kid_fails_the_signature_check() {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(signer_a().kid().to_owned());
    let der = key_b().to_pkcs1_der().unwrap();
    let forged = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_rsa_der(der.as_bytes()),
    )
    .unwrap();
    let err = assert_rejected(signer_a().verify(&forged));
    assert!(matches!(err, SigningError::BadSignature), "{err:?}");
}

#[test]
fn an_alg_none_token_is_rejected() {
    let signer = signer_a();
    let payload = b64(&serde_json::to_value(claims()).unwrap());
    for alg in ["none", "None", "NONE"] {
        let header = b64(&serde_json::json!({"alg": alg, "typ": "JWT", "kid": signer.kid()}));
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert_rejected(signer.verify(&token));
        }
        let err = assert_rejected(signer.verify(&format!("{header}.{payload}.")));
        assert!(matches!(err, SigningError::AlgorithmRejected(_)), "{err:?}");
    }
}

#[test]
fn an_hs256_token_keyed_with_the_public_key_is_rejected() {
    let signer = signer_a();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(signer.kid().to_owned());
    let jwk_n = signer.jwks()["keys"][0]["n"].as_str().unwrap().to_owned();
    let der = rsa::pkcs8::EncodePublicKey::to_public_key_der(&key_a().to_public_key()).unwrap();
    for secret in [
        signer.public_key_pem().as_bytes(),
        jwk_n.as_bytes(),
        der.as_bytes(),
    ] {
        let forged =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret)).unwrap();
        let err = assert_rejected(signer.verify(&forged));
        assert!(matches!(err, SigningError::AlgorithmRejected(_)), "{err:?}");
    }
}

#[test]
fn other_rsa_algorithms_are_rejected_even_with_a_valid_signature() {
    let signer = signer_a();
    let der = key_a().to_pkcs1_der().unwrap();
    for alg in [Algorithm::RS512, Algorithm::PS256] {
        let mut header = Header::new(alg);
        header.kid = Some(signer.kid().to_owned());
        let token = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_rsa_der(der.as_bytes()),
        )
        .unwrap();
        let err = assert_rejected(signer.verify(&token));
        assert!(matches!(err, SigningError::AlgorithmRejected(_)), "{err:?}");
    }
}

#[test]
fn a_token_with_altered_claims_is_rejected() {
    let signer = signer_a();
    let token = signer.sign_blocking(&claims()).unwrap();
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut tampered = claims();
    tampered.max_seats = 500;
    let payload = b64(&serde_json::to_value(&tampered).unwrap());
    parts[1] = &payload;
    let err = assert_rejected(signer.verify(&parts.join(".")));
    assert!(matches!(err, SigningError::BadSignature), "{err:?}");
}

#[test]
fn a_token_without_a_kid_is_rejected() {
    let der = key_a().to_pkcs1_der().unwrap();
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims(),
        &EncodingKey::from_rsa_der(der.as_bytes()),
    )
    .unwrap();
    let err = assert_rejected(signer_a().verify(&token));
    assert!(matches!(err, SigningError::UnknownKey), "{err:?}");
}

#[test]
fn malformed_tokens_are_rejected() {
    let signer = signer_a();
    let good = signer.sign_blocking(&claims()).unwrap();
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let bad_payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
    let cases = [
        String::new(),
        "garbage".into(),
        "a.b".into(),
        "a.b.c".into(),
        format!("{good}.extra"),
        format!("{h}.{p}"),
        format!("{h}.{p}.not*base64"),
        format!("{h}.{p}."),
        format!("{h}.!!!.{s}"),
        format!("{}.{p}.{s}", URL_SAFE_NO_PAD.encode(b"not json")),
        format!("{h}.{bad_payload}.{s}"),
    ];
    for token in cases {
        assert_rejected(signer.verify(&token));
    }
}

#[test]
fn an_expired_token_still_verifies_because_liveness_is_the_ledgers_decision() {
    let mut c = claims();
    c.iat = now() - 7200;
    c.exp = now() - 3600;
    let token = signer_a().sign_blocking(&c).unwrap();
    assert_eq!(signer_a().verify(&token).unwrap(), c);
}

#[test]
fn pkcs1_and_pkcs8_pem_of_one_key_give_the_same_signer() {
    let pkcs1 = key_a().to_pkcs1_pem(LineEnding::LF).unwrap();
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let from_pkcs1 = TokenSigner::from_pem(&pkcs1).unwrap();
    assert_eq!(from_pkcs1.kid(), signer_a().kid());
    assert_eq!(from_pkcs1.key_bits(), 2048);
    let token = from_pkcs1.sign_blocking(&claims()).unwrap();
    signer_a().verify(&token).unwrap();
    // And the other way round: the PKCS#8-loaded signer's tokens verify
    // under the PKCS#1-loaded one.
    let token = signer_a().sign_blocking(&claims()).unwrap();
    from_pkcs1.verify(&token).unwrap();
}

#[test]
fn garbage_public_and_small_keys_are_refused_as_invalid() {
    let small = RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
    let public_pem = signer_a().public_key_pem().to_owned();
    for pem in [
        "".to_owned(),
        "not a key".to_owned(),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_owned(),
        public_pem,
        pkcs8_pem(&small),
    ] {
        let err = TokenSigner::from_pem(&pem).expect_err("must be refused");
        assert!(matches!(err, SigningError::InvalidKey(_)), "{err:?}");
        assert!(!err.is_token_rejected());
    }
}

#[test]
fn debug_shows_kid_and_bits_but_no_key_material() {
    let signer = signer_a();
    let debug = format!("{signer:?}");
    assert!(debug.contains(signer.kid()), "{debug}");
    assert!(debug.contains("2048"), "{debug}");
    let n = signer.jwks()["keys"][0]["n"].as_str().unwrap().to_owned();
    assert!(!debug.contains(&n[..16]), "{debug}");
    assert!(!debug.contains("BEGIN"), "{debug}");
    assert!(debug.len() < 200, "{debug}");
}

fn cfg(path: &std::path::Path, generate: bool) -> SigningConfig {
    SigningConfig {
        key_path: path.to_path_buf(),
        algorithm: SigningAlgorithm::RS256,
        rsa_bits: 2048,
        generate_if_missing: generate,
    }
}

#[test]
fn two_signers_loaded_from_the_same_file_share_a_kid_and_accept_each_others_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    std::fs::write(&path, pkcs8_pem(key_b())).unwrap();

    let node1 = TokenSigner::load_or_generate(&cfg(&path, false)).unwrap();
    let node2 = TokenSigner::load_or_generate(&cfg(&path, false)).unwrap();
    assert_eq!(node1.kid(), node2.kid());
    assert_eq!(node1.kid(), signer_b().kid());
    assert_eq!(node1.jwks(), node2.jwks());

    let c1 = claims();
    let c2 = claims();
    assert_eq!(
        node2.verify(&node1.sign_blocking(&c1).unwrap()).unwrap(),
        c1
    );
    assert_eq!(
        node1.verify(&node2.sign_blocking(&c2).unwrap()).unwrap(),
        c2
    );
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn generate_if_missing_writes_a_0600_file_and_a_second_load_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dirs/key.pem");

    let first = TokenSigner::load_or_generate(&cfg(&path, true)).unwrap();
    assert_eq!(first.key_bits(), 2048);
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);

    let second = TokenSigner::load_or_generate(&cfg(&path, true)).unwrap();
    assert_eq!(first.kid(), second.kid());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        pem,
        "file must not be rewritten"
    );
    let c = claims();
    assert_eq!(second.verify(&first.sign_blocking(&c).unwrap()).unwrap(), c);

    // No temporary files are left behind.
    let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(entries.len(), 1);
}

#[test]
fn a_missing_key_file_without_generate_if_missing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.pem");
    let err = TokenSigner::load_or_generate(&cfg(&path, false)).unwrap_err();
    assert!(matches!(err, SigningError::KeyMissing { .. }), "{err:?}");
    assert!(!err.is_token_rejected());
    let msg = err.to_string();
    assert!(
        msg.contains("absent.pem") && msg.contains("generate_if_missing"),
        "{msg}"
    );
    assert!(!path.exists(), "nothing must be written");
}

#[test]
fn an_unsupported_rsa_bits_setting_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cfg(&dir.path().join("k.pem"), true);
    config.rsa_bits = 1024;
    let err = TokenSigner::load_or_generate(&config).unwrap_err();
    assert!(
        matches!(err, SigningError::UnsupportedKeySize(1024)),
        "{err:?}"
    );
}

#[test]
fn a_corrupt_key_file_is_an_error_that_does_not_echo_its_contents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    let pem = pkcs8_pem(key_a());
    // Keep the armour, damage the body.
    let corrupt = pem.replacen("MII", "XYZ", 1);
    std::fs::write(&path, &corrupt).unwrap();
    let err = TokenSigner::load_or_generate(&cfg(&path, true)).unwrap_err();
    assert!(matches!(err, SigningError::InvalidKey(_)), "{err:?}");
    let body_line = corrupt.lines().nth(2).unwrap();
    assert!(!err.to_string().contains(body_line));
    assert!(!format!("{err:?}").contains(body_line));
    // generate_if_missing never overwrites an existing (even broken) file.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), corrupt);
}

#[test]
fn concurrent_load_or_generate_calls_on_the_same_missing_path_end_up_with_the_same_key() {
    // Shown on failure: which node wrote the key and which loaded it.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared/key.pem");
    let nodes = 3;
    let barrier = Arc::new(Barrier::new(nodes));
    let handles: Vec<_> = (0..nodes)
        .map(|_| {
            let barrier = barrier.clone();
            let config = cfg(&path, true);
            std::thread::spawn(move || {
                barrier.wait();
                TokenSigner::load_or_generate(&config).unwrap()
            })
        })
        .collect();
    let signers: Vec<TokenSigner> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    let on_disk = TokenSigner::load_or_generate(&cfg(&path, false)).unwrap();
    for s in &signers {
        assert_eq!(s.kid(), on_disk.kid());
    }
    let c = claims();
    let token = signers[0].sign_blocking(&c).unwrap();
    for s in &signers {
        assert_eq!(s.verify(&token).unwrap(), c);
    }
    let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(
        entries.len(),
        1,
        "losers must clean up their temporary files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_concurrent_signs_completes_and_every_token_verifies() {
    let signer = signer_a().clone();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let signer = signer.clone();
            tokio::spawn(async move {
                let c = claims();
                let token = signer.sign(&c).await.unwrap();
                (c, token)
            })
        })
        .collect();
    for task in tasks {
        let (c, token) = task.await.unwrap();
        assert_eq!(signer.verify(&token).unwrap(), c);
    }
}

#[test]
fn verify_cached_returns_the_same_claims_as_verify_and_answers_repeats_from_the_cache() {
    let signer = signer_a().with_verified_cache_capacity(16);
    let c = claims();
    let token = signer.sign_blocking(&c).unwrap();
    let first = signer.verify_cached(&token).unwrap();
    assert_eq!(*first, c);
    assert_eq!(*first, signer.verify(&token).unwrap());
    let again = signer.verify_cached(&token).unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "the repeat must be a cache hit"
    );
    assert_eq!(signer.verified_cache_len(), 1);
    // Clones share the cache.
    assert!(Arc::ptr_eq(
        &first,
        &signer.clone().verify_cached(&token).unwrap()
    ));
}

#[test]
fn verify_cached_rejects_an_altered_token_even_after_the_genuine_one_was_cached() {
    let signer = signer_a().with_verified_cache_capacity(16);
    let c = claims();
    let token = signer.sign_blocking(&c).unwrap();
    assert_eq!(*signer.verify_cached(&token).unwrap(), c);

    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
    raw[100] ^= 0x80;
    let bad_signature = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&raw));
    let err = signer
        .verify_cached(&bad_signature)
        .expect_err("altered signature");
    assert!(matches!(err, SigningError::BadSignature), "{err:?}");

    let mut tampered = c.clone();
    tampered.max_seats = 500;
    let mut parts: Vec<&str> = token.split('.').collect();
    let payload = b64(&serde_json::to_value(&tampered).unwrap());
    parts[1] = &payload;
    let err = signer
        .verify_cached(&parts.join("."))
        .expect_err("altered claims");
    assert!(matches!(err, SigningError::BadSignature), "{err:?}");

    // Twice, so a cached failure would show; and the genuine token still hits.
    assert!(signer.verify_cached(&bad_signature).is_err());
    assert_eq!(signer.verified_cache_len(), 1);
    assert_eq!(*signer.verify_cached(&token).unwrap(), c);
}

#[test]
fn verify_cached_never_caches_rejected_tokens() {
    let signer = signer_a().with_verified_cache_capacity(16);
    let foreign = signer_b().sign_blocking(&claims()).unwrap();
    for token in ["garbage".to_owned(), "a.b.c".to_owned(), foreign] {
        let err = signer.verify_cached(&token).expect_err("must be rejected");
        assert!(err.is_token_rejected(), "{err:?}");
    }
    assert_eq!(signer.verified_cache_len(), 0);
}

#[test]
fn verify_cached_does_not_grow_beyond_its_bound_when_fed_many_distinct_valid_tokens() {
    let signer = signer_a().with_verified_cache_capacity(64);
    assert!(
        (64..=72).contains(&signer.verified_cache_capacity()),
        "{}",
        signer.verified_cache_capacity()
    );
    let mut last = None;
    for _ in 0..400 {
        let c = claims();
        let token = signer.sign_blocking(&c).unwrap();
        assert_eq!(*signer.verify_cached(&token).unwrap(), c);
        assert!(signer.verified_cache_len() <= signer.verified_cache_capacity());
        last = Some((token, c));
    }
    assert!(signer.verified_cache_len() > 0);
    // Evicted or not, every token still verifies.
    let (token, c) = last.unwrap();
    assert_eq!(*signer.verify_cached(&token).unwrap(), c);
}

#[test]
fn verify_cached_gives_every_thread_the_right_claims_under_contention() {
    let signer = signer_a().with_verified_cache_capacity(64);
    let tokens: Vec<(String, SeatClaims)> = (0..8)
        .map(|_| {
            let c = claims();
            (signer.sign_blocking(&c).unwrap(), c)
        })
        .collect();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (signer, tokens) = (&signer, &tokens);
            scope.spawn(move || {
                for i in 0..2_000 {
                    let (token, c) = &tokens[(i + t) % tokens.len()];
                    assert_eq!(*signer.verify_cached(token).unwrap(), *c);
                }
            });
        }
    });
    assert_eq!(signer.verified_cache_len(), tokens.len());
}

#[test]
fn sign_rate_reports_a_positive_rate() {
    let rate = signer_a().sign_rate(Duration::from_millis(200));
    assert!(rate > 0.0, "{rate}");
}

#[test]
fn sign_ceiling_reports_a_positive_rate_across_threads() {
    let rate = signer_a().sign_ceiling(2, Duration::from_millis(200));
    assert!(rate > 0.0, "{rate}");
    // Zero threads is treated as one rather than dividing by nothing.
    assert!(signer_a().sign_ceiling(0, Duration::from_millis(50)) > 0.0);
}

/// Tokens per second of the signer before this change: `jsonwebtoken::encode`,
/// whose aws-lc backend parses the private key DER for every signature.
fn jsonwebtoken_encode_rate(key: &RsaPrivateKey, kid: &str, duration: Duration) -> f64 {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let der = key.to_pkcs1_der().unwrap();
    let encoding_key = EncodingKey::from_rsa_der(der.as_bytes());
    let c = claims();
    let started = std::time::Instant::now();
    let mut count = 0u32;
    while started.elapsed() < duration {
        jsonwebtoken::encode(&header, &c, &encoding_key).unwrap();
        count += 1;
    }
    f64::from(count) / started.elapsed().as_secs_f64()
}

fn rate_of(duration: Duration, mut op: impl FnMut()) -> f64 {
    let started = std::time::Instant::now();
    let mut count = 0u32;
    while started.elapsed() < duration {
        op();
        count += 1;
    }
    f64::from(count) / started.elapsed().as_secs_f64()
}

/// `cargo test --release --test signing -- --ignored --nocapture` prints,
/// for 2048- and 4096-bit keys in one run: one-thread signing rates of the
/// old path (jsonwebtoken::encode, key parsed per signature) and of the
/// held key, their ratio, the all-CPU signing ceiling, and verify rates
/// without and with the cache. Old and new alternate in short rounds so
/// that drift on a shared machine hits both alike.
#[test]
#[ignore = "benchmark; slow (generates a 4096-bit key)"]
fn print_sign_and_verify_rates() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let round = Duration::from_millis(1500);
    for bits in [2048, 4096] {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), bits).unwrap();
        let signer = TokenSigner::from_pem(&pkcs8_pem(&key)).unwrap();
        // Warm-up, both paths.
        let _ = signer.sign_rate(Duration::from_millis(300));
        let _ = jsonwebtoken_encode_rate(&key, signer.kid(), Duration::from_millis(300));
        let (mut old, mut held) = (0.0, 0.0);
        for _ in 0..2 {
            old += jsonwebtoken_encode_rate(&key, signer.kid(), round) / 2.0;
            held += signer.sign_rate(round) / 2.0;
        }
        let ceiling = signer.sign_ceiling(cpus, Duration::from_secs(2));

        let token = signer.sign_blocking(&claims()).unwrap();
        let verify = rate_of(Duration::from_secs(2), || {
            signer.verify(&token).unwrap();
        });
        let cached = rate_of(Duration::from_secs(1), || {
            signer.verify_cached(&token).unwrap();
        });
        println!(
            "RSA-{bits}: sign 1 thread: jsonwebtoken::encode {old:.0}/s ({:.2} ms), \
             held key {held:.0}/s ({:.2} ms), ratio {:.2}x; \
             ceiling {cpus} threads {ceiling:.0}/s; \
             verify {verify:.0}/s ({:.1} us), verify_cached hit {cached:.0}/s ({:.2} us)",
            1000.0 / old,
            1000.0 / held,
            held / old,
            1e6 / verify,
            1e6 / cached,
        );
    }
}

// ----- ES256 and EdDSA -----

/// A freshly generated signer of `algorithm` (fast for P-256 and Ed25519).
fn signer_of(algorithm: SigningAlgorithm) -> TokenSigner {
    use secrecy::ExposeSecret;
    let pem = keys::generate_pem(algorithm, 2048).unwrap();
    TokenSigner::from_pem(pem.expose_secret()).unwrap()
}

/// RFC 7638: SHA-256 over the required members, sorted, no whitespace.
fn thumbprint_of(jwk: &serde_json::Value, members: &[&str]) -> String {
    use sha2::Digest;
    let canonical: serde_json::Map<String, serde_json::Value> = members
        .iter()
        .map(|m| ((*m).to_owned(), jwk[*m].clone()))
        .collect();
    // serde_json's map is sorted by key, and to_string adds no whitespace.
    let json = serde_json::Value::Object(canonical).to_string();
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(json.as_bytes()))
}

#[tokio::test]
async fn es256_and_eddsa_keys_sign_tokens_a_client_verifies_offline_from_the_jwk_alone() {
    for (algorithm, kty, crv, members) in [
        (
            SigningAlgorithm::ES256,
            "EC",
            "P-256",
            &["crv", "kty", "x", "y"][..],
        ),
        (
            SigningAlgorithm::EdDSA,
            "OKP",
            "Ed25519",
            &["crv", "kty", "x"][..],
        ),
    ] {
        let signer = signer_of(algorithm);
        assert_eq!(signer.algorithm(), algorithm);
        let c = claims();
        let token = signer.sign(&c).await.unwrap();
        let header = header_of(&token);
        assert_eq!(header["alg"], algorithm.as_str());
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], signer.kid());
        assert_eq!(signer.verify(&token).unwrap(), c);

        let jwk = signer.jwks()["keys"][0].clone();
        assert_eq!(jwk["kty"], kty, "{jwk}");
        assert_eq!(jwk["crv"], crv, "{jwk}");
        assert_eq!(jwk["alg"], algorithm.as_str(), "{jwk}");
        assert_eq!(jwk["use"], "sig", "{jwk}");
        assert_eq!(jwk["kid"], signer.kid(), "{jwk}");
        assert_eq!(signer.kid(), thumbprint_of(&jwk, members), "RFC 7638 kid");
        for coordinate in &members[2..] {
            let bytes = URL_SAFE_NO_PAD
                .decode(jwk[*coordinate].as_str().unwrap())
                .unwrap();
            assert_eq!(bytes.len(), 32, "{coordinate} of {jwk}");
        }

        // A client with the library defaults: the JWK, its algorithm, exp.
        let key = DecodingKey::from_jwk(&serde_json::from_value(jwk.clone()).unwrap()).unwrap();
        let data = jsonwebtoken::decode::<SeatClaims>(
            &token,
            &key,
            &Validation::new(match algorithm {
                SigningAlgorithm::ES256 => Algorithm::ES256,
                _ => Algorithm::EdDSA,
            }),
        )
        .expect("verifies against the published JWK");
        assert_eq!(data.claims, c);
        // And from the SPKI PEM the server publishes.
        let pem = signer.public_key_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
        let from_pem = match algorithm {
            SigningAlgorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
            _ => DecodingKey::from_ed_pem(pem.as_bytes()),
        }
        .unwrap();
        let mut validation = Validation::new(data.header.alg);
        validation.validate_exp = false;
        jsonwebtoken::decode::<SeatClaims>(&token, &from_pem, &validation)
            .expect("verifies against the public key PEM");
    }
}

#[test]
fn a_token_is_checked_only_with_its_keys_algorithm_whatever_its_header_says() {
    let es = signer_of(SigningAlgorithm::ES256);
    let ed = signer_of(SigningAlgorithm::EdDSA);
    let es_token = es.sign_blocking(&claims()).unwrap();
    let ed_token = ed.sign_blocking(&claims()).unwrap();
    let rest = |t: &str| t.split_once('.').unwrap().1.to_owned();
    for (signer, token, other) in [(&es, &es_token, "EdDSA"), (&ed, &ed_token, "ES256")] {
        for alg in [other, "RS256", "HS256", "ES384", "none"] {
            let mut header = header_of(token);
            header["alg"] = alg.into();
            let forged = format!("{}.{}", b64(&header), rest(token));
            let err = assert_rejected(signer.verify(&forged));
            assert!(
                matches!(err, SigningError::AlgorithmRejected(_)),
                "{alg}: {err:?}"
            );
        }
        // An ECDSA signature altered in one byte is refused.
        let mut altered = token.as_bytes().to_vec();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let err = assert_rejected(signer.verify(std::str::from_utf8(&altered).unwrap()));
        assert!(
            matches!(
                err,
                SigningError::BadSignature | SigningError::MalformedToken(_)
            ),
            "{err:?}"
        );
    }
    // One key's token under the other's kid does not verify.
    let mut header = header_of(&ed_token);
    header["kid"] = es.kid().into();
    header["alg"] = "ES256".into();
    let swapped = format!("{}.{}", b64(&header), rest(&ed_token));
    assert_rejected(es.verify(&swapped));
}

/// Runs `openssl` with `args`, returning its standard output.
fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn p256_and_ed25519_keys_made_by_openssl_are_accepted_in_each_of_their_pem_forms() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "ec-pkcs8.pem",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ][..],
            SigningAlgorithm::ES256,
        ),
        (
            "ec-sec1.pem",
            &["ecparam", "-name", "prime256v1", "-genkey", "-noout"][..],
            SigningAlgorithm::ES256,
        ),
        (
            "ed25519.pem",
            &["genpkey", "-algorithm", "ED25519"][..],
            SigningAlgorithm::EdDSA,
        ),
    ];
    for (file, args, algorithm) in cases {
        let path = dir.path().join(file);
        let pem = openssl(args);
        std::fs::write(&path, &pem).unwrap();
        let signer = TokenSigner::from_pem(&pem).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(signer.algorithm(), algorithm, "{file}");
        // The public key we publish is the one openssl derives.
        let public = openssl(&["pkey", "-in", path.to_str().unwrap(), "-pubout"]);
        assert_eq!(signer.public_key_pem().trim(), public.trim(), "{file}");
        let token = signer.sign_blocking(&claims()).unwrap();
        signer.verify(&token).unwrap();
    }
    // Another curve is refused, saying which one we take.
    let p384 = openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
    ]);
    let err = TokenSigner::from_pem(&p384).unwrap_err();
    assert!(err.to_string().contains("P-256"), "{err}");
    let x25519 = openssl(&["genpkey", "-algorithm", "X25519"]);
    let err = TokenSigner::from_pem(&x25519).unwrap_err();
    assert!(matches!(err, SigningError::InvalidKey(_)), "{err:?}");
}

#[test]
fn a_generated_key_file_has_the_configured_algorithm_and_a_file_on_disk_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    let mut config = cfg(&path, true);
    config.algorithm = SigningAlgorithm::EdDSA;
    let made = TokenSigner::load_or_generate(&config).unwrap();
    assert_eq!(made.algorithm(), SigningAlgorithm::EdDSA);
    assert_eq!(mode(&path), 0o600);

    config.algorithm = SigningAlgorithm::ES256;
    let loaded = TokenSigner::load_or_generate(&config).unwrap();
    assert_eq!(
        loaded.algorithm(),
        SigningAlgorithm::EdDSA,
        "the file decides"
    );
    assert_eq!(loaded.kid(), made.kid());
}

#[test]
fn algorithm_names_are_the_exact_jws_names() {
    for algorithm in SigningAlgorithm::ALL {
        assert_eq!(
            algorithm.as_str().parse::<SigningAlgorithm>(),
            Ok(algorithm)
        );
        assert_eq!(
            serde_json::to_value(algorithm).unwrap(),
            algorithm.as_str(),
            "config and CLI spell it as the JWS header does"
        );
    }
    for bad in ["rs256", "ES512", "EDDSA", "HS256", ""] {
        assert!(bad.parse::<SigningAlgorithm>().is_err(), "{bad}");
    }
}
