//! DPoP proofs made ahead of a load run, so that the client's signing is
//! not counted in the server's figures.
//!
//! `proofs keygen KEY.pem` writes an Ed25519 key in the form
//! `writ --dpop-key` reads; `proofs make KEY.pem METHOD URL ACCESS_TOKEN N`
//! prints `N` proofs for `METHOD URL`, one per line, each with its own
//! `jti`, `iat` now and `ath` of `ACCESS_TOKEN`: good for one use each
//! within a minute (writ's proof window).

use std::io::Write as _;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use writ_core::dpop::ProofKey;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["keygen", out] => {
            let (_, pkcs8) = ProofKey::generate()?;
            let b64 = STANDARD.encode(&pkcs8);
            std::fs::write(
                out,
                format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"),
            )
            .with_context(|| format!("writing {out}"))?;
            Ok(())
        }
        ["make", key, method, url, token, n] => {
            let pem = std::fs::read_to_string(key).with_context(|| format!("reading {key}"))?;
            let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            let key = ProofKey::from_pkcs8(&STANDARD.decode(b64.trim())?)?;
            let n: usize = n.parse().context("N is a count")?;
            let now = writ_core::Clock::now(&writ_core::SystemClock);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for _ in 0..n {
                writeln!(out, "{}", key.proof(method, url, Some(token), None, now)?)?;
            }
            Ok(())
        }
        _ => bail!("usage: proofs keygen KEY.pem | proofs make KEY.pem METHOD URL ACCESS_TOKEN N"),
    }
}
