"""`writ discover` on a fixture tree (fake keys of each kind in env files,
the environment and MCP client configs): each is found, by place and MCP
server, and no value is ever printed in full. Offline: no broker."""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

from conftest import BIN

# Fake keys, each built from two pieces so that no scanner flags this file.
FAKES = {
    "aws-access-key": "AKIA" + "Q2XY7PLMNB3TRZ5W",
    "github-pat": "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A",
    "stripe-secret-key": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc9x",
    "slack-token": "xoxb-" + "1234567890123-1234567890123-aBcDeFgHiJkLmNoPqRsTuVwX",
    "postgres-connection-uri": "postgres://app:" + "Sup3rS3cretPw" + "@db.internal:5432/prod",
    "generic-api-key": "Zk29sLq0PwX8" + "vN3mT7yR1uB5",
}


def test_discovery_finds_each_fake_key_and_never_prints_a_value():
    with tempfile.TemporaryDirectory() as home:
        with open(os.path.join(home, ".env"), "w") as f:
            f.write(f"AWS_ACCESS_KEY_ID={FAKES['aws-access-key']}\n"
                    f"DATABASE_URL={FAKES['postgres-connection-uri']}\n"
                    f"OPENAI_API_KEY={FAKES['generic-api-key']}\n")
        os.makedirs(os.path.join(home, ".cursor"))
        with open(os.path.join(home, ".cursor", "mcp.json"), "w") as f:
            json.dump({"mcpServers": {
                "github": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"],
                           "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": FAKES["github-pat"]}},
                "billing": {"url": "https://billing.example/mcp",
                            "headers": {"Authorization": f"Bearer {FAKES['stripe-secret-key']}"}}}}, f)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "SLACK_BOT_TOKEN": FAKES["slack-token"]}
        out = {}
        for fmt in ("json", "table"):
            p = subprocess.run([BIN, "discover", home, "--env", "--mcp-configs", "--format", fmt],
                               env=env, capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, p.stderr
            out[fmt] = p.stdout + p.stderr
    found = json.loads(out["json"].strip())
    by_rule = {f["rule"]: f for f in found}
    assert set(FAKES) <= set(by_rule), sorted(by_rule)
    assert by_rule["github-pat"]["mcp_server"] == "github"
    assert by_rule["github-pat"]["key"] == "GITHUB_PERSONAL_ACCESS_TOKEN"
    assert by_rule["stripe-secret-key"]["mcp_server"] == "billing"
    assert by_rule["slack-token"]["source"] == "environment"
    assert by_rule["aws-access-key"]["line"] == 1
    assert by_rule["postgres-connection-uri"]["key"] == "DATABASE_URL"
    for rule, value in FAKES.items():
        for fmt, text in out.items():
            assert value not in text, f"{rule} printed in full ({fmt})"
    assert "Sup3rS3cretPw" not in out["json"] + out["table"]
    assert "ghp_… (40 chars)" in out["table"]


HERE = pathlib.Path(__file__).resolve().parent


def test_the_plan_asks_each_server_for_its_tools_only_when_told_to():
    """`--plan --ask-servers`: each server the plan moves is asked for its
    MCP tools (`tools/list`), a stdio server started as its config says (the
    MCP Python SDK's server), an HTTP one (the SDK's conformance server)
    sent its config's headers, and the tool is registered with their names
    as scopes. Without the flag nothing is started or called: the
    placeholder stays, and the plan says why. No key is printed either way."""
    from test_mcp_conformance import start_python_server, tool_names
    proc, url = start_python_server()
    try:
        with tempfile.TemporaryDirectory() as home:
            with open(os.path.join(home, "mcp.json"), "w") as f:
                json.dump({"mcpServers": {
                    "PySDK": {"url": url, "headers": {"Authorization": f"Bearer {FAKES['stripe-secret-key']}"}},
                    "notes": {"command": sys.executable, "args": [str(HERE / "mcp_stdio_server.py")],
                              "env": {"NOTES_API_KEY": FAKES["github-pat"]}}}}, f)
            env = {"PATH": os.environ.get("PATH", ""), "HOME": home}
            plain = subprocess.run([BIN, "discover", home, "--plan"], env=env,
                                   capture_output=True, text=True, timeout=60)
            asked = subprocess.run([BIN, "discover", home, "--plan", "--ask-servers"], env=env,
                                   capture_output=True, text=True, timeout=120)
            http_tools = tool_names(url)
    finally:
        proc.terminate()
        proc.wait(10)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.count("--scope 'REPLACE-WITH-TOOL-NAMES'") == 2, plain.stdout
    assert "not asked (run with --ask-servers" in plain.stdout
    assert asked.returncode == 0, asked.stderr
    assert "REPLACE-WITH-TOOL-NAMES" not in asked.stdout, asked.stdout + asked.stderr
    assert "--scope 'lookup,key_seen'" in asked.stdout, asked.stdout
    assert f"--scope '{','.join(http_tools)}'" in asked.stdout, asked.stdout
    for value in FAKES.values():
        for text in (plain.stdout, plain.stderr, asked.stdout, asked.stderr):
            assert value not in text
