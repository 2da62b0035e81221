// A namespace whose create answer never reached main (main killed mid-request,
// or the answer lost): main records the Idempotency-Key before it POSTs, and
// post finds the namespace by that key and deletes it.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { run } from '../provision.js';
import { Runner } from '../runner.js';
import { sendCreated, sendFound, sendJson, sendMarked, startFakeService } from '../test-support/fake-service.js';
import {
  FAST_TIMING,
  FakeProcess,
  MAIN,
  POST,
  inputEnv,
  makeWorkspace,
  parseFileCommands,
  runStep,
} from '../test-support/step.js';

const TOKEN = 'nsprov-test-token-lost-31';

function stepEnv(ws, service, inputs = {}) {
  return { ...ws.env, ...FAST_TIMING, ...inputEnv({ url: service.url, token: TOKEN, ...inputs }) };
}

test('the Idempotency-Key is in the state file before the POST reaches the service', async (t) => {
  const ws = await makeWorkspace(t);
  let stateWhenPosted = null;
  const service = await startFakeService(t, (req, res) => {
    stateWhenPosted = parseFileCommands(readFileSync(ws.files.GITHUB_STATE, 'utf8'));
    sendCreated(res, { namespace: 'np-keyed' });
  });
  const proc = new FakeProcess(stepEnv(ws, service), ws.files);
  await run({ runner: new Runner(proc) });
  assert.equal(proc.exitCode, undefined, proc.output);
  const key = service.requests[0].headers['idempotency-key'];
  assert.deepEqual(stateWhenPosted, { idempotency_key: key });
});

test('main killed after its POST was sent: post finds the namespace by key and deletes it', async (t) => {
  const ws = await makeWorkspace(t);
  let key = null;
  const service = await startFakeService(t, (req, res) => {
    if (req.method === 'POST') {
      key = req.headers['idempotency-key'];
      return; // the service is still working on it when main dies
    }
    if (req.method === 'GET') sendFound(res, req.query.idempotencyKey, req.query.idempotencyKey === key ? ['np-lost'] : []);
    else sendMarked(res, 'np-lost');
  });
  const env = stepEnv(ws, service, {});
  const main = await runStep(MAIN, { ...env, NSPROV_ACTION_ATTEMPT_TIMEOUT_MS: '10000', NSPROV_ACTION_DEADLINE_MS: '10000' }, {
    onStart: async (child) => {
      await service.waitForRequests(1);
      child.kill('SIGKILL');
    },
  });
  assert.equal(main.signal, 'SIGKILL');
  assert.deepEqual(await ws.state(), { idempotency_key: key });

  const post = await runStep(POST, { ...env, ...(await ws.stateEnv()) });
  assert.equal(post.code, 0, post.stdout);
  const [, lookup, del] = service.requests;
  assert.equal(lookup.method, 'GET');
  assert.equal(lookup.path, '/api/v1/namespaces');
  assert.deepEqual(lookup.query, { idempotencyKey: key });
  assert.equal(lookup.headers.authorization, `Bearer ${TOKEN}`);
  assert.equal(del.method, 'DELETE');
  assert.equal(del.path, '/api/v1/namespaces/np-lost');
  assert.equal(service.requests.length, 3);
  assert.match(post.stdout, /Found namespace np-lost by its Idempotency-Key/);
  assert.match(post.stdout, /Namespace np-lost is marked for deletion/);
  assert.doesNotMatch(post.stdout, /::(warning|error)::/);
});

test('main that gave up on lost answers leaves the key, and post deletes what the key made', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => {
    if (req.method === 'POST') return; // every answer is lost
    if (req.method === 'GET') sendFound(res, req.query.idempotencyKey, ['np-late']);
    else sendMarked(res, 'np-late');
  });
  const env = stepEnv(ws, service);
  const main = await runStep(MAIN, { ...env, NSPROV_ACTION_ATTEMPT_TIMEOUT_MS: '200' });
  assert.equal(main.code, 1);
  const posts = service.requests.filter((r) => r.method === 'POST');
  assert.ok(posts.length >= 2, 'retried');
  assert.equal(new Set(posts.map((r) => r.headers['idempotency-key'])).size, 1, 'one key for every attempt');

  const post = await runStep(POST, { ...env, ...(await ws.stateEnv()) });
  assert.equal(post.code, 0, post.stdout);
  assert.deepEqual(service.requests.slice(posts.length).map((r) => `${r.method} ${r.path}`), [
    'GET /api/v1/namespaces',
    'DELETE /api/v1/namespaces/np-late',
  ]);
});

test('the key found nothing: post deletes nothing and says so', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendFound(res, req.query.idempotencyKey, []));
  const post = await runStep(POST, { ...stepEnv(ws, service), STATE_idempotency_key: 'k-1' });
  assert.equal(post.code, 0, post.stdout);
  assert.equal(service.requests.length, 1);
  assert.match(post.stdout, /no live namespace for this Idempotency-Key: nothing to delete/);
  assert.doesNotMatch(post.stdout, /::(warning|error)::/);
});

test('an older service that ignores idempotencyKey and lists everything: post deletes nothing', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) =>
    sendJson(res, 200, { items: [{ name: 'np-someone-elses-job', state: 'ACTIVE' }] }),
  );
  const post = await runStep(POST, { ...stepEnv(ws, service), STATE_idempotency_key: 'k-2' });
  assert.equal(post.code, 0);
  assert.equal(service.requests.length, 1, 'no DELETE');
  assert.match(post.stdout, /^::warning::Cleanup of the namespace main asked for failed.*not a lookup by Idempotency-Key/m);
});

test('a lookup answer that names no valid namespace is not deleted', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendFound(res, req.query.idempotencyKey, ['../kube-system']));
  const post = await runStep(POST, { ...stepEnv(ws, service), STATE_idempotency_key: 'k-3' });
  assert.equal(service.requests.length, 1, 'no DELETE');
  assert.match(post.stdout, /^::warning::.*should name one namespace/m);
});

test('a recorded namespace is deleted by name, without a lookup', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendMarked(res, 'np-known'));
  const post = await runStep(POST, { ...stepEnv(ws, service), STATE_idempotency_key: 'k-4', STATE_namespace: 'np-known' });
  assert.equal(post.code, 0, post.stdout);
  assert.deepEqual(service.requests.map((r) => `${r.method} ${r.path}`), ['DELETE /api/v1/namespaces/np-known']);
});
