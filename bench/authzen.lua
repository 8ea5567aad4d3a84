-- wrk script: AuthZEN access evaluations against writ.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("WRIT_TOKEN") or "bench-admin")
wrk.body = [[{"subject":{"type":"agent","id":"demo-agent"},"action":{"name":"StartTask"},"resource":{"type":"tool","id":"tickets","properties":{"scopes":["read"]}},"context":{"intent":"bench"}}]]

done = function(summary, latency, requests)
  io.write(string.format("| %d | %.0f | %.0f µs | %.0f µs | %.0f µs | %d |\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
