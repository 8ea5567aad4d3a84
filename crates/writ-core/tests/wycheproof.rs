//! Project Wycheproof vectors against the signature verification writ
//! uses for every JWS it checks (`jsonwebtoken` on `aws-lc-rs`): Ed25519
//! for tokens and proofs, ES256 (P-256, IEEE P1363 signatures, as in JWS)
//! for proofs and OIDC identity tokens. Valid vectors must verify, invalid
//! ones (small-order keys, non-canonical S, r = s = 0, malleated and
//! truncated signatures, ...) must not; "acceptable" ones are left to the
//! library.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed test"
)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, crypto};
use wycheproof::TestResult;

fn check(
    name: &str,
    key: Option<DecodingKey>,
    alg: Algorithm,
    tc_id: usize,
    msg: &[u8],
    sig: &[u8],
    result: TestResult,
) -> bool {
    let ok = key.is_some_and(|k| {
        crypto::verify(&URL_SAFE_NO_PAD.encode(sig), msg, &k, alg).unwrap_or(false)
    });
    match result {
        TestResult::Valid => assert!(ok, "{name} #{tc_id}: a valid signature was refused"),
        TestResult::Invalid => assert!(!ok, "{name} #{tc_id}: an invalid signature verified"),
        TestResult::Acceptable => {}
    }
    !matches!(result, TestResult::Acceptable)
}

#[test]
fn j5_ed25519_wycheproof_vectors() {
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519).unwrap();
    let mut n = 0;
    for g in &set.test_groups {
        let x = URL_SAFE_NO_PAD.encode(&*g.key.pk);
        for t in &g.tests {
            let key = DecodingKey::from_ed_components(&x).ok();
            n += usize::from(check(
                "ed25519",
                key,
                Algorithm::EdDSA,
                t.tc_id,
                &t.msg,
                &t.sig,
                t.result,
            ));
        }
    }
    assert!(n > 100, "only {n} vectors ran");
}

#[test]
fn j4_es256_wycheproof_vectors() {
    let set =
        wycheproof::ecdsa::TestSet::load(wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256P1363)
            .unwrap();
    let mut n = 0;
    for g in &set.test_groups {
        let point = &*g.key.key;
        let key = (point.len() == 65 && point[0] == 4).then(|| {
            DecodingKey::from_ec_components(
                &URL_SAFE_NO_PAD.encode(&point[1..33]),
                &URL_SAFE_NO_PAD.encode(&point[33..65]),
            )
            .ok()
        });
        for t in &g.tests {
            n += usize::from(check(
                "es256",
                key.clone().flatten(),
                Algorithm::ES256,
                t.tc_id,
                &t.msg,
                &t.sig,
                t.result,
            ));
        }
    }
    assert!(n > 100, "only {n} vectors ran");
}
