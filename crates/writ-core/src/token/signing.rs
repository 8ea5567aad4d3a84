//! The keys writ signs its tokens with, and their JWK thumbprints.

use super::*;

/// The algorithms writ signs its tokens with: EdDSA (Ed25519) by default,
/// ES256 (P-256) as an option for verifiers that refuse EdDSA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SigningAlg {
    #[default]
    EdDSA,
    ES256,
}

impl SigningAlg {
    /// The JOSE name (`alg`).
    pub fn name(self) -> &'static str {
        match self {
            SigningAlg::EdDSA => "EdDSA",
            SigningAlg::ES256 => "ES256",
        }
    }

    pub fn jose(self) -> Algorithm {
        match self {
            SigningAlg::EdDSA => Algorithm::EdDSA,
            SigningAlg::ES256 => Algorithm::ES256,
        }
    }

    pub(super) fn of(alg: Algorithm) -> Option<Self> {
        match alg {
            Algorithm::EdDSA => Some(SigningAlg::EdDSA),
            Algorithm::ES256 => Some(SigningAlg::ES256),
            _ => None,
        }
    }
}

impl std::str::FromStr for SigningAlg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "EdDSA" => Ok(SigningAlg::EdDSA),
            "ES256" => Ok(SigningAlg::ES256),
            other => Err(format!(
                "unsupported signing algorithm {other:?} (EdDSA or ES256)"
            )),
        }
    }
}

impl std::fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed key pair, made once: parsing PKCS#8 for each token cost as
/// much as the signature.
pub(super) enum Pair {
    Ed25519(Ed25519KeyPair),
    /// P-256, signing in the fixed `r || s` form JWS uses (RFC 7518 §3.4).
    P256(EcdsaKeyPair),
}

/// One signing key (Ed25519 or P-256).
pub struct SigningKey {
    pub(super) kid: String,
    pub(super) alg: SigningAlg,
    pub(super) pkcs8: Zeroizing<Vec<u8>>,
    /// The public JWK's key parameters.
    pub(super) params: AlgorithmParameters,
    pub(super) pair: Pair,
    /// The same key for the JOSE crate, which tests sign with directly.
    #[cfg(test)]
    pub(super) encoding: jsonwebtoken::EncodingKey,
    pub(super) decoding: DecodingKey,
    pub created_at: Timestamp,
    /// When a newer key replaced this one; it still verifies until every
    /// token it signed has expired.
    pub retired_at: Option<Timestamp>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new Ed25519 key.
    pub fn generate(now: Timestamp) -> Result<Self, TokenError> {
        Self::generate_for(SigningAlg::EdDSA, now)
    }

    /// A new key for `alg`.
    pub fn generate_for(alg: SigningAlg, now: Timestamp) -> Result<Self, TokenError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match alg {
            SigningAlg::EdDSA => {
                let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| TokenError::Key)?;
                Self::from_pkcs8(doc.as_ref(), now, None)
            }
            SigningAlg::ES256 => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| TokenError::Key)?;
                Self::from_pkcs8_for(alg, doc.as_ref(), now, None)
            }
        }
    }

    /// An Ed25519 key from its PKCS#8 document.
    pub fn from_pkcs8(
        pkcs8: &[u8],
        created_at: Timestamp,
        retired_at: Option<Timestamp>,
    ) -> Result<Self, TokenError> {
        Self::from_pkcs8_for(SigningAlg::EdDSA, pkcs8, created_at, retired_at)
    }

    /// A key for `alg` from its PKCS#8 document.
    pub fn from_pkcs8_for(
        alg: SigningAlg,
        pkcs8: &[u8],
        created_at: Timestamp,
        retired_at: Option<Timestamp>,
    ) -> Result<Self, TokenError> {
        let (kid, params, pair, decoding) = match alg {
            SigningAlg::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| TokenError::Key)?;
                let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
                let decoding = DecodingKey::from_ed_components(&x).map_err(|_| TokenError::Key)?;
                let params = AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: x.clone(),
                });
                (
                    ed25519_thumbprint(&x),
                    params,
                    Pair::Ed25519(pair),
                    decoding,
                )
            }
            SigningAlg::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                    .map_err(|_| TokenError::Key)?;
                // The uncompressed point: 0x04, then x and y (32 bytes each).
                let point = pair.public_key().as_ref();
                let (x, y) = match (point.get(1..33), point.get(33..65)) {
                    (Some(x), Some(y)) if point.len() == 65 => {
                        (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y))
                    }
                    _ => return Err(TokenError::Key),
                };
                let decoding =
                    DecodingKey::from_ec_components(&x, &y).map_err(|_| TokenError::Key)?;
                let kid = p256_thumbprint(&x, &y);
                let params = AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                    key_type: EllipticCurveKeyType::EC,
                    curve: EllipticCurve::P256,
                    x,
                    y,
                });
                (kid, params, Pair::P256(pair), decoding)
            }
        };
        Ok(Self {
            kid,
            alg,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            params,
            pair,
            #[cfg(test)]
            encoding: match alg {
                SigningAlg::EdDSA => jsonwebtoken::EncodingKey::from_ed_der(pkcs8),
                SigningAlg::ES256 => jsonwebtoken::EncodingKey::from_ec_der(pkcs8),
            },
            decoding,
            created_at,
            retired_at,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The same key under another `kid`.
    pub fn with_kid(mut self, kid: String) -> Self {
        self.kid = kid;
        self
    }

    /// `claims` signed with this key as a JWT of type `typ`.
    pub fn sign_typed<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, TokenError> {
        self.compact(&self.header(typ), claims)
    }

    /// The JWS compact serialization (RFC 7515 §7.1) of `claims` under
    /// `header`, signed with this key: the bytes `jsonwebtoken::encode`
    /// makes (Ed25519 is deterministic and a test holds them equal; P-256
    /// signatures are random, and a test verifies them with the JOSE
    /// crate), without parsing the key again for every token as
    /// `jsonwebtoken::encode` does (for P-256 that parse, with its
    /// consistency check, cost as much as the signature).
    pub(super) fn compact<T: Serialize>(
        &self,
        header: &Header,
        claims: &T,
    ) -> Result<String, TokenError> {
        let header = serde_json::to_vec(header).map_err(|_| TokenError::Sign)?;
        let claims = serde_json::to_vec(claims).map_err(|_| TokenError::Sign)?;
        let mut out = String::with_capacity((header.len() + claims.len() + 64) * 4 / 3 + 4);
        URL_SAFE_NO_PAD.encode_string(&header, &mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut out);
        match &self.pair {
            Pair::Ed25519(pair) => {
                let sig = pair.sign(out.as_bytes());
                out.push('.');
                URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut out);
            }
            Pair::P256(pair) => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let sig = pair
                    .sign(&rng, out.as_bytes())
                    .map_err(|_| TokenError::Sign)?;
                out.push('.');
                URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut out);
            }
        }
        Ok(out)
    }

    /// A header for a token of type `typ` signed by this key.
    pub(super) fn header(&self, typ: &str) -> Header {
        let mut header = Header::new(self.alg.jose());
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        header
    }

    /// The private key, PKCS#8. Callers seal it before it touches disk.
    pub fn expose_pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn jwk(&self) -> Jwk {
        Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_id: Some(self.kid.clone()),
                key_algorithm: Some(match self.alg {
                    SigningAlg::EdDSA => KeyAlgorithm::EdDSA,
                    SigningAlg::ES256 => KeyAlgorithm::ES256,
                }),
                ..Default::default()
            },
            algorithm: self.params.clone(),
        }
    }
}

/// RFC 7638 thumbprint of a P-256 public key given as base64url `x`, `y`.
pub fn p256_thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// RFC 7638 thumbprint of an Ed25519 public key given as base64url `x`.
pub fn ed25519_thumbprint(x: &str) -> String {
    // Members in lexicographic order, no whitespace (RFC 7638 §3.2).
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(d.as_ref())
}
