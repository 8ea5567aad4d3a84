// The console's pages. Each renders into `main` and returns a `refresh`
// the app calls whenever the broker has news (the audit chain grew).
// Actions are offered only to a role that may take them; the broker
// checks the role again whatever the page offers.

import { h, put, when, table, draft, forget, svg } from './dom.js';
import { get, getText, post, query } from './api.js';

const json = (v) => JSON.stringify(v, null, 2);

/** The kinds of audit record (writ_core::audit::AuditKind). */
const KINDS = ['bootstrap', 'admin_token_create', 'admin_token_revoke', 'admin_token_rotate', 'agent_register',
  'agent_update', 'agent_delete', 'agent_quarantine', 'agent_release', 'join_token_create', 'tool_register',
  'tool_update', 'tool_delete', 'attest', 'task_start', 'task_heartbeat', 'task_end', 'token_issue',
  'token_exchange', 'token_refused', 'token_revoke', 'decision', 'approval', 'policy_shadow', 'key_rotate',
  'policy_load', 'tool_secret_set', 'gateway_register', 'tool_call', 'credential_issue', 'credential_revoke',
  'node', 'svid_issue'];

/** The policy directory's test cases as the live and shadow sets decide them. */
function testResults(r) {
  const hint = h('p', { class: 'hint' }, 'Each case is a request and the decision it must get; run them offline with ',
    h('code', {}, 'writ policy test tests.toml'), ' before pushing a set.');
  if (!r.file) return [h('p', {}, 'The policy directory has no tests.toml.'), hint];
  if (r.error) return [h('p', { class: 'error' }, `The cases in ${r.file} cannot be read: ${r.error}`), hint];
  const one = (label, s) => h('section', { class: 'test-set', 'aria-label': `${label} set tests` },
    h('h3', {}, `${label} set `, h('code', {}, s.version), ': ',
      h('span', { class: s.failed ? 'bad' : 'ok' }, `${s.passed} passed, ${s.failed} failed`)),
    table([
      ['Case', (c) => c.name],
      ['Result', (c) => h('span', { class: c.passed ? 'ok' : 'bad' }, c.passed ? 'pass' : 'FAIL')],
      ['Decision', (c) => c.verdict ?? ''],
      ['Why it failed', (c) => (c.failures.length ? h('pre', { class: 'detail' }, c.failures.join('\n')) : '')],
    ], s.cases, `Policy tests on the ${label.toLowerCase()} set`));
  return [h('p', {}, `Cases from ${r.file}, run ${when(r.ran_at)}.`),
    one('Live', r.live), r.shadow ? one('Shadow', r.shadow) : null, hint];
}

/** A button that runs `f`, reporting the outcome in the status line. */
function action(label, f, ctx, attrs = {}) {
  const b = h('button', { type: 'button', ...attrs }, label);
  b.addEventListener('click', async () => {
    b.disabled = true;
    try {
      const msg = await f();
      if (msg) ctx.say(msg);
      await ctx.refresh();
    } catch (e) {
      ctx.say(`${label} failed: ${e.message}`, true);
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

/** A reason field and the buttons that need it. */
function withReason(id, ctx, buttons) {
  const input = draft({ id, 'aria-label': 'Reason', placeholder: 'reason', class: 'reason' });
  const need = () => {
    const r = input.value.trim();
    if (!r) { input.focus(); throw new Error('say why first (reason)'); }
    return r;
  };
  const run = (f) => async () => {
    const msg = await f(need());
    forget(id);
    return msg;
  };
  return h('span', { class: 'actions' }, input, buttons.map(([label, f, attrs]) => action(label, run(f), ctx, attrs)));
}

function card(label, value, id) {
  return h('div', { class: 'card' }, h('div', { class: 'card-label' }, label), h('div', { class: 'card-value', id }, String(value)));
}

export const pages = {
  overview: {
    title: 'Overview',
    may: () => true,
    render(main, ctx) {
      const cards = h('div', { class: 'cards' });
      const chain = h('div', { id: 'chain-status' });
      const denials = h('div');
      const plot = h('div', { id: 'activity' });
      const gateways = h('div', { id: 'gateways' });
      put(main, h('h1', {}, 'Overview'), cards,
        h('h2', {}, 'Gateways and their revocation lag'), gateways,
        ctx.session.may.audit ? [h('h2', {}, 'Decisions, last 30 minutes'), plot] : null,
        h('h2', {}, 'Audit chain'), chain, h('h2', {}, 'Denials, last 30 minutes'), denials);
      const verify = async () => {
        const v = await get('/v1/audit/verify');
        put(chain, h('p', { class: v.valid ? 'ok' : 'bad', id: 'chain-result' },
          v.valid ? `valid: ${v.records} records, head ${v.head.slice(0, 16)}…` : `BROKEN: ${json(v.error)}`));
      };
      const refresh = async () => {
        const o = await get('/ui/api/overview');
        put(cards,
          card('Live tasks', o.live_tasks, 'live-tasks'),
          card('Live grants', o.live_grants, 'live-grants'),
          card('Pending approvals', o.pending_approvals, 'pending-approvals'),
          card('Audit records', o.head, 'audit-head'),
          card('Revocation lag', `${(Math.max(0, ...o.gateways.followers.map((f) => f.lag_ms)) / 1000).toFixed(1)} s`, 'revocation-lag'));
        put(gateways, gatewayTable(o.gateways));
        if (o.activity) {
          put(plot, activityPlot(o.activity));
          const d = o.activity.recent_denials;
          put(denials, d.length
            ? [auditTable(d), h('p', {}, h('a', { href: '#audit?outcome=deny' }, 'every denial in the audit'))]
            : h('p', {}, 'No denials.'));
        } else {
          put(denials, h('p', { class: 'muted' }, 'Your role does not read the audit.'));
        }
      };
      let verified = false;
      if (ctx.session.may.audit) {
        put(chain, action('Verify chain', async () => { await verify(); }, ctx, { id: 'overview-verify' }));
      } else {
        put(chain, h('p', { class: 'muted' }, 'Your role does not read the audit.'));
      }
      // The chain is verified once the figures are shown (it reads every record).
      return async () => {
        await refresh();
        if (!verified && ctx.session.may.audit) {
          verified = true;
          verify().catch((e) => ctx.say(e.message, true));
        }
      };
    },
  },

  agents: {
    title: 'Agents',
    may: (s) => s.may.operate,
    render(main, ctx) {
      const list = h('div');
      const detail = h('div', { id: 'agent-detail' });
      put(main, h('h1', {}, 'Agents'), list, detail);
      let shown = null; // the agent whose detail is shown, kept live
      const showAgent = async (name) => {
        shown = name;
        const d = await get(`/ui/api/agents/${encodeURIComponent(name)}`);
        put(detail, h('h2', {}, `${name}: live instances`),
          d.instances.length ? table([
            ['Instance', (i) => h('code', {}, i.instance_id)],
            ['Attested by', (i) => i.attestation],
            ['Since', (i) => when(i.created_at)],
            ['Until', (i) => when(i.expires_at)],
            ['DPoP-bound', (i) => (i.dpop ? 'yes' : 'no')],
            ['Active tasks', (i) => String(i.active_tasks)],
          ], d.instances, `Live instances of ${name}`) : h('p', {}, 'No live instance.'),
          h('h2', {}, `${name}: recent decisions`),
          d.decisions === null
            ? h('p', { class: 'muted' }, 'Decisions come from the audit, which your role does not read.')
            : d.decisions.length
              ? [auditTable(d.decisions, null, `Recent decisions of ${name}`),
                  h('p', { class: 'muted' }, `from the newest ${d.scanned} audit records`)]
              : h('p', {}, `No decision in the newest ${d.scanned} audit records.`));
      };
      const refresh = async () => {
        const agents = await get('/v1/agents');
        put(list, table([
          ['Name', (a) => a.name],
          ['Attestation', (a) => a.attestation.kind],
          ['Attributes', (a) => Object.entries(a.attributes || {}).map(([k, v]) => `${k}=${v}`).join(', ')],
          ['State', (a) => h('span', { class: a.quarantined ? 'bad' : 'ok', id: `state-${a.name}` }, a.quarantined ? 'quarantined' : 'active')],
          ['Since', (a) => when(a.created_at)],
          ['See', (a) => h('span', { class: 'actions' },
            action('Details', () => showAgent(a.name), ctx, { 'aria-label': `Instances and decisions of ${a.name}` }),
            h('a', { href: `#tasks?${new URLSearchParams({ agent: a.name })}` }, 'tasks'),
            ctx.session.may.audit ? h('a', { href: `#audit?${new URLSearchParams({ agent: a.name })}` }, 'audit') : null)],
          ['Kill switch', (a) => withReason(`reason-${a.name}`, ctx, [a.quarantined
            ? ['Release', async (reason) => { await post(`/ui/api/agents/${encodeURIComponent(a.name)}/release`, { reason }); return `${a.name} released`; }, { id: `release-${a.name}` }]
            : ['Quarantine', async (reason) => {
              const q = await post(`/ui/api/agents/${encodeURIComponent(a.name)}/quarantine`, { reason });
              return `${a.name} quarantined: ${q.revoked_tokens} tokens revoked, ${q.ended_tasks} tasks ended`;
            }, { id: `quarantine-${a.name}`, class: 'danger' }]])],
        ], agents, 'Agents'));
        if (shown) await showAgent(shown);
      };
      return refresh;
    },
  },

  tasks: {
    title: 'Tasks',
    may: (s) => s.may.operate,
    render(main, ctx) {
      const f = { status: '', agent: ctx.params.get('agent') ?? '', q: '', offset: 0 };
      const status = h('select', { id: 'task-status', 'aria-label': 'Status' },
        ['', 'active', 'pending', 'completed', 'revoked', 'expired', 'denied'].map((s) => h('option', { value: s }, s || 'any status')));
      const agent = h('input', { id: 'task-agent', 'aria-label': 'Agent', placeholder: 'agent', value: f.agent });
      const q = h('input', { id: 'task-q', 'aria-label': 'Search', placeholder: 'id, intent or person' });
      const form = h('form', { class: 'filters', role: 'search' }, status, agent, q, h('button', { type: 'submit' }, 'Filter'));
      const list = h('div');
      const tree = h('div', { id: 'task-tree' });
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        Object.assign(f, { status: status.value, agent: agent.value.trim(), q: q.value.trim(), offset: 0 });
        refresh().catch((err) => ctx.say(err.message, true));
      });
      put(main, h('h1', {}, 'Tasks'), form, list, tree);
      let shown = null; // the task whose tree is shown, kept live
      const opened = new Set(); // which of its lists are open
      const folding = (key, summary, body) => {
        const el = h('details', { open: opened.has(key) }, h('summary', {}, summary), body);
        el.addEventListener('toggle', () => { if (el.open) opened.add(key); else opened.delete(key); });
        return el;
      };
      const showTree = async (id) => {
        if (shown !== id) opened.clear();
        shown = id;
        const d = await get(`/ui/api/tasks/${encodeURIComponent(id)}`);
        const nodes = d.tasks;
        const byParent = new Map();
        for (const n of nodes) {
          const p = n.parent_task_id || '';
          if (!byParent.has(p)) byParent.set(p, []);
          byParent.get(p).push(n);
        }
        const tokensOf = new Map();
        for (const t of d.tokens) {
          if (!tokensOf.has(t.task_id)) tokensOf.set(t.task_id, []);
          tokensOf.get(t.task_id).push(t);
        }
        const callsOf = new Map();
        for (const c of d.tool_calls || []) {
          if (!callsOf.has(c.event.task)) callsOf.set(c.event.task, []);
          callsOf.get(c.event.task).push(c);
        }
        const count = (xs, what) => `${xs.length} ${what}${xs.length === 1 ? '' : 's'}`;
        const tokens = (n) => {
          const ts = tokensOf.get(n.task_id) || [];
          const live = ts.filter((t) => t.state === 'live').length;
          return folding(`tokens-${n.task_id}`, `${count(ts, 'token')} (${live} live)`,
            ts.length ? table([
              ['Kind', (t) => t.kind],
              ['For', (t) => t.audience || ''],
              ['State', (t) => h('span', { class: t.state === 'live' ? 'ok' : 'muted' }, t.state)],
              ['Issued', (t) => when(t.issued_at)],
              ['Expires', (t) => when(t.expires_at)],
              ['Revoked', (t) => when(t.revoked_at)],
              ['Id', (t) => h('code', {}, t.jti)],
            ], ts, `Tokens of ${n.task_id}`) : null);
        };
        const calls = (n) => {
          if (!d.tool_calls) return h('p', { class: 'muted' }, 'Tool calls come from the audit, which your role does not read.');
          const cs = callsOf.get(n.task_id) || [];
          return folding(`calls-${n.task_id}`, count(cs, 'tool call'),
            cs.length ? table([
              ['Time', (c) => when(c.ts)],
              ['Tool', (c) => c.event.tool || c.event.detail?.tool || ''],
              ['Request', (c) => [c.event.detail?.method, c.event.detail?.path ?? c.event.detail?.mcp_method].filter(Boolean).join(' ')],
              ['Decision', (c) => h('span', { class: `outcome-${c.event.outcome}` }, c.event.outcome)],
              ['Reason', (c) => c.event.reason || ''],
            ], cs, `Tool calls of ${n.task_id}`) : null);
        };
        const ids = new Set(nodes.map((n) => n.task_id));
        const branch = (n) => h('li', { class: 'node' },
          h('div', {}, h('code', {}, n.task_id), ` ${n.agent} · `,
            h('span', { class: `status-${n.status}` }, n.status), ` · ${n.intent}`),
          tokens(n), calls(n),
          (byParent.get(n.task_id) || []).length ? h('ul', {}, byParent.get(n.task_id).map(branch)) : null);
        const roots = nodes.filter((n) => !n.parent_task_id || !ids.has(n.parent_task_id));
        put(tree, h('h2', {}, 'Delegation tree'), h('ul', { class: 'tree' }, roots.map(branch)));
      };
      const refresh = async () => {
        const r = await get(`/ui/api/tasks${query({ ...f, limit: 25 })}`);
        const pager = h('div', { class: 'pager' },
          h('span', {}, `${r.total} tasks`),
          f.offset > 0 ? action('Newer', async () => { f.offset = Math.max(0, f.offset - 25); }, ctx) : null,
          f.offset + 25 < r.total ? action('Older', async () => { f.offset += 25; }, ctx) : null);
        put(list, table([
          ['Task', (t) => h('code', {}, t.task_id)],
          ['Agent', (t) => t.agent],
          ['Intent', (t) => t.intent],
          ['For', (t) => t.on_behalf_of || ''],
          ['Status', (t) => h('span', { class: `status-${t.status}` }, t.status)],
          ['Started', (t) => when(t.created_at)],
          ['', (t) => h('span', { class: 'actions' },
            action('Tree', () => showTree(t.task_id), ctx, { 'aria-label': `Delegation tree of ${t.task_id}` }),
            ctx.session.may.audit ? h('a', { href: `#audit?${new URLSearchParams({ task: t.task_id })}` }, 'audit') : null,
            t.status === 'active' ? action('End', async () => {
              const e = await post(`/v1/tasks/${encodeURIComponent(t.task_id)}/complete`);
              return `task ended: ${e.revoked_tokens} tokens revoked, ${e.ended_descendants} delegated tasks ended`;
            }, ctx, { class: 'danger', 'aria-label': `End task ${t.task_id}` }) : null)],
        ], r.tasks, 'Tasks'), pager);
        if (shown) await showTree(shown);
      };
      return refresh;
    },
  },

  approvals: {
    title: 'Approvals',
    may: (s) => s.may.approve,
    render(main, ctx) {
      const pending = h('div', { id: 'pending' });
      const history = h('div');
      put(main, h('h1', {}, 'Approvals'), h('h2', {}, 'Pending'), pending, h('h2', {}, 'History'), history);
      const refresh = async () => {
        const all = await get('/v1/approvals?all=true');
        const open = all.filter((a) => a.status === 'pending');
        put(pending, open.length ? table([
          ['Agent', (a) => a.task.agent],
          ['Intent', (a) => a.task.intent],
          ['For', (a) => a.task.on_behalf_of || ''],
          ['Asks', (a) => a.call ? json(a.call) : a.task.capabilities.map((c) => `${c.tool}: ${(c.scopes || []).join(', ')}`).join('; ')],
          ['Justification', (a) => a.justification || ''],
          ['Requested', (a) => when(a.requested_at)],
          ['Decide', (a) => withReason(`reason-${a.approval_id}`, ctx, [
            ['Approve', async (reason) => { await post(`/v1/approvals/${encodeURIComponent(a.approval_id)}/approve`, { reason }); return 'approved'; }, { class: 'approve' }],
            ['Deny', async (reason) => { await post(`/v1/approvals/${encodeURIComponent(a.approval_id)}/deny`, { reason }); return 'denied'; }, { class: 'danger' }]])],
        ], open, 'Pending approvals') : h('p', {}, 'Nothing waits for a decision.'));
        const done = all.filter((a) => a.status !== 'pending').slice(0, 50);
        put(history, table([
          ['Agent', (a) => a.task.agent],
          ['Intent', (a) => a.task.intent],
          ['Decision', (a) => a.status],
          ['By', (a) => a.decided_by || ''],
          ['Reason', (a) => a.reason || ''],
          ['When', (a) => when(a.decided_at)],
        ], done, 'Decided approvals'));
      };
      return refresh;
    },
  },

  audit: {
    title: 'Audit',
    may: (s) => s.may.audit,
    render(main, ctx) {
      const f = { agent: ctx.params.get('agent') ?? '', task: ctx.params.get('task') ?? '', kind: ctx.params.get('kind') ?? '', outcome: ctx.params.get('outcome') ?? '', actor: '', since: '', until: '', before: '' };
      const field = (name, label, type = 'text') => h('input', { id: `audit-${name}`, name, type, 'aria-label': label, placeholder: label });
      const inputs = {
        agent: field('agent', 'agent'), task: field('task', 'task'),
        kind: h('select', { id: 'audit-kind', name: 'kind', 'aria-label': 'kind' },
          ['', ...KINDS].map((k) => h('option', { value: k }, k || 'any kind'))),
        actor: field('actor', 'actor'),
        since: field('since', 'since', 'datetime-local'), until: field('until', 'until', 'datetime-local'),
      };
      inputs.agent.value = f.agent;
      inputs.task.value = f.task;
      inputs.kind.value = f.kind;
      const outcome = h('select', { id: 'audit-outcome', 'aria-label': 'Outcome' },
        ['', 'success', 'failure', 'deny'].map((o) => h('option', { value: o }, o || 'any outcome')));
      outcome.value = f.outcome;
      const labelled = (label, el) => h('label', { class: 'field' }, h('span', {}, label), el);
      const form = h('form', { class: 'filters', role: 'search' },
        Object.entries(inputs).map(([k, el]) => labelled(k, el)), labelled('outcome', outcome),
        h('button', { type: 'submit' }, 'Filter'));
      const verifyOut = h('span', { id: 'verify-result' });
      const list = h('div', { id: 'audit-list' });
      const detail = h('pre', { id: 'audit-detail', class: 'detail', tabindex: '0', 'aria-label': 'Record details' });
      const toMs = (v) => (v ? String(new Date(v).getTime()) : '');
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        Object.assign(f, {
          agent: inputs.agent.value.trim(), task: inputs.task.value.trim(), kind: inputs.kind.value.trim(),
          actor: inputs.actor.value.trim(), outcome: outcome.value,
          since: toMs(inputs.since.value), until: toMs(inputs.until.value), before: '',
        });
        refresh().catch((err) => ctx.say(err.message, true));
      });
      put(main, h('h1', {}, 'Audit'), form,
        h('p', {}, action('Verify chain', async () => {
          const v = await get('/v1/audit/verify');
          put(verifyOut, h('span', { class: v.valid ? 'ok' : 'bad' },
            v.valid ? `chain valid: ${v.records} records, ${v.checkpoints} checkpoints` : `chain BROKEN: ${json(v.error)}`));
        }, ctx, { id: 'verify' }), ' ', verifyOut),
        list, detail);
      const refresh = async () => {
        const r = await get(`/ui/api/audit${query({ ...f, limit: 50 })}`);
        put(list, auditTable(r.records, (rec) => put(detail, json(rec))),
          h('div', { class: 'pager' },
            f.before ? action('Newest', async () => { f.before = ''; }, ctx) : null,
            r.before ? action('Older', async () => { f.before = String(r.before); }, ctx) : null));
      };
      return refresh;
    },
  },

  policies: {
    title: 'Policies',
    may: (s) => s.may.read_policy,
    render(main, ctx) {
      const live = h('div');
      const history = h('div');
      const diff = h('div', { id: 'policy-diff' });
      const shadow = h('div', { id: 'shadow' });
      const disagreements = h('div', { id: 'disagreements' });
      const tests = h('div', { id: 'policy-tests' });
      // The files the operator opened stay open when news refreshes the page.
      const opened = new Set();
      const source = (key, label, text) => h('details', {
        open: opened.has(key),
        ontoggle: (e) => { if (e.target.open) opened.add(key); else opened.delete(key); },
      }, h('summary', {}, label), h('pre', { class: 'detail' }, text));
      put(main, h('h1', {}, 'Policies'), live,
        h('h2', {}, 'Versions'), history, diff,
        h('h2', {}, 'Shadow set'), shadow,
        h('h2', {}, 'Shadow disagreements'), disagreements,
        h('h2', {}, 'Policy tests'), tests);
      let shownDiff = null;
      const showDiff = async (v, prev) => {
        shownDiff = [v, prev];
        const [a, b] = await Promise.all([
          get(`/ui/api/policies/versions/${encodeURIComponent(prev)}`),
          get(`/ui/api/policies/versions/${encodeURIComponent(v)}`)]);
        const names = [...new Set([...Object.keys(a.files), ...Object.keys(b.files)])].sort();
        const changed = names.filter((n) => a.files[n] !== b.files[n]);
        put(diff, h('h3', {}, `Changes from ${prev} to ${v}`),
          changed.length ? changed.map((n) => h('div', { class: 'file-diff' },
            h('h4', {}, n, n in a.files ? (n in b.files ? '' : ' (removed)') : ' (added)'),
            h('pre', { class: 'detail diff', tabindex: '0', 'aria-label': `Diff of ${n}` },
              lineDiff(a.files[n] ?? '', b.files[n] ?? '').map(([op, line]) =>
                h('span', { class: op === '+' ? 'add' : op === '-' ? 'del' : 'same' }, `${op} ${line}\n`)))))
            : h('p', {}, 'The same sources.'));
      };
      const refresh = async () => {
        const [p, versions, sh] = await Promise.all([get('/v1/policies'), get('/v1/policies/history'), get('/ui/api/policies/shadow')]);
        put(live, h('p', {}, `Live set ${p.version}: ${p.policies} policies`),
          Object.entries(p.files).map(([name, text]) => source(`live:${name}`, name, text)));
        const prevOf = (i) => versions.slice(i + 1).find((o) => o.version !== versions[i].version)?.version;
        put(history, table([
          ['Version', (v) => h('code', {}, v.version)],
          ['From', (v) => v.origin],
          ['Loaded', (v) => when(v.loaded_at)],
          ['Changes', (v) => {
            const i = versions.indexOf(v);
            const prev = prevOf(i);
            return prev && v.version !== versions[i + 1]?.version
              ? action('Diff', () => showDiff(v.version, prev), ctx, { 'aria-label': `Changes from ${prev} to ${v.version}` })
              : (prev ? 'reloaded, the same' : 'the first');
          }],
        ], versions, 'Policy versions'));
        put(shadow, sh
          ? [h('p', { id: 'shadow-version' }, `Shadow set ${sh.version} decides beside the live set; only the live set's decision counts.`),
              ...Object.entries(sh.files).map(([name, text]) => source(`shadow:${name}`, `shadow: ${name}`, text))]
          : h('p', { id: 'shadow-version' }, 'No shadow set.'));
        if (ctx.session.may.audit) {
          const d = await get('/ui/api/audit?kind=policy_shadow&outcome=failure&limit=20');
          put(disagreements, d.records.length
            ? [auditTable(d.records, null, 'Shadow disagreements'),
                h('p', {}, h('a', { href: '#audit?kind=policy_shadow&outcome=failure' }, 'every disagreement in the audit'))]
            : h('p', {}, 'No disagreement recorded.'));
        } else {
          put(disagreements, h('p', { class: 'muted' }, 'Disagreements are read from the audit, which your role does not read.'));
        }
        put(tests, testResults(await get('/ui/api/policies/tests')));
        if (shownDiff) await showDiff(...shownDiff);
      };
      return refresh;
    },
  },

  reports: {
    title: 'Reports',
    may: (s) => s.may.audit,
    render(main, ctx) {
      const since = h('select', { id: 'report-since', 'aria-label': 'Since' },
        ['1h', '24h', '7d', '30d'].map((v) => h('option', { value: v, selected: v === '24h' }, `last ${v}`)));
      const agent = h('input', { id: 'report-agent', 'aria-label': 'Agent', placeholder: 'agent (all)' });
      const framework = h('select', { id: 'report-framework', 'aria-label': 'Framework' },
        ['owasp-nhi', 'owasp-agentic', 'nist-ai-rmf', 'nist-csf', 'mitre-atlas', 'csa-maestro'].map((f) => h('option', { value: f }, f)));
      const out = h('pre', { id: 'report', class: 'detail', tabindex: '0', 'aria-label': 'Report' });
      put(main, h('h1', {}, 'Reports'),
        h('h2', {}, 'Least privilege: granted against used'),
        h('div', { class: 'filters' }, since, agent, action('Least-privilege report', async () => {
          put(out, await getText(`/v1/reports/least-privilege${query({ since: since.value, agent: agent.value.trim(), format: 'table' })}`));
        }, ctx, { id: 'report-lp' })),
        h('h2', {}, 'Evidence for a framework'),
        h('div', { class: 'filters' }, framework, action('Evidence report', async () => {
          put(out, await getText(`/v1/reports/evidence${query({ framework: framework.value, format: 'table' })}`));
        }, ctx, { id: 'report-evidence' })),
        out);
      // Reports are asked for, not followed live: they read the whole window.
      return async () => {};
    },
  },
};

/** Lines of `a` and `b` as a diff: [op, line] with op '-', '+' or ' '
 * (the longest common subsequence of lines; a large pair is shown whole). */
function lineDiff(a, b) {
  const x = a.split('\n'); const y = b.split('\n');
  if (x.length * y.length > 4_000_000) return [...x.map((l) => ['-', l]), ...y.map((l) => ['+', l])];
  const n = x.length; const m = y.length;
  const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  }
  const out = [];
  let i = 0; let j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push([' ', x[i]]); i++; j++; } else if (L[i + 1][j] >= L[i][j + 1]) out.push(['-', x[i++]]); else out.push(['+', y[j++]]);
  }
  while (i < n) out.push(['-', x[i++]]);
  while (j < m) out.push(['+', y[j++]]);
  return out;
}

/** Decisions per minute as stacked bars, and denials by policy. */
function activityPlot(a) {
  const W = 600; const H = 110; const n = a.minutes.length;
  const max = Math.max(1, ...a.minutes.map((m) => m.allowed + m.denied));
  const bw = W / n;
  const allowed = a.minutes.reduce((t, m) => t + m.allowed, 0);
  const denied = a.minutes.reduce((t, m) => t + m.denied, 0);
  const bars = a.minutes.map((m, i) => {
    const ha = (m.allowed / max) * H; const hd = (m.denied / max) * H;
    const label = `${new Date(m.at).toISOString().slice(11, 16)}Z: ${m.allowed} allowed, ${m.denied} denied`;
    return svg('g', {},
      svg('title', {}, label),
      svg('rect', { class: 'bar-allowed', x: i * bw + 1, y: H - ha, width: bw - 2, height: ha }),
      svg('rect', { class: 'bar-denied', x: i * bw + 1, y: H - ha - hd, width: bw - 2, height: hd }));
  });
  const chart = svg('svg', {
    id: 'decisions', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img',
    'aria-label': `Decisions per minute over the last ${n} minutes: ${allowed} allowed, ${denied} denied`,
  }, svg('line', { class: 'axis', x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }), bars);
  return [
    h('p', { class: 'legend' }, h('span', { class: 'key-allowed' }, `■ ${allowed} allowed`), ' ',
      h('span', { class: 'key-denied' }, `■ ${denied} denied`), ` · busiest minute: ${max === 1 && !allowed && !denied ? 0 : max}`),
    chart,
    a.denied_by.length ? table([
      ['Denied by policy', ([p]) => p],
      ['Denials', ([, c]) => String(c)],
    ], a.denied_by, 'Denials by policy') : null,
  ];
}

/** The gateways following the revocation feed, most behind first. */
function gatewayTable(g) {
  const note = h('p', { class: 'muted' }, `Revocation feed head: ${g.head}. A gateway that falls behind fails closed once its view is older than its staleness bound.`);
  if (!g.followers.length) return [h('p', {}, 'No gateway follows the revocation feed.'), note];
  return [table([
    ['Gateway', (f) => f.gateway],
    ['Process', (f) => f.process || '(unnamed)'],
    ['Holds', (f) => String(f.held)],
    ['Behind', (f) => h('span', { class: f.behind ? 'bad' : 'ok', id: `lag-${f.gateway}` }, f.behind ? `${f.behind} revocations` : 'up to date')],
    ['Lag', (f) => h('span', { class: f.behind ? 'bad' : 'ok', title: 'how long the oldest revocation it does not hold has been out' }, `${(f.lag_ms / 1000).toFixed(1)} s`)],
    ['Last seen', (f) => f.polling ? 'polling now' : `${Math.round(f.seen_ms_ago / 1000)} s ago`],
  ], g.followers, 'Gateways'), note];
}

function auditTable(records, show = null, label = 'Audit records') {
  return table([
    // A record number opens its details where the page has a place for them.
    ['#', (r) => (show
      ? h('button', { type: 'button', class: 'link', onclick: () => show(r), 'aria-label': `Details of record ${r.seq}` }, String(r.seq))
      : String(r.seq))],
    ['Time', (r) => when(r.ts)],
    ['Kind', (r) => r.event.kind],
    ['Outcome', (r) => h('span', { class: `outcome-${r.event.outcome}` }, r.event.outcome)],
    ['Actor', (r) => r.event.actor],
    ['Agent', (r) => r.event.agent || ''],
    ['Task', (r) => r.event.task || ''],
    ['Reason', (r) => r.event.reason || ''],
  ], records, label);
}
