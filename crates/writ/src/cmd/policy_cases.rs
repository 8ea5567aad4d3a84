//! Policy test cases for `writ policy test` and `writ policy explain`: the
//! case file and the policy set it names. The cases themselves and how
//! they run are writ-policy's ([`writ_policy::cases`]), which the broker
//! runs too.

use std::path::Path;

use anyhow::{Context as _, bail};
use writ_policy::PolicySet;
use writ_policy::cases::CaseFile;

/// Reads a case file and the policy set it names (or `dir`).
pub fn load(file: &Path, dir: Option<&Path>) -> anyhow::Result<(CaseFile, PolicySet)> {
    let cases = CaseFile::read(file)?;
    let policy_dir = match (dir, cases.policy_dir_of(file)) {
        (Some(d), _) => d.to_owned(),
        (None, Some(d)) => d,
        (None, None) => bail!("give --policy-dir or policy_dir in {}", file.display()),
    };
    let set = PolicySet::load_dir(&policy_dir)
        .with_context(|| format!("loading {}", policy_dir.display()))?;
    Ok((cases, set))
}
