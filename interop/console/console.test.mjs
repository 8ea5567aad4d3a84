// The operator console in a real browser: Debian's Chromium, driven by
// playwright-core, against a real `writ serve --dev` with a policy where
// writes wait for a person. An agent works over HTTP meanwhile, as agents
// do; the console must show it live, and what it does there must hold at
// the broker.
//
// Run: WRIT_BIN=target/debug/writ node --test interop/console/
// Screenshots of each page go to interop/console/screenshots/ (or
// $CONSOLE_SCREENSHOTS).

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'

import { chromium } from 'playwright-core'

const BIN = process.env.WRIT_BIN ?? new URL('../../target/debug/writ', import.meta.url).pathname
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium'
const SHOTS = process.env.CONSOLE_SCREENSHOTS ?? new URL('./screenshots', import.meta.url).pathname
const ADMIN = 'console-admin-token'

const POLICIES = `
@id("reads")
permit (principal, action == Action::"StartTask", resource)
when { ["read", "list", "search"].containsAll(context.scopes) };

@id("writes-need-approval")
@approval("required")
permit (principal, action == Action::"StartTask", resource)
when { context has on_behalf_of && ["read", "write"].containsAll(context.scopes) };

@id("no-deletes")
forbid (principal, action, resource)
when { context.scopes.contains("delete") };

@id("no-quarantined")
forbid (principal, action, resource)
when { principal.quarantined };

@id("exchange-within-task")
permit (principal, action == Action::"ExchangeToken", resource);

@id("gateway-reads")
permit (principal, action == Action::"CallTool", resource)
when { ["GET", "HEAD"].contains(context.request.method) && context.scopes.contains("read") };
`

// The policy directory's test cases, which the broker runs on the live
// and the shadow set (`writ policy test` reads the same file).
const TESTS = `
[[case]]
name = "a read is allowed"
agent = { name = "plotter" }
tool = { name = "tickets", scopes = ["read", "write", "delete"] }
scopes = ["read"]
expect = "allow"
expect_policies = ["reads"]

[[case]]
name = "a delete is refused"
agent = { name = "plotter" }
tool = { name = "tickets", scopes = ["read", "write", "delete"] }
scopes = ["delete"]
on_behalf_of = "user:alice"
expect = "deny"
expect_policies = ["no-deletes"]
`

let writ
let browser
const problems = [] // CSP violations and script errors, in any page

async function startWrit () {
  const dir = mkdtempSync(join(tmpdir(), 'writ-console-'))
  const policies = join(dir, 'policies')
  mkdirSync(policies)
  writeFileSync(join(policies, 'p.cedar'), POLICIES)
  writeFileSync(join(policies, 'tests.toml'), TESTS)
  const proc = spawn(BIN, ['serve', '--dev', '--dev-admin-token', ADMIN, '--data-dir', join(dir, 'data'),
    '--policy-dir', policies, '--listen', '127.0.0.1:0', '--gateway-listen', '127.0.0.1:0'],
  { stdio: ['ignore', 'pipe', 'ignore'], env: { PATH: process.env.PATH, WRIT_LOG: 'warn' } })
  const w = await new Promise((resolve, reject) => {
    let buf = ''
    let consoleUrl
    let gateway
    const timer = setTimeout(() => reject(new Error('writ serve did not start')), 60000)
    proc.on('exit', (code) => reject(new Error(`writ serve exited with ${code}`)))
    proc.stdout.on('data', (chunk) => {
      buf += chunk
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        if (line.startsWith('console at ')) consoleUrl = line.split(' ').pop()
        if (line.startsWith('gateway listening on ')) gateway = line.split(' ').pop()
        if (line.startsWith('writ listening on ')) {
          clearTimeout(timer)
          resolve({ addr: line.split(' ').pop(), consoleUrl, gateway })
        }
      }
    })
  })
  proc.stdout.resume()
  return { ...w, stop () { proc.kill('SIGTERM'); rmSync(dir, { recursive: true, force: true }) } }
}

async function call (method, path, token, body) {
  const r = await fetch(writ.addr + path, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await r.text()
  return { status: r.status, json: text ? JSON.parse(text) : null, text }
}

/** The demo agent attests with a fresh join token: its instance token. */
async function attest () {
  const jt = await call('POST', '/v1/agents/demo-agent/join-tokens', ADMIN, { ttl: 600 })
  assert.equal(jt.status, 201, jt.text)
  const a = await call('POST', '/v1/attest', null, { agent: 'demo-agent', join_token: jt.json.join_token })
  assert.equal(a.status, 201, a.text)
  return a.json.access_token
}

const task = (intent, scopes, extra = {}) => ({ intent, capabilities: [{ tool: 'tickets', scopes }], ...extra })

async function newPage () {
  const context = await browser.newContext()
  const page = await context.newPage()
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()) })
  page.on('pageerror', (e) => problems.push(String(e)))
  return page
}

async function signIn (page, credential) {
  await page.goto(writ.consoleUrl)
  await page.locator('#credential').fill(credential)
  await page.keyboard.press('Enter')
  await page.locator('#nav-overview').waitFor()
}

async function shot (page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true })
}

/** How long each page took to render with its data, by page. */
const renderMs = {}

/** Goes to a page by keyboard-reachable link and waits for it to render
 * with its data (each must within a second). */
async function open (page, id) {
  const t0 = Date.now()
  await page.locator(`#nav-${id}`).focus()
  await page.keyboard.press('Enter')
  await page.waitForFunction((id) => document.getElementById('main').dataset.page === id, id)
  const ms = Date.now() - t0
  renderMs[id] = Math.max(renderMs[id] ?? 0, ms)
  assert.ok(ms < 1000, `${id} rendered in ${ms} ms`)
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true })
  writ = await startWrit()
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
})

after(async () => {
  upstream?.close()
  await browser?.close()
  writ?.stop()
})

let admin

test('the serve --dev banner names the console; sign in with the dev admin credential', async () => {
  assert.match(writ.consoleUrl, /^http:\/\/127\.0\.0\.1:\d+\/ui\/$/)
  admin = await newPage()
  await signIn(admin, ADMIN)
  assert.match(await admin.locator('#who').textContent(), /\(admin\)/)
  await admin.locator('#live-tasks').waitFor()
  await admin.locator('#chain-result').waitFor()
  assert.match(await admin.locator('#chain-result').textContent(), /^valid/)
  await shot(admin, 'overview')
})

test('a task appears live when an agent starts one, its intent shown as text', async () => {
  await open(admin, 'tasks')
  const instance = await attest()
  // Hostile text in a field the page shows: it must stay text.
  const intent = `summarise <img src=x onerror="window.__pwned=1"> tickets ${Date.now()}`
  const r = await call('POST', '/v1/tasks', instance, task(intent, ['read']))
  assert.equal(r.status, 201, r.text)
  await admin.getByText(intent).waitFor({ timeout: 15000 })
  assert.equal(await admin.evaluate(() => window.__pwned), undefined)
  assert.equal(await admin.locator('main img').count(), 0)
  await shot(admin, 'tasks')
  // Its delegation tree, then the end of it: its token dies at the broker.
  const row = admin.locator('main tbody tr', { hasText: intent })
  await row.getByRole('button', { name: 'Tree' }).click()
  await admin.locator('#task-tree li', { hasText: intent }).waitFor()
  await row.getByRole('button', { name: 'End' }).click()
  await admin.locator('main tbody tr', { hasText: intent }).getByText('revoked').waitFor()
  const introspected = await call('GET', `/v1/tasks/${r.json.task_id}`, ADMIN)
  assert.equal(introspected.json.status, 'revoked', introspected.text)
  const again = await call('POST', `/v1/tasks/${r.json.task_id}/heartbeat`, r.json.access_token)
  assert.ok(again.status >= 400, again.text)
})

let approvalTask
let instance

test('approve a pending task: the agent heartbeat then gets its token', async () => {
  instance = await attest()
  const r = await call('POST', '/v1/tasks', instance, task('update ticket 42', ['read', 'write'], { on_behalf_of: 'user:alice' }))
  assert.equal(r.status, 202, r.text)
  approvalTask = r.json.task_id
  const waiting = await call('POST', `/v1/tasks/${approvalTask}/heartbeat`, instance)
  assert.equal(waiting.status, 202, waiting.text)

  await open(admin, 'approvals')
  const reason = admin.locator(`#reason-${r.json.approval_id}`)
  await reason.waitFor()
  await reason.fill('ticket 42 is mine to fix')
  await admin.locator('#pending tr', { hasText: 'update ticket 42' }).getByRole('button', { name: 'Approve' }).click()
  await admin.getByText('Nothing waits for a decision.').waitFor({ timeout: 10000 }).catch(async (e) => {
    await shot(admin, 'approvals-failed')
    throw new Error(`${e.message}; status: ${await admin.locator('#status').textContent()}`)
  })
  await shot(admin, 'approvals')

  const beat = await call('POST', `/v1/tasks/${approvalTask}/heartbeat`, instance)
  assert.equal(beat.status, 200, beat.text)
  assert.ok(beat.json.access_token, beat.text)
  const approvals = await call('GET', '/v1/approvals?all=true', ADMIN)
  const decided = approvals.json.find((a) => a.task_id === approvalTask)
  assert.equal(decided.status, 'approved')
  assert.equal(decided.decided_by, 'operator:dev')
  assert.equal(decided.reason, 'ticket 42 is mine to fix')
})

/** A plain HTTP upstream behind the gateway: counts what reaches it. */
let upstream
const reached = []

/** Registers tool "crm" (plain HTTP, behind the embedded gateway) and
 * waits until the gateway serves it. */
async function crmTool () {
  upstream = createServer((req, res) => {
    reached.push(`${req.method} ${req.url}`)
    res.setHeader('content-type', 'application/json')
    res.end('{"ok":true}')
  })
  await new Promise((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  const r = await call('POST', '/v1/tools', ADMIN, {
    name: 'crm', audience: 'https://crm.example', scopes: ['read'],
    upstream: { kind: 'http', url: `http://127.0.0.1:${upstream.address().port}/api` }
  })
  assert.equal(r.status, 201, r.text)
  for (let i = 0; i < 100; i++) {
    const m = await fetch(`${writ.gateway}/.well-known/oauth-protected-resource/crm`).catch(() => null)
    if (m?.status === 200) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error('the gateway never served tool crm')
}

/** A task of the agent for crm:read, and its token for the tool (RFC 8693). */
async function crmToken (inst) {
  const t = await call('POST', '/v1/tasks', inst, { intent: 'look up customer 42', capabilities: [{ tool: 'crm', scopes: ['read'] }] })
  assert.equal(t.status, 201, t.text)
  const r = await fetch(`${writ.addr}/oauth2/token`, {
    method: 'POST',
    body: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: t.json.access_token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience: 'crm',
      scope: 'read'
    })
  })
  const body = await r.json()
  assert.equal(r.status, 200, JSON.stringify(body))
  return { task: t.json, token: body.access_token }
}

const gatewayGet = (token) => fetch(`${writ.gateway}/crm/customers/42`, { headers: { authorization: `Bearer ${token}` } })

let gatewayTask

test('quarantine the agent from the console: its next gateway call is refused', async () => {
  await crmTool()
  const { task: t, token } = await crmToken(instance)
  gatewayTask = t.task_id
  const before = await gatewayGet(token)
  assert.equal(before.status, 200, await before.text())
  assert.equal(reached.length, 1)

  await open(admin, 'agents')
  // Its live instances and its recent decisions (the gateway's among them).
  await admin.locator('button[aria-label="Instances and decisions of demo-agent"]').click()
  const instances = admin.locator('table[aria-label="Live instances of demo-agent"] tbody tr')
  await instances.first().waitFor()
  assert.ok(await instances.count() >= 1)
  assert.match(await instances.first().textContent(), /ins_.*join_token/)
  await admin.waitForFunction(() => [...document.querySelectorAll('table[aria-label="Recent decisions of demo-agent"] tbody tr')]
    .some((r) => /tool_call.*success/.test(r.textContent)), null, { timeout: 10000 })
  const decisions = await admin.locator('table[aria-label="Recent decisions of demo-agent"] tbody').textContent()
  assert.match(decisions, /task_start/)
  // Without a reason, nothing happens.
  await admin.locator('#quarantine-demo-agent').click()
  await admin.locator('#status').getByText(/reason/).waitFor()
  assert.equal(await admin.locator('#state-demo-agent').textContent(), 'active')
  await admin.locator('#reason-demo-agent').fill('console test: leaked token')
  await admin.locator('#quarantine-demo-agent').click()
  await admin.locator('#state-demo-agent', { hasText: 'quarantined' }).waitFor()
  // The very next call through the gateway, with a token that worked a
  // moment ago: refused, and nothing reaches the tool.
  const next = await gatewayGet(token)
  assert.ok(next.status === 401 || next.status === 403, `${next.status} ${await next.text()}`)
  assert.equal(reached.length, 1, 'the refused call never reached the tool')
  await shot(admin, 'agents')
  // The agent's tasks, one link away.
  await admin.locator('main tr', { hasText: 'demo-agent' }).getByRole('link', { name: 'tasks' }).click()
  await admin.waitForFunction(() => document.getElementById('main').dataset.page === 'tasks')
  assert.equal(await admin.locator('#task-agent').inputValue(), 'demo-agent')
  // That task's tree: its state, its tokens (the task's and the tool's,
  // both revoked by the quarantine) and its call through the gateway.
  await admin.locator(`button[aria-label="Delegation tree of ${gatewayTask}"]`).click()
  const node = admin.locator('#task-tree li', { hasText: 'look up customer 42' })
  await node.getByText('revoked', { exact: true }).first().waitFor()
  await node.locator('summary', { hasText: /^2 tokens \(0 live\)$/ }).click()
  const tokens = node.locator(`table[aria-label="Tokens of ${gatewayTask}"] tbody tr`)
  assert.equal(await tokens.count(), 2)
  assert.match(await tokens.nth(1).textContent(), /tool_token.*https:\/\/crm\.example.*revoked/)
  const calls = node.locator('summary', { hasText: /tool call/ })
  await admin.waitForFunction(() => /^[1-9]\d* tool calls?$/.test(
    [...document.querySelectorAll('#task-tree summary')].map((s) => s.textContent).find((t) => /tool call/.test(t)) ?? ''),
  null, { timeout: 10000 })
  await calls.click()
  const call0 = node.locator(`table[aria-label="Tool calls of ${gatewayTask}"] tbody tr`).last()
  assert.match(await call0.textContent(), /crm.*GET \/customers\/42.*success/)
  await shot(admin, 'task-tree')
  const refused = await call('POST', '/v1/tasks', instance, task('one more read', ['read']))
  assert.ok(refused.status === 401 || refused.status === 403, refused.text)
  const beat = await call('POST', `/v1/tasks/${approvalTask}/heartbeat`, instance)
  assert.ok(beat.status >= 400, beat.text)
})

test('filter the audit by agent and kind, read a record, verify the chain', async () => {
  await open(admin, 'audit')
  await admin.locator('#audit-agent').fill('demo-agent')
  await admin.locator('#audit-kind').selectOption('agent_quarantine')
  await admin.locator('#audit-agent').press('Enter')
  const rows = admin.locator('#audit-list tbody tr')
  await admin.waitForFunction(() => {
    const rows = [...document.querySelectorAll('#audit-list tbody tr')]
    return rows.length > 0 && rows.every((r) => r.textContent.includes('agent_quarantine'))
  })
  assert.equal(await rows.count(), 1)
  assert.match(await rows.first().textContent(), /operator:dev.*console test: leaked token/)
  await rows.first().getByRole('button').click()
  assert.match(await admin.locator('#audit-detail').textContent(), /"reason": "console test: leaked token"/)
  await admin.locator('#verify').click()
  await admin.locator('#verify-result', { hasText: 'chain valid' }).waitFor()
  await shot(admin, 'audit')
})

test('the overview plots decisions per minute and denials by policy', async () => {
  // A denial to plot: a delete, refused by "no-deletes" (the agent is
  // quarantined by now, so a fresh one is registered for it).
  const reg = await call('POST', '/v1/agents', ADMIN, { name: 'plotter', attestation: { kind: 'join_token' } })
  assert.equal(reg.status, 201, reg.text)
  const jt = await call('POST', '/v1/agents/plotter/join-tokens', ADMIN, { ttl: 600 })
  const a = await call('POST', '/v1/attest', null, { agent: 'plotter', join_token: jt.json.join_token })
  const denied = await call('POST', '/v1/tasks', a.json.access_token, task('clean up', ['delete']))
  assert.equal(denied.status, 403, denied.text)
  await open(admin, 'overview')
  await admin.locator('#decisions').waitFor()
  await admin.locator('main table[aria-label="Denials by policy"] tr', { hasText: 'no-deletes' }).waitFor()
  // The embedded gateway follows the revocation feed, and holds all of it
  // (the quarantine waited for it).
  const gw = admin.locator('#gateways tbody tr', { hasText: 'embedded' })
  await gw.waitFor()
  assert.match(await gw.textContent(), /up to date/)
  assert.match(await gw.locator('td').nth(4).textContent(), /^0\.0 s$/)
  assert.match(await admin.locator('#revocation-lag').textContent(), /^\d+\.\d s$/)
  const label = await admin.locator('#decisions').getAttribute('aria-label')
  assert.match(label, /[1-9]\d* allowed, [1-9]\d* denied/)
  await shot(admin, 'overview-activity')
})

test('policies: the live set, versions with their diff, the shadow set and its disagreements; reports', async () => {
  // A second live version (one policy more), and a shadow set without
  // "reads": a read the live set allows, the shadow set would deny.
  const added = '\n@id("comments")\npermit (principal, action == Action::"StartTask", resource)\nwhen { ["comment"].containsAll(context.scopes) };\n'
  const pushed = await call('PUT', '/v1/policies', ADMIN, { files: { 'p.cedar': POLICIES + added } })
  assert.equal(pushed.status, 200, pushed.text)
  const shadowSet = POLICIES.replace(/@id\("reads"\)\npermit[^;]*;/, '')
  const sh = await call('PUT', '/v1/policies/shadow', ADMIN, { files: { 'p.cedar': shadowSet } })
  assert.ok(sh.status === 200 || sh.status === 201, sh.text)
  const jt = await call('POST', '/v1/agents/plotter/join-tokens', ADMIN, { ttl: 600 })
  const a = await call('POST', '/v1/attest', null, { agent: 'plotter', join_token: jt.json.join_token })
  const read = await call('POST', '/v1/tasks', a.json.access_token, task('read under a shadow', ['read']))
  assert.equal(read.status, 201, read.text)

  await open(admin, 'policies')
  await admin.locator('summary', { hasText: /^p\.cedar$/ }).click()
  await admin.getByText('writes-need-approval').first().waitFor()
  // News refreshes the page; the file the operator opened stays open.
  const before = await admin.locator('main').getAttribute('data-ready')
  const news = await call('POST', '/v1/agents/plotter/join-tokens', ADMIN, { ttl: 600 })
  assert.equal(news.status, 201, news.text)
  await admin.waitForFunction((b) => document.querySelector('main').dataset.ready !== b, before)
  assert.ok(await admin.getByText('writes-need-approval').first().isVisible(), 'the opened file closed on a refresh')
  // The newest version against its predecessor: the added lines, only.
  await admin.locator('main table[aria-label="Policy versions"] tbody tr').first().getByRole('button', { name: /Changes from/ }).click()
  const diff = admin.locator('#policy-diff pre[aria-label="Diff of p.cedar"]')
  await diff.waitFor()
  const addedLines = await diff.locator('.add').allTextContents()
  assert.deepEqual(addedLines.map((l) => l.trim()).filter((l) => l !== '+'), ['+ @id("comments")',
    '+ permit (principal, action == Action::"StartTask", resource)', '+ when { ["comment"].containsAll(context.scopes) };'])
  assert.equal(await diff.locator('.del').count(), 0)
  // The shadow set, and the read it would have denied.
  assert.match(await admin.locator('#shadow-version').textContent(), /^Shadow set \S+ decides beside the live set/)
  await admin.locator('#disagreements tbody tr', { hasText: 'plotter' }).first().waitFor()
  assert.match(await admin.locator('#disagreements tbody tr', { hasText: 'plotter' }).first().textContent(), /policy_shadow.*would deny/)
  assert.equal(await admin.locator('#disagreements tbody tr').count(), 1, 'only the disagreement, not the shadow set being installed')
  await admin.locator('summary', { hasText: 'shadow: p.cedar' }).waitFor()
  // The directory's test cases, run on both sets: the live set passes
  // them; the shadow set fails the read, saying why.
  const liveTests = admin.locator('#policy-tests table[aria-label="Policy tests on the live set"]')
  await liveTests.waitFor()
  assert.match(await admin.locator('#policy-tests section[aria-label="Live set tests"] h3').textContent(), /2 passed, 0 failed/)
  assert.match(await liveTests.locator('tbody tr', { hasText: 'a read is allowed' }).textContent(), /pass\s*allow/)
  const shadowTests = admin.locator('#policy-tests table[aria-label="Policy tests on the shadow set"]')
  await shadowTests.waitFor()
  assert.match(await admin.locator('#policy-tests section[aria-label="Shadow set tests"] h3').textContent(), /1 passed, 1 failed/)
  const failedRead = await shadowTests.locator('tbody tr', { hasText: 'a read is allowed' }).textContent()
  assert.match(failedRead, /FAIL/)
  assert.match(failedRead, /expected: allow/)
  assert.match(failedRead, /actual: +deny/)
  assert.match(await shadowTests.locator('tbody tr', { hasText: 'a delete is refused' }).textContent(), /pass/)
  assert.match(await admin.locator('#policy-tests').textContent(), /writ policy test/)
  await shot(admin, 'policies')
  const cleared = await call('DELETE', '/v1/policies/shadow', ADMIN)
  assert.ok(cleared.status < 300, cleared.text)
  await open(admin, 'reports')
  await admin.locator('#report-lp').click()
  await admin.waitForFunction(() => document.getElementById('report').textContent.length > 0)
  await shot(admin, 'reports-least-privilege')
  await admin.locator('#report-evidence').click()
  await admin.waitForFunction(() => /owasp|OWASP|NHI/.test(document.getElementById('report').textContent))
  await shot(admin, 'reports-evidence')
})

test('an auditor sees no action buttons and is refused when it forges the call', async () => {
  const made = await call('POST', '/v1/admin/tokens', ADMIN, { name: 'ann', role: 'auditor' })
  assert.equal(made.status, 201, made.text)
  const ann = await newPage()
  await signIn(ann, made.json.token)
  const links = await ann.locator('#nav a').allTextContents()
  assert.deepEqual(links, ['Overview', 'Audit', 'Policies', 'Reports'])
  await ann.locator('#chain-result').waitFor()
  await shot(ann, 'auditor-overview')
  for (const page of ['overview', 'audit', 'policies', 'reports']) {
    await open(ann, page)
    const buttons = await ann.locator('main button:not(.link)').allTextContents()
    const reads = /^(Verify chain|Filter|Least-privilege report|Evidence report|Diff)$/
    assert.deepEqual(buttons.filter((b) => !reads.test(b)), [], `${page}: ${buttons}`)
  }
  // A page the role may not see is not shown, even by its address.
  await ann.goto(`${writ.consoleUrl}#agents`)
  await ann.waitForFunction(() => document.getElementById('main').dataset.page === 'agents' ||
    document.getElementById('main').dataset.page === 'overview')
  assert.equal(await ann.locator('#quarantine-demo-agent').count(), 0)
  // Forged with the session's own CSRF token: the role check refuses it.
  const forged = await ann.evaluate(async () => {
    const s = await (await fetch('/ui/api/session')).json()
    const h = { 'content-type': 'application/json', 'x-writ-csrf': s.csrf }
    const release = await fetch('/ui/api/agents/demo-agent/release', { method: 'POST', headers: h, body: JSON.stringify({ reason: 'forged' }) })
    const v1 = await fetch('/v1/agents/demo-agent/release', { method: 'POST', headers: h })
    return [release.status, v1.status]
  })
  assert.deepEqual(forged, [403, 403])
  const agent = await call('GET', '/v1/agents/demo-agent', ADMIN)
  assert.equal(agent.json.quarantined, true, 'the forged release changed nothing')
})

test('sign-out ends the session at the broker, not only in the page', async () => {
  const stolen = (await admin.context().cookies()).find((c) => c.name === 'writ_console')
  assert.ok(stolen, 'the session cookie')
  assert.equal(stolen.httpOnly, true)
  assert.equal(stolen.sameSite, 'Strict')
  // A sign-out the broker did not do is said so, and the page stays.
  const failing = (route) => route.request().method() === 'DELETE'
    ? route.fulfill({ status: 503, contentType: 'application/json', body: '{"title":"unavailable"}' })
    : route.continue()
  const seen = problems.length
  await admin.route('**/ui/api/session', failing)
  await admin.locator('#signout').click()
  await admin.waitForFunction(() => /Sign-out failed/.test(document.getElementById('status').textContent))
  assert.equal(await admin.locator('#signout').isVisible(), true)
  await admin.unroute('**/ui/api/session', failing)
  // The browser logs the answer it was made to get: not a page's fault.
  problems.splice(seen, problems.length - seen, ...problems.slice(seen).filter((p) => !/status of 503/.test(p)))
  await admin.locator('#signout').click()
  await admin.locator('#credential').waitFor()
  const r = await fetch(`${writ.addr}/v1/agents`, { headers: { cookie: `writ_console=${stolen.value}` } })
  assert.equal(r.status, 401)
})

test("the console's read routes refuse bad input and unknown names clearly, without a credential too", async () => {
  for (const [path, want] of [
    ['/ui/api/tasks/not-a-task-id', 400],
    ['/ui/api/tasks/task_AAAAAAAAAAAAAAAAAAAAAA', 404],
    ['/ui/api/agents/no%20such%20agent', 400],
    ['/ui/api/agents/nobody', 404],
    ['/ui/api/policies/versions/sha256:nope', 404]
  ]) {
    const r = await call('GET', path, ADMIN)
    assert.equal(r.status, want, `${path}: ${r.text}`)
    assert.equal((await call('GET', path)).status, 401, `${path} without a credential`)
  }
})

test('two sign-outs at once leave the parent credential working', async () => {
  // Signed in with the dev admin credential, two tabs of one session sign
  // out at once (and one of them double-clicks).
  const ctx = await browser.newContext()
  const one = await ctx.newPage()
  await signIn(one, ADMIN)
  const two = await ctx.newPage()
  await two.goto(writ.consoleUrl)
  await two.locator('#signout').waitFor()
  // Three DELETEs of the same session race in the page, beside the two
  // tabs' buttons (a button may already be gone when the page has seen
  // its session end: that click has nothing left to do).
  const csrf = await one.evaluate(async () => (await (await fetch('/ui/api/session')).json()).csrf)
  await Promise.all([
    one.locator('#signout').dblclick({ timeout: 3000 }).catch(() => {}),
    two.locator('#signout').click({ timeout: 3000 }).catch(() => {}),
    one.evaluate((token) => Promise.all([1, 2, 3].map(() =>
      fetch('/ui/api/session', { method: 'DELETE', headers: { 'x-writ-csrf': token } }).then((r) => r.status)
    )), csrf)])
  await one.locator('#credential').waitFor()
  const r = await call('GET', '/v1/agents', ADMIN)
  assert.equal(r.status, 200, 'the dev admin credential still works')
  await ctx.close()
})

test('no page broke its Content-Security-Policy or threw', () => {
  console.log(`render times (ms, slowest per page): ${JSON.stringify(renderMs)}`)
  assert.deepEqual(problems.filter((p) => !/status of 40[13]/.test(p)), [])
})
