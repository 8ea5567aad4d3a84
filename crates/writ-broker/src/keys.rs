//! Signing keys: sealed in the store, held unsealed in memory only.

use std::sync::{Arc, RwLock};

use writ_core::Timestamp;
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::seal::MasterKey;
use writ_core::token::{KeyRing, SigningKey};
use writ_store::{Store, StoredKey};

use crate::error::ApiError;

const ALG: &str = "EdDSA";

fn purpose(kid: &str) -> String {
    format!("signing-key:{kid}")
}

/// The live key ring, swapped whole on rotation.
#[derive(Debug)]
pub struct KeyService {
    ring: RwLock<Arc<KeyRing>>,
}

impl KeyService {
    /// Loads every stored key; creates the first one if there is none.
    pub async fn load(
        store: &dyn Store,
        master: &MasterKey,
        now: Timestamp,
    ) -> Result<Self, ApiError> {
        let mut stored = store.signing_keys().await?;
        if stored.is_empty() {
            let key = seal_new(master, now)?;
            let event = AuditEvent::new(AuditKind::KeyRotate, Outcome::Success, "system")
                .reason("first signing key")
                .detail(serde_json::json!({ "kid": key.kid }));
            store.add_signing_key(key, now, vec![event]).await?;
            stored = store.signing_keys().await?;
        }
        let ring = unseal_all(master, &stored)?;
        Ok(Self {
            ring: RwLock::new(Arc::new(ring)),
        })
    }

    pub fn ring(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Adds a new active key; older keys stay published until their tokens
    /// have expired. Returns `(new kid, previous kid)`.
    pub async fn rotate(
        &self,
        store: &dyn Store,
        master: &MasterKey,
        now: Timestamp,
        actor: &str,
    ) -> Result<(String, Option<String>), ApiError> {
        let previous = self.ring().active().map(|k| k.kid().to_owned());
        let key = seal_new(master, now)?;
        let kid = key.kid.clone();
        let event = AuditEvent::new(AuditKind::KeyRotate, Outcome::Success, actor)
            .detail(serde_json::json!({ "kid": kid, "previous_kid": previous }));
        store.add_signing_key(key, now, vec![event]).await?;
        self.reload(store, master).await?;
        Ok((kid, previous))
    }

    /// Re-reads the keys from the store.
    pub async fn reload(&self, store: &dyn Store, master: &MasterKey) -> Result<(), ApiError> {
        let ring = unseal_all(master, &store.signing_keys().await?)?;
        match self.ring.write() {
            Ok(mut g) => *g = Arc::new(ring),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
        }
        Ok(())
    }
}

fn seal_new(master: &MasterKey, now: Timestamp) -> Result<StoredKey, ApiError> {
    let key = SigningKey::generate(now).map_err(|e| ApiError::Internal(e.to_string()))?;
    let sealed = master
        .seal(&purpose(key.kid()), key.expose_pkcs8())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(StoredKey {
        kid: key.kid().to_owned(),
        alg: ALG.to_owned(),
        sealed,
        created_at: now,
        retired_at: None,
    })
}

fn unseal_all(master: &MasterKey, stored: &[StoredKey]) -> Result<KeyRing, ApiError> {
    let mut keys = Vec::with_capacity(stored.len());
    for s in stored {
        if s.alg != ALG {
            return Err(ApiError::Internal(format!(
                "signing key {} has unsupported alg {}",
                s.kid, s.alg
            )));
        }
        let pkcs8 = master.open(&purpose(&s.kid), &s.sealed).map_err(|_| {
            ApiError::Internal(format!(
                "signing key {} cannot be unsealed: is this the master key the data was created with?",
                s.kid
            ))
        })?;
        let key = SigningKey::from_pkcs8(&pkcs8, s.created_at, s.retired_at)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if key.kid() != s.kid {
            return Err(ApiError::Internal(format!(
                "signing key {} does not match its id",
                s.kid
            )));
        }
        keys.push(key);
    }
    Ok(KeyRing::new(keys))
}
