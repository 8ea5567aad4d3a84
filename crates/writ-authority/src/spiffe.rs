//! The trust domain's SPIFFE authorities: an X.509 CA that signs
//! X.509-SVIDs and an ES256 key that signs JWT-SVIDs (the SPIFFE JWT-SVID
//! profile allows no EdDSA). Both are P-256 keys generated with aws-lc-rs,
//! sealed with the master key in the store like the token signing keys,
//! and published as the SPIFFE bundle.

use std::sync::{Arc, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
    SignatureAlgorithm,
};
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::seal::MasterKey;
use writ_core::{Timestamp, random};
use writ_store::{Store, StoredSpiffeKey};

use crate::error::Error;

const CA: &str = "x509-ca";
const JWT: &str = "jwt-svid";
/// How long the X.509 authority is valid.
const CA_LIFETIME_SECS: i64 = 365 * 86_400;
/// How long a JWT-SVID signing key is used (and published after).
const JWT_KEY_LIFETIME_SECS: i64 = 90 * 86_400;
/// Clock skew allowed for at the start of a certificate's validity.
const BACKDATE_SECS: i64 = 60;

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

pub(crate) fn purpose(kid: &str) -> String {
    format!("writ spiffe key {kid}")
}

/// One P-256 key: its PKCS#8 document and its public point.
struct P256 {
    pkcs8: Vec<u8>,
    /// Uncompressed point: 0x04 || x || y.
    public: Vec<u8>,
}

impl P256 {
    fn generate() -> Result<Self, Error> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| internal("cannot generate a P-256 key"))?;
        Self::from_pkcs8(doc.as_ref())
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, Error> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|_| internal("a stored SPIFFE key is not a P-256 key"))?;
        Ok(Self {
            pkcs8: pkcs8.to_vec(),
            public: pair.public_key().as_ref().to_vec(),
        })
    }

    /// `(x, y)` in base64url, for a JWK.
    fn jwk_xy(&self) -> Result<(String, String), Error> {
        let (x, y) = self
            .public
            .get(1..33)
            .zip(self.public.get(33..65))
            .ok_or_else(|| internal("bad P-256 point"))?;
        Ok((URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y)))
    }

    fn rcgen(&self) -> Result<KeyPair, Error> {
        KeyPair::try_from(self.pkcs8.as_slice()).map_err(internal)
    }
}

/// A public key a node sent for a workload's SVID: an uncompressed P-256
/// point.
pub struct WorkloadKey(Vec<u8>);

impl WorkloadKey {
    pub fn parse(b64: &str) -> Result<Self, Error> {
        let raw = URL_SAFE_NO_PAD
            .decode(b64.trim_end_matches('='))
            .map_err(|_| Error::Invalid("public_key is not base64url".into()))?;
        // Checked as a verifying key: a point off the curve is refused.
        let ok = raw.len() == 65
            && raw.first() == Some(&4)
            && aws_lc_rs::signature::ParsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                &raw,
            )
            .is_ok();
        if !ok {
            return Err(Error::Invalid(
                "public_key must be an uncompressed P-256 point".into(),
            ));
        }
        Ok(Self(raw))
    }
}

impl PublicKeyData for WorkloadKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// What a leaf certificate names and may be used for.
struct Leaf {
    sans: Vec<SanType>,
    key_usages: Vec<KeyUsagePurpose>,
    extended: Vec<ExtendedKeyUsagePurpose>,
}

/// writ's own X.509-SVID for its mTLS listener.
pub struct ServerSvid {
    /// DER, the SVID first.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER.
    pub key: Vec<u8>,
    pub until: Timestamp,
}

struct Ca {
    cert: Vec<u8>,
    key: P256,
    not_after: Timestamp,
}

struct JwtKey {
    kid: String,
    key: P256,
    created_at: Timestamp,
    not_after: Timestamp,
}

#[derive(Default)]
struct Keys {
    /// Oldest first; the last is the one that signs.
    cas: Vec<Ca>,
    jwt: Vec<JwtKey>,
}

/// The trust domain of a SPIFFE ID (`spiffe://<td>/...`).
pub fn trust_domain_of(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    let td = rest.split('/').next()?;
    let ok = !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    (ok && rest.len() > td.len() + 1).then_some(td)
}

/// Algorithms a foreign JWT-SVID may use (the SPIFFE JWT-SVID profile).
const FOREIGN_ALGS: [jsonwebtoken::Algorithm; 8] = [
    jsonwebtoken::Algorithm::RS256,
    jsonwebtoken::Algorithm::RS384,
    jsonwebtoken::Algorithm::RS512,
    jsonwebtoken::Algorithm::ES256,
    jsonwebtoken::Algorithm::ES384,
    jsonwebtoken::Algorithm::PS256,
    jsonwebtoken::Algorithm::PS384,
    jsonwebtoken::Algorithm::PS512,
];

/// The authorities of one trust domain, and the JWT authorities of the
/// trust domains federated with it.
pub struct Authority {
    trust_domain: String,
    keys: RwLock<Arc<Keys>>,
    federated: std::collections::BTreeMap<String, jsonwebtoken::jwk::JwkSet>,
    /// JWT-SVIDs already used to attest, until they expire (per process).
    used: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

/// A federated trust domain's bundle (a SPIFFE bundle or a JWKS), parsed:
/// its JWT authorities (keys with a `kid`, `use` `jwt-svid` or none).
pub fn parse_federated_bundle(json: &str) -> Result<jsonwebtoken::jwk::JwkSet, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let keys = v
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("no \"keys\" array")?;
    let jwt: Vec<serde_json::Value> = keys
        .iter()
        .filter(|k| {
            k.get("kid").is_some()
                && k.get("use")
                    .and_then(serde_json::Value::as_str)
                    .is_none_or(|u| u == "jwt-svid")
        })
        .cloned()
        .collect();
    if jwt.is_empty() {
        return Err("no JWT authorities (keys with a kid and use jwt-svid)".into());
    }
    serde_json::from_value(serde_json::json!({ "keys": jwt })).map_err(|e| e.to_string())
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// The X.509 authority's name: rebuilt the same way whenever it signs, so
/// that issued certificates name exactly the CA certificate's subject.
fn ca_params(trust_domain: &str) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "writ");
    dn.push(
        DnType::CommonName,
        format!("writ {trust_domain} X.509 authority"),
    );
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{trust_domain}")
            .try_into()
            .map_err(internal)?,
    )];
    Ok(p)
}

fn offset(t: Timestamp) -> Result<time::OffsetDateTime, Error> {
    time::OffsetDateTime::from_unix_timestamp(t.secs()).map_err(internal)
}

fn serial() -> Result<SerialNumber, Error> {
    let mut bytes = random::bytes::<16>().map_err(internal)?;
    // Positive, non-zero.
    if let Some(b) = bytes.first_mut() {
        *b = (*b & 0x7f) | 0x01;
    }
    Ok(SerialNumber::from(bytes.to_vec()))
}

impl Authority {
    /// Loads the trust domain's keys, creating those missing or past half
    /// their life.
    pub async fn load(
        store: &dyn Store,
        master: &MasterKey,
        trust_domain: &str,
        federated: std::collections::BTreeMap<String, jsonwebtoken::jwk::JwkSet>,
        now: Timestamp,
    ) -> Result<Self, Error> {
        let this = Self {
            trust_domain: trust_domain.to_owned(),
            keys: RwLock::new(Arc::new(Keys::default())),
            federated,
            used: std::sync::Mutex::new(std::collections::HashMap::new()),
        };
        this.reload(store, master).await?;
        this.rotate(store, master, now, None).await?;
        Ok(this)
    }

    /// Adds a new X.509 authority and JWT-SVID key when the current ones
    /// are past half their life (or always, with `force`); the old ones
    /// stay in the bundle until they expire, so SVIDs they signed go on
    /// verifying. Returns whether anything was added.
    pub async fn rotate(
        &self,
        store: &dyn Store,
        master: &MasterKey,
        now: Timestamp,
        forced_by: Option<&str>,
    ) -> Result<bool, Error> {
        let force = forced_by.is_some();
        let actor = forced_by.unwrap_or("system");
        let keys = self.current();
        let ca_ok = !force
            && keys
                .cas
                .last()
                .is_some_and(|c| c.not_after.secs() > now.secs() + CA_LIFETIME_SECS / 2);
        let jwt_ok = !force
            && keys
                .jwt
                .iter()
                .map(|k| k.not_after.secs())
                .max()
                .is_some_and(|t| t > now.secs() + JWT_KEY_LIFETIME_SECS / 2);
        if !ca_ok {
            self.add_ca(store, master, now, actor).await?;
        }
        if !jwt_ok {
            self.add_jwt_key(store, master, now, actor).await?;
        }
        let added = !(ca_ok && jwt_ok);
        if added {
            self.reload(store, master).await?;
        }
        Ok(added)
    }

    /// How many X.509 authorities and JWT-SVID keys are published at `now`.
    pub fn published(&self, now: Timestamp) -> (usize, usize) {
        let keys = self.current();
        (
            keys.cas
                .iter()
                .filter(|c| c.not_after.secs() > now.secs())
                .count(),
            keys.jwt
                .iter()
                .filter(|k| k.not_after.secs() > now.secs())
                .count(),
        )
    }

    fn current(&self) -> Arc<Keys> {
        match self.keys.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Re-reads the keys from the store (another replica may have added one).
    pub async fn reload(&self, store: &dyn Store, master: &MasterKey) -> Result<(), Error> {
        let mut keys = Keys::default();
        for s in store.spiffe_keys().await? {
            let pkcs8 = master
                .open(&purpose(&s.kid), &s.sealed)
                .map_err(|e| internal(format!("SPIFFE key {}: {e}", s.kid)))?;
            let key = P256::from_pkcs8(&pkcs8)?;
            match s.kind.as_str() {
                CA => keys.cas.push(Ca {
                    cert: s.cert.unwrap_or_default(),
                    key,
                    not_after: s.not_after,
                }),
                JWT => keys.jwt.push(JwtKey {
                    kid: s.kid,
                    key,
                    created_at: s.created_at,
                    not_after: s.not_after,
                }),
                other => tracing::warn!(kind = other, "unknown SPIFFE key kind; ignored"),
            }
        }
        match self.keys.write() {
            Ok(mut g) => *g = Arc::new(keys),
            Err(p) => *p.into_inner() = Arc::new(keys),
        }
        Ok(())
    }

    async fn add_ca(
        &self,
        store: &dyn Store,
        master: &MasterKey,
        now: Timestamp,
        actor: &str,
    ) -> Result<(), Error> {
        let key = P256::generate()?;
        let mut params = ca_params(&self.trust_domain)?;
        params.not_before = offset(now.add_secs(-BACKDATE_SECS))?;
        let not_after = now.add_secs(CA_LIFETIME_SECS);
        params.not_after = offset(not_after)?;
        params.serial_number = Some(serial()?);
        let cert = params.self_signed(&key.rcgen()?).map_err(internal)?;
        let kid = format!("ca-{}", random::token_128().map_err(internal)?);
        let event = AuditEvent::new(AuditKind::KeyRotate, Outcome::Success, actor)
            .reason("X.509 authority for the trust domain")
            .detail(serde_json::json!({ "kid": kid, "trust_domain": self.trust_domain }));
        store
            .add_spiffe_key(
                StoredSpiffeKey {
                    sealed: master.seal(&purpose(&kid), &key.pkcs8).map_err(internal)?,
                    kid,
                    kind: CA.into(),
                    cert: Some(cert.der().to_vec()),
                    created_at: now,
                    not_after,
                },
                now,
                vec![event],
            )
            .await?;
        Ok(())
    }

    async fn add_jwt_key(
        &self,
        store: &dyn Store,
        master: &MasterKey,
        now: Timestamp,
        actor: &str,
    ) -> Result<(), Error> {
        let key = P256::generate()?;
        let kid = random::token_128().map_err(internal)?;
        let not_after = now.add_secs(JWT_KEY_LIFETIME_SECS);
        let event = AuditEvent::new(AuditKind::KeyRotate, Outcome::Success, actor)
            .reason("JWT-SVID signing key for the trust domain")
            .detail(serde_json::json!({ "kid": kid, "trust_domain": self.trust_domain }));
        store
            .add_spiffe_key(
                StoredSpiffeKey {
                    sealed: master.seal(&purpose(&kid), &key.pkcs8).map_err(internal)?,
                    kid,
                    kind: JWT.into(),
                    cert: None,
                    created_at: now,
                    not_after,
                },
                now,
                vec![event],
            )
            .await?;
        Ok(())
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The trust domains whose JWT-SVIDs are accepted besides this one.
    pub fn federated_domains(&self) -> Vec<String> {
        self.federated.keys().cloned().collect()
    }

    /// The X.509 authorities still valid at `now`, DER.
    pub fn x509_authorities(&self, now: Timestamp) -> Vec<Vec<u8>> {
        self.current()
            .cas
            .iter()
            .filter(|c| c.not_after.secs() > now.secs())
            .map(|c| c.cert.clone())
            .collect()
    }

    /// The JWT-SVID keys still published at `now`, as a JWKS (`use` =
    /// `jwt-svid`), the form the Workload API hands out.
    pub fn jwt_jwks(&self, now: Timestamp) -> Result<serde_json::Value, Error> {
        let mut keys = Vec::new();
        for k in self
            .current()
            .jwt
            .iter()
            .filter(|k| k.not_after.secs() > now.secs())
        {
            let (x, y) = k.key.jwk_xy()?;
            keys.push(serde_json::json!({
                "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": k.kid, "use": "jwt-svid",
            }));
        }
        Ok(serde_json::json!({ "keys": keys }))
    }

    /// The SPIFFE bundle (a JWKS with `use` `x509-svid` and `jwt-svid` keys).
    pub fn bundle(&self, now: Timestamp) -> Result<serde_json::Value, Error> {
        let keys = self.current();
        let mut out = Vec::new();
        for c in keys.cas.iter().filter(|c| c.not_after.secs() > now.secs()) {
            let (x, y) = c.key.jwk_xy()?;
            out.push(serde_json::json!({
                "kty": "EC", "crv": "P-256", "x": x, "y": y, "use": "x509-svid",
                "x5c": [STANDARD.encode(&c.cert)],
            }));
        }
        if let Some(serde_json::Value::Array(jwt)) = self.jwt_jwks(now)?.get("keys") {
            out.extend(jwt.iter().cloned());
        }
        let sequence = keys.cas.len() + keys.jwt.len();
        Ok(serde_json::json!({
            "keys": out,
            "spiffe_sequence": sequence,
            "spiffe_refresh_hint": 300,
        }))
    }

    /// writ's own server certificate for its mTLS listener: an X.509-SVID
    /// for `spiffe://<td>/writ` (also naming `hosts`, IPs or DNS names),
    /// with a key made here.
    pub fn server_svid(
        &self,
        hosts: &[String],
        now: Timestamp,
        ttl_secs: i64,
    ) -> Result<ServerSvid, Error> {
        let key = P256::generate()?;
        let mut sans = vec![SanType::URI(
            format!("spiffe://{}/writ", self.trust_domain)
                .try_into()
                .map_err(internal)?,
        )];
        for h in hosts {
            sans.push(match h.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(h.as_str().try_into().map_err(internal)?),
            });
        }
        let leaf = Leaf {
            sans,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            extended: vec![ExtendedKeyUsagePurpose::ServerAuth],
        };
        let (chain, until) = self.sign_leaf(leaf, &key.rcgen()?, now, ttl_secs)?;
        Ok(ServerSvid {
            chain,
            key: key.pkcs8,
            until,
        })
    }

    /// An X.509-SVID for `spiffe_id` and the workload's public key, valid
    /// from now for `ttl_secs` (never past the authority): the DER chain.
    pub fn sign_x509(
        &self,
        spiffe_id: &str,
        key: &WorkloadKey,
        now: Timestamp,
        ttl_secs: i64,
    ) -> Result<(Vec<Vec<u8>>, Timestamp), Error> {
        let leaf = Leaf {
            sans: vec![SanType::URI(spiffe_id.try_into().map_err(internal)?)],
            key_usages: vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
                KeyUsagePurpose::KeyAgreement,
            ],
            extended: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        self.sign_leaf(leaf, key, now, ttl_secs)
    }

    /// Signs a leaf certificate (CA:false, SPIFFE as organisation) for
    /// `public_key` with the current authority, valid from now for
    /// `ttl_secs` and never past the authority: the DER chain and its end.
    fn sign_leaf(
        &self,
        leaf: Leaf,
        public_key: &impl PublicKeyData,
        now: Timestamp,
        ttl_secs: i64,
    ) -> Result<(Vec<Vec<u8>>, Timestamp), Error> {
        let keys = self.current();
        let ca = keys
            .cas
            .last()
            .filter(|c| c.not_after.secs() > now.secs() + 60)
            .ok_or_else(|| Error::Unavailable("no valid X.509 authority".into()))?;
        let not_after =
            Timestamp::from_secs(now.secs().saturating_add(ttl_secs).min(ca.not_after.secs()));
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "SPIFFE");
        p.distinguished_name = dn;
        p.subject_alt_names = leaf.sans;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = leaf.key_usages;
        p.extended_key_usages = leaf.extended;
        p.not_before = offset(now.add_secs(-BACKDATE_SECS))?;
        p.not_after = offset(not_after)?;
        p.serial_number = Some(serial()?);
        p.use_authority_key_identifier_extension = true;
        let ca_key = ca.key.rcgen()?;
        let issuer = Issuer::new(ca_params(&self.trust_domain)?, &ca_key);
        let cert = p.signed_by(public_key, &issuer).map_err(internal)?;
        Ok((vec![cert.der().to_vec(), ca.cert.clone()], not_after))
    }

    /// A JWT-SVID (ES256) for `spiffe_id` and `audience`.
    pub fn sign_jwt(
        &self,
        spiffe_id: &str,
        audience: &[String],
        now: Timestamp,
        ttl_secs: i64,
    ) -> Result<(String, Timestamp), Error> {
        let keys = self.current();
        let k = keys
            .jwt
            .iter()
            .filter(|k| k.not_after.secs() > now.secs() + ttl_secs)
            .max_by_key(|k| k.created_at.millis())
            .ok_or_else(|| Error::Unavailable("no JWT-SVID key".into()))?;
        let exp = now.add_secs(ttl_secs);
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(k.kid.clone());
        header.typ = Some("JWT".into());
        let claims = serde_json::json!({
            "sub": spiffe_id,
            "aud": audience,
            "exp": exp.secs(),
            "iat": now.secs(),
            "jti": random::token_128().map_err(internal)?,
        });
        let enc = jsonwebtoken::EncodingKey::from_ec_der(&k.key.pkcs8);
        let token = jsonwebtoken::encode(&header, &claims, &enc).map_err(internal)?;
        Ok((token, exp))
    }

    /// Verifies a JWT-SVID of this trust domain: its signature, `exp`, that
    /// `audience` is among its audiences and that `sub` is `spiffe_id`.
    pub fn verify_jwt(
        &self,
        token: &str,
        spiffe_id: &str,
        audience: &str,
        now: Timestamp,
    ) -> Result<(String, i64), String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.ok_or("no kid")?;
        let td = trust_domain_of(spiffe_id).ok_or("not a SPIFFE ID")?;
        let dec = if td == self.trust_domain {
            if header.alg != jsonwebtoken::Algorithm::ES256 {
                return Err(format!("algorithm {:?} is not accepted", header.alg));
            }
            let keys = self.current();
            let k = keys
                .jwt
                .iter()
                .find(|k| k.kid == kid && k.not_after.secs() > now.secs())
                .ok_or("unknown or retired kid")?;
            let (x, y) = k.key.jwk_xy().map_err(|e| e.to_string())?;
            jsonwebtoken::DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?
        } else {
            // A federated trust domain: its own keys, the profile's algorithms.
            let set = self
                .federated
                .get(td)
                .ok_or_else(|| format!("trust domain {td} is not federated"))?;
            if !FOREIGN_ALGS.contains(&header.alg) {
                return Err(format!("algorithm {:?} is not accepted", header.alg));
            }
            let jwk = set.find(&kid).ok_or("unknown kid")?;
            if jwk
                .common
                .key_algorithm
                .is_some_and(|a| a.to_string() != format!("{:?}", header.alg))
            {
                return Err("the key is for another algorithm".into());
            }
            jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?
        };
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "sub", "aud"]);
        v.validate_exp = false;
        v.leeway = 0;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &dec, &v)
            .map_err(|e| e.to_string())?;
        let exp = data
            .claims
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .ok_or("no exp")?;
        if exp + 30 <= now.secs() {
            return Err("expired".into());
        }
        if data.claims.get("sub").and_then(serde_json::Value::as_str) != Some(spiffe_id) {
            return Err("sub is not the agent's SPIFFE ID".into());
        }
        // Without a jti the token itself names the use.
        let jti = data
            .claims
            .get("jti")
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| token.to_owned(), str::to_owned);
        Ok((jti, exp))
    }

    /// Accepts each JWT-SVID for attestation once (until it expires).
    pub fn first_use(&self, jti: &str, exp: i64, now: Timestamp) -> Result<(), String> {
        let mut used = match self.used.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        used.retain(|_, e| *e + 30 > now.secs());
        if used.len() >= 100_000 {
            return Err("too many JWT-SVIDs in flight; try again".into());
        }
        if used.insert(jti.to_owned(), exp).is_some() {
            return Err("this JWT-SVID was already used".into());
        }
        Ok(())
    }
}
