//! `writ discover [PATHS...] [--env] [--mcp-configs] [--format table|json]`:
//! finds the standing secrets agents still hold, offline, with no broker:
//! in environment variables, `.env` and other config files, and the MCP
//! configuration files of common clients and IDEs. Detection is the rule
//! set of the `nosecrets-rules` crate (cloud keys, tokens of well-known
//! services, database URLs with passwords, private keys, generic API keys
//! and secrets); nothing here adds patterns of its own. A value is never
//! printed: only its rule, where it is, and a known public prefix.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use crate::output::EXIT_OK;

#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// Files or folders to scan (folders recursively; `.git`,
    /// `node_modules`, `target` and virtualenvs skipped).
    paths: Vec<PathBuf>,
    /// Scan this process's environment variables.
    #[arg(long)]
    env: bool,
    /// Scan the MCP configuration files of common clients and IDEs under
    /// $HOME (Claude Desktop, Claude Code, Cursor, Windsurf, VS Code).
    #[arg(long)]
    mcp_configs: bool,
    /// How to print the findings.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Print the migration plan instead: for each MCP server that holds a
    /// key, the `writ tool register` / `writ tool secret set` commands and
    /// the client config rewritten to run `writ mcp bridge`.
    #[arg(long)]
    plan: bool,
    /// With --plan: the agent the bridges attest as.
    #[arg(long, default_value = "mcp-client", requires = "plan")]
    agent: String,
    /// With --plan: ask each MCP server it moves for its tools
    /// (`tools/list`; a stdio server is started as its config says, for
    /// the question only) and use their names as the tool's scopes.
    /// Without it, each `--scope` is a placeholder to replace.
    #[arg(long, requires = "plan")]
    ask_servers: bool,
    /// With --plan: the gateway the rewritten configs point at.
    #[arg(long, env = "WRIT_GATEWAY", default_value = "http://127.0.0.1:8751")]
    gateway: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// One secret found. `value` is never the secret: a known public prefix
/// (`ghp_`, `AKIA`) at most, and the length.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub rule: String,
    pub name: String,
    pub severity: String,
    /// A file, or `environment`.
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The variable, header or argument that holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The MCP server whose configuration holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_server: Option<String>,
    pub value: String,
}

struct Compiled {
    rule: nosecrets_rules::Rule,
    re: Regex,
    charset: Option<Regex>,
    allow: Vec<Regex>,
}

/// The rule set, compiled.
pub struct Scanner(Vec<Compiled>);

impl Scanner {
    pub fn new() -> anyhow::Result<Self> {
        let rules = nosecrets_rules::load_builtin_rules().context("loading the detection rules")?;
        let mut out = Vec::with_capacity(rules.len());
        for rule in rules {
            let re = Regex::new(&rule.pattern)
                .with_context(|| format!("detection rule {} does not compile", rule.id))?;
            let charset = match rule.validate.as_ref().and_then(|v| v.charset.as_ref()) {
                Some(c) => Some(
                    Regex::new(&format!("^[{c}]+$"))
                        .with_context(|| format!("detection rule {} charset", rule.id))?,
                ),
                None => None,
            };
            let allow = rule
                .allow
                .as_ref()
                .map(|a| {
                    a.patterns
                        .iter()
                        .filter_map(|p| Regex::new(p).ok())
                        .collect()
                })
                .unwrap_or_default();
            out.push(Compiled {
                rule,
                re,
                charset,
                allow,
            });
        }
        Ok(Self(out))
    }

    /// The secrets in `text`: (rule index, value, 1-based line).
    fn scan(&self, text: &str) -> Vec<(usize, String, usize)> {
        let mut found = Vec::new();
        let mut seen = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            for (i, c) in self.0.iter().enumerate() {
                let kw = &c.rule.keywords;
                if !kw.is_empty() && !kw.iter().any(|k| lower.contains(&k.to_lowercase())) {
                    continue;
                }
                for caps in c.re.captures_iter(line) {
                    let Some(m) = caps.get(c.rule.capture).or_else(|| caps.get(0)) else {
                        continue;
                    };
                    let value = m.as_str();
                    if !c.valid(value) || !seen.insert((n, value.to_owned())) {
                        continue;
                    }
                    found.push((i, value.to_owned(), n + 1));
                }
            }
        }
        found
    }

    fn finding(&self, i: usize, value: &str, source: &str, line: Option<usize>) -> Finding {
        let c = self.0.get(i);
        Finding {
            rule: c.map(|c| c.rule.id.clone()).unwrap_or_default(),
            name: c.map(|c| c.rule.name.clone()).unwrap_or_default(),
            severity: c
                .map(|c| c.rule.severity.as_str().to_owned())
                .unwrap_or_default(),
            source: source.to_owned(),
            line,
            key: None,
            mcp_server: None,
            value: c
                .map(|c| c.redact(value))
                .unwrap_or_else(|| redact_len(value)),
        }
    }
}

impl Compiled {
    fn valid(&self, value: &str) -> bool {
        if let Some(v) = &self.rule.validate {
            if !v.prefix.is_empty() && !v.prefix.iter().any(|p| value.starts_with(p.as_str())) {
                return false;
            }
            let n = value.chars().count();
            if v.length.is_some_and(|l| n != l)
                || v.min_length.is_some_and(|l| n < l)
                || v.max_length.is_some_and(|l| n > l)
            {
                return false;
            }
            if self.charset.as_ref().is_some_and(|c| !c.is_match(value)) {
                return false;
            }
        }
        if let Some(a) = &self.rule.allow
            && a.values.iter().any(|v| v == value)
        {
            return false;
        }
        !self.allow.iter().any(|a| a.is_match(value))
    }

    /// The rule's public prefix the value starts with, if any, and its length.
    fn redact(&self, value: &str) -> String {
        let prefix = self
            .rule
            .validate
            .as_ref()
            .and_then(|v| v.prefix.iter().find(|p| value.starts_with(p.as_str())));
        match prefix {
            Some(p) if p.len() < value.len() => format!("{p}… ({} chars)", value.chars().count()),
            _ => redact_len(value),
        }
    }
}

fn redact_len(value: &str) -> String {
    format!("… ({} chars)", value.chars().count())
}

/// The secrets in one `KEY=value` pair (an environment variable, an MCP
/// server's `env` entry).
fn scan_pair(s: &Scanner, key: &str, value: &str, source: &str) -> Vec<Finding> {
    s.scan(&format!("{key}={value}"))
        .into_iter()
        .map(|(i, v, _)| Finding {
            key: Some(key.to_owned()),
            ..s.finding(i, &v, source, None)
        })
        .collect()
}

/// The variable a `.env`-style line assigns, if it does.
fn assigned(line: &str) -> Option<String> {
    let l = line.trim_start();
    let l = l.strip_prefix("export ").unwrap_or(l);
    let (k, _) = l.split_once(['=', ':'])?;
    let k = k.trim().trim_matches(['"', '\'']);
    (!k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)))
    .then(|| k.to_owned())
}

/// The servers of an MCP client config: `mcpServers` (Claude Desktop,
/// Claude Code's `.mcp.json`, Cursor, Windsurf), `servers` (VS Code's
/// `mcp.json`), `mcp.servers` (VS Code settings), and each project's
/// `mcpServers` in `~/.claude.json`.
pub fn mcp_servers(doc: &Value) -> Vec<(String, &Value)> {
    fn take<'a>(m: Option<&'a Value>, out: &mut Vec<(String, &'a Value)>) {
        if let Some(Value::Object(m)) = m {
            for (k, v) in m {
                if v.is_object() {
                    out.push((k.clone(), v));
                }
            }
        }
    }
    let mut out = Vec::new();
    take(doc.get("mcpServers"), &mut out);
    take(doc.get("servers"), &mut out);
    take(doc.get("mcp").and_then(|m| m.get("servers")), &mut out);
    if let Some(Value::Object(projects)) = doc.get("projects") {
        for p in projects.values() {
            take(p.get("mcpServers"), &mut out);
        }
    }
    out
}

/// The secrets in an MCP config's servers: their `env`, `headers`, `args`
/// and `url`.
fn scan_mcp(s: &Scanner, doc: &Value, source: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, server) in mcp_servers(doc) {
        let mut add = |mut f: Vec<Finding>| {
            for x in &mut f {
                x.mcp_server = Some(name.clone());
            }
            out.extend(f);
        };
        for field in ["env", "headers"] {
            if let Some(Value::Object(m)) = server.get(field) {
                for (k, v) in m {
                    if let Some(v) = v.as_str() {
                        add(scan_pair(s, k, v, source));
                    }
                }
            }
        }
        if let Some(Value::Array(args)) = server.get("args") {
            let text: Vec<&str> = args.iter().filter_map(Value::as_str).collect();
            for (i, v, _) in s.scan(&text.join(" ")) {
                let f = Finding {
                    key: Some("args".into()),
                    ..s.finding(i, &v, source, None)
                };
                add(vec![f]);
            }
        }
        if let Some(url) = server.get("url").and_then(Value::as_str) {
            for (i, v, _) in s.scan(url) {
                let f = Finding {
                    key: Some("url".into()),
                    ..s.finding(i, &v, source, None)
                };
                add(vec![f]);
            }
        }
    }
    out
}

/// The secrets in one file: an MCP config by its servers, else line by line.
pub fn scan_file(s: &Scanner, path: &Path) -> Vec<Finding> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    if meta.len() > MAX_FILE {
        return Vec::new();
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new(); // binary or unreadable
    };
    let source = path.display().to_string();
    if path.extension().is_some_and(|e| e == "json")
        && let Ok(doc) = serde_json::from_str::<Value>(&text)
        && !mcp_servers(&doc).is_empty()
    {
        return scan_mcp(s, &doc, &source);
    }
    let lines: Vec<&str> = text.lines().collect();
    s.scan(&text)
        .into_iter()
        .map(|(i, v, n)| Finding {
            key: lines.get(n.saturating_sub(1)).and_then(|l| assigned(l)),
            ..s.finding(i, &v, &source, Some(n))
        })
        .collect()
}

const MAX_FILE: u64 = 2 * 1024 * 1024;
const SKIP_DIRS: [&str; 6] = [
    ".git",
    "node_modules",
    "target",
    ".venv",
    "venv",
    "__pycache__",
];

/// Every file under `root` (not following symlinked folders).
fn files_under(root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return;
    };
    if meta.is_file() || (meta.file_type().is_symlink() && root.is_file()) {
        out.push(root.to_owned());
        return;
    }
    if !meta.is_dir() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let skip = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| SKIP_DIRS.contains(&n));
        if !skip {
            files_under(&p, out);
        }
    }
}

/// Where common MCP clients and IDEs keep their server configs.
fn mcp_config_paths(home: &Path) -> Vec<PathBuf> {
    [
        ".claude.json",
        ".mcp.json",
        ".cursor/mcp.json",
        ".codeium/windsurf/mcp_config.json",
        ".config/Claude/claude_desktop_config.json",
        "Library/Application Support/Claude/claude_desktop_config.json",
        ".config/Code/User/mcp.json",
        ".config/Code/User/settings.json",
        "Library/Application Support/Code/User/mcp.json",
        ".vscode/mcp.json",
    ]
    .iter()
    .map(|p| home.join(p))
    .filter(|p| p.is_file())
    .collect()
}

/// Everything the arguments ask for (with none: the environment and the
/// MCP configs).
pub fn discover(
    s: &Scanner,
    paths: &[PathBuf],
    env: bool,
    mcp_configs: bool,
    home: Option<&Path>,
    vars: impl Iterator<Item = (String, String)>,
) -> Vec<Finding> {
    let nothing_asked = paths.is_empty() && !env && !mcp_configs;
    let mut out = Vec::new();
    if env || nothing_asked {
        for (k, v) in vars {
            out.extend(scan_pair(s, &k, &v, "environment"));
        }
    }
    let mut files = Vec::new();
    if (mcp_configs || nothing_asked)
        && let Some(h) = home
    {
        files.extend(mcp_config_paths(h));
    }
    for p in paths {
        files_under(p, &mut files);
    }
    let mut done = BTreeSet::new();
    for f in files {
        if done.insert(f.clone()) {
            out.extend(scan_file(s, &f));
        }
    }
    out
}

pub async fn run(g: &super::Global, a: DiscoverArgs) -> anyhow::Result<u8> {
    let s = Scanner::new()?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let found = discover(
        &s,
        &a.paths,
        a.env,
        a.mcp_configs,
        home.as_deref(),
        std::env::vars(),
    );
    if a.plan {
        let mut asked = std::collections::BTreeMap::new();
        if a.ask_servers {
            for (file, server, cfg) in super::discover_plan::servers_to_move(&found) {
                let r = super::discover_ask::tools_of(&cfg).await;
                if let Err(why) = &r {
                    eprintln!(
                        "writ discover: could not ask MCP server {server:?} in {file} for its tools: {why}"
                    );
                }
                asked.insert((file, server), r);
            }
        }
        let opts = super::discover_plan::PlanOptions {
            agent: &a.agent,
            addr: &g.addr,
            gateway: &a.gateway,
            asked: &asked,
        };
        print!("{}", super::discover_plan::plan(&found, &opts));
        return Ok(EXIT_OK);
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&found)?),
        Format::Table => print!("{}", table(&found)),
    }
    Ok(EXIT_OK)
}

fn table(found: &[Finding]) -> String {
    if found.is_empty() {
        return "no standing secrets found\n".into();
    }
    let mut out = String::from("SEVERITY\tRULE\tWHERE\tKEY\tMCP SERVER\tVALUE\n");
    for f in found {
        let place = match f.line {
            Some(n) => format!("{}:{n}", f.source),
            None => f.source.clone(),
        };
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            f.severity,
            f.rule,
            place,
            f.key.as_deref().unwrap_or("-"),
            f.mcp_server.as_deref().unwrap_or("-"),
            f.value
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fake keys of each kind, built in pieces so that no scanner of this
    // repository's own flags them.
    fn fakes() -> Vec<(&'static str, String)> {
        vec![
            ("aws-access-key", format!("AKIA{}", "Q2XY7PLMNB3TRZ5W")),
            (
                "github-pat",
                format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"),
            ),
            (
                "stripe-secret-key",
                format!("sk_live_{}", "4eC39HqLyjWDarjtT1zdp7dc9x"),
            ),
            (
                "postgres-connection-uri",
                format!("postgres://app:{}@db.internal:5432/prod", "Sup3rS3cretPw"),
            ),
            ("generic-api-key", "Zk29sLq0PwX8vN3mT7yR1uB5".to_owned()),
        ]
    }

    fn tree() -> (tempfile::TempDir, Vec<(&'static str, String)>) {
        let dir = tempfile::tempdir().unwrap();
        let f = fakes();
        let get = |id: &str| f.iter().find(|(r, _)| *r == id).unwrap().1.clone();
        std::fs::write(
            dir.path().join(".env"),
            format!(
                "# app\nAWS_ACCESS_KEY_ID={}\nexport DATABASE_URL={}\nOPENAI_API_KEY={}\n",
                get("aws-access-key"),
                get("postgres-connection-uri"),
                get("generic-api-key")
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join(".cursor")).unwrap();
        let cfg = serde_json::json!({"mcpServers": {
            "github": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"],
                       "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": get("github-pat")}},
            "billing": {"url": "https://billing.example/mcp",
                        "headers": {"Authorization": format!("Bearer {}", get("stripe-secret-key"))}},
            "clean": {"command": "uvx", "args": ["mcp-server-time"]}
        }});
        std::fs::write(dir.path().join(".cursor/mcp.json"), cfg.to_string()).unwrap();
        std::fs::create_dir_all(dir.path().join("node_modules/x")).unwrap();
        std::fs::write(
            dir.path().join("node_modules/x/.env"),
            format!("KEY={}", get("aws-access-key")),
        )
        .unwrap();
        (dir, f)
    }

    #[test]
    fn discovery_finds_each_kind_of_fake_key_and_never_prints_one() {
        let s = Scanner::new().unwrap();
        let (dir, fakes) = tree();
        let found = discover(
            &s,
            &[dir.path().to_owned()],
            false,
            false,
            None,
            std::iter::empty(),
        );
        let rules: BTreeSet<&str> = found.iter().map(|f| f.rule.as_str()).collect();
        for (rule, _) in &fakes {
            assert!(rules.contains(rule), "{rule} not found in {found:#?}");
        }
        assert!(
            !found.iter().any(|f| f.source.contains("node_modules")),
            "vendored folders are skipped"
        );
        let gh = found.iter().find(|f| f.rule == "github-pat").unwrap();
        assert_eq!(gh.mcp_server.as_deref(), Some("github"));
        assert_eq!(gh.key.as_deref(), Some("GITHUB_PERSONAL_ACCESS_TOKEN"));
        assert_eq!(gh.value, "ghp_… (40 chars)");
        let stripe = found
            .iter()
            .find(|f| f.rule == "stripe-secret-key")
            .unwrap();
        assert_eq!(stripe.mcp_server.as_deref(), Some("billing"));
        let aws = found.iter().find(|f| f.rule == "aws-access-key").unwrap();
        assert_eq!(
            (aws.key.as_deref(), aws.line),
            (Some("AWS_ACCESS_KEY_ID"), Some(2))
        );
        let db = found
            .iter()
            .find(|f| f.rule == "postgres-connection-uri")
            .unwrap();
        assert_eq!(db.key.as_deref(), Some("DATABASE_URL"));
        let printed = format!(
            "{}{}",
            table(&found),
            serde_json::to_string(&found).unwrap()
        );
        for (rule, value) in &fakes {
            assert!(
                !printed.contains(value.as_str()),
                "{rule}'s value printed: {printed}"
            );
        }
        assert!(!printed.contains("Sup3rS3cretPw"), "a password printed");
    }

    #[test]
    fn the_environment_is_scanned_by_variable() {
        let s = Scanner::new().unwrap();
        let key = format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A");
        let vars = vec![
            ("GH_TOKEN".to_owned(), key.clone()),
            ("HOME".to_owned(), "/home/a".to_owned()),
        ];
        let found = discover(&s, &[], true, false, None, vars.into_iter());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].source, "environment");
        assert_eq!(found[0].key.as_deref(), Some("GH_TOKEN"));
        assert!(!format!("{found:?}").contains(&key));
    }

    #[test]
    fn mcp_configs_of_each_client_shape_name_their_servers() {
        let vscode = serde_json::json!({"servers": {"a": {"command": "x"}}});
        let settings = serde_json::json!({"mcp": {"servers": {"b": {"command": "x"}}}});
        let claude =
            serde_json::json!({"projects": {"/p": {"mcpServers": {"c": {"command": "x"}}}}});
        assert_eq!(mcp_servers(&vscode)[0].0, "a");
        assert_eq!(mcp_servers(&settings)[0].0, "b");
        assert_eq!(mcp_servers(&claude)[0].0, "c");
        assert!(mcp_servers(&serde_json::json!({"name": "pkg"})).is_empty());
    }

    #[test]
    fn assignments_name_their_variable() {
        assert_eq!(assigned("export A_B=1").as_deref(), Some("A_B"));
        assert_eq!(assigned("  key: v").as_deref(), Some("key"));
        assert_eq!(assigned("no assignment here"), None);
    }
}
