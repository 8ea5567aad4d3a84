//! `writ dpop keygen`, and reading DPoP key files.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Subcommand;
use writ_core::dpop::ProofKey;

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum DpopCmd {
    /// Create an Ed25519 key (PKCS#8 PEM, mode 0600) and print its thumbprint.
    Keygen {
        /// Where to write the key; it is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// As the sub-agent (with its key in --dpop-key / WRIT_DPOP_KEY): the
    /// proof a planner sends as `actor_token_proof` to delegate to it. It
    /// is good for one use within a minute.
    ActorProof {
        /// The sub-agent's own (DPoP-bound) instance token.
        #[arg(long, env = "WRIT_TOKEN", hide_env_values = true)]
        actor_token: String,
    },
}

const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const END: &str = "-----END PRIVATE KEY-----";

pub fn run(g: &Global, cmd: DpopCmd) -> anyhow::Result<u8> {
    match cmd {
        DpopCmd::ActorProof { actor_token } => {
            if g.dpop_key.is_none() {
                anyhow::bail!("an actor proof needs the sub-agent's key: give --dpop-key");
            }
            let proof = g
                .agent_client(None)?
                .actor_proof(&actor_token)
                .ok_or_else(|| anyhow::anyhow!("cannot make a proof with that key"))?;
            println!("{proof}");
            Ok(EXIT_OK)
        }
        DpopCmd::Keygen { out } => {
            let (key, pkcs8) = ProofKey::generate()?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                opts.mode(0o600);
            }
            let mut f = opts
                .open(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            let b64 = STANDARD.encode(&pkcs8);
            let mut pem = format!("{BEGIN}\n");
            for chunk in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
                pem.push('\n');
            }
            pem.push_str(END);
            pem.push('\n');
            f.write_all(pem.as_bytes())?;
            print(
                &serde_json::json!({ "key": out.display().to_string(), "jkt": key.thumbprint()? }),
                g.field(),
            )?;
            Ok(EXIT_OK)
        }
    }
}

/// Reads a key written by `keygen` (an Ed25519 PKCS#8 PEM).
pub fn load(path: &Path) -> anyhow::Result<ProofKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading DPoP key {}", path.display()))?;
    let b64: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let der = STANDARD
        .decode(b64)
        .with_context(|| format!("{} is not a PEM private key", path.display()))?;
    Ok(ProofKey::from_pkcs8(&der)?)
}
