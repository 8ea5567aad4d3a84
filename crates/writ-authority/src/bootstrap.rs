//! Opening a data directory: the master key, the store, the signing keys
//! and the first admin credential.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use writ_core::api::Role;
use writ_core::audit::{AuditEvent, AuditKind, Outcome};
use writ_core::seal::MasterKey;
use writ_core::{Clock, Secret, random};
use writ_policy::PolicySet;
use writ_store::{SqlStore, Store};

use crate::config::BrokerConfig;
use crate::keys::{KeyError, KeyService};
use crate::service::{Broker, hash_secret};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("data directory {path}: {message}")]
    DataDir { path: String, message: String },
    #[error("master key {path}: {message}")]
    MasterKey { path: String, message: String },
    #[error("store: {0}")]
    Store(writ_store::StoreError),
    /// The store could not be opened at all: why, and what to check.
    #[error("cannot open the store: {cause}; {fix}")]
    OpenStore { cause: String, fix: String },
    #[error("store address: {0}")]
    StoreAddress(String),
    /// The store was made with another master key: nothing sealed in it
    /// opens with this one.
    #[error(
        "the store's signing keys (key {kid}) were sealed with a different master key than \
         {path}: every replica, and every restart, must use the master key the store was created \
         with (the same --master-key-file on every replica, or a copy of the first one's \
         <data-dir>/master.key)"
    )]
    WrongMasterKey { path: String, kid: String },
    #[error("signing keys: {0}")]
    Keys(String),
    /// A failure the broker would answer as an internal error, with its
    /// cause: at startup the operator needs the cause, not the HTTP text.
    #[error("{0}")]
    Broker(String),
    #[error(transparent)]
    Random(#[from] writ_core::random::RandomError),
}

// By hand rather than `#[from]`: the store's message is the whole of this
// one, and a source would print it twice.
impl From<writ_store::StoreError> for BootstrapError {
    fn from(e: writ_store::StoreError) -> Self {
        BootstrapError::Store(e)
    }
}

impl From<crate::error::Error> for BootstrapError {
    fn from(e: crate::error::Error) -> Self {
        BootstrapError::Broker(e.cause())
    }
}

/// Where the broker keeps its state.
#[derive(Clone, Debug)]
pub struct DataDir {
    pub path: PathBuf,
    /// Defaults to `<path>/master.key`.
    pub master_key_file: Option<PathBuf>,
    /// A PostgreSQL URL to keep state in instead of `<path>/writ.db`.
    pub store: Option<Secret>,
}

impl DataDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            master_key_file: None,
            store: None,
        }
    }

    fn master_key_path(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| self.path.join("master.key"))
    }

    pub fn database_path(&self) -> PathBuf {
        self.path.join("writ.db")
    }
}

/// An opened broker, and the admin token to show once if one was created.
pub struct Opened {
    pub broker: Arc<Broker>,
    /// Set only on the first start without a given admin token.
    pub bootstrap_admin_token: Option<Secret>,
}

/// Where the first live policy set comes from.
#[derive(Debug)]
pub enum InitialPolicy {
    /// A compiled set from `config.policy_dir` or shipped with the binary.
    Set { set: PolicySet, origin: String },
    /// The set that was live last (pushed through the API), else empty.
    Stored,
}

/// The name of the admin credential a dev start makes.
pub const DEV_ADMIN: &str = "dev";
/// The name of the admin credential the first start without `--dev` makes.
pub const BOOTSTRAP_ADMIN: &str = "bootstrap";

/// Opens (creating on first start) the broker's state in `dir`.
pub async fn open(
    dir: &DataDir,
    config: BrokerConfig,
    policy: InitialPolicy,
    clock: Arc<dyn Clock>,
    given_admin_token: Option<&Secret>,
) -> Result<Opened, BootstrapError> {
    let mut config = config;
    // Given a credential to use means a dev start.
    config.dev |= given_admin_token.is_some();
    if config.audit_checkpoint_file.is_none() {
        config.audit_checkpoint_file = Some(dir.path.join("audit-checkpoint.jwt"));
    }
    if config.audit_archive_dir.is_none() {
        config.audit_archive_dir = Some(dir.path.join("audit-archive"));
    }
    create_dir(&dir.path)?;
    let master_path = dir.master_key_path();
    let master = Arc::new(load_or_create_master(&master_path)?);
    let store = open_store(dir).await?;
    let now = clock.now();
    let keys = KeyService::load(store.as_ref(), &master, now, config.signing_alg)
        .await
        .map_err(|e| match e {
            KeyError::WrongMasterKey { kid } => BootstrapError::WrongMasterKey {
                path: master_path.display().to_string(),
                kid,
            },
            KeyError::Store(s) => BootstrapError::Store(s),
            other => BootstrapError::Keys(other.to_string()),
        })?;
    let spiffe = crate::spiffe::Authority::load(
        store.as_ref(),
        &master,
        &config.trust_domain,
        config.federated.clone(),
        now,
    )
    .await?;

    let mut bootstrap_admin_token = None;
    if let Some(t) = given_admin_token {
        // A dev start's credential replaces the last dev start's, and is
        // marked: a start without --dev refuses it.
        let hash = hash_secret(t.expose());
        if store.admin_token(&hash).await?.is_none_or(|c| !c.dev) {
            let event = AuditEvent::new(AuditKind::AdminTokenCreate, Outcome::Success, "system")
                .reason(format!("admin credential {DEV_ADMIN} given at a dev start"));
            store
                .add_admin_token(DEV_ADMIN, &hash, Role::Admin, true, now, vec![event])
                .await?;
        }
    } else if store.admin_token_count().await? == 0 {
        let token = Secret::new(format!("writ_admin_{}", random::token_256()?));
        let event = AuditEvent::new(AuditKind::Bootstrap, Outcome::Success, "system").reason(
            format!("bootstrap admin credential {BOOTSTRAP_ADMIN} created"),
        );
        store
            .add_admin_token(
                BOOTSTRAP_ADMIN,
                &hash_secret(token.expose()),
                Role::Admin,
                false,
                now,
                vec![event],
            )
            .await?;
        bootstrap_admin_token = Some(token);
    }
    if given_admin_token.is_none() {
        let dev = store
            .admin_tokens()
            .await?
            .into_iter()
            .filter(|c| c.dev)
            .count();
        if dev > 0 {
            tracing::warn!(
                credentials = dev,
                "this data directory holds admin credentials made by `writ serve --dev`; they are refused by this start (remove them with `writ admin token revoke {DEV_ADMIN}`)"
            );
        }
    }

    let empty = PolicySet::empty().map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    let (set, origin) = match policy {
        InitialPolicy::Set { set, origin } => (set, origin),
        InitialPolicy::Stored => match store.latest_policy().await? {
            Some((version, sources)) => {
                let set = crate::service::compile_stored("policy set", &version, sources)?;
                (set, "store".to_owned())
            }
            None => {
                tracing::warn!(
                    "no policy set: every task is denied until one is pushed (writ policy push)"
                );
                (empty.clone(), "empty".to_owned())
            }
        },
    };
    let broker = Broker::new(store, keys, spiffe, empty, clock, config, master)?;
    broker.policies.set_live(set, &origin, "system").await?;
    broker.policies.restore_shadow().await?;
    Ok(Opened {
        broker: Arc::new(broker),
        bootstrap_admin_token,
    })
}

/// The store `dir` names: SQLite in the data directory, or PostgreSQL.
async fn open_store(dir: &DataDir) -> Result<Arc<dyn Store>, BootstrapError> {
    Ok(match &dir.store {
        None => {
            let path = dir.database_path();
            Arc::new(
                SqlStore::open_sqlite(&path).map_err(|e| BootstrapError::OpenStore {
                    cause: e.to_string(),
                    fix: format!(
                        "check that {} can be read and written by this user and that no \
                         other program holds it",
                        path.display()
                    ),
                })?,
            )
        }
        Some(url) => Arc::new(open_postgres(url.expose()).await?),
    })
}

/// A store at `url`: PostgreSQL is the one kind of address accepted.
async fn open_postgres(url: &str) -> Result<SqlStore, BootstrapError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(BootstrapError::StoreAddress(
            "expected postgres://user:password@host:port/database (leave it unset for SQLite in the data directory)".into(),
        ));
    }
    SqlStore::connect_postgres(url)
        .await
        .map_err(|e| BootstrapError::OpenStore {
            cause: e.to_string(),
            fix: "check --store (the server's host and port, that it is up, and the user, \
                  password and database; the address is not printed, as it holds the password)"
                .into(),
        })
}

fn create_dir(path: &Path) -> Result<(), BootstrapError> {
    let err = |e: std::io::Error| BootstrapError::DataDir {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

/// Reads the master key, or creates it (0600, never overwritten).
fn load_or_create_master(path: &Path) -> Result<MasterKey, BootstrapError> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let err = |message: String| BootstrapError::MasterKey {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                if let Ok(meta) = std::fs::metadata(path)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    return Err(err(
                        "is readable by group or others; run chmod 600 on it".into()
                    ));
                }
            }
            let bytes = STANDARD
                .decode(text.trim())
                .map_err(|_| err("is not base64".into()))?;
            MasterKey::from_bytes(&bytes).map_err(|e| err(e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = MasterKey::generate().map_err(|e| err(e.to_string()))?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                opts.mode(0o600);
            }
            let mut f = opts.open(path).map_err(|e| err(e.to_string()))?;
            let text = zeroize::Zeroizing::new(STANDARD.encode(key.expose_bytes()));
            f.write_all(text.as_bytes())
                .and_then(|()| f.write_all(b"\n"))
                .and_then(|()| f.sync_all())
                .map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// What a master-key rotation did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MasterRotated {
    /// Values opened with the old key and sealed with the new one.
    pub resealed: usize,
    /// Where the new key now is (the broker's master-key path).
    pub master_key_file: String,
    /// Where the old key was moved: backups taken before the rotation
    /// open only with it.
    pub retired_key_file: String,
}

/// Re-seals everything the store keeps under the master key with the key
/// in `new_key` (created there, mode 0600, when the file does not exist),
/// then puts the new key at the master-key path and moves the old one
/// beside it as `<name>.retired`. Every broker using the store must be
/// stopped: a running one still holds the old key.
///
/// All or nothing: every value is opened with the old key before anything
/// is written, and the store takes the new values in one transaction.
pub async fn rotate_master(
    dir: &DataDir,
    new_key: &Path,
    now: writ_core::Timestamp,
) -> Result<MasterRotated, BootstrapError> {
    let master_path = dir.master_key_path();
    if !master_path.exists() {
        return Err(BootstrapError::MasterKey {
            path: master_path.display().to_string(),
            message: "does not exist: there is nothing to rotate (is --data-dir or --master-key-file right?)".into(),
        });
    }
    let old = load_or_create_master(&master_path)?;
    let new = load_or_create_master(new_key)?;
    if old.expose_bytes() == new.expose_bytes() {
        return Err(BootstrapError::MasterKey {
            path: new_key.display().to_string(),
            message: "is the current master key; give a new one".into(),
        });
    }
    let store = open_store(dir).await?;
    let values = store.sealed_values().await?;
    let mut resealed = Vec::with_capacity(values.len());
    for mut v in values {
        let purpose = sealed_purpose(&v)?;
        let plain = old
            .open(&purpose, &v.sealed)
            .map_err(|_| BootstrapError::MasterKey {
                path: master_path.display().to_string(),
                message: format!(
                    "does not open {:?} {} in the store: it is not the key the store was sealed with; nothing was changed",
                    v.table, v.id
                ),
            })?;
        v.sealed = new
            .seal(&purpose, &plain)
            .map_err(|e| BootstrapError::Broker(e.to_string()))?;
        resealed.push(v);
    }
    let count = resealed.len();
    let event = AuditEvent::new(AuditKind::KeyRotate, Outcome::Success, "system")
        .reason("master key rotated: every sealed value re-sealed with the new key")
        .detail(serde_json::json!({ "resealed": count }));
    store.reseal(resealed, now, vec![event]).await?;

    // The store now opens only with the new key: put it in place.
    let retired = retired_path(&master_path);
    let err = |path: &Path, e: std::io::Error| BootstrapError::MasterKey {
        path: path.display().to_string(),
        message: format!(
            "{e}; the store is already sealed with the new key in {}: put that file at {} by hand",
            new_key.display(),
            master_path.display()
        ),
    };
    std::fs::rename(&master_path, &retired).map_err(|e| err(&master_path, e))?;
    std::fs::copy(new_key, &master_path).map_err(|e| err(&master_path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&master_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err(&master_path, e))?;
    }
    Ok(MasterRotated {
        resealed: count,
        master_key_file: master_path.display().to_string(),
        retired_key_file: retired.display().to_string(),
    })
}

/// `<path>.retired`, or `<path>.retired.N` when that exists already.
fn retired_path(path: &Path) -> PathBuf {
    let base = format!("{}.retired", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

/// The purpose a sealed value was sealed for (what binds it to its place).
fn sealed_purpose(v: &writ_store::SealedValue) -> Result<String, BootstrapError> {
    use writ_store::SealedTable;
    Ok(match v.table {
        SealedTable::SigningKey => crate::keys::purpose(&v.id),
        SealedTable::SpiffeKey => crate::spiffe::purpose(&v.id),
        SealedTable::ToolSecret => {
            let tool: writ_core::ToolName = v.id.parse().map_err(|e| {
                BootstrapError::Broker(format!("a stored tool secret names tool {:?}: {e}", v.id))
            })?;
            if v.header.is_empty() {
                crate::service::dbcreds::admin_purpose(&tool)
            } else {
                crate::service::gateway::secret_purpose(&tool)
            }
        }
    })
}
