//! Randomness for identifiers and secrets, from the crypto backend's CSPRNG.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The CSPRNG failed; nothing random can be trusted, so callers fail closed.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// `n` random bytes.
pub fn bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut buf = [0u8; N];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| RandomError)?;
    Ok(buf)
}

/// 128 random bits, base64url without padding (22 characters).
pub fn token_128() -> Result<String, RandomError> {
    Ok(URL_SAFE_NO_PAD.encode(bytes::<16>()?))
}

/// 256 random bits, base64url without padding (43 characters).
pub fn token_256() -> Result<String, RandomError> {
    Ok(URL_SAFE_NO_PAD.encode(bytes::<32>()?))
}
