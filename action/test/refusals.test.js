// What main and post refuse: an expiresAt that is not RFC 3339 (it lands in
// outputs that workflows paste into scripts), a plain-http service URL off
// loopback (the token would cross the network in clear), and a file at
// kubeconfig-path that is not the Action's own.

import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';

import { OWN_MARKER } from '../kubeconfig.js';
import { isRfc3339, run } from '../provision.js';
import { Runner } from '../runner.js';
import { isLoopbackHost, requireSecureUrl } from '../service-client.js';
import { kubeconfigFor, sendCreated, sendJson, sendMarked, startFakeService } from '../test-support/fake-service.js';
import { FAST_TIMING, FakeProcess, MAIN, POST, inputEnv, makeWorkspace, runStep } from '../test-support/step.js';

const TOKEN = 'nsprov-test-token-refuse-9';

function stepEnv(ws, url, inputs = {}) {
  return { ...ws.env, ...FAST_TIMING, ...inputEnv({ url, token: TOKEN, ...inputs }) };
}

test('RFC 3339: what the service sends passes; near misses and injections do not', () => {
  for (const good of ['2026-01-02T15:04:05Z', '2026-01-02t15:04:05z', '2026-01-02T15:04:05.123Z', '2026-01-02T15:04:05+01:00', '2028-02-29T00:00:00Z', '2026-12-31T23:59:60Z']) {
    assert.ok(isRfc3339(good), good);
  }
  for (const bad of [
    '', 'tomorrow', '2026-01-02', '2026-01-02 15:04:05Z', '2026-01-02T15:04:05', '2026-13-01T00:00:00Z',
    '2026-02-29T00:00:00Z', '2026-01-32T00:00:00Z', '2026-01-02T24:00:00Z', '2026-01-02T15:60:00Z',
    '2026-01-02T15:04:05+24:00', '2026-01-02T15:04:05Z\n::warning::x', '2026-01-02T15:04:05Z"; curl evil #',
    ' 2026-01-02T15:04:05Z', '1767366245', null, 1767366245,
  ]) {
    assert.ok(!isRfc3339(bad), JSON.stringify(bad));
  }
});

test('an expiresAt that is not RFC 3339 fails main before any output; post can still delete', async (t) => {
  for (const expiresAt of ['tomorrow', '2026-01-02T15:04:05Z\n::warning::injected', '$(curl evil)', null]) {
    const ws = await makeWorkspace(t);
    const service = await startFakeService(t, (req, res) =>
      sendJson(res, 201, { namespace: 'np-when', expiresAt, kubeconfig: kubeconfigFor('np-when', 'sa-tok') }),
    );
    const result = await runStep(MAIN, stepEnv(ws, service.url));
    assert.equal(result.code, 1, JSON.stringify(expiresAt));
    const errors = result.stdout.split('\n').filter((line) => line.startsWith('::error::'));
    assert.equal(errors.length, 1, result.stdout);
    assert.match(errors[0], /the response for namespace np-when has no RFC 3339 expiresAt \(got .*\); post deletes the namespace$/);
    assert.doesNotMatch(result.stdout, /^::warning::injected/m);
    assert.deepEqual(await ws.outputs(), {});
    assert.deepEqual(await ws.exported(), {});
    const state = await ws.state();
    assert.equal(state.namespace, 'np-when');
    assert.equal(state.expires_at, undefined);
  }
});

test('loopback hosts are recognised; look-alikes are not', () => {
  for (const url of ['http://127.0.0.1:8080', 'http://127.1.2.3', 'http://[::1]:80', 'http://localhost:1', 'http://LOCALHOST', 'http://127.1', 'http://0x7f.0.0.1']) {
    assert.ok(isLoopbackHost(new URL(url).hostname), url);
  }
  for (const url of ['http://10.0.0.1', 'http://nsprov.example.com', 'http://127.0.0.1.nip.io', 'http://localhost.example.com', 'http://[::ffff:7f00:1]', 'http://128.0.0.1', 'http://0.0.0.0']) {
    assert.ok(!isLoopbackHost(new URL(url).hostname), url);
  }
});

test('requireSecureUrl: https anywhere, http on loopback, other http only with the override', () => {
  assert.equal(requireSecureUrl('https://nsprov.example.com/'), 'https://nsprov.example.com');
  assert.equal(requireSecureUrl('http://127.0.0.1:8080/'), 'http://127.0.0.1:8080');
  assert.throws(
    () => requireSecureUrl('http://nsprov.example.com'),
    /^Error: url http:\/\/nsprov\.example\.com is plain http and not loopback, so the token would cross the network unencrypted; use https, or set allow-insecure-url: true/,
  );
  assert.equal(requireSecureUrl('http://nsprov.example.com', { allowInsecure: true }), 'http://nsprov.example.com');
});

test('main and post refuse a plain-http URL off loopback before sending anything', async (t) => {
  const ws = await makeWorkspace(t);
  const url = 'http://nsprov.invalid:8080';
  const main = await runStep(MAIN, stepEnv(ws, url));
  assert.equal(main.code, 1);
  assert.match(main.stdout, /^::error::url http:\/\/nsprov\.invalid:8080 is plain http and not loopback/m);
  assert.doesNotMatch(main.stdout, /ENOTFOUND|EAI_AGAIN|attempt/i, 'no request was tried');
  assert.deepEqual(await ws.state(), {});

  const post = await runStep(POST, { ...stepEnv(ws, url), STATE_namespace: 'np-plain' });
  assert.equal(post.code, 0);
  assert.match(post.stdout, /^::warning::Cleanup of namespace np-plain failed.*plain http and not loopback/m);
  assert.doesNotMatch(post.stdout, /ENOTFOUND|EAI_AGAIN|attempt/i);
});

test('allow-insecure-url: true lets main use a plain-http URL off loopback', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendCreated(res, { namespace: 'np-plain' }));
  // The host resolves nowhere; the fetch given to main carries the request to the stand-in.
  const viaStandIn = (url, init) => fetch(new URL(`${url.pathname}${url.search}`, service.url), init);
  const url = 'http://nsprov.invalid:8080';
  const proc = new FakeProcess(stepEnv(ws, url, { 'allow-insecure-url': 'true' }), ws.files);
  await run({ runner: new Runner(proc), fetch: viaStandIn });
  assert.equal(proc.exitCode, undefined, proc.output);
  assert.equal((await ws.outputs()).namespace, 'np-plain');

  const refused = new FakeProcess(stepEnv(ws, url, { 'allow-insecure-url': 'nope' }), ws.files);
  await run({ runner: new Runner(refused), fetch: viaStandIn });
  assert.equal(refused.exitCode, 1);
  assert.match(refused.output, /Core Schema.*: allow-insecure-url/);
  assert.equal(service.requests.length, 1);
});

test('a kubeconfig-path that holds someone else\'s file fails main before a namespace is asked for', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendCreated(res));
  const path = join(ws.root, 'config');
  await writeFile(path, 'apiVersion: v1\nkind: Config\n# the admin kubeconfig\n');
  const result = await runStep(MAIN, stepEnv(ws, service.url, { 'kubeconfig-path': path }));
  assert.equal(result.code, 1);
  assert.match(result.stdout, /^::error::kubeconfig-path .*\/config already exists and was not written by this Action: refusing to overwrite it; remove it or choose another path$/m);
  assert.equal(service.requests.length, 0);
  assert.equal(await readFile(path, 'utf8'), 'apiVersion: v1\nkind: Config\n# the admin kubeconfig\n');
  assert.deepEqual(await ws.state(), {});
});

test('the Action replaces its own kubeconfig at kubeconfig-path (a second run on the same runner)', async (t) => {
  const ws = await makeWorkspace(t);
  let n = 0;
  const service = await startFakeService(t, (req, res) => sendCreated(res, { namespace: `np-run${++n}` }));
  const path = join(ws.root, 'kube', 'config');
  for (const namespace of ['np-run1', 'np-run2']) {
    const result = await runStep(MAIN, stepEnv(ws, service.url, { 'kubeconfig-path': path }));
    assert.equal(result.code, 0, result.stdout);
    const text = await readFile(path, 'utf8');
    assert.ok(text.startsWith(`${OWN_MARKER}\n`));
    assert.match(text, new RegExp(`namespace: ${namespace}\n`));
  }
});

test('post removes the kubeconfig main wrote at kubeconfig-path', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) =>
    req.method === 'POST' ? sendCreated(res, { namespace: 'np-mine' }) : sendMarked(res, 'np-mine'),
  );
  const path = join(ws.root, 'kube', 'config');
  const env = stepEnv(ws, service.url, { 'kubeconfig-path': path });
  assert.equal((await runStep(MAIN, env)).code, 0);
  assert.equal((await runStep(POST, { ...env, ...(await ws.stateEnv()) })).code, 0);
  await assert.rejects(readFile(path), /ENOENT/);
});
