-- wrk script for bench/issuance.sh: one issuance request, chosen by
-- ISSUE (oidc | oidc-introspect | task | task-dpop | exchange | introspect |
-- health),
-- and a markdown row. task-dpop sends each request with the next proof of
-- the file DPOP_PROOFS (made ahead by `proofs make`, one per line).
local kind = os.getenv("ISSUE") or "task"
wrk.method = "POST"
if kind == "oidc" then
  -- client_secret_basic for client "bench"
  wrk.headers["Authorization"] = "Basic " .. os.getenv("OIDC_BASIC")
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.body = "grant_type=client_credentials&scope=read"
elseif kind == "oidc-introspect" then
  wrk.headers["Authorization"] = "Basic " .. os.getenv("OIDC_BASIC")
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.body = "token=" .. os.getenv("OIDC_TOKEN")
elseif kind == "task" then
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("WRIT_INSTANCE_TOKEN")
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"intent":"issuance bench","capabilities":[{"tool":"tickets","scopes":["read"]}]}'
elseif kind == "task-dpop" then
  wrk.headers["Authorization"] = "DPoP " .. os.getenv("WRIT_INSTANCE_TOKEN")
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"intent":"issuance bench","capabilities":[{"tool":"tickets","scopes":["read"]}]}'
  local proofs, n = {}, 0
  for line in io.lines(os.getenv("DPOP_PROOFS")) do
    n = n + 1
    proofs[n] = line
  end
  local i = 0
  request = function()
    i = i % n + 1
    wrk.headers["DPoP"] = proofs[i]
    return wrk.format()
  end
elseif kind == "exchange" then
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
    .. "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"
    .. "&subject_token=" .. os.getenv("WRIT_TASK_TOKEN") .. "&audience=tickets&scope=read"
elseif kind == "health" then
  -- writ's HTTP stack alone: no credential, no decision, no store
  wrk.method = "GET"
elseif kind == "introspect" then
  wrk.headers["Authorization"] = "Bearer " .. (os.getenv("WRIT_TOKEN") or "bench-admin")
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.body = "token=" .. os.getenv("WRIT_TASK_TOKEN")
end

done = function(summary, latency, requests)
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("%.0f | %.0f µs | %.0f µs | %.0f µs | %d",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), bad))
end
