//! `writ tool register|list`

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use writ_core::api::RegisterTool;
use writ_core::{Scope, ToolName};

use super::Global;
use crate::output::{EXIT_OK, print};

#[derive(Subcommand, Debug)]
pub enum ToolCmd {
    /// Register a tool.
    Register {
        name: Option<ToolName>,
        /// Read the whole registration from a JSON file instead.
        #[arg(long, conflicts_with = "name")]
        file: Option<PathBuf>,
        /// The audience URI its tokens carry.
        #[arg(long)]
        audience: Option<String>,
        /// A scope the tool understands (repeatable, or comma separated).
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<Scope>,
        /// An attribute, KEY=VALUE (repeatable), visible to policy as a tag.
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
    },
    /// List tools.
    List,
}

pub async fn run(g: &Global, cmd: ToolCmd) -> anyhow::Result<u8> {
    let c = g.admin()?;
    match cmd {
        ToolCmd::Register {
            name,
            file,
            audience,
            scopes,
            attrs,
        } => {
            let req = match file {
                Some(f) => serde_json::from_str(
                    &std::fs::read_to_string(&f)
                        .with_context(|| format!("reading {}", f.display()))?,
                )
                .with_context(|| format!("parsing {}", f.display()))?,
                None => RegisterTool {
                    name: name.context("give a tool name or --file")?,
                    audience: audience.context("--audience is required")?,
                    scopes,
                    attributes: attrs
                        .iter()
                        .map(|a| {
                            a.split_once('=')
                                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                                .with_context(|| format!("attribute {a:?} is not KEY=VALUE"))
                        })
                        .collect::<anyhow::Result<_>>()?,
                },
            };
            print(&c.register_tool(&req).await?, g.field())?;
        }
        ToolCmd::List => print(&c.tools().await?, g.field())?,
    }
    Ok(EXIT_OK)
}
