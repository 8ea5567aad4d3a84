// The console on a fleet: 10,000 tasks and 100,000 audit records, seeded
// into the SQLite database of a real `writ serve --dev` while it is
// stopped (tasks as rows; audit records appended through writ-store, so
// the chain stays whole: crates/writ-store/examples/seed_fleet.rs), then
// every page opened by keyboard in Debian's Chromium must render with its
// data within a second.
//
// Run: cargo build -p writ -p writ-store --example seed_fleet &&
//      WRIT_BIN=target/debug/writ node --test interop/console/

import assert from 'node:assert/strict'
import { spawn, execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, before, test } from 'node:test'

import { chromium } from 'playwright-core'

const BIN = process.env.WRIT_BIN ?? new URL('../../target/debug/writ', import.meta.url).pathname
const SEED = process.env.SEED_FLEET ?? join(dirname(BIN), 'examples', 'seed_fleet')
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium'
const SHOTS = process.env.CONSOLE_SCREENSHOTS ?? new URL('./screenshots', import.meta.url).pathname
const ADMIN = 'fleet-admin-token'
const TASKS = 10000
const RECORDS = 100000

const dir = mkdtempSync(join(tmpdir(), 'writ-fleet-'))
const data = join(dir, 'data')

/** `writ serve --dev` on the fleet's data directory, until it listens. */
function serve (listen = '127.0.0.1:0') {
  const proc = spawn(BIN, ['serve', '--dev', '--dev-admin-token', ADMIN, '--data-dir', data,
    '--listen', listen, '--gateway-listen', '127.0.0.1:0'],
  { stdio: ['ignore', 'pipe', 'ignore'], env: { PATH: process.env.PATH, WRIT_LOG: 'warn' } })
  return new Promise((resolve, reject) => {
    let buf = ''
    let consoleUrl
    const timer = setTimeout(() => reject(new Error('writ serve did not start')), 60000)
    proc.on('exit', (code) => reject(new Error(`writ serve exited with ${code}`)))
    proc.stdout.on('data', (chunk) => {
      buf += chunk
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        if (line.startsWith('console at ')) consoleUrl = line.split(' ').pop()
        if (line.startsWith('writ listening on ')) {
          clearTimeout(timer)
          proc.stdout.resume()
          resolve({
            proc,
            addr: line.split(' ').pop(),
            consoleUrl,
            stop: () => new Promise((resolve) => {
              proc.removeAllListeners('exit')
              proc.on('exit', resolve)
              proc.kill('SIGTERM')
            })
          })
        }
      }
    })
  })
}

async function call (w, method, path, token, body) {
  const r = await fetch(w.addr + path, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await r.text()
  return { status: r.status, json: text ? JSON.parse(text) : null, text }
}

let writ
let browser
let seeded = ''
const problems = []

before(async () => {
  mkdirSync(SHOTS, { recursive: true })
  // First start: the demo agent and an instance of it to own the fleet.
  const first = await serve()
  const jt = await call(first, 'POST', '/v1/agents/demo-agent/join-tokens', ADMIN, { ttl: 600 })
  assert.equal(jt.status, 201, jt.text)
  const a = await call(first, 'POST', '/v1/attest', null, { agent: 'demo-agent', join_token: jt.json.join_token })
  assert.equal(a.status, 201, a.text)
  await first.stop()
  const t0 = Date.now()
  seeded = execFileSync(SEED, [join(data, 'writ.db'), 'demo-agent', a.json.instance_id, String(TASKS), String(RECORDS)]).toString().trim()
  seeded += ` (${Date.now() - t0} ms in all)`
  // The same address again: the issuer, and so the audit checkpoints
  // signed under it, stay the same.
  writ = await serve(first.addr.replace(/^http:\/\//, ''))
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
})

after(async () => {
  await browser?.close()
  await writ?.stop()
  rmSync(dir, { recursive: true, force: true })
})

const renderMs = {}

async function open (page, id, ready) {
  const t0 = Date.now()
  await page.locator(`#nav-${id}`).focus()
  await page.keyboard.press('Enter')
  await page.waitForFunction((id) => document.getElementById('main').dataset.page === id, id)
  if (ready) await ready()
  const ms = Date.now() - t0
  renderMs[id] = ms
  assert.ok(ms < 1000, `${id} rendered with its data in ${ms} ms on a fleet`)
}

test(`every page renders within a second on ${TASKS} tasks and ${RECORDS} audit records`, async () => {
  console.log(seeded)
  const page = await (await browser.newContext()).newPage()
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()) })
  page.on('pageerror', (e) => problems.push(String(e)))
  await page.goto(writ.consoleUrl)
  await page.locator('#credential').fill(ADMIN)
  await page.keyboard.press('Enter')
  await page.locator('#live-tasks').waitFor()
  assert.ok(Number(await page.locator('#audit-head').textContent()) > RECORDS)
  assert.ok(Number(await page.locator('#live-tasks').textContent()) >= TASKS / 10)
  // The seeded records joined the chain: it verifies whole.
  await page.locator('#chain-result').waitFor({ timeout: 30000 })
  assert.match(await page.locator('#chain-result').textContent(), /^valid: 1000\d\d records/)

  await open(page, 'tasks', () => page.locator('main .pager', { hasText: /^\d+ tasks/ }).waitFor())
  const total = Number((await page.locator('main .pager span').first().textContent()).split(' ')[0])
  assert.ok(total >= TASKS, `${total} tasks`)
  assert.equal(await page.locator('main table[aria-label="Tasks"] tbody tr').count(), 25)
  await page.screenshot({ path: join(SHOTS, 'fleet-tasks.png'), fullPage: true })

  await open(page, 'audit', () => page.locator('#audit-list tbody tr').first().waitFor())
  assert.equal(await page.locator('#audit-list tbody tr').count(), 50)
  await page.screenshot({ path: join(SHOTS, 'fleet-audit.png'), fullPage: true })

  await open(page, 'agents', () => page.locator('#state-demo-agent').waitFor())
  await open(page, 'approvals', () => page.getByText('Nothing waits for a decision.').waitFor())
  await open(page, 'policies', () => page.locator('#disagreements p, #disagreements table').first().waitFor())
  await page.screenshot({ path: join(SHOTS, 'fleet-policies.png'), fullPage: true })
  await open(page, 'reports')
  await open(page, 'overview', () => page.locator('#decisions').waitFor())
  await page.screenshot({ path: join(SHOTS, 'fleet-overview.png'), fullPage: true })
  // The plot counts every record of its half hour, grouped by the store,
  // not the newest 50,000: of the 100,000 seeded over the half hour, a
  // fifth are denials and two fifths allowed decisions (a minute or two of
  // the oldest may have left the window since).
  const label = await page.locator('#decisions').getAttribute('aria-label')
  const [allowed, denied] = label.match(/(\d+) allowed, (\d+) denied/).slice(1).map(Number)
  assert.ok(denied > RECORDS / 5 * 0.6 && denied <= RECORDS / 5, label)
  assert.ok(allowed > RECORDS * 2 / 5 * 0.6 && allowed <= RECORDS * 2 / 5 + 100, label)
  assert.match(await page.locator('main table[aria-label="Denials by policy"] tr', { hasText: 'no-deletes' }).textContent(), new RegExp(String(denied)))

  // A filtered search that must read far back: tasks of one person.
  const t0 = Date.now()
  await open(page, 'tasks')
  await page.locator('#task-q').fill('user:person7')
  await page.keyboard.press('Enter')
  await page.locator('main .pager span', { hasText: /^(6[0-9]|7[0-9]) tasks$/ }).waitFor()
  assert.ok(Date.now() - t0 < 2000, 'search on a fleet')
  console.log(`fleet render times (ms): ${JSON.stringify(renderMs)}`)
  assert.deepEqual(problems.filter((p) => !/status of 40[13]/.test(p)), [])
})
