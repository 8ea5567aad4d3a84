//! The physical limit of token issuance: how many signatures one thread
//! makes per second with the crypto backend writ uses (aws-lc-rs), for
//! Ed25519 and ES256, over a JWT-sized signing input.
//!
//! Beside them, one Ed25519 verification (what a fresh DPoP proof costs
//! the broker at least), and writ's own stateless issuance in process: a task token's
//! claims made into a signed JWT by `KeyRing::sign` (serialization,
//! base64 and the signature; no HTTP, no policy, no store).
//!
//! `signrate [SECONDS]` prints one markdown row per algorithm.

use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
    UnparsedPublicKey,
};
use writ_core::Timestamp;
use writ_core::token::{AccessClaims, KeyRing, SigningKey};

/// A header and claims of about the size of writ's task tokens.
const INPUT: &[u8] = &[b'x'; 600];

fn rate(seconds: f64, mut sign: impl FnMut() -> usize) -> (f64, usize) {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut n = 0u64;
    let mut len = 0;
    let start = Instant::now();
    while Instant::now() < until {
        for _ in 0..100 {
            len = sign();
        }
        n += 100;
    }
    (n as f64 / start.elapsed().as_secs_f64(), len)
}

fn main() -> anyhow::Result<()> {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rng = SystemRandom::new();
    let ed = Ed25519KeyPair::generate()?;
    let ec_doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)?;
    let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_doc.as_ref())?;
    println!("| algorithm | per second (one thread) | µs each |");
    println!("|---|---:|---:|");
    let (r, _) = rate(seconds, || ed.sign(INPUT).as_ref().len());
    println!("| Ed25519 | {r:.0} | {:.1} |", 1e6 / r);
    let signature = ed.sign(INPUT);
    let public = UnparsedPublicKey::new(&ED25519, ed.public_key().as_ref().to_vec());
    let (r, _) = rate(seconds, || {
        usize::from(public.verify(INPUT, signature.as_ref()).is_ok())
    });
    println!("| Ed25519, verifying one | {r:.0} | {:.1} |", 1e6 / r);
    let (r, _) = rate(seconds, || {
        ec.sign(&rng, INPUT).map_or(0, |s| s.as_ref().len())
    });
    println!("| ES256 (P-256) | {r:.0} | {:.1} |", 1e6 / r);
    let now = Timestamp::from_secs(1_800_000_000);
    let ring = KeyRing::new(vec![SigningKey::generate(now)?]);
    let claims = AccessClaims {
        iss: "http://127.0.0.1:18790".into(),
        sub: "spiffe://writ.local/agent/demo-agent".into(),
        aud: "http://127.0.0.1:18790".into(),
        exp: now.secs() + 900,
        iat: now.secs(),
        nbf: now.secs(),
        jti: "jti_0123456789abcdefghijkl".into(),
        client_id: "ins_0123456789abcdefghijkl".into(),
        scope: Some("tickets:read".into()),
        task: Some("task_0123456789abcdefghijkl".into()),
        obo: None,
        cnf: None,
        act: None,
        exception: false,
        intent: Some("issuance bench".into()),
        task_ctx: None,
    };
    let (r, len) = rate(seconds, || ring.sign(&claims).map_or(0, |t| t.len()));
    println!(
        "| writ: a task token signed in process (EdDSA, {len} bytes, no HTTP, no store) | {r:.0} | {:.1} |",
        1e6 / r
    );
    Ok(())
}
