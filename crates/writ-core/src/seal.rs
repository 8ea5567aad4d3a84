//! Sealing at rest: AES-256-GCM under the master key.
//!
//! A sealed blob is `version (1) || nonce (12) || ciphertext || tag (16)`.
//! The associated data binds a blob to its purpose and row (for example
//! `signing-key:<kid>`), so a blob copied into another row fails to open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::random;

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("master key must be exactly 32 bytes")]
    BadKeyLength,
    #[error("sealed data is malformed or was not sealed under this master key")]
    Open,
    #[error("sealing failed")]
    Seal,
    #[error(transparent)]
    Random(#[from] random::RandomError),
}

/// The key that seals every secret writ keeps at rest.
pub struct MasterKey {
    key: LessSafeKey,
    raw: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn generate() -> Result<Self, SealError> {
        Self::from_bytes(&random::bytes::<32>()?)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let raw: [u8; 32] = bytes.try_into().map_err(|_| SealError::BadKeyLength)?;
        let unbound = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| SealError::BadKeyLength)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            raw: Zeroizing::new(raw),
        })
    }

    /// The raw key, for writing it to its 0600 file.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.raw
    }

    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce_bytes = random::bytes::<NONCE_LEN>()?;
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(purpose.as_bytes()), &mut buf)
            .map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (version, rest) = sealed.split_first().ok_or(SealError::Open)?;
        if *version != VERSION || rest.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce_bytes, ct) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce_bytes).map_err(|_| SealError::Open)?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buf)
            .map_err(|_| SealError::Open)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let k = MasterKey::generate().unwrap();
        let sealed = k.seal("signing-key:a", b"top secret").unwrap();
        assert_eq!(
            &k.open("signing-key:a", &sealed).unwrap()[..],
            b"top secret"
        );
        assert!(
            k.open("signing-key:b", &sealed).is_err(),
            "purpose is bound"
        );
        let mut flipped = sealed.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        assert!(k.open("signing-key:a", &flipped).is_err());
        let other = MasterKey::generate().unwrap();
        assert!(other.open("signing-key:a", &sealed).is_err());
        assert!(k.open("x", &[]).is_err());
        assert!(!sealed.windows(10).any(|w| w == b"top secret"));
    }
}
