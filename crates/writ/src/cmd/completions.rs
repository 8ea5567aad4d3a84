//! `writ completions SHELL` and `writ man`: shell completions and manual
//! pages, generated from the CLI's own definition.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _};

use crate::output::EXIT_OK;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write writ.1 and a page per subcommand (writ-serve.1, ...) here;
    /// without it, print writ(1) on standard output.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn completions(a: CompletionsArgs) -> anyhow::Result<u8> {
    use std::io::Write as _;
    let mut cmd = super::Cli::command();
    // Into memory first: the generator panics on a write error (a closed
    // pipe), where an error should be reported.
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "writ", &mut script);
    std::io::stdout().write_all(&script)?;
    Ok(EXIT_OK)
}

pub fn man(a: ManArgs) -> anyhow::Result<u8> {
    let cmd = super::Cli::command();
    match a.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing manual pages to {}", dir.display()))?;
        }
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
    }
    Ok(EXIT_OK)
}
