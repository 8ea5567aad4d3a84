// Stock Node OAuth and JOSE libraries against a running writ, used as their
// users would: oauth4webapi for discovery, DPoP (Ed25519 and ES256 keys),
// token exchange, introspection and revocation (client_secret_basic and
// private_key_jwt) and RFC 9068 validation at a resource server; jose for
// the tool that verifies the gateway's transaction tokens. Nothing here
// adds client-auth or DPoP code of its own.
//
// Run: WRIT_BIN=target/debug/writ node --test interop/node/

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'

import * as jose from 'jose'
import * as oauth from 'oauth4webapi'

const BIN = process.env.WRIT_BIN ?? new URL('../../target/debug/writ', import.meta.url).pathname
const ADMIN = 'interop-admin-token'
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token'
const HELPDESK = 'https://helpdesk.example'
const LEDGER = 'https://ledger.example'
const insecure = { [oauth.allowInsecureRequests]: true }

// ------------------------------------------------------------------ writ

async function startWrit (extra = []) {
  const dir = mkdtempSync(join(tmpdir(), 'writ-node-'))
  const proc = spawn(BIN, ['serve', '--dev', '--dev-admin-token', ADMIN, '--data-dir', dir,
    '--listen', '127.0.0.1:0', '--gateway-listen', '127.0.0.1:0', ...extra],
  { stdio: ['ignore', 'pipe', 'ignore'], env: { PATH: process.env.PATH, WRIT_LOG: 'warn' } })
  const w = await new Promise((resolve, reject) => {
    let buf = ''
    let gateway
    const timer = setTimeout(() => reject(new Error('writ serve did not start')), 60000)
    proc.on('exit', (code) => reject(new Error(`writ serve exited with ${code}`)))
    proc.stdout.on('data', (chunk) => {
      buf += chunk
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        if (line.startsWith('gateway listening on ')) gateway = line.split(' ').pop()
        if (line.startsWith('writ listening on ')) {
          clearTimeout(timer)
          resolve({ addr: line.split(' ').pop(), gateway })
        }
      }
    })
  })
  proc.stdout.resume()
  return {
    ...w,
    stop () {
      proc.kill('SIGTERM')
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

async function admin (w, method, path, body) {
  const r = await fetch(w.addr + path, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await r.text()
  return { status: r.status, json: text ? JSON.parse(text) : null, text }
}

async function registerTool (w, name, audience, upstream) {
  const r = await admin(w, 'POST', '/v1/tools', { name, audience, scopes: ['read'], ...(upstream ? { upstream } : {}) })
  assert.equal(r.status, 201, r.text)
}

async function waitForTool (w, name) {
  for (let i = 0; i < 100; i++) {
    const r = await fetch(`${w.gateway}/.well-known/oauth-protected-resource/${name}`)
    if (r.status === 200) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`gateway never saw tool ${name}`)
}

/**
 * An agent's task, DPoP-bound to `keyPair` from attestation on: the
 * attestation proof (no access token yet) is signed with jose, every later
 * request's by oauth4webapi's DPoP handle.
 */
async function boundTask (w, agent, keyPair, alg, dpop, { register = true, intent = 'triage the queue', obo = 'bob@example.com' } = {}) {
  let r
  if (register) {
    r = await admin(w, 'POST', '/v1/agents', { name: agent, attestation: { kind: 'join_token' } })
    assert.equal(r.status, 201, r.text)
  }
  r = await admin(w, 'POST', `/v1/agents/${agent}/join-tokens`, { ttl: 60 })
  const htu = w.addr + '/v1/attest'
  const proof = await new jose.SignJWT({ htm: 'POST', htu, jti: crypto.randomUUID() })
    .setProtectedHeader({ alg, typ: 'dpop+jwt', jwk: await jose.exportJWK(keyPair.publicKey) })
    .setIssuedAt()
    .sign(keyPair.privateKey)
  const attest = await fetch(htu, {
    method: 'POST',
    headers: { 'content-type': 'application/json', dpop: proof },
    body: JSON.stringify({ agent, join_token: r.json.join_token })
  })
  assert.equal(attest.status, 201, await attest.clone().text())
  const instance = (await attest.json()).access_token
  const task = await oauth.protectedResourceRequest(instance, 'POST', new URL(w.addr + '/v1/tasks'),
    new Headers({ 'content-type': 'application/json' }), JSON.stringify({
      intent,
      on_behalf_of: obo,
      capabilities: [{ tool: 'helpdesk', scopes: ['read'] }, { tool: 'ledger', scopes: ['read'] }]
    }), { DPoP: dpop, ...insecure })
  assert.equal(task.status, 201, await task.clone().text())
  return task.json()
}

async function discover (w) {
  const issuer = new URL(w.addr)
  const response = await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure })
  return oauth.processDiscoveryResponse(issuer, response)
}

/** RFC 8693 through oauth4webapi's generic grant, as a public client with DPoP. */
async function exchange (as, dpop, task, audience) {
  const client = { client_id: 'agent' }
  const response = await oauth.genericTokenEndpointRequest(as, client, oauth.None(), EXCHANGE, {
    subject_token: task.access_token, subject_token_type: ACCESS_TOKEN, audience, scope: 'read'
  }, { DPoP: dpop, ...insecure })
  const out = await oauth.processGenericTokenEndpointResponse(as, client, response)
  assert.equal(out.token_type, 'dpop')
  return out.access_token
}

/** A resource server that validates requests with oauth4webapi's validateJwtAccessToken. */
function resourceServer (as, audience, signingAlgorithms) {
  const srv = http.createServer(async (req, res) => {
    const request = new Request(`http://127.0.0.1:${srv.address().port}${req.url}`, {
      method: req.method, headers: req.headers
    })
    try {
      const claims = await oauth.validateJwtAccessToken(as, request, audience, { signingAlgorithms, ...insecure })
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(claims))
    } catch (e) {
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ refused: String(e) }))
    }
  })
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)))
}

/** A tool that accepts a call only with a transaction token jose verifies. */
function txnTool (as, audience) {
  const JWKS = jose.createRemoteJWKSet(new URL(as.jwks_uri))
  const seen = []
  const srv = http.createServer(async (req, res) => {
    const token = req.headers['txn-token']
    try {
      const { payload } = await jose.jwtVerify(token ?? '', JWKS, {
        issuer: as.issuer, audience, typ: 'txntoken+jwt', algorithms: ['ES256'],
        maxTokenAge: 60, requiredClaims: ['jti', 'txn', 'sub', 'exp', 'iat']
      })
      seen.push({ token, status: 200 })
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ claims: payload, headers: req.headers }))
    } catch (e) {
      seen.push({ token, status: 401 })
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ refused: `${e.code}: ${e.message}` }))
    }
  })
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve({ srv, seen, url: `http://127.0.0.1:${srv.address().port}` })))
}

// ------------------------------------------------------------------ tests

for (const signing of ['EdDSA', 'ES256']) {
  for (const dpopAlg of ['Ed25519', 'ES256']) {
    test(`oauth4webapi: discovery, DPoP (${dpopAlg}), exchange, RFC 9068 (${signing} tokens), introspection`, async () => {
      const w = await startWrit(signing === 'ES256' ? ['--signing-alg', 'ES256'] : [])
      try {
        const as = await discover(w)
        assert.deepEqual(as.introspection_endpoint_auth_methods_supported, ['client_secret_basic', 'private_key_jwt'])
        assert.deepEqual(as.revocation_endpoint_auth_methods_supported, ['client_secret_basic', 'private_key_jwt'])
        assert.ok(as.dpop_signing_alg_values_supported.includes(dpopAlg))
        await registerTool(w, 'helpdesk', HELPDESK)
        await registerTool(w, 'ledger', LEDGER)
        const keyPair = await oauth.generateKeyPair(dpopAlg, { extractable: true })
        const dpop = oauth.DPoP({ client_id: 'agent' }, keyPair)
        const task = await boundTask(w, 'node-agent', keyPair, dpopAlg, dpop)
        const token = await exchange(as, dpop, task, HELPDESK)

        // RFC 9068 + RFC 9449 at a resource server, with oauth4webapi.
        const rs = await resourceServer(as, HELPDESK, [signing, dpopAlg])
        try {
          const url = new URL(`http://127.0.0.1:${rs.address().port}/queue/7`)
          const r = await oauth.protectedResourceRequest(token, 'GET', url, new Headers(), null, { DPoP: dpop, ...insecure })
          const claims = await r.json()
          assert.equal(r.status, 200, JSON.stringify(claims))
          assert.equal(claims.aud, HELPDESK)
          assert.equal(claims.obo, 'bob@example.com')
          assert.equal(claims.cnf.jkt, await dpop.calculateThumbprint())
          assert.equal(jose.decodeProtectedHeader(token).alg, signing)
        } finally {
          rs.close()
        }
        // The same token at a resource server of another audience: refused.
        const other = await resourceServer(as, LEDGER, [signing, dpopAlg])
        try {
          const url = new URL(`http://127.0.0.1:${other.address().port}/invoices`)
          const r = await oauth.protectedResourceRequest(token, 'GET', url, new Headers(), null, { DPoP: dpop, ...insecure })
          assert.equal(r.status, 401)
        } finally {
          other.close()
        }

        // Introspection with client_secret_basic ...
        let reg = await admin(w, 'POST', '/v1/clients', { client_id: 'helpdesk-rs', audiences: [HELPDESK] })
        assert.equal(reg.status, 201, reg.text)
        const basic = oauth.ClientSecretBasic(reg.json.client_secret)
        let response = await oauth.introspectionRequest(as, { client_id: 'helpdesk-rs' }, basic, token, insecure)
        let out = await oauth.processIntrospectionResponse(as, { client_id: 'helpdesk-rs' }, response)
        assert.equal(out.active, true)
        assert.equal(out.aud, HELPDESK)

        // ... and private_key_jwt, with an ES256 and an Ed25519 key.
        let pkClient
        let pkAuth
        for (const alg of ['ES256', 'Ed25519']) {
          const keys = await oauth.generateKeyPair(alg, { extractable: true })
          pkClient = { client_id: `helpdesk-rs-${alg.toLowerCase()}` }
          reg = await admin(w, 'POST', '/v1/clients', {
            client_id: pkClient.client_id, audiences: [HELPDESK], jwks: { keys: [await jose.exportJWK(keys.publicKey)] }
          })
          assert.equal(reg.status, 201, reg.text)
          assert.equal(reg.json.client_secret, undefined)
          pkAuth = oauth.PrivateKeyJwt(keys.privateKey)
          response = await oauth.introspectionRequest(as, pkClient, pkAuth, token, insecure)
          out = await oauth.processIntrospectionResponse(as, pkClient, response)
          assert.equal(out.active, true)
        }

        // A wrong secret is invalid_client, and changes nothing.
        response = await oauth.introspectionRequest(as, { client_id: 'helpdesk-rs' }, oauth.ClientSecretBasic('wrong'), token, insecure)
        assert.equal(response.status, 401)
        assert.match(response.headers.get('www-authenticate'), /^Basic/)
        assert.equal((await response.clone().json()).error, 'invalid_client')
        await assert.rejects(oauth.processIntrospectionResponse(as, { client_id: 'helpdesk-rs' }, response),
          oauth.WWWAuthenticateChallengeError)

        // Revocation by the resource server with private_key_jwt.
        response = await oauth.revocationRequest(as, pkClient, pkAuth, token, insecure)
        await oauth.processRevocationResponse(response)
        response = await oauth.introspectionRequest(as, { client_id: 'helpdesk-rs' }, basic, token, insecure)
        out = await oauth.processIntrospectionResponse(as, { client_id: 'helpdesk-rs' }, response)
        assert.equal(out.active, false)
      } finally {
        w.stop()
      }
    })
  }
}

test('jose: a tool verifies transaction tokens and refuses forged ones and ones for another tool (ES256 writ)', async () => {
  // ES256 access tokens: the gateway verifies them as it does EdDSA ones.
  const w = await startWrit(['--signing-alg', 'ES256'])
  const as = await discover(w)
  const helpdesk = await txnTool(as, HELPDESK)
  const ledger = await txnTool(as, LEDGER)
  try {
    let r = await admin(w, 'POST', '/v1/agents', { name: 'txn-agent', attestation: { kind: 'join_token' } })
    assert.equal(r.status, 201, r.text)
    await registerTool(w, 'helpdesk', HELPDESK, { kind: 'http', url: helpdesk.url })
    await registerTool(w, 'ledger', LEDGER, { kind: 'http', url: ledger.url, txn_token_only: true })
    await waitForTool(w, 'helpdesk')
    await waitForTool(w, 'ledger')
    // The agent first: the gateway knows it once it sees the tools.
    const keyPair = await oauth.generateKeyPair('ES256', { extractable: true })
    const dpop = oauth.DPoP({ client_id: 'agent' }, keyPair)
    const task = await boundTask(w, 'txn-agent', keyPair, 'ES256', dpop,
      { register: false, intent: 'reconcile', obo: 'carol@example.com' })

    const token = await exchange(as, dpop, task, HELPDESK)
    let response = await oauth.protectedResourceRequest(token, 'GET', new URL(`${w.gateway}/helpdesk/tickets`),
      new Headers({ 'txn-token': 'forged.by.the.agent' }), null, { DPoP: dpop, ...insecure })
    let body = await response.json()
    assert.equal(response.status, 200, JSON.stringify(body))
    assert.equal(body.claims.tctx.task, task.task_id)
    assert.equal(body.claims.tctx.intent, 'reconcile')
    assert.equal(body.claims.tctx.obo, 'carol@example.com')
    assert.equal(body.claims.tctx.method, 'GET')
    assert.equal(body.claims.tctx.path, '/tickets')
    assert.equal(body.headers['x-writ-agent'], 'txn-agent')
    const genuine = helpdesk.seen.at(-1).token

    // Forged: the genuine claims and header, signed by another key.
    const { payload } = await jose.jwtVerify(genuine, jose.createRemoteJWKSet(new URL(as.jwks_uri)), { typ: 'txntoken+jwt' })
    const forger = await jose.generateKeyPair('ES256')
    const forged = await new jose.SignJWT({ ...payload, sub: 'spiffe://writ.local/agent/root' })
      .setProtectedHeader(jose.decodeProtectedHeader(genuine))
      .sign(forger.privateKey)
    r = await fetch(`${helpdesk.url}/tickets`, { headers: { 'txn-token': forged } })
    assert.equal(r.status, 401)
    assert.match((await r.json()).refused, /SIGNATURE/)

    // One for another tool, replayed: refused by its audience.
    const ledgerToken = await exchange(as, dpop, task, LEDGER)
    response = await oauth.protectedResourceRequest(ledgerToken, 'GET', new URL(`${w.gateway}/ledger/invoices`),
      new Headers(), null, { DPoP: dpop, ...insecure })
    body = await response.json()
    assert.equal(response.status, 200, JSON.stringify(body))
    assert.equal(Object.keys(body.headers).filter((h) => h.startsWith('x-writ-')).length, 0)
    r = await fetch(`${helpdesk.url}/tickets`, { headers: { 'txn-token': ledger.seen.at(-1).token } })
    assert.equal(r.status, 401)
    assert.match((await r.json()).refused, /aud/)
  } finally {
    helpdesk.srv.close()
    ledger.srv.close()
    w.stop()
  }
})
