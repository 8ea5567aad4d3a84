//! What the node holds: the agents it serves, their current X.509-SVIDs
//! (key made here), and the trust bundles; renewed by `refresh`, with a
//! version every open stream watches.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tokio::sync::watch;
use writ_core::api::{NodeEntry, X509SvidRequest};
use writ_core::{Clock as _, SystemClock, Timestamp};

use crate::broker::CallError;
use writ_client::Client;

/// One agent's current X.509-SVID.
#[derive(Clone)]
pub struct Issued {
    pub spiffe_id: String,
    /// PKCS#8 DER; never leaves the node but to the workload.
    pub key: Vec<u8>,
    /// DER, the SVID first.
    pub chain: Vec<Vec<u8>>,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Issued {
    fn renew_at(&self) -> i64 {
        self.issued_at.secs() + (self.expires_at.secs() - self.issued_at.secs()) / 2
    }
}

#[derive(Default)]
struct Held {
    trust_domain: String,
    entries: Vec<NodeEntry>,
    svids: HashMap<String, Issued>,
    /// DER certificates of the X.509 authorities.
    x509_bundle: Vec<Vec<u8>>,
    /// The JWT authorities as a JWKS document.
    jwt_bundle: Vec<u8>,
}

pub struct State {
    broker: Client,
    held: RwLock<Held>,
    /// Set once the broker refuses the node's credential: nothing is
    /// served any more.
    cut_off: AtomicBool,
    version: watch::Sender<u64>,
}

fn new_key() -> Option<(Vec<u8>, Vec<u8>)> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .ok()?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).ok()?;
    Some((doc.as_ref().to_vec(), pair.public_key().as_ref().to_vec()))
}

impl State {
    pub fn new(broker: Client) -> Self {
        Self {
            broker,
            held: RwLock::new(Held::default()),
            cut_off: AtomicBool::new(false),
            version: watch::channel(0).0,
        }
    }

    pub fn broker(&self) -> &Client {
        &self.broker
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub fn cut_off(&self) -> bool {
        self.cut_off.load(Ordering::Relaxed)
    }

    fn read<T>(&self, f: impl FnOnce(&Held) -> T) -> T {
        match self.held.read() {
            Ok(g) => f(&g),
            Err(p) => f(&p.into_inner()),
        }
    }

    fn write<T>(&self, f: impl FnOnce(&mut Held) -> T) -> T {
        match self.held.write() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    pub fn trust_domain(&self) -> String {
        self.read(|h| h.trust_domain.clone())
    }

    /// The entries whose selectors the workload's all satisfy.
    pub fn entries_for(&self, selectors: &[String]) -> Vec<NodeEntry> {
        if self.cut_off() {
            return Vec::new();
        }
        self.read(|h| {
            h.entries
                .iter()
                .filter(|e| crate::attestor::matches(&e.selectors, selectors))
                .cloned()
                .collect()
        })
    }

    /// The current X.509-SVIDs of those entries.
    pub fn svids_for(&self, selectors: &[String]) -> Vec<(NodeEntry, Issued)> {
        let entries = self.entries_for(selectors);
        self.read(|h| {
            entries
                .into_iter()
                .filter_map(|e| h.svids.get(e.agent.as_str()).cloned().map(|s| (e, s)))
                .collect()
        })
    }

    pub fn x509_bundle(&self) -> Vec<Vec<u8>> {
        self.read(|h| h.x509_bundle.clone())
    }

    pub fn jwt_bundle(&self) -> Vec<u8> {
        self.read(|h| h.jwt_bundle.clone())
    }

    /// Fetches entries and bundles, renews SVIDs past half their life, and
    /// drops those of agents no longer served; streams hear of any change.
    pub async fn refresh(&self) {
        if self.cut_off() {
            return;
        }
        let entries = match self.broker.node_entries().await.map_err(CallError::from) {
            Ok(e) => e,
            Err(CallError::Unauthorized) => {
                tracing::warn!("the broker refused this node's credential; serving nothing");
                self.cut_off.store(true, Ordering::Relaxed);
                self.write(|h| *h = Held::default());
                self.bump();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch this node's entries; keeping what it has");
                return;
            }
        };
        let mut changed = false;
        if let Ok(bundle) = self.broker.spiffe_bundle().await {
            let (x509, jwt) = split_bundle(&bundle);
            changed |= self.write(|h| {
                let c = h.x509_bundle != x509 || h.jwt_bundle != jwt;
                h.x509_bundle = x509;
                h.jwt_bundle = jwt;
                c
            });
        }
        let now = SystemClock.now();
        let mut svids: HashMap<String, Issued> = self.read(|h| h.svids.clone());
        let before: Vec<String> = svids.keys().cloned().collect();
        svids.retain(|agent, _| entries.entries.iter().any(|e| e.agent.as_str() == agent));
        changed |= svids.len() != before.len();
        for e in &entries.entries {
            let due = svids
                .get(e.agent.as_str())
                .is_none_or(|s| now.secs() >= s.renew_at() || s.spiffe_id != e.spiffe_id);
            if !due {
                continue;
            }
            match self.issue(e, now).await {
                Ok(s) => {
                    svids.insert(e.agent.to_string(), s);
                    changed = true;
                }
                Err(CallError::Unauthorized) => {
                    self.cut_off.store(true, Ordering::Relaxed);
                    self.write(|h| *h = Held::default());
                    self.bump();
                    return;
                }
                Err(err) => {
                    tracing::warn!(agent = %e.agent, error = %err, "cannot renew an X.509-SVID");
                    // Refused (the agent was quarantined meanwhile): gone.
                    if matches!(err, CallError::Forbidden(_))
                        && svids.remove(e.agent.as_str()).is_some()
                    {
                        changed = true;
                    }
                }
            }
        }
        let served: Vec<NodeEntry> = entries.entries;
        changed |= self.write(|h| {
            let c = h.entries != served || h.trust_domain != entries.trust_domain;
            h.entries = served;
            h.trust_domain = entries.trust_domain;
            h.svids = svids;
            c
        });
        if changed {
            self.bump();
        }
    }

    async fn issue(&self, e: &NodeEntry, now: Timestamp) -> Result<Issued, CallError> {
        let (key, public) = new_key().ok_or(CallError::Key)?;
        let issued = self
            .broker
            .x509_svid(&X509SvidRequest {
                agent: e.agent.clone(),
                public_key: URL_SAFE_NO_PAD.encode(public),
                selectors: e.selectors.clone(),
            })
            .await?;
        let chain = issued
            .chain
            .iter()
            .map(|c| URL_SAFE_NO_PAD.decode(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CallError::Chain)?;
        tracing::info!(agent = %e.agent, expires_at = %issued.expires_at.to_rfc3339(), "X.509-SVID issued");
        Ok(Issued {
            spiffe_id: issued.spiffe_id,
            key,
            chain,
            issued_at: now,
            expires_at: issued.expires_at,
        })
    }
}

/// The bundle's X.509 authorities (DER) and its JWT authorities (a JWKS of
/// the `jwt-svid` keys only, the form workloads verify JWT-SVIDs with).
fn split_bundle(bundle: &serde_json::Value) -> (Vec<Vec<u8>>, Vec<u8>) {
    let keys = bundle
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut x509 = Vec::new();
    let mut jwt = Vec::new();
    for k in keys {
        match k.get("use").and_then(serde_json::Value::as_str) {
            Some("x509-svid") => {
                if let Some(der) = k
                    .get("x5c")
                    .and_then(serde_json::Value::as_array)
                    .and_then(|a| a.first())
                    .and_then(serde_json::Value::as_str)
                    .and_then(|c| STANDARD.decode(c).ok())
                {
                    x509.push(der);
                }
            }
            Some("jwt-svid") => jwt.push(k),
            _ => {}
        }
    }
    let jwks = serde_json::to_vec(&serde_json::json!({ "keys": jwt })).unwrap_or_default();
    (x509, jwks)
}
