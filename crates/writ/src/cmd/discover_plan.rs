//! `writ discover --plan`: for every MCP server whose config holds a
//! standing secret, the commands that move it behind writ (`writ tool
//! register`, `writ tool secret set` reading the value from its source,
//! never echoing it) and the rewritten client config, in which the server
//! becomes `writ mcp bridge TOOL` and holds no key.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use super::discover::{Finding, mcp_servers};

/// What the plan needs to know besides the findings.
pub struct PlanOptions<'a> {
    /// The agent the bridges attest as.
    pub agent: &'a str,
    /// The broker and gateway the rewritten configs point at.
    pub addr: &'a str,
    pub gateway: &'a str,
    /// With `--ask-servers`: each server's MCP tools, by (config file,
    /// server), or why it could not be asked. Empty: not asked.
    pub asked: &'a BTreeMap<(String, String), Result<Vec<String>, String>>,
}

/// The servers the plan moves: (config file, server name, its config).
pub fn servers_to_move(found: &[Finding]) -> Vec<(String, String, Value)> {
    let mut wanted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for f in found {
        if let Some(s) = &f.mcp_server {
            let e = wanted.entry(f.source.as_str()).or_default();
            if !e.contains(&s.as_str()) {
                e.push(s);
            }
        }
    }
    let mut out = Vec::new();
    for (file, servers) in wanted {
        let Some(doc) = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        else {
            continue;
        };
        for (name, cfg) in mcp_servers(&doc) {
            if servers.contains(&name.as_str()) {
                out.push((file.to_owned(), name, cfg.clone()));
            }
        }
    }
    out
}

/// The `--scope` of a server's `writ tool register`, and a note on where
/// it came from.
fn scopes_for(file: &str, server: &str, opts: &PlanOptions<'_>) -> (String, String) {
    let placeholder = "REPLACE-WITH-TOOL-NAMES".to_owned();
    match opts.asked.get(&(file.to_owned(), server.to_owned())) {
        None => (
            placeholder,
            "# --scope: not asked (run with --ask-servers to fill it from the server's tools/list);\n\
             # replace the placeholder with the MCP tools the server may be asked for"
                .to_owned(),
        ),
        Some(Err(why)) => (
            placeholder,
            format!(
                "# --scope: the server could not be asked for its tools ({why});\n\
                 # replace the placeholder with the MCP tools it may be asked for"
            ),
        ),
        Some(Ok(names)) => {
            let (ok, bad): (Vec<&String>, Vec<&String>) = names
                .iter()
                .partition(|n| n.parse::<writ_core::Scope>().is_ok());
            if ok.is_empty() {
                return (
                    placeholder,
                    "# --scope: the server lists no tool whose name can be a scope; replace the placeholder"
                        .to_owned(),
                );
            }
            let mut note = format!(
                "# --scope: the {} MCP tools the server lists (tools/list); remove those the task may not use",
                ok.len()
            );
            if !bad.is_empty() {
                let _ = write!(
                    note,
                    "\n# ({} listed tools have names writ cannot take as scopes: {})",
                    bad.len(),
                    bad.iter().map(|b| b.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
            (
                ok.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(","),
                note,
            )
        }
    }
}

/// Single-quoted for a POSIX shell.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A tool name from an MCP server's name (writ's tool names are
/// lowercase letters, digits and `-`).
pub fn tool_name(server: &str) -> String {
    let mut t: String = server
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    t = t.trim_matches('-').to_owned();
    if t.is_empty() { "mcp-tool".into() } else { t }
}

/// The plan, as a shell script to review and run.
pub fn plan(found: &[Finding], opts: &PlanOptions<'_>) -> String {
    let (by_file, loose) = by_config_file(found);
    let mut out = String::from(
        "#!/bin/sh\n# writ discover --plan: review, then run with WRIT_ADDR and an admin WRIT_TOKEN set.\n\
         # Each MCP server that holds a key becomes a writ tool; the key moves into writ\n\
         # (sealed, injected by the gateway), and the client runs `writ mcp bridge` instead.\n\
         # Each --scope is the MCP tools the server lists (--ask-servers), or a placeholder to replace.\nset -e\n",
    );
    let _ = writeln!(
        out,
        "# The bridges attest as agent {0}: add how to each rewritten entry (--oidc-token-file or\n\
         # --jwt-svid-file in its args, or a fresh WRIT_JOIN_TOKEN in its env).\n\
         writ agent show {1} >/dev/null 2>&1 || writ agent register {1}",
        opts.agent,
        sh(opts.agent)
    );
    for (file, servers) in &by_file {
        plan_config_file(&mut out, file, servers, opts);
    }
    plan_loose(&mut out, &loose);
    out
}

/// An MCP config file's servers and the findings in each of them.
type ByServer<'a> = BTreeMap<&'a str, Vec<&'a Finding>>;

/// The findings grouped by config file, then MCP server; and the findings
/// outside any MCP server.
fn by_config_file(found: &[Finding]) -> (BTreeMap<&str, ByServer<'_>>, Vec<&Finding>) {
    let mut by_file: BTreeMap<&str, ByServer<'_>> = BTreeMap::new();
    let mut loose = Vec::new();
    for f in found {
        match &f.mcp_server {
            Some(s) => by_file
                .entry(f.source.as_str())
                .or_default()
                .entry(s.as_str())
                .or_default()
                .push(f),
            None => loose.push(f),
        }
    }
    (by_file, loose)
}

/// The plan for one MCP config file: each of its servers that holds a key,
/// then the file rewritten with those servers run through the bridge.
fn plan_config_file(out: &mut String, file: &str, servers: &ByServer<'_>, opts: &PlanOptions<'_>) {
    let Ok(text) = std::fs::read_to_string(file) else {
        let _ = writeln!(out, "# {file}: no longer readable; skipped");
        return;
    };
    let Ok(mut doc) = serde_json::from_str::<Value>(&text) else {
        return;
    };
    let configs: BTreeMap<String, Value> = mcp_servers(&doc)
        .into_iter()
        .map(|(n, v)| (n, v.clone()))
        .collect();
    let mut rewritten = BTreeMap::new();
    for (server, findings) in servers {
        let Some(cfg) = configs.get(*server) else {
            continue;
        };
        let tool = tool_name(server);
        plan_server(out, file, server, cfg, findings, &tool, opts);
        rewritten.insert((*server).to_owned(), bridge_entry(&tool, opts));
    }
    replace_servers(&mut doc, &rewritten);
    let target = format!("{file}.writ");
    let _ = writeln!(
        out,
        "\n# {file}, rewritten without the keys (review, then move it over the original):\ncat > {} <<'WRIT_CONFIG'\n{}\nWRIT_CONFIG",
        sh(&target),
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    );
}

/// The plan for one MCP server (`cfg`) holding keys: register it as
/// `tool`, move the keys writ can inject into the tool's secret, and name
/// the gaps left to do by hand.
fn plan_server(
    out: &mut String,
    file: &str,
    server: &str,
    cfg: &Value,
    findings: &[&Finding],
    tool: &str,
    opts: &PlanOptions<'_>,
) {
    let _ = writeln!(out, "\n# MCP server {server:?} in {file}:");
    for f in findings {
        let _ = writeln!(
            out,
            "#   {} ({}, {})",
            f.key.as_deref().unwrap_or("?"),
            f.name,
            f.severity
        );
    }
    let (scopes, note) = scopes_for(file, server, opts);
    let _ = writeln!(out, "{note}");
    let header_keys = keys_in(findings, cfg, "headers");
    let env_keys = keys_in(findings, cfg, "env");
    let _ = writeln!(
        out,
        "{}",
        register_command(tool, &scopes, cfg, &header_keys, &env_keys)
    );
    plan_header_secret(out, file, server, tool, &header_keys);
    // A stdio server's key: the gateway starts the server with it in
    // the same environment variable (one secret per tool).
    let stdio = cfg.get("url").is_none() && cfg.get("command").is_some();
    plan_env_secret(out, file, server, tool, &env_keys, stdio);
    if stdio {
        note_env_not_passed(out, cfg, &env_keys);
    }
    for f in findings.iter().filter(|f| {
        f.key
            .as_deref()
            .is_none_or(|k| !header_keys.contains(&k) && !env_keys.contains(&k))
    }) {
        let _ = writeln!(
            out,
            "# gap: the key in {} ({}) is in the server's {}: remove it by hand",
            f.key.as_deref().unwrap_or("?"),
            f.rule,
            f.key.as_deref().unwrap_or("config")
        );
    }
}

/// The keys of `findings` that sit in the server's `section` (`headers`
/// or `env`).
fn keys_in<'a>(findings: &[&'a Finding], cfg: &Value, section: &str) -> Vec<&'a str> {
    findings
        .iter()
        .filter_map(|f| f.key.as_deref())
        .filter(|k| cfg.get(section).and_then(|h| h.get(*k)).is_some())
        .collect()
}

/// `writ tool register` for the server: its URL, or the command the
/// gateway starts.
fn register_command(
    tool: &str,
    scopes: &str,
    cfg: &Value,
    header_keys: &[&str],
    env_keys: &[&str],
) -> String {
    let mut register = format!(
        "writ tool register {} --audience {} --attr protocol=mcp --scope {}",
        sh(tool),
        sh(&format!("urn:mcp:{tool}")),
        sh(scopes)
    );
    if let Some(url) = cfg.get("url").and_then(Value::as_str) {
        let _ = write!(register, " --upstream {} --mcp", sh(url));
        if !header_keys.is_empty() {
            register.push_str(" --require-secret");
        }
    } else if let Some(cmd) = cfg.get("command").and_then(Value::as_str) {
        // Its key moves into writ: until the gateway has it, it starts no
        // server (which would run keyless for the whole session). Before
        // the command, whose arguments run to the end of the line.
        if !env_keys.is_empty() {
            register.push_str(" --require-secret");
        }
        register.push_str(" --mcp-command ");
        register.push_str(&sh(cmd));
        for a in cfg
            .get("args")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            register.push(' ');
            register.push_str(&sh(a));
        }
    }
    register
}

/// A key in the server's headers moves into the tool's secret (one header
/// per tool).
fn plan_header_secret(
    out: &mut String,
    file: &str,
    server: &str,
    tool: &str,
    header_keys: &[&str],
) {
    match header_keys {
        [] => {}
        [h] => {
            let _ = writeln!(
                out,
                "writ tool secret set {} --header {} --from-mcp-config {} --mcp-server {} --mcp-key {}",
                sh(tool),
                sh(h),
                sh(file),
                sh(server),
                sh(h)
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "# gap: writ injects one header per tool; {} hold keys: move one, and the rest by hand",
                header_keys.join(", ")
            );
        }
    }
}

/// A key in a stdio server's env moves into the tool's secret (one per
/// tool); in the env of a server reached over HTTP, it is a gap.
fn plan_env_secret(
    out: &mut String,
    file: &str,
    server: &str,
    tool: &str,
    env_keys: &[&str],
    stdio: bool,
) {
    match env_keys {
        [] => {}
        [k, rest @ ..] if stdio => {
            let _ = writeln!(
                out,
                "writ tool secret set {} --env {} --from-mcp-config {} --mcp-server {} --mcp-key {}",
                sh(tool),
                sh(k),
                sh(file),
                sh(server),
                sh(k)
            );
            if !rest.is_empty() {
                let _ = writeln!(
                    out,
                    "# gap: writ injects one secret per tool; {} also hold keys: the gateway starts the \
                     server without them (move them by hand, e.g. into a file the server reads)",
                    rest.join(", ")
                );
            }
        }
        ks => {
            let _ = writeln!(
                out,
                "# gap: {} sit in the env of a server reached over HTTP, where writ injects a header only: remove by hand",
                ks.join(", ")
            );
        }
    }
}

/// The rest of a stdio server's env, which the gateway does not pass.
fn note_env_not_passed(out: &mut String, cfg: &Value, env_keys: &[&str]) {
    let other: Vec<&str> = cfg
        .get("env")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .filter(|k| env_keys.first() != Some(k))
        .collect();
    if !other.is_empty() {
        let _ = writeln!(
            out,
            "# note: the gateway starts stdio servers with PATH, HOME, LANG, LC_ALL, TZ and TMPDIR \
             only; {} from the config's env are not passed",
            other.join(", ")
        );
    }
}

/// Keys found outside any MCP config: what to do with each, by hand.
fn plan_loose(out: &mut String, loose: &[&Finding]) {
    if loose.is_empty() {
        return;
    }
    out.push_str("\n# Keys held outside MCP configs: register the service each reaches as a tool\n# (`writ tool register NAME --upstream URL`), then `writ tool secret set NAME --header H --value-env VAR`\n# in a shell that has the variable, and remove it from where it is:\n");
    for f in loose {
        let place = match f.line {
            Some(n) => format!("{}:{n}", f.source),
            None => f.source.clone(),
        };
        let _ = writeln!(
            out,
            "#   {place} {} ({})",
            f.key.as_deref().unwrap_or("-"),
            f.rule
        );
    }
}

/// The config entry that runs the bridge for `tool`.
fn bridge_entry(tool: &str, opts: &PlanOptions<'_>) -> Value {
    json!({
        "command": "writ",
        "args": ["mcp", "bridge", tool, "--agent", opts.agent],
        "env": {"WRIT_ADDR": opts.addr, "WRIT_GATEWAY": opts.gateway}
    })
}

/// Puts each rewritten server where the config keeps it.
fn replace_servers(doc: &mut Value, rewritten: &BTreeMap<String, Value>) {
    fn into(m: Option<&mut Value>, rewritten: &BTreeMap<String, Value>) {
        if let Some(Value::Object(m)) = m {
            for (k, v) in m.iter_mut() {
                if let Some(r) = rewritten.get(k) {
                    *v = r.clone();
                }
            }
        }
    }
    into(doc.get_mut("mcpServers"), rewritten);
    into(doc.get_mut("servers"), rewritten);
    into(
        doc.get_mut("mcp").and_then(|m| m.get_mut("servers")),
        rewritten,
    );
    if let Some(Value::Object(projects)) = doc.get_mut("projects") {
        for p in projects.values_mut() {
            into(p.get_mut("mcpServers"), rewritten);
        }
    }
}

/// The value of `key` in the `headers` or `env` of MCP server `server` in
/// the config at `path` (for `writ tool secret set --from-mcp-config`).
pub fn value_from_config(path: &Path, server: &str, key: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|_| anyhow::anyhow!("{} is not JSON", path.display()))?;
    let servers = mcp_servers(&doc);
    let (_, cfg) = servers
        .iter()
        .find(|(n, _)| n == server)
        .ok_or_else(|| anyhow::anyhow!("{} has no MCP server {server:?}", path.display()))?;
    ["headers", "env"]
        .iter()
        .find_map(|f| cfg.get(*f).and_then(|m| m.get(key)).and_then(Value::as_str))
        .map(str::to_owned)
        .ok_or_else(|| {
            anyhow::anyhow!("MCP server {server:?} in {} has no {key:?}", path.display())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_moves_each_key_and_the_rewritten_config_holds_none() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("mcp.json");
        let key = format!("sk_live_{}", "4eC39HqLyjWDarjtT1zdp7dc9x");
        let gh = format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A");
        let doc = json!({"mcpServers": {
            "Billing API": {"url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": format!("Bearer {key}")}},
            "github": {"command": "npx", "args": ["-y", "server-github"], "env": {"GITHUB_TOKEN": gh}},
            "clean": {"command": "uvx", "args": ["mcp-server-time"]}
        }});
        std::fs::write(&cfg, doc.to_string()).unwrap();
        let s = super::super::discover::Scanner::new().unwrap();
        let found = super::super::discover::scan_file(&s, &cfg);
        let none = BTreeMap::new();
        let opts = PlanOptions {
            agent: "desk",
            addr: "http://127.0.0.1:8750",
            gateway: "http://127.0.0.1:8751",
            asked: &none,
        };
        let p = plan(&found, &opts);
        assert!(p.contains("--scope 'REPLACE-WITH-TOOL-NAMES'"), "{p}");
        assert!(p.contains("not asked (run with --ask-servers"), "{p}");
        // Asked: the real names fill the scope; a server that could not be
        // asked keeps the placeholder, with why.
        let file = cfg.to_string_lossy().into_owned();
        let asked = BTreeMap::from([
            (
                (file.clone(), "Billing API".to_owned()),
                Ok(vec!["charge".to_owned(), "refund".to_owned()]),
            ),
            (
                (file, "github".to_owned()),
                Err("no answer within 20s".to_owned()),
            ),
        ]);
        let p2 = plan(
            &found,
            &PlanOptions {
                asked: &asked,
                ..opts
            },
        );
        assert!(p2.contains("'billing-api' --audience 'urn:mcp:billing-api' --attr protocol=mcp --scope 'charge,refund'"), "{p2}");
        assert!(
            p2.contains("could not be asked for its tools (no answer within 20s)"),
            "{p2}"
        );
        assert_eq!(servers_to_move(&found).len(), 2);
        assert!(!p.contains(&key) && !p.contains(&gh), "{p}");
        assert!(p.contains("writ tool register 'billing-api'"), "{p}");
        assert!(
            p.contains("--upstream 'http://127.0.0.1:9/mcp' --mcp --require-secret"),
            "{p}"
        );
        assert!(p.contains("--from-mcp-config"), "{p}");
        // The stdio server's key moves into writ too: the gateway starts
        // the server with it in the same variable.
        assert!(
            p.contains("writ tool secret set 'github' --env 'GITHUB_TOKEN' --from-mcp-config"),
            "{p}"
        );
        assert!(
            p.contains("--require-secret --mcp-command 'npx' '-y' 'server-github'"),
            "{p}"
        );
        assert!(!p.contains("gap: GITHUB_TOKEN"), "{p}");
        let start = p.find("<<'WRIT_CONFIG'\n").unwrap() + 15;
        let end = p.rfind("\nWRIT_CONFIG").unwrap();
        let rewritten: Value = serde_json::from_str(&p[start..end]).unwrap();
        let b = &rewritten["mcpServers"]["Billing API"];
        assert_eq!(b["command"], "writ");
        assert_eq!(
            b["args"],
            json!(["mcp", "bridge", "billing-api", "--agent", "desk"])
        );
        assert_eq!(
            rewritten["mcpServers"]["clean"]["command"], "uvx",
            "servers without keys stay"
        );
        assert_eq!(
            value_from_config(&cfg, "Billing API", "Authorization").unwrap(),
            format!("Bearer {key}")
        );
        assert!(value_from_config(&cfg, "nope", "Authorization").is_err());
    }

    #[test]
    fn tool_names_are_made_from_server_names() {
        assert_eq!(tool_name("GitHub Copilot"), "github-copilot");
        assert_eq!(tool_name("--"), "mcp-tool");
    }
}
