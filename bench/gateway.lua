-- wrk script: GETs with a tool token (WRIT_TOOL_TOKEN); prints a table row.
wrk.method = "GET"
local tok = os.getenv("WRIT_TOOL_TOKEN")
if tok then wrk.headers["Authorization"] = "Bearer " .. tok end

done = function(summary, latency, requests)
  io.write(string.format("| %d | %.0f | %.0f µs | %.0f µs | %.0f µs | %d |\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
