// The post step against a fake nsprov service, run as a child process with
// STATE_* variables taken from what main wrote to GITHUB_STATE, as the runner does.

import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test } from 'node:test';

import { writeKubeconfig } from '../kubeconfig.js';
import {
  sendCreated,
  sendMarked,
  sendProblem,
  startFakeService,
} from '../test-support/fake-service.js';
import { FAST_TIMING, MAIN, POST, inputEnv, makeWorkspace, runStep } from '../test-support/step.js';

const TOKEN = 'nsprov-test-token-post-77';
const exists = (path) => access(path).then(() => true, () => false);

function stepEnv(ws, service, inputs = {}, extra = {}) {
  return { ...ws.env, ...FAST_TIMING, ...inputEnv({ url: service.url, token: TOKEN, ...inputs }), ...extra };
}

/** State as main leaves it after writing the kubeconfig to its private dir. */
async function provisionedState(ws, namespace = 'np-post1') {
  const dir = join(ws.runnerTemp, 'nsprov-abc123');
  const path = join(dir, 'kubeconfig');
  await writeKubeconfig(path, 'apiVersion: v1\n');
  return {
    STATE_namespace: namespace,
    STATE_expires_at: '2026-01-02T15:04:05Z',
    STATE_kubeconfig_dir: dir,
    STATE_kubeconfig: path,
  };
}

test('main then post, as the runner runs them: namespace deleted, kubeconfig removed', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) =>
    req.method === 'POST' ? sendCreated(res, { namespace: 'np-chain' }) : sendMarked(res, 'np-chain'),
  );
  const env = stepEnv(ws, service, { url: `${service.url}/`, ttl: '10m' });
  const main = await runStep(MAIN, env);
  assert.equal(main.code, 0, main.stdout);
  const path = (await ws.outputs()).kubeconfig;
  assert.ok(await exists(path));

  const post = await runStep(POST, { ...env, ...(await ws.stateEnv()) });
  assert.equal(post.code, 0, post.stdout);
  const del = service.requests[1];
  assert.equal(del.method, 'DELETE');
  assert.equal(del.path, '/api/v1/namespaces/np-chain');
  assert.equal(del.headers.authorization, `Bearer ${TOKEN}`);
  assert.equal(del.headers.accept, 'application/json');
  assert.match(post.stdout, /Namespace np-chain is marked for deletion/);
  assert.doesNotMatch(post.stdout, /::(warning|error)::/);
  assert.equal(post.stdout.split('\n')[0], `::add-mask::${TOKEN}`);
  assert.equal(post.stdout.split('\n').filter((line) => line.includes(TOKEN)).length, 1);
  assert.ok(!post.stderr.includes(TOKEN));
  assert.equal(await exists(path), false, 'kubeconfig removed');
  assert.equal(await exists(dirname(path)), false, 'its private directory removed');
});

test('no namespace in state (main failed early): post does nothing', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendMarked(res, 'x'));
  const result = await runStep(POST, stepEnv(ws, service));
  assert.equal(result.code, 0);
  assert.match(result.stdout, /Nothing to clean up: main did not get as far as asking the service for a namespace/);
  assert.equal(service.requests.length, 0);
});

test('cleanup: false leaves the namespace and the kubeconfig alone', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendMarked(res, 'x'));
  const state = await provisionedState(ws);
  const result = await runStep(POST, { ...stepEnv(ws, service, { cleanup: 'false' }), ...state });
  assert.equal(result.code, 0);
  assert.match(result.stdout, /cleanup is false: leaving namespace np-post1 to expire at 2026-01-02T15:04:05Z/);
  assert.equal(service.requests.length, 0);
  assert.ok(await exists(state.STATE_kubeconfig));
});

test('404 counts as done', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendProblem(res, 404, 'Not Found', 'no such namespace'));
  const state = await provisionedState(ws);
  const result = await runStep(POST, { ...stepEnv(ws, service), ...state });
  assert.equal(result.code, 0);
  assert.equal(service.requests.length, 1);
  assert.match(result.stdout, /Namespace np-post1 is already gone \(404\)/);
  assert.doesNotMatch(result.stdout, /::(warning|error)::/);
  assert.equal(await exists(state.STATE_kubeconfig_dir), false);
});

test('503 then 202: the delete is retried', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res, n) =>
    n === 1 ? sendProblem(res, 503, 'Service Unavailable', 'leader election') : sendMarked(res, 'np-post1'),
  );
  const result = await runStep(POST, { ...stepEnv(ws, service), ...(await provisionedState(ws)) });
  assert.equal(result.code, 0, result.stdout);
  assert.equal(service.requests.length, 2);
  assert.match(result.stdout, /marked for deletion/);
});

test('a failed delete is a warning by default; the kubeconfig goes anyway', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) =>
    sendProblem(res, 500, 'Internal Server Error', 'something broke'),
  );
  const state = await provisionedState(ws);
  const result = await runStep(POST, { ...stepEnv(ws, service), ...state });
  assert.equal(result.code, 0);
  assert.equal(service.requests.length, 1, '500 is not retried');
  assert.match(
    result.stdout,
    /^::warning::Cleanup of namespace np-post1 failed; it is deleted when its TTL runs out \(2026-01-02T15:04:05Z\): DELETE http:\/\/127\.0\.0\.1:\d+\/api\/v1\/namespaces\/np-post1: 500 Internal Server Error: something broke$/m,
  );
  assert.doesNotMatch(result.stdout, /::error::/);
  assert.equal(await exists(state.STATE_kubeconfig), false);
});

test('fail-on-cleanup-error: true turns a failed delete into a failed step', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) =>
    sendProblem(res, 503, 'Service Unavailable', 'still down'),
  );
  const started = Date.now();
  const result = await runStep(POST, {
    ...stepEnv(ws, service, { 'fail-on-cleanup-error': 'true' }),
    ...(await provisionedState(ws)),
  });
  assert.equal(result.code, 1);
  assert.ok(Date.now() - started < 6000);
  assert.ok(service.requests.length >= 2, 'transient failures were retried');
  assert.match(result.stdout, /^::error::Cleanup of namespace np-post1 failed.*gave up after \d+ attempt\(s\).*still down$/m);
  assert.doesNotMatch(result.stdout, /::warning::/);
});

test('post without a token or an ID token warns in one line instead of crashing', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendMarked(res, 'x'));
  const result = await runStep(POST, { ...stepEnv(ws, service, { token: '' }), ...(await provisionedState(ws)) });
  assert.equal(result.code, 0);
  const warnings = result.stdout.split('\n').filter((line) => line.startsWith('::warning::'));
  assert.equal(warnings.length, 1, result.stdout);
  assert.match(warnings[0], /^::warning::Cleanup of namespace np-post1 failed.*No credentials for nsprov: set the token input .* or give the job "permissions: id-token: write"/);
  assert.equal(service.requests.length, 0);
});
