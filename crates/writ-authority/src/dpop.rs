//! The stateful half of DPoP: the replay cache and server nonces.

use std::sync::Mutex;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use writ_core::Timestamp;
use writ_core::dpop::{self, DpopError, Expected, VerifiedProof};

use crate::error::{Binding, Error};

/// Most proofs remembered at once for requests with a bound token; past
/// this, new proofs are refused rather than risk a replay.
const MAX_REMEMBERED: usize = 1_000_000;
use writ_core::dpop::{ReplayCache as Seen, ReplayError};
/// Attestation proofs are remembered apart (and fewer), so that anyone who
/// can reach `/v1/attest` cannot crowd out the proofs of bound tokens; and
/// only once their request's credential was accepted.
const MAX_REMEMBERED_ATTEST: usize = 100_000;
/// How long a server nonce stays valid.
const NONCE_TTL_SECS: i64 = 300;

#[derive(Debug)]
pub struct DpopGuard {
    seen: Mutex<Seen>,
    seen_attest: Mutex<Seen>,
    nonce_key: Option<hmac::Key>,
}

fn refused(e: DpopError) -> Error {
    Error::Binding(Binding::Proof(e))
}

impl DpopGuard {
    /// `nonces`: require server-issued nonces in proofs.
    pub fn new(nonces: bool) -> Result<Self, writ_core::random::RandomError> {
        let nonce_key = if nonces {
            Some(hmac::Key::new(
                hmac::HMAC_SHA256,
                &writ_core::random::bytes::<32>()?,
            ))
        } else {
            None
        };
        Ok(Self {
            seen: Mutex::new(Seen::new(MAX_REMEMBERED)),
            seen_attest: Mutex::new(Seen::new(MAX_REMEMBERED_ATTEST)),
            nonce_key,
        })
    }

    #[cfg(test)]
    fn with_attest_capacity(n: usize) -> Self {
        Self {
            seen: Mutex::new(Seen::new(MAX_REMEMBERED)),
            seen_attest: Mutex::new(Seen::new(n)),
            nonce_key: None,
        }
    }

    /// Verifies a proof for a request with a bound token (`jkt`: the key
    /// it must be signed by) and records its `jti` so it is never accepted
    /// again.
    pub fn check(
        &self,
        proof: &str,
        expected: &Expected<'_>,
        jkt: Option<&str>,
    ) -> Result<VerifiedProof, Error> {
        self.check_in(&self.seen, proof, expected, jkt)
    }

    /// Verifies the proof a sub-agent made for its own delegation (an
    /// `actor_token_proof`): signed by `jkt`, with `ath` of the actor
    /// token, used once. No server nonce: the sub-agent makes it ahead of
    /// the planner's request, and its `iat` window bounds it.
    pub fn check_actor(
        &self,
        proof: &str,
        expected: &Expected<'_>,
        jkt: &str,
    ) -> Result<VerifiedProof, Error> {
        let v = signed_by(proof, expected, Some(jkt))?;
        self.remember(&self.seen, &v, expected.now)?;
        Ok(v)
    }

    /// Verifies a proof on an attestation request (no token yet), without
    /// remembering it: an attestation proof is remembered only once the
    /// request's credential has been checked ([`DpopGuard::remember_attest`]),
    /// so that requests with throwaway keys and no valid credential cannot
    /// fill the cache.
    pub fn verify_attest(
        &self,
        proof: &str,
        expected: &Expected<'_>,
    ) -> Result<VerifiedProof, Error> {
        self.verify(proof, expected, None)
    }

    /// Records an attestation proof's `jti`, refusing a replay. The cache
    /// holds only proofs that came with a credential writ accepted, so it
    /// fills only as fast as real attestations happen; should it be full
    /// all the same, an attestation with a single-use credential (a join
    /// token, a JWT-SVID) goes ahead, since the store consumes that
    /// credential exactly once and a replayed proof cannot attest twice
    /// with it, while one with a reusable credential (an OIDC token) is
    /// refused for now (503).
    pub fn remember_attest(
        &self,
        proof: &VerifiedProof,
        now: Timestamp,
        single_use: bool,
    ) -> Result<(), Error> {
        match self.remember(&self.seen_attest, proof, now) {
            Err(Error::Unavailable(_)) if single_use => {
                tracing::warn!(
                    "the attestation replay cache is full; attesting with a single-use credential"
                );
                Ok(())
            }
            other => other,
        }
    }

    fn check_in(
        &self,
        seen: &Mutex<Seen>,
        proof: &str,
        expected: &Expected<'_>,
        jkt: Option<&str>,
    ) -> Result<VerifiedProof, Error> {
        let v = self.verify(proof, expected, jkt)?;
        self.remember(seen, &v, expected.now)?;
        Ok(v)
    }

    /// Signature, claims, key and nonce: everything but the replay cache.
    fn verify(
        &self,
        proof: &str,
        expected: &Expected<'_>,
        jkt: Option<&str>,
    ) -> Result<VerifiedProof, Error> {
        let v = signed_by(proof, expected, jkt)?;
        if let Some(key) = &self.nonce_key {
            let ok = v
                .nonce
                .as_deref()
                .is_some_and(|n| nonce_valid(key, n, expected.now));
            if !ok {
                return Err(Error::Binding(Binding::UseNonce {
                    nonce: make_nonce(key, expected.now),
                }));
            }
        }
        Ok(v)
    }

    fn remember(&self, seen: &Mutex<Seen>, v: &VerifiedProof, now: Timestamp) -> Result<(), Error> {
        seen.lock()
            .map_err(|_| Error::Internal("replay cache lock poisoned".into()))?
            .insert(&v.jti_hash, now)
            .map_err(|e| match e {
                ReplayError::Replay => refused(DpopError::Replay),
                ReplayError::Full => Error::Unavailable("DPoP replay cache is full".into()),
            })
    }
}

/// The stateless checks of a proof, and that `jkt` (when given) signed it.
fn signed_by(
    proof: &str,
    expected: &Expected<'_>,
    jkt: Option<&str>,
) -> Result<VerifiedProof, Error> {
    let v = dpop::verify_proof(proof, expected).map_err(refused)?;
    if jkt.is_some_and(|j| j != v.jkt) {
        return Err(refused(DpopError::WrongKey));
    }
    Ok(v)
}

fn make_nonce(key: &hmac::Key, now: Timestamp) -> String {
    let ts = now.secs().to_be_bytes();
    let tag = hmac::sign(key, &ts);
    let mut raw = ts.to_vec();
    raw.extend_from_slice(tag.as_ref().get(..16).unwrap_or_default());
    URL_SAFE_NO_PAD.encode(raw)
}

fn nonce_valid(key: &hmac::Key, nonce: &str, now: Timestamp) -> bool {
    let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
        return false;
    };
    let (Some(ts), Some(tag)) = (raw.get(..8), raw.get(8..)) else {
        return false;
    };
    let Ok(ts_bytes) = <[u8; 8]>::try_from(ts) else {
        return false;
    };
    // Authenticity first, then freshness, with no arithmetic that can
    // overflow on unchecked input.
    let expected = hmac::sign(key, ts);
    let authentic = tag.len() == 16
        && aws_lc_rs::constant_time::verify_slices_are_equal(
            expected.as_ref().get(..16).unwrap_or_default(),
            tag,
        )
        .is_ok();
    let issued = i64::from_be_bytes(ts_bytes);
    authentic
        && issued <= now.secs().saturating_add(5)
        && now.secs().saturating_sub(issued) <= NONCE_TTL_SECS
}

#[cfg(test)]
mod tests {
    use super::*;
    use writ_core::dpop::ProofKey;

    const NOW: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn expected<'a>(url: &'a str) -> Expected<'a> {
        Expected {
            method: "POST",
            url,
            access_token: None,
            now: NOW,
        }
    }

    #[test]
    fn a_proof_is_accepted_once() {
        let g = DpopGuard::new(false).unwrap();
        let (k, _) = ProofKey::generate().unwrap();
        let p = k.proof("POST", "https://w/x", None, None, NOW).unwrap();
        assert!(g.check(&p, &expected("https://w/x"), None).is_ok());
        assert!(matches!(
            g.check(&p, &expected("https://w/x"), None),
            Err(Error::Binding(Binding::Proof(DpopError::Replay)))
        ));
        let other = ProofKey::generate().unwrap().0.thumbprint().unwrap();
        let p2 = k.proof("POST", "https://w/x", None, None, NOW).unwrap();
        assert!(
            g.check(&p2, &expected("https://w/x"), Some(&other))
                .is_err()
        );
    }

    /// H7: an attestation proof is verified without being remembered, and
    /// remembered only when asked (once its credential was accepted); a
    /// full cache refuses only attestations whose credential is reusable.
    #[test]
    fn h7_attestation_proofs_are_remembered_only_when_asked() {
        let g = DpopGuard::with_attest_capacity(1);
        let url = "https://w/v1/attest";
        let (k, _) = ProofKey::generate().unwrap();
        let p = k.proof("POST", url, None, None, NOW).unwrap();
        let v = g.verify_attest(&p, &expected(url)).unwrap();
        assert!(
            g.verify_attest(&p, &expected(url)).is_ok(),
            "not remembered"
        );
        g.remember_attest(&v, NOW, false).unwrap();
        assert!(matches!(
            g.remember_attest(&v, NOW, true),
            Err(Error::Binding(Binding::Proof(DpopError::Replay)))
        ));
        let p2 = k.proof("POST", url, None, None, NOW).unwrap();
        let v2 = g.verify_attest(&p2, &expected(url)).unwrap();
        assert!(matches!(
            g.remember_attest(&v2, NOW, false),
            Err(Error::Unavailable(_))
        ));
        assert!(g.remember_attest(&v2, NOW, true).is_ok());
        // The bound-token cache is another one.
        assert!(g.check(&p2, &expected(url), None).is_ok());
    }

    #[test]
    fn nonces_are_required_and_expire() {
        let g = DpopGuard::new(true).unwrap();
        let (k, _) = ProofKey::generate().unwrap();
        let p = k.proof("POST", "https://w/x", None, None, NOW).unwrap();
        let Err(Error::Binding(Binding::UseNonce { nonce: n })) =
            g.check(&p, &expected("https://w/x"), None)
        else {
            panic!("a proof without a nonce was accepted")
        };
        let p = k.proof("POST", "https://w/x", None, Some(&n), NOW).unwrap();
        assert!(g.check(&p, &expected("https://w/x"), None).is_ok());
        let later = Expected {
            now: NOW.add_secs(NONCE_TTL_SECS + 1),
            ..expected("https://w/x")
        };
        let p = k
            .proof("POST", "https://w/x", None, Some(&n), later.now)
            .unwrap();
        assert!(g.check(&p, &later, None).is_err());
        assert!(!nonce_valid(g.nonce_key.as_ref().unwrap(), "garbage", NOW));
    }
}
