// Keyless: no `token` input, an OIDC ID token from a stand-in for the runner's
// token endpoint, sent to a stand-in for the service. Main and post run as
// child processes as the runner starts them, unless a test needs to watch the
// order of events from inside.

import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';

import { DEFAULT_AUDIENCE, NO_CREDENTIALS, idTokenUrl } from '../credentials.js';
import { writeKubeconfig } from '../kubeconfig.js';
import { run } from '../provision.js';
import { Runner } from '../runner.js';
import { sendCreated, sendJson, sendMarked, sendProblem, startFakeService } from '../test-support/fake-service.js';
import { startFakeTokenEndpoint } from '../test-support/fake-token-endpoint.js';
import { FAST_TIMING, FakeProcess, MAIN, POST, inputEnv, makeWorkspace, runStep } from '../test-support/step.js';

/** Env for a keyless step: no token input, the endpoint's two variables. */
function keylessEnv(ws, service, endpoint, inputs = {}) {
  return { ...ws.env, ...FAST_TIMING, ...(endpoint?.env ?? {}), ...inputEnv({ url: service.url, ...inputs }) };
}

function assertOnlyMasked(text, secret) {
  const lines = text.split('\n').filter((line) => line.includes(secret));
  assert.deepEqual(lines, lines.length ? [`::add-mask::${secret}`] : [], `${secret.slice(0, 20)}... leaked:\n${text}`);
}

function errorLines(stdout, kind = 'error') {
  return stdout.split('\n').filter((line) => line.startsWith(`::${kind}::`));
}

test('idTokenUrl appends the audience to the query the runner gives, or makes it the query', () => {
  const cases = [
    ['https://runner.example/_apis/idtoken?api-version=2.0', 'https://runner.example/_apis/idtoken?api-version=2.0&audience=nsprov'],
    ['https://runner.example/_apis/idtoken', 'https://runner.example/_apis/idtoken?audience=nsprov'],
    ['https://runner.example/_apis/idtoken?', 'https://runner.example/_apis/idtoken?audience=nsprov'],
    ['https://runner.example/_apis/idtoken?a=1&', 'https://runner.example/_apis/idtoken?a=1&audience=nsprov'],
  ];
  for (const [given, expected] of cases) assert.equal(idTokenUrl(given, 'nsprov').href, expected, given);
  assert.equal(
    idTokenUrl('https://r.example/t?api-version=2.0', 'https://nsprov.example.com/a b&c').search,
    '?api-version=2.0&audience=https%3A%2F%2Fnsprov.example.com%2Fa%20b%26c',
  );
  assert.throws(() => idTokenUrl('not a url', 'nsprov'), /ACTIONS_ID_TOKEN_REQUEST_URL is not a valid URL/);
  assert.equal(DEFAULT_AUDIENCE, 'nsprov');
});

test('no token input: main gets an ID token for audience nsprov, masks it, and only then sends it', async (t) => {
  const ws = await makeWorkspace(t);
  const endpoint = await startFakeTokenEndpoint(t);
  const proc = new FakeProcess({}, ws.files);
  let outputWhenPosted = null;
  const service = await startFakeService(t, (req, res) => {
    outputWhenPosted = proc.output;
    sendCreated(res, { namespace: 'np-oidc1' });
  });
  Object.assign(proc.env, keylessEnv(ws, service, endpoint, { ttl: '10m' }));
  await run({ runner: new Runner(proc) });
  assert.equal(proc.exitCode, undefined, proc.output);

  assert.equal(endpoint.requests.length, 1);
  const [tokenRequest] = endpoint.requests;
  assert.equal(tokenRequest.method, 'GET');
  assert.equal(tokenRequest.path, '/_apis/idtoken');
  assert.equal(tokenRequest.rawQuery, '?api-version=2.0&audience=nsprov', 'the runner\'s query is kept');
  assert.equal(tokenRequest.headers.authorization, `Bearer ${endpoint.requestToken}`);
  assert.equal(tokenRequest.headers.accept, 'application/json');

  const [idToken] = endpoint.issued;
  const [post] = service.requests;
  assert.equal(post.headers.authorization, `Bearer ${idToken}`);
  assert.ok(outputWhenPosted.split('\n').includes(`::add-mask::${idToken}`), 'masked before it was sent');
  assertOnlyMasked(proc.output, idToken);
  assert.ok(!proc.output.includes(endpoint.requestToken), 'the request token is never printed');
  assert.equal((await ws.outputs()).namespace, 'np-oidc1');
});

test('the audience input is passed, URL-encoded', async (t) => {
  const ws = await makeWorkspace(t);
  const endpoint = await startFakeTokenEndpoint(t);
  const service = await startFakeService(t, (req, res) => sendCreated(res));
  const audience = 'https://nsprov.example.com/t?a&b=c';
  const result = await runStep(MAIN, keylessEnv(ws, service, endpoint, { audience }));
  assert.equal(result.code, 0, result.stdout);
  assert.equal(endpoint.requests[0].query.audience, audience);
  assert.equal(endpoint.requests[0].rawQuery, '?api-version=2.0&audience=https%3A%2F%2Fnsprov.example.com%2Ft%3Fa%26b%3Dc');
  assert.match(result.stdout, /Requesting an OIDC ID token for audience "https:\/\/nsprov\.example\.com\/t\?a&b=c"/);

  const spaced = await runStep(MAIN, keylessEnv(ws, service, endpoint, { audience: 'two words' }));
  assert.equal(spaced.code, 1);
  assert.deepEqual(errorLines(spaced.stdout), ['::error::audience must not contain whitespace or control characters, got "two words"']);
  assert.equal(endpoint.requests.length, 1, 'refused before asking');
});

test('a token URL without a query gets ?audience=', async (t) => {
  const ws = await makeWorkspace(t);
  const endpoint = await startFakeTokenEndpoint(t, { query: '' });
  const service = await startFakeService(t, (req, res) => sendCreated(res));
  const result = await runStep(MAIN, keylessEnv(ws, service, endpoint));
  assert.equal(result.code, 0, result.stdout);
  assert.equal(endpoint.requests[0].rawQuery, '?audience=nsprov');
});

test('post asks for its own ID token and deletes with it', async (t) => {
  const ws = await makeWorkspace(t);
  const endpoint = await startFakeTokenEndpoint(t);
  const service = await startFakeService(t, (req, res) =>
    req.method === 'POST' ? sendCreated(res, { namespace: 'np-oidc2' }) : sendMarked(res, 'np-oidc2'),
  );
  const env = keylessEnv(ws, service, endpoint);
  const main = await runStep(MAIN, env);
  assert.equal(main.code, 0, main.stdout);
  const post = await runStep(POST, { ...env, ...(await ws.stateEnv()) });
  assert.equal(post.code, 0, post.stdout);

  assert.equal(endpoint.requests.length, 2, 'one ID token for main, one for post');
  const [mainToken, postToken] = endpoint.issued;
  assert.notEqual(mainToken, postToken);
  assert.deepEqual(
    service.requests.map((r) => [r.method, r.headers.authorization]),
    [['POST', `Bearer ${mainToken}`], ['DELETE', `Bearer ${postToken}`]],
  );
  const postLines = post.stdout.split('\n');
  const masked = postLines.indexOf(`::add-mask::${postToken}`);
  assert.ok(masked >= 0, post.stdout);
  assert.ok(masked < postLines.findIndex((line) => line.includes('marked for deletion')));
  assertOnlyMasked(post.stdout, postToken);
  assertOnlyMasked(post.stdout, mainToken);
  assert.doesNotMatch(post.stdout, /::(warning|error)::/);
});

test('a token input wins over an available ID token', async (t) => {
  const ws = await makeWorkspace(t);
  const endpoint = await startFakeTokenEndpoint(t);
  const service = await startFakeService(t, (req, res) => sendCreated(res));
  const result = await runStep(MAIN, keylessEnv(ws, service, endpoint, { token: 'static-token-123' }));
  assert.equal(result.code, 0, result.stdout);
  assert.equal(endpoint.requests.length, 0);
  assert.equal(service.requests[0].headers.authorization, 'Bearer static-token-123');
});

test('403 from the token endpoint: one clear line, no retry, nothing asked of the service', async (t) => {
  const ws = await makeWorkspace(t);
  const endpoint = await startFakeTokenEndpoint(t, {
    respond: (req, res) => sendJson(res, 403, { message: "Can't issue ID_TOKEN for audience 'nsprov'" }),
  });
  const service = await startFakeService(t, (req, res) => sendCreated(res));
  const result = await runStep(MAIN, keylessEnv(ws, service, endpoint));
  assert.equal(result.code, 1);
  assert.deepEqual(errorLines(result.stdout), [
    `::error::OIDC ID token request (audience "nsprov") to ${endpoint.url}/_apis/idtoken: 403 Forbidden: Can't issue ID_TOKEN for audience 'nsprov'`,
  ]);
  assert.equal(endpoint.requests.length, 1);
  assert.equal(service.requests.length, 0);
  assert.deepEqual(await ws.state(), {}, 'no POST was sent, so post has nothing to look for');
  assert.ok(!result.stdout.includes(endpoint.requestToken));
});

test('an answer without a usable value is a one-line failure', async (t) => {
  for (const body of [{}, { value: '' }, { value: 42 }, { value: 'two\nlines' }]) {
    const ws = await makeWorkspace(t);
    const endpoint = await startFakeTokenEndpoint(t, { respond: (req, res) => sendJson(res, 200, body) });
    const service = await startFakeService(t, (req, res) => sendCreated(res));
    const result = await runStep(MAIN, keylessEnv(ws, service, endpoint));
    assert.equal(result.code, 1, JSON.stringify(body));
    assert.deepEqual(errorLines(result.stdout), [
      `::error::OIDC ID token request (audience "nsprov") to ${endpoint.url}/_apis/idtoken: the answer (200) has no ID token in "value"`,
    ]);
    assert.equal(service.requests.length, 0);
  }
});

test('the token endpoint\'s 503 and network trouble are retried', async (t) => {
  const ws = await makeWorkspace(t);
  const endpoint = await startFakeTokenEndpoint(t, {
    respond: (req, res, n, issue) =>
      n === 1 ? sendProblem(res, 503, 'Service Unavailable', 'busy') : sendJson(res, 200, { value: issue(req.query.audience) }),
  });
  const service = await startFakeService(t, (req, res) => sendCreated(res));
  const result = await runStep(MAIN, keylessEnv(ws, service, endpoint));
  assert.equal(result.code, 0, result.stdout);
  assert.equal(endpoint.requests.length, 2);
  assert.match(result.stdout, /Attempt 1 failed \(OIDC ID token request .*: 503 Service Unavailable: busy\); retrying/);
  assert.equal(service.requests[0].headers.authorization, `Bearer ${endpoint.issued[0]}`);
});

test('neither a token nor an ID token: main fails with one line that names both fixes', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendCreated(res));
  const endpoint = await startFakeTokenEndpoint(t);
  for (const extra of [{}, { ACTIONS_ID_TOKEN_REQUEST_URL: endpoint.env.ACTIONS_ID_TOKEN_REQUEST_URL }, { ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'x' }]) {
    const result = await runStep(MAIN, { ...keylessEnv(ws, service, null), ...extra });
    assert.equal(result.code, 1);
    assert.deepEqual(errorLines(result.stdout), [`::error::${NO_CREDENTIALS}`], JSON.stringify(extra));
  }
  assert.match(NO_CREDENTIALS, /token input/);
  assert.match(NO_CREDENTIALS, /permissions: id-token: write/);
  assert.doesNotMatch(NO_CREDENTIALS, /\n/);
  assert.equal(service.requests.length + endpoint.requests.length, 0);
});

test('post: a failed ID token request is a one-line warning, and the kubeconfig still goes', async (t) => {
  const ws = await makeWorkspace(t);
  const endpoint = await startFakeTokenEndpoint(t, {
    respond: (req, res) => sendJson(res, 403, { message: 'no' }),
  });
  const service = await startFakeService(t, (req, res) => sendMarked(res, 'np-x'));
  const kubeconfig = join(ws.root, 'kc', 'config');
  await writeKubeconfig(kubeconfig, 'apiVersion: v1\n');
  const state = { STATE_namespace: 'np-x', STATE_expires_at: '2026-01-02T15:04:05Z', STATE_kubeconfig: kubeconfig };
  const result = await runStep(POST, { ...keylessEnv(ws, service, endpoint), ...state });
  assert.equal(result.code, 0);
  assert.deepEqual(errorLines(result.stdout, 'warning'), [
    `::warning::Cleanup of namespace np-x failed; it is deleted when its TTL runs out (2026-01-02T15:04:05Z): OIDC ID token request (audience "nsprov") to ${endpoint.url}/_apis/idtoken: 403 Forbidden: no`,
  ]);
  assert.equal(service.requests.length, 0);
  await assert.rejects(access(kubeconfig), /ENOENT/);
});
