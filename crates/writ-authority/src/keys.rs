//! Signing keys: sealed in the store, held unsealed in memory only.

use std::sync::{Arc, RwLock};

use writ_core::Timestamp;
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::seal::MasterKey;
use writ_core::token::{KeyRing, SigningAlg, SigningKey};
use writ_store::{Store, StoreError, StoredKey};

use crate::error::Error;

/// Why the signing keys cannot be loaded or added.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A stored key does not open with the master key given: the store
    /// was made with another master key (or the sealed key was altered).
    #[error("signing key {kid} cannot be unsealed with this master key")]
    WrongMasterKey { kid: String },
    /// A stored key opened but is not usable.
    #[error("signing key {kid}: {message}")]
    Invalid { kid: String, message: String },
    /// A new key could not be made or sealed.
    #[error("cannot make a signing key: {0}")]
    Generate(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<KeyError> for Error {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Store(s) => s.into(),
            other => Error::Internal(other.to_string()),
        }
    }
}

pub(crate) fn purpose(kid: &str) -> String {
    format!("signing-key:{kid}")
}

/// The live key ring, swapped whole on rotation.
#[derive(Debug)]
pub struct KeyService {
    ring: RwLock<Arc<KeyRing>>,
    /// What new keys sign with (`writ serve --signing-alg`).
    alg: SigningAlg,
}

impl KeyService {
    /// Loads every stored key; creates the first one if there is none,
    /// and a new active one if the active key signs with another
    /// algorithm than `alg` (the old one stays published until its tokens
    /// have expired).
    pub async fn load(
        store: &dyn Store,
        master: &MasterKey,
        now: Timestamp,
        alg: SigningAlg,
    ) -> Result<Self, KeyError> {
        let mut stored = store.signing_keys().await?;
        let active_alg = stored
            .iter()
            .rev()
            .find(|k| k.retired_at.is_none())
            .map(|k| k.alg.clone());
        let why = match active_alg {
            None if stored.is_empty() => Some("first signing key"),
            None => Some("no active signing key"),
            Some(a) if a != alg.name() => Some("signing algorithm changed"),
            Some(_) => None,
        };
        if let Some(why) = why {
            let key = seal_new(master, now, alg)?;
            let event = AuditEvent::new(AuditKind::KeyRotate, Outcome::Success, "system")
                .reason(why)
                .detail(serde_json::json!({ "kid": key.kid, "alg": alg.name() }));
            store.add_signing_key(key, now, vec![event]).await?;
            stored = store.signing_keys().await?;
        }
        let ring = unseal_all(master, &stored)?;
        Ok(Self {
            ring: RwLock::new(Arc::new(ring)),
            alg,
        })
    }

    /// What new keys sign with.
    pub fn alg(&self) -> SigningAlg {
        self.alg
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
    ) -> Result<(String, Option<String>), Error> {
        let previous = self.ring().active().map(|k| k.kid().to_owned());
        let key = seal_new(master, now, self.alg)?;
        let kid = key.kid.clone();
        let event = AuditEvent::new(AuditKind::KeyRotate, Outcome::Success, actor)
            .detail(serde_json::json!({ "kid": kid, "previous_kid": previous }));
        store.add_signing_key(key, now, vec![event]).await?;
        self.reload(store, master).await?;
        Ok((kid, previous))
    }

    /// Re-reads the keys from the store.
    pub async fn reload(&self, store: &dyn Store, master: &MasterKey) -> Result<(), Error> {
        let ring = unseal_all(master, &store.signing_keys().await?)?;
        match self.ring.write() {
            Ok(mut g) => *g = Arc::new(ring),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
        }
        Ok(())
    }
}

fn seal_new(master: &MasterKey, now: Timestamp, alg: SigningAlg) -> Result<StoredKey, KeyError> {
    let key = SigningKey::generate_for(alg, now).map_err(|e| KeyError::Generate(e.to_string()))?;
    let sealed = master
        .seal(&purpose(key.kid()), key.expose_pkcs8())
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok(StoredKey {
        kid: key.kid().to_owned(),
        alg: alg.name().to_owned(),
        sealed,
        created_at: now,
        retired_at: None,
    })
}

fn unseal_all(master: &MasterKey, stored: &[StoredKey]) -> Result<KeyRing, KeyError> {
    let mut keys = Vec::with_capacity(stored.len());
    for s in stored {
        let invalid = |message: String| KeyError::Invalid {
            kid: s.kid.clone(),
            message,
        };
        let alg: SigningAlg = s
            .alg
            .parse()
            .map_err(|_| invalid(format!("unsupported alg {}", s.alg)))?;
        let pkcs8 = master
            .open(&purpose(&s.kid), &s.sealed)
            .map_err(|_| KeyError::WrongMasterKey { kid: s.kid.clone() })?;
        let key = SigningKey::from_pkcs8_for(alg, &pkcs8, s.created_at, s.retired_at)
            .map_err(|e| invalid(e.to_string()))?;
        if key.kid() != s.kid {
            return Err(invalid("does not match its id".into()));
        }
        keys.push(key);
    }
    Ok(KeyRing::new(keys))
}
