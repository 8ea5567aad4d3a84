//! Key rotation: writ's signing keys and the trust domain's SPIFFE
//! authorities.

use writ_core::api::KeyRotated;

use super::Broker;
use crate::error::Error;

impl Broker {
    /// A new X.509 authority and JWT-SVID key for the trust domain, now.
    pub async fn rotate_spiffe_keys(&self, actor: &str) -> Result<serde_json::Value, Error> {
        let now = self.now();
        self.spiffe
            .rotate(self.store.as_ref(), self.master(), now, Some(actor))
            .await?;
        let (x509, jwt) = self.spiffe.published(now);
        Ok(serde_json::json!({
            "trust_domain": self.spiffe.trust_domain(),
            "x509_authorities": x509,
            "jwt_keys": jwt,
        }))
    }

    pub async fn rotate_keys(&self, actor: &str) -> Result<KeyRotated, Error> {
        let (kid, previous_kid) = self
            .keys
            .rotate(self.store.as_ref(), self.master(), self.now(), actor)
            .await?;
        Ok(KeyRotated { kid, previous_kid })
    }
}
