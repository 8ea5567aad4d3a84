"""The stdio MCP server bench/stress.sh registers behind the gateway: one
tool, `echo`, and the standard library alone.

The gateway starts one of these per MCP session, so what a session costs
is this process. A server built with the MCP Python SDK takes about 70 MB
and 0.6 s of CPU to start; a flood of sessions against the gateway's
limits before H6 (256 at once) would then measure the machine running out
of memory rather than the gateway. This one takes a few MB and starts in
tens of milliseconds. It exits when the gateway closes its standard input.
"""
import json
import sys

TOOL = {
    "name": "echo",
    "description": "Says back what it is given.",
    "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}},
}


def result_of(method, params):
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "stress-echo", "version": "1"},
        }
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": [TOOL]}
    if method == "tools/call" and params.get("name") == "echo":
        text = str((params.get("arguments") or {}).get("message", ""))
        return {"content": [{"type": "text", "text": text}], "isError": False}
    return None


def main():
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict) or "id" not in msg or "method" not in msg:
            continue  # a notification, or an answer to nothing we asked
        result = result_of(msg["method"], msg.get("params") or {})
        if result is None:
            answer = {"jsonrpc": "2.0", "id": msg["id"],
                      "error": {"code": -32601, "message": f"no method {msg['method']}"}}
        else:
            answer = {"jsonrpc": "2.0", "id": msg["id"], "result": result}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
