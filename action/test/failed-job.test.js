// A failed job's post step: diagnostics before the delete, keep-on-failure
// instead of it, and the inputs main checks for them. The namespace's API
// server is a second stand-in on loopback, named in the kubeconfig main writes.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';

import { collect, logLines, wanted } from '../diagnostics.js';
import { parseDuration, positiveDurationInput } from '../duration.js';
import { kubeconfigAccess } from '../kubeconfig.js';
import { EXPIRES_AT, sendCreated, sendJson, sendMarked, sendProblem, startFakeService } from '../test-support/fake-service.js';
import { FAST_TIMING, MAIN, POST, inputEnv, makeWorkspace, runStep } from '../test-support/step.js';

const TOKEN = 'nsprov-test-token-failed-3';
const SA_TOKEN = 'sa-token-of-np-failed';
const NAMESPACE = 'np-failed';

const EVENTS = {
  items: [
    { lastTimestamp: '2030-01-01T00:00:09Z', type: 'Warning', reason: 'BackOff', count: 4,
      involvedObject: { kind: 'Pod', name: 'web' }, message: 'Back-off restarting\nfailed container' },
    { lastTimestamp: '2030-01-01T00:00:01Z', type: 'Normal', reason: 'Scheduled',
      involvedObject: { kind: 'Pod', name: 'web' }, message: 'assigned' },
  ],
};
const PODS = {
  items: [{
    metadata: { name: 'web' },
    spec: { containers: [{ name: 'app', env: [{ name: 'PASSWORD', value: 'hunter2' }] }] },
    status: {
      phase: 'Running',
      containerStatuses: [{ name: 'app', restartCount: 2, state: { waiting: { reason: 'CrashLoopBackOff' } },
        lastState: { terminated: { reason: 'Error', exitCode: 1 } } }],
    },
  }],
};

/** A stand-in API server for NAMESPACE; `hang` makes it never answer. */
async function startKubeApi(t, { hang = false, forbidPods = false } = {}) {
  return startFakeService(t, (req, res) => {
    if (hang) return; // never answers: the deadline must end the wait
    if (req.headers.authorization !== `Bearer ${SA_TOKEN}`) return sendJson(res, 401, { message: 'Unauthorized' });
    const base = `/api/v1/namespaces/${NAMESPACE}`;
    if (req.path === `${base}/events`) return sendJson(res, 200, EVENTS);
    if (req.path === `${base}/pods`) {
      return forbidPods ? sendJson(res, 403, { message: 'pods is forbidden' }) : sendJson(res, 200, PODS);
    }
    if (req.path === `${base}/pods/web/log`) {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      return res.end(`${req.query.previous === 'true' ? 'previous' : 'current'} run\n::warning::from the app\n`);
    }
    sendJson(res, 404, { message: 'not found' });
  });
}

function kubeconfigAt(server) {
  return [
    'apiVersion: v1', 'clusters:', '- cluster:', `    server: ${server}`, '  name: nsprov',
    'contexts:', '- context:', '    cluster: nsprov', `    namespace: ${NAMESPACE}`, `    user: ${NAMESPACE}`,
    `  name: ${NAMESPACE}`, `current-context: ${NAMESPACE}`, 'kind: Config', 'users:', `- name: ${NAMESPACE}`,
    '  user:', `    token: ${SA_TOKEN}`, '',
  ].join('\n');
}

/** The nsprov stand-in: creates NAMESPACE (kubeconfig for `kubeApi`), extends, deletes. */
async function startService(t, kubeApi, { patchStatus = 200 } = {}) {
  return startFakeService(t, (req, res) => {
    if (req.method === 'POST') {
      return sendJson(res, 201, { namespace: NAMESPACE, expiresAt: EXPIRES_AT, kubeconfig: kubeconfigAt(kubeApi.url) });
    }
    if (req.method === 'PATCH') {
      if (patchStatus !== 200) return sendProblem(res, patchStatus, 'Bad Request', "ttl '9d' exceeds the maximum of 24h0m0s");
      return sendJson(res, 200, { namespace: NAMESPACE, expiresAt: '2026-01-02T17:04:05Z', kubeconfig: kubeconfigAt(kubeApi.url) });
    }
    if (req.method === 'DELETE') return sendMarked(res, NAMESPACE);
    sendJson(res, 404, {});
  });
}

async function mainThenPost(t, ws, service, inputs, jobStatus) {
  const env = { ...ws.env, GITHUB_WORKSPACE: ws.root, ...FAST_TIMING, ...inputEnv({ url: service.url, token: TOKEN, ...inputs }) };
  const main = await runStep(MAIN, env);
  assert.equal(main.code, 0, main.stdout);
  const summary = join(ws.root, 'summary.md');
  const post = await runStep(POST, {
    ...env, ...(await ws.stateEnv()), ...inputEnv({ 'job-status': jobStatus }), GITHUB_STEP_SUMMARY: summary,
  });
  return { main, post, summary };
}

test('durations: Go syntax plus days, as the service reads them', () => {
  assert.equal(parseDuration('1d'), 86400);
  assert.equal(parseDuration('2d12h'), 216000);
  assert.equal(parseDuration('1h30m'), 5400);
  assert.equal(parseDuration('1.5h'), 5400);
  assert.equal(parseDuration('0'), 0);
  assert.throws(() => parseDuration('5'), /missing unit in duration "5"/);
  for (const bad of ['', '1w', '2day', '1h-5m', 'd', '5 m', '\u0661h']) {
    assert.throws(() => parseDuration(bad), /duration/, bad);
  }
  assert.equal(positiveDurationInput('keep-on-failure', ''), null);
  assert.throws(() => positiveDurationInput('keep-on-failure', '0s'), /keep-on-failure must be a positive duration/);
});

test('main refuses a bad ttl, keep-on-failure or diagnostics before any request; days go through', async (t) => {
  const service = await startFakeService(t, (req, res) => sendCreated(res));
  for (const [inputs, message] of [
    [{ ttl: '1x' }, /^::error::ttl: invalid duration "1x"/m],
    [{ 'keep-on-failure': 'soon' }, /^::error::keep-on-failure: invalid duration "soon"/m],
    [{ diagnostics: 'sometimes' }, /^::error::diagnostics must be one of on-failure, always, never, got "sometimes"/m],
  ]) {
    const ws = await makeWorkspace(t);
    const env = { ...ws.env, ...FAST_TIMING, ...inputEnv({ url: service.url, token: TOKEN, ...inputs }) };
    const main = await runStep(MAIN, env);
    assert.equal(main.code, 1, JSON.stringify(inputs));
    assert.match(main.stdout, message);
  }
  assert.equal(service.requests.length, 0);
  const ws = await makeWorkspace(t);
  const env = { ...ws.env, ...FAST_TIMING, ...inputEnv({ url: service.url, token: TOKEN, ttl: '2d12h', 'keep-on-failure': '1d' }) };
  assert.equal((await runStep(MAIN, env)).code, 0);
  assert.equal(service.requests[0].query.ttl, '2d12h');
});

test('a failed job: the report in a collapsed group and a file, then the delete', async (t) => {
  const ws = await makeWorkspace(t);
  const kubeApi = await startKubeApi(t);
  const service = await startService(t, kubeApi);
  const { post } = await mainThenPost(t, ws, service, {}, 'failure');
  assert.equal(post.code, 0, post.stdout);
  const lines = post.stdout.split('\n');
  const start = lines.indexOf(`::group::nsprov diagnostics: ${NAMESPACE}`);
  assert.ok(start >= 0, post.stdout);
  const resume = lines[start + 1].replace('::stop-commands::', '');
  assert.match(resume, /^[0-9a-f]{32}$/);
  const end = lines.indexOf(`::${resume}::`);
  assert.equal(lines[end + 1], '::endgroup::');
  const report = await readFile(join(ws.root, 'nsprov-diagnostics', `${NAMESPACE}.txt`), 'utf8');
  assert.deepEqual(lines.slice(start + 2, end), report.trimEnd().split('\n'));
  assert.match(report, /^nsprov diagnostics: namespace np-failed at \S+Z \(the job failed\)$/m);
  assert.ok(report.indexOf('Scheduled  pod/web: assigned') < report.indexOf('BackOff  pod/web (x4): Back-off restarting failed container'));
  assert.match(report, /^ {2}container app: waiting \(CrashLoopBackOff\), restarts 2, last terminated \(Error, exit 1\)$/m);
  assert.match(report, /== log of pod\/web container app \(last 100 lines\)\ncurrent run\n::warning::from the app/);
  assert.match(report, /== log of pod\/web container app, previous \(last 100 lines\)\nprevious run/);
  assert.ok(!report.includes('hunter2'));
  const logAsk = kubeApi.requests.find((r) => r.path.endsWith('/log'));
  assert.equal(logAsk.query.tailLines, '100');
  // The delete comes after the report.
  assert.ok(post.stdout.indexOf('::endgroup::') < post.stdout.indexOf('Namespace np-failed is marked for deletion'));
  assert.equal(service.requests.at(-1).method, 'DELETE');
});

test('a job that passed: no report by default, one with diagnostics: always, none with never', async (t) => {
  for (const [diagnostics, status, reported] of [['', 'success', false], ['always', 'success', true], ['never', 'failure', false]]) {
    const ws = await makeWorkspace(t);
    const kubeApi = await startKubeApi(t);
    const service = await startService(t, kubeApi);
    const { post } = await mainThenPost(t, ws, service, diagnostics ? { diagnostics } : {}, status);
    assert.equal(post.code, 0, post.stdout);
    assert.equal(post.stdout.includes('::group::'), reported, `${diagnostics} ${status}`);
    assert.equal(kubeApi.requests.length > 0, reported);
    assert.equal(service.requests.at(-1).method, 'DELETE');
  }
});

test('a hung API server costs the diagnostics deadline, and the delete still happens', async (t) => {
  const kubeApi = await startKubeApi(t, { hang: true });
  const started = Date.now();
  const report = await collect(kubeconfigAt(kubeApi.url), { why: 'test', deadlineMs: 600, requestMs: 400 });
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
  assert.match(report, /\(the report stops here: the 1s budget ran out\)\n$|cannot list events: no answer within/);
  const forbidding = await startKubeApi(t, { forbidPods: true });
  assert.match(await collect(kubeconfigAt(forbidding.url), { why: 'test' }), /\(cannot list pods: 403 pods is forbidden\)/);
});

test('keep-on-failure: a failed job extends instead of deleting and says until when in the summary', async (t) => {
  const ws = await makeWorkspace(t);
  const kubeApi = await startKubeApi(t);
  const service = await startService(t, kubeApi);
  const { post, summary } = await mainThenPost(t, ws, service, { 'keep-on-failure': '2h', diagnostics: 'never' }, 'failure');
  assert.equal(post.code, 0, post.stdout);
  const patch = service.requests.at(-1);
  assert.equal(patch.method, 'PATCH');
  assert.equal(patch.path, `/api/v1/namespaces/${NAMESPACE}`);
  assert.equal(patch.query.ttl, '2h');
  assert.ok(!service.requests.some((r) => r.method === 'DELETE'));
  assert.match(post.stdout, /The job failed: kept namespace np-failed for a look until 2026-01-02T17:04:05Z\./);
  const text = await readFile(summary, 'utf8');
  assert.match(text, /^### nsprov: namespace `np-failed` kept until 2026-01-02T17:04:05Z$/m);
  assert.match(text, /`nsprov delete np-failed` ends it/);
});

test('keep-on-failure beyond the tenant maximum keeps it until its expiry, with a warning; a passing job is deleted', async (t) => {
  const ws = await makeWorkspace(t);
  const kubeApi = await startKubeApi(t);
  const service = await startService(t, kubeApi, { patchStatus: 400 });
  const { post, summary } = await mainThenPost(t, ws, service, { 'keep-on-failure': '9d', diagnostics: 'never' }, 'failure');
  assert.equal(post.code, 0, post.stdout);
  assert.match(post.stdout, /^::warning::Namespace np-failed could not be extended by 9d: PATCH .*400 Bad Request/m);
  assert.match(await readFile(summary, 'utf8'), new RegExp(`kept until ${EXPIRES_AT}`));
  assert.ok(!service.requests.some((r) => r.method === 'DELETE'));

  const passing = await makeWorkspace(t);
  const other = await startService(t, kubeApi);
  await mainThenPost(t, passing, other, { 'keep-on-failure': '2h' }, 'success');
  assert.equal(other.requests.at(-1).method, 'DELETE');
});

test('the kubeconfig scan finds server, token, namespace and CA; the group cannot be ended from inside', () => {
  const access = kubeconfigAccess(`# Written by the nsprov GitHub Action\n${kubeconfigAt('https://10.0.0.1:6443/')}`);
  assert.deepEqual({ ...access, token: access.token }, { server: 'https://10.0.0.1:6443', token: SA_TOKEN, namespace: NAMESPACE, ca: null });
  assert.throws(() => kubeconfigAccess('apiVersion: v1\n'), /no server/);
  const lines = logLines('t', 'a\n::endgroup::\n');
  assert.equal(lines.at(-1), '::endgroup::');
  assert.equal(lines.filter((line) => line === '::endgroup::').length, 2);
  assert.equal(lines.indexOf('::endgroup::') > lines.findIndex((line) => line.startsWith('::stop-commands::')), true);
  assert.equal(wanted('on-failure', false), false);
});

test('a full cap fails at once, its line ending with the service request id', async (t) => {
  const service = await startFakeService(t, (req, res) =>
    sendProblem(res, 429, 'Too Many Namespaces', 'owner cap of 2 reached', { 'X-Request-Id': 'a1b2c3d4e5f60718' }),
  );
  const ws = await makeWorkspace(t);
  const env = { ...ws.env, ...FAST_TIMING, NSPROV_ACTION_DEADLINE_MS: '60000', ...inputEnv({ url: service.url, token: TOKEN }) };
  const started = Date.now();
  const main = await runStep(MAIN, env);
  assert.equal(main.code, 1);
  assert.ok(Date.now() - started < 10_000);
  assert.equal(service.requests.length, 1);
  assert.match(
    main.stdout,
    /^::error::POST http:\/\/127\.0\.0\.1:\d+\/api\/v1\/namespaces: 429 Too Many Namespaces: owner cap of 2 reached; wait-for-slot: true waits for a free slot \(request id a1b2c3d4e5f60718\)$/m,
  );
  // Nothing was made: post has nothing to look for.
  assert.equal((await ws.state()).idempotency_key, '');
});

test('https to a plain-http service and an unknown host fail at once, not after two minutes', async (t) => {
  const service = await startFakeService(t, (req, res) => sendCreated(res));
  for (const [url, said] of [
    [service.url.replace('http:', 'https:'), /TLS handshake failed \(ERR_SSL_WRONG_VERSION_NUMBER\): is url https:\/\/ for a plain-http service\?$/m],
    ['https://nsprov.invalid', /cannot resolve the host \(ENOTFOUND\): is url right\?$/m],
  ]) {
    const ws = await makeWorkspace(t);
    const env = { ...ws.env, ...FAST_TIMING, NSPROV_ACTION_DEADLINE_MS: '60000', ...inputEnv({ url, token: TOKEN }) };
    const started = Date.now();
    const main = await runStep(MAIN, env);
    assert.equal(main.code, 1, url);
    assert.ok(Date.now() - started < 10_000, `${url}: ${Date.now() - started} ms`);
    assert.doesNotMatch(main.stdout, /Attempt 1 failed/);
    assert.match(main.stdout, said);
  }
  assert.equal(service.requests.length, 0);
});
