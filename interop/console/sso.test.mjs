// Single sign-on into the console in a real browser: Debian's Chromium,
// driven by playwright-core, clicks "Sign in with single sign-on" on the
// console of a real `writ serve`, signs in at a real OpenID provider (npm
// `oidc-provider`, interop/node/oidc_provider.mjs, its stock login and
// consent pages) and comes back to the console signed in, by the
// authorization code flow with PKCE that writ runs as the OIDC client.
//
// Run: WRIT_BIN=target/debug/writ node --test interop/console/

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'

import { chromium } from 'playwright-core'

const BIN = process.env.WRIT_BIN ?? new URL('../../target/debug/writ', import.meta.url).pathname
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium'
const IDP = new URL('../node/oidc_provider.mjs', import.meta.url).pathname
const SECRET = 'console-secret-for-the-browser-test'

const procs = []
let dir
let browser
let writ

function freePort () {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
  })
}

/** Starts `cmd args` and resolves with the last word of its first stdout
 * line starting with `prefix`. */
function startUntil (cmd, args, env, prefix) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'], env })
  procs.push(proc)
  return new Promise((resolve, reject) => {
    let buf = ''
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start`)), 60000)
    proc.on('exit', (code) => reject(new Error(`${cmd} exited with ${code}`)))
    proc.stdout.on('data', (chunk) => {
      buf += chunk
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        if (line.startsWith(prefix)) {
          clearTimeout(timer)
          proc.stdout.resume()
          resolve(line.split(' ').pop())
        }
      }
    })
  })
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'writ-console-sso-'))
  const port = await freePort()
  const addr = `http://127.0.0.1:${port}`
  const issuer = await startUntil('node', [IDP, String(await freePort())],
    { PATH: process.env.PATH, WRIT_CONSOLE_REDIRECT: `${addr}/ui/sso/callback`, WRIT_CONSOLE_SECRET: SECRET },
    'oidc-provider listening on ')
  writeFileSync(join(dir, 'secret'), SECRET)
  writeFileSync(join(dir, 'writ.toml'), `
operator_oidc_issuer = "${issuer}"
operator_oidc_client_id = "writ-cli"
operator_oidc_redirect_uri = "${addr}/ui/sso/callback"
operator_oidc_console_client_id = "writ-console"
operator_oidc_client_secret_file = "${join(dir, 'secret')}"

[[operator_oidc_roles]]
claim = "groups"
value = "writ-approvers"
role = "approver"
`)
  writ = await startUntil(BIN, ['serve', '--dev', '--dev-admin-token', 'sso-admin-token',
    '--data-dir', join(dir, 'data'), '--config', join(dir, 'writ.toml'),
    '--listen', `127.0.0.1:${port}`, '--gateway-listen', '127.0.0.1:0'],
  { PATH: process.env.PATH, WRIT_LOG: 'warn' }, 'writ listening on ')
  assert.equal(writ, addr)
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
})

after(async () => {
  await browser?.close()
  for (const p of procs) p.kill('SIGTERM')
  if (dir) rmSync(dir, { recursive: true, force: true })
})

test('an operator signs in to the console with single sign-on, by the authorization code and PKCE', async () => {
  const page = await (await browser.newContext()).newPage()
  const problems = []
  page.on('console', (m) => {
    if (m.type() === 'error' && m.location().url.startsWith(writ)) problems.push(m.text())
  })
  page.on('pageerror', (e) => problems.push(String(e)))

  await page.goto(`${writ}/ui/`)
  const link = page.locator('#sso-link')
  await link.waitFor()
  await link.click()

  // The provider's own pages: sign in as alice (any password), consent.
  await page.waitForURL((u) => !u.href.startsWith(writ))
  await page.locator('input[name="login"]').fill('alice')
  await page.locator('input[name="password"]').fill('any password')
  await page.locator('button[type="submit"]').click()
  await page.locator('input[name="login"]').waitFor({ state: 'detached' })
  await page.waitForLoadState()
  if (!page.url().startsWith(writ)) await page.locator('button[type="submit"]').click()

  // Back at the console, signed in as the person the provider named, in
  // the role the claims map to; the address is the console's own page.
  await page.locator('#who').filter({ hasText: 'alice@example.com (approver)' }).waitFor()
  assert.equal(page.url(), `${writ}/ui/`)
  await page.locator('#nav-approvals').waitFor()
  // The console's session cookie; the sign-in's own is gone. (The
  // provider's cookies share the host: cookies know no ports.)
  const cookies = await page.context().cookies(writ)
  const session = cookies.find((c) => c.name === 'writ_console')
  assert.ok(session && session.httpOnly && session.sameSite === 'Strict', JSON.stringify(cookies))
  assert.ok(!cookies.some((c) => c.name === 'writ-sso-flow'), JSON.stringify(cookies))
  assert.deepEqual(problems.filter((p) => !/status of 40[13]/.test(p)), [])
})
