//! `writ keys rotate` and `writ keys rotate-master`

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use writ_core::{Clock as _, Secret, SystemClock};

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Add a new signing key; the old one stays published until its tokens expire.
    Rotate {
        /// Rotate the SPIFFE trust domain's X.509 authority and JWT-SVID key
        /// instead (the old ones stay in the bundle until they expire).
        #[arg(long)]
        spiffe: bool,
    },
    /// Re-seal everything the store keeps under the master key (signing
    /// keys, SPIFFE authorities, tool secrets) with a new master key, then
    /// put the new key in place and keep the old one as `<file>.retired`.
    /// Offline: stop every broker that uses the store first. Backups taken
    /// before the rotation open only with the retired key.
    RotateMaster {
        /// The new master key: a file of 32 random bytes in base64, mode
        /// 0600; created there when it does not exist.
        #[arg(long)]
        new_key_file: PathBuf,
        /// Where state lives, as given to `writ serve` [default: ./writ-data].
        #[arg(long, env = "WRIT_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The PostgreSQL store, as given to `writ serve`.
        #[arg(long, env = "WRIT_STORE", hide_env_values = true)]
        store: Option<String>,
        /// The master key file [default: <data-dir>/master.key].
        #[arg(long, env = "WRIT_MASTER_KEY_FILE")]
        master_key_file: Option<PathBuf>,
    },
}

pub async fn run(g: &Global, cmd: KeysCmd) -> anyhow::Result<u8> {
    match cmd {
        KeysCmd::Rotate { spiffe: false } => print(&g.admin()?.rotate_keys().await?, g.field())?,
        KeysCmd::Rotate { spiffe: true } => {
            print(&g.admin()?.rotate_spiffe_keys().await?, g.field())?;
        }
        KeysCmd::RotateMaster {
            new_key_file,
            data_dir,
            store,
            master_key_file,
        } => {
            let mut dir =
                writ_broker::DataDir::new(data_dir.unwrap_or_else(|| PathBuf::from("writ-data")));
            dir.master_key_file = master_key_file;
            dir.store = store.map(Secret::new);
            let done = writ_authority::rotate_master(&dir, &new_key_file, SystemClock.now())
                .await
                .context("rotating the master key")?;
            print(&done, g.field())?;
        }
    }
    Ok(EXIT_OK)
}
