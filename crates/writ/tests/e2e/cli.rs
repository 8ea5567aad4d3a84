//! The first session a newcomer runs, as the dev banner prints it.

use crate::harness::{Broker, Opts, json, stdout};

#[tokio::test]
async fn first_session_from_the_dev_banner() {
    let b = Broker::start();
    let banner = b.stdout().join("\n");
    assert!(banner.contains("DEV mode"), "{banner}");
    let jt = banner
        .split_whitespace()
        .find(|w| w.starts_with("wjt_"))
        .expect("the banner prints a join token")
        .to_owned();

    // 1. attest with the printed join token (--export prints shell lines).
    let out = b.cli(&["attest", "demo-agent", "--join-token", &jt, "--export"]);
    assert!(out.status.success(), "{out:?}");
    let exports = stdout(&out);
    let instance_token = exports
        .lines()
        .find_map(|l| l.strip_prefix("export WRIT_INSTANCE_TOKEN='"))
        .and_then(|l| l.strip_suffix('\''))
        .unwrap()
        .to_owned();
    let env = [("WRIT_INSTANCE_TOKEN", instance_token.as_str())];

    // 2. a read-only task is allowed.
    let out = b.cli_env(
        &[
            "task",
            "start",
            "--intent",
            "summarise open tickets",
            "--cap",
            "tickets:read",
        ],
        &env,
    );
    assert!(out.status.success(), "{out:?}");
    let task = json(&out);
    let task_token = task["access_token"].as_str().unwrap().to_owned();
    let task_id = task["task_id"].as_str().unwrap().to_owned();
    assert_eq!(task["scope"], "tickets:read");

    let inspect = json(&b.cli(&["token", "inspect", &task_token]));
    assert_eq!(inspect["verified"], "valid");
    assert_eq!(inspect["header"]["typ"], "at+jwt");
    assert_eq!(inspect["claims"]["task"], task_id.as_str());
    assert_eq!(inspect["introspection"]["active"], true);

    // 3. a delete is denied by policy, with exit code 3 and the policy named.
    let out = b.cli_env(
        &[
            "task",
            "start",
            "--intent",
            "clean up old tickets",
            "--cap",
            "tickets:delete",
            "--on-behalf-of",
            "user:alice",
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-deletes"), "{err}");

    // 4. complete (task id from WRIT_TASK_ID, as after `eval ... --export`).
    let out = b.cli_env(
        &["task", "complete"],
        &[
            ("WRIT_INSTANCE_TOKEN", &instance_token),
            ("WRIT_TASK_ID", &task_id),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&out)["status"], "completed");
    let inspect = json(&b.cli(&["token", "inspect", &task_token]));
    assert_eq!(inspect["introspection"]["active"], false);

    let out = b.cli(&["audit", "verify"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&out)["valid"], true);
    let tail = stdout(&b.cli(&["audit", "tail", "-n", "5"]));
    assert_eq!(tail.lines().count(), 5);
}

#[tokio::test]
async fn admin_cli_registers_agents_and_tools() {
    let b = Broker::start();
    let out = b.cli(&[
        "agent",
        "register",
        "billing-bot",
        "--attr",
        "owner=finance",
        "--attr",
        "risk_tier=high",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        json(&out)["spiffe_id"],
        "spiffe://writ.local/agent/billing-bot"
    );
    let out = b.cli(&[
        "tool",
        "register",
        "ledger",
        "--audience",
        "https://ledger.example",
        "--scope",
        "read,write",
    ]);
    assert!(out.status.success(), "{out:?}");
    let names: Vec<String> = json(&b.cli(&["agent", "list"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["billing-bot", "demo-agent"]);
    assert_eq!(json(&b.cli(&["tool", "list"])).as_array().unwrap().len(), 2);
    let jt = stdout(&b.cli(&[
        "agent",
        "join-token",
        "billing-bot",
        "--ttl",
        "60",
        "--field",
        "join_token",
    ]));
    assert!(jt.trim().starts_with("wjt_"));

    // A duplicate is refused with exit code 3 and a clear message.
    let out = b.cli(&["agent", "register", "billing-bot"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    // No admin credential: a clear local error.
    let out = b.cli_env(&["agent", "list"], &[("WRIT_TOKEN", "wrong")]);
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test]
async fn serve_reads_a_config_file_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("p.cedar"),
        "@id(\"all\") permit (principal, action, resource);",
    )
    .unwrap();
    let cfg = dir.path().join("writ.toml");
    std::fs::write(
        &cfg,
        format!(
            "policy_dir = {:?}\ntrust_domain = \"corp.example\"\nlease_ttl = 30\n",
            policies.display().to_string()
        ),
    )
    .unwrap();
    let b = Broker::start_with(Opts {
        dev: true,
        policy_dir: None,
        extra: vec!["--config".into(), cfg.display().to_string()],
    });
    let agent = b
        .admin()
        .agent(&"demo-agent".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(agent.spiffe_id, "spiffe://corp.example/agent/demo-agent");
    let att = b.attest("demo-agent").await;
    // The config's permit-all policy is live (the examples would deny this).
    let t = b
        .start_task(&att.access_token, &["tickets:delete"])
        .await
        .unwrap();
    let task = b.admin().task(&t.task_id).await.unwrap();
    assert_eq!(
        task.lease_expires_at.millis() - task.created_at.millis(),
        30_000
    );

    // An unknown key in the config file is refused at start.
    std::fs::write(&cfg, "lease_tttl = 30\n").unwrap();
    let out = std::process::Command::new(crate::harness::BIN)
        .args([
            "serve",
            "--config",
            &cfg.display().to_string(),
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field"),
        "{out:?}"
    );
}
