// The main step against a fake nsprov service, mostly run as a child process
// exactly as the runner starts it.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test } from 'node:test';

import { run } from '../provision.js';
import { Runner } from '../runner.js';
import {
  EXPIRES_AT,
  kubeconfigFor,
  sendCreated,
  sendJson,
  sendProblem,
  startFakeService,
} from '../test-support/fake-service.js';
import { FAST_TIMING, FakeProcess, MAIN, POST, inputEnv, makeWorkspace, runStep } from '../test-support/step.js';
import { OWN_MARKER } from '../kubeconfig.js';

const TOKEN = 'nsprov-test-token-5f2a9c';
const SA_TOKEN = 'eyJhbGciOiJSUzI1NiJ9.sa-token-body.signature';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function mainEnv(ws, service, inputs = {}, extra = {}) {
  return { ...ws.env, ...FAST_TIMING, ...inputEnv({ url: service.url, token: TOKEN, ...inputs }), ...extra };
}

/** Every line that mentions `secret` is the add-mask command for it. */
function assertOnlyMasked(text, secret) {
  const lines = text.split('\n').filter((line) => line.includes(secret));
  assert.deepEqual(lines, lines.length ? [`::add-mask::${secret}`] : [], `${secret} leaked:\n${text}`);
}

function assertNeverPrinted(result, secret) {
  assertOnlyMasked(result.stdout, secret);
  assert.ok(!result.stderr.includes(secret), `${secret} on stderr:\n${result.stderr}`);
}

test('success: namespace, kubeconfig 0600, outputs, KUBECONFIG and state, token never printed', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendCreated(res, { namespace: 'np-x1y2z', token: SA_TOKEN }));
  const result = await runStep(
    MAIN,
    mainEnv(ws, service, { url: `${service.url}/`, ttl: '30m', server: 'https://k8s.example:6443' }),
  );
  assert.equal(result.code, 0, result.stdout + result.stderr);

  const [request] = service.requests;
  assert.equal(service.requests.length, 1);
  assert.equal(request.method, 'POST');
  assert.equal(request.path, '/api/v1/namespaces');
  assert.deepEqual(request.query, { ttl: '30m', server: 'https://k8s.example:6443' });
  assert.equal(request.headers.authorization, `Bearer ${TOKEN}`);
  assert.equal(request.headers.accept, 'application/json');
  assert.match(request.headers['idempotency-key'], UUID);

  const lines = result.stdout.split('\n');
  assert.equal(lines[0], `::add-mask::${TOKEN}`, 'the token is masked before anything else is printed');
  assert.ok(lines.includes(`::add-mask::${SA_TOKEN}`), 'the kubeconfig token is masked');
  assertNeverPrinted(result, TOKEN);
  assertNeverPrinted(result, SA_TOKEN);

  const outputs = await ws.outputs();
  const path = outputs.kubeconfig;
  assert.deepEqual(outputs, { namespace: 'np-x1y2z', kubeconfig: path, 'expires-at': EXPIRES_AT });
  assert.equal(dirname(dirname(path)), ws.runnerTemp, 'default path is a private dir under RUNNER_TEMP');
  assert.match(path, /nsprov-[^/]+\/kubeconfig$/);
  assert.equal(await readFile(path, 'utf8'), `${OWN_MARKER}\n${kubeconfigFor('np-x1y2z', SA_TOKEN)}`);
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.equal((await stat(dirname(path))).mode & 0o777, 0o700);
  assert.deepEqual(await ws.exported(), { KUBECONFIG: path });
  assert.deepEqual(await ws.state(), {
    idempotency_key: request.headers['idempotency-key'],
    namespace: 'np-x1y2z',
    expires_at: EXPIRES_AT,
    kubeconfig_dir: dirname(path),
    kubeconfig: path,
  });
});

test('masks are printed before any file command carries a value', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendCreated(res, { namespace: 'np-order', token: SA_TOKEN }));
  const proc = new FakeProcess(mainEnv(ws, service), ws.files);
  await run({ runner: new Runner(proc) });
  assert.equal(proc.exitCode, undefined, proc.output);

  const tokenMask = proc.lines.find(({ line }) => line === `::add-mask::${TOKEN}`);
  assert.deepEqual(tokenMask.fileSizes, { GITHUB_OUTPUT: 0, GITHUB_ENV: 0, GITHUB_STATE: 0 });
  const saMask = proc.lines.find(({ line }) => line === `::add-mask::${SA_TOKEN}`);
  assert.equal(saMask.fileSizes.GITHUB_OUTPUT, 0);
  assert.equal(saMask.fileSizes.GITHUB_ENV, 0);
  // Only the Idempotency-Key and the namespace (no secret) may be in the state file by then.
  const stateSoFar = (await ws.raw('GITHUB_STATE')).slice(0, saMask.fileSizes.GITHUB_STATE);
  assert.match(stateSoFar, /^idempotency_key<<(ghadelimiter_\S+)\r?\n[0-9a-f-]{36}\r?\n\1\r?\nnamespace<<(ghadelimiter_\S+)\r?\nnp-order\r?\n\2\r?\n$/);
  assert.ok((await ws.raw('GITHUB_OUTPUT')).length > 0, 'outputs were written afterwards');
});

test('503 then 201: retried with the same Idempotency-Key', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res, n) =>
    n === 1 ? sendProblem(res, 503, 'Service Unavailable', 'cluster unreachable') : sendCreated(res),
  );
  const result = await runStep(MAIN, mainEnv(ws, service));
  assert.equal(result.code, 0, result.stdout);
  assert.equal(service.requests.length, 2);
  const [first, second] = service.requests.map((r) => r.headers['idempotency-key']);
  assert.match(first, UUID);
  assert.equal(second, first);
  assert.match(result.stdout, /Attempt 1 failed \(POST http:\/\/127\.0\.0\.1:\d+\/api\/v1\/namespaces: 503 Service Unavailable: cluster unreachable\); retrying/);
  assert.equal((await ws.outputs()).namespace, 'np-abc12');
});

test('429 with wait-for-slot and Retry-After: the retry waits at least that long', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res, n) =>
    n === 1
      ? sendProblem(res, 429, 'Too Many Requests', 'too many live namespaces', { 'Retry-After': '1' })
      : sendCreated(res),
  );
  const result = await runStep(MAIN, mainEnv(ws, service, { 'wait-for-slot': 'true' }, { NSPROV_ACTION_DEADLINE_MS: '10000' }));
  assert.equal(result.code, 0, result.stdout);
  const [first, second] = service.requests;
  assert.ok(second.at - first.at >= 950, `retried after ${second.at - first.at} ms`);
  assert.equal(second.headers['idempotency-key'], first.headers['idempotency-key']);
});

test('an attempt that gets no answer times out and is retried', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res, n) => {
    if (n > 1) sendCreated(res);
    // The first request is never answered.
  });
  const result = await runStep(
    MAIN,
    mainEnv(ws, service, {}, { NSPROV_ACTION_ATTEMPT_TIMEOUT_MS: '300', NSPROV_ACTION_DEADLINE_MS: '5000' }),
  );
  assert.equal(result.code, 0, result.stdout);
  assert.match(result.stdout, /no response within 0\.3s/);
  assert.equal(service.requests.length, 2);
  assert.equal(service.requests[1].headers['idempotency-key'], service.requests[0].headers['idempotency-key']);
});

test('401 fails at once with the problem detail and the URL, never the token', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) =>
    sendProblem(res, 401, 'Unauthorized', 'bearer token not recognised'),
  );
  const result = await runStep(MAIN, mainEnv(ws, service, { ttl: '5m' }));
  assert.equal(result.code, 1);
  assert.equal(service.requests.length, 1, 'no retry for a 4xx');
  assert.match(
    result.stdout,
    new RegExp(`^::error::POST ${service.url.replace(/\./g, '\\.')}/api/v1/namespaces\\?ttl=5m: 401 Unauthorized: bearer token not recognised$`, 'm'),
  );
  assertNeverPrinted(result, TOKEN);
  assert.deepEqual(await ws.state(), { idempotency_key: '' }, 'refused at once: nothing for post to look up');
  assert.deepEqual(await ws.outputs(), {});
  const post = await runStep(POST, { ...mainEnv(ws, service), ...(await ws.stateEnv()) });
  assert.equal(post.code, 0);
  assert.match(post.stdout, /Nothing to clean up/);
  assert.equal(service.requests.length, 1, 'post asked nothing');
});

test('the token is redacted even when the service echoes it', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) =>
    sendProblem(res, 403, 'Forbidden', `token ${TOKEN} may not do this`),
  );
  const proc = new FakeProcess(mainEnv(ws, service), ws.files);
  await run({ runner: new Runner(proc) });
  assert.equal(proc.exitCode, 1);
  assert.match(proc.output, /^::error::.*403 Forbidden: token \*\*\* may not do this$/m);
  assertOnlyMasked(proc.output, TOKEN);
});

test('persistent 503 gives up within the deadline', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res, n) =>
    sendProblem(res, 503, 'Service Unavailable', `still down (${n})`),
  );
  const started = Date.now();
  const result = await runStep(MAIN, mainEnv(ws, service));
  const elapsed = Date.now() - started;
  assert.equal(result.code, 1);
  const attempts = service.requests.length;
  assert.ok(attempts >= 3, `${attempts} attempts`);
  assert.ok(service.requests.at(-1).at - service.requests[0].at < 1500, 'all attempts inside the 1.5 s deadline');
  assert.ok(elapsed < 6000, `step took ${elapsed} ms`);
  assert.match(result.stdout, new RegExp(`^::error::POST .*: gave up after ${attempts} attempt\\(s\\) in [\\d.]+s: .*still down \\(${attempts}\\)$`, 'm'));
  assert.deepEqual(await ws.state(), { idempotency_key: service.requests[0].headers['idempotency-key'] }, 'post will look the key up');
});

test('an unreachable service is retried, then reported with its URL', async (t) => {
  const ws = await makeWorkspace(t);
  const port = await closedPort();
  const url = `http://127.0.0.1:${port}`;
  const result = await runStep(MAIN, { ...ws.env, ...FAST_TIMING, ...inputEnv({ url, token: TOKEN }) });
  assert.equal(result.code, 1);
  assert.match(result.stdout, new RegExp(`^::error::POST ${url.replace(/\./g, '\\.')}/api/v1/namespaces: gave up after \\d+ attempt\\(s\\).*ECONNREFUSED`, 'm'));
  assert.match(result.stdout, /Attempt 1 failed/);
});

test('bad inputs fail before any request', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendCreated(res));
  for (const [inputs, message] of [
    [{ 'export-kubeconfig': 'yes' }, /Core Schema.*: export-kubeconfig/],
    [{ cleanup: 'no' }, /Core Schema.*: cleanup/],
    [{ url: 'not a url' }, /url is not a valid URL/],
    [{ token: '' }, /^::error::No credentials for nsprov: set the token input .*, or give the job "permissions: id-token: write"/m],
  ]) {
    const result = await runStep(MAIN, mainEnv(ws, service, inputs));
    assert.equal(result.code, 1, JSON.stringify(inputs));
    assert.match(result.stdout, message);
  }
  assert.equal(service.requests.length, 0);
});

test('kubeconfig-path and export-kubeconfig: false', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendCreated(res, { namespace: 'np-own' }));
  const path = join(ws.root, 'kube', 'config');
  const result = await runStep(MAIN, mainEnv(ws, service, { 'kubeconfig-path': path, 'export-kubeconfig': 'false' }));
  assert.equal(result.code, 0, result.stdout);
  assert.equal((await ws.outputs()).kubeconfig, path);
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.deepEqual(await ws.exported(), {});
  const state = await ws.state();
  assert.equal(state.kubeconfig, path);
  assert.equal(state.kubeconfig_dir, undefined, 'no private dir to remove for a path the user chose');
});

test('a broken 201 still leaves the namespace for post', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => {
    res.writeHead(201, { 'Content-Type': 'application/yaml', 'X-Namespace': 'np-yaml' });
    res.end('apiVersion: v1\nkind: Config\n');
  });
  const result = await runStep(MAIN, mainEnv(ws, service));
  assert.equal(result.code, 1);
  assert.match(result.stdout, /^::error::.*namespace np-yaml has no kubeconfig \(response is not JSON \(application\/yaml\)/m);
  assert.deepEqual(await ws.state(), { idempotency_key: service.requests[0].headers['idempotency-key'], namespace: 'np-yaml' });
});

test('a response without a valid namespace name is an error', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) =>
    sendJson(res, 201, { namespace: '../../etc', kubeconfig: 'x' }),
  );
  const result = await runStep(MAIN, mainEnv(ws, service));
  assert.equal(result.code, 1);
  assert.match(result.stdout, /the response names no valid namespace/);
  assert.deepEqual(Object.keys(await ws.state()), ['idempotency_key'], 'post will look the key up');
});

test('cancelled while the request is in flight: the answer is still recorded for post', async (t) => {
  const ws = await makeWorkspace(t);
  let answer;
  const service = await startFakeService(t, (req, res) => {
    answer = () => sendCreated(res, { namespace: 'np-late' });
  });
  let stdout = '';
  const result = await runStep(MAIN, mainEnv(ws, service, {}, { NSPROV_ACTION_ATTEMPT_TIMEOUT_MS: '10000', NSPROV_ACTION_DEADLINE_MS: '10000' }), {
    onStart: async (child) => {
      child.stdout.on('data', (chunk) => {
        stdout += chunk;
        if (answer && stdout.includes('Cancelled: no further attempts')) {
          answer();
          answer = null;
        }
      });
      await service.waitForRequests(1);
      child.kill('SIGINT');
    },
  });
  assert.equal(result.signal, null, 'SIGINT does not kill main outright');
  assert.equal(result.code, 0, result.stdout);
  assert.equal((await ws.state()).namespace, 'np-late');
  assert.equal(answer, null, 'the answer was sent only after main saw the cancel');
});

test('cancelled between attempts: no further request', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res) => sendProblem(res, 503, 'Service Unavailable', 'down'));
  const result = await runStep(
    MAIN,
    mainEnv(ws, service, {}, { NSPROV_ACTION_BACKOFF_MS: '30000', NSPROV_ACTION_BACKOFF_MAX_MS: '30000', NSPROV_ACTION_DEADLINE_MS: '120000' }),
    {
      onStart: (child) => {
        child.stdout.setEncoding('utf8').on('data', (chunk) => {
          if (chunk.includes('retrying in')) child.kill('SIGTERM');
        });
      },
    },
  );
  assert.equal(result.code, 1);
  assert.match(result.stdout, /^::error::POST .*: cancelled after 1 attempt\(s\)/m);
  assert.equal(service.requests.length, 1);
});

async function closedPort() {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

test('a redirect fails at once and the token does not follow it', async (t) => {
  const ws = await makeWorkspace(t);
  const elsewhere = await startFakeService(t, (req, res) => sendCreated(res));
  const service = await startFakeService(t, (req, res) => {
    res.writeHead(307, { Location: `${elsewhere.url}/api/v1/namespaces` });
    res.end();
  });
  const result = await runStep(MAIN, mainEnv(ws, service));
  assert.equal(result.code, 1);
  assert.match(result.stdout, /^::error::POST .*: unexpected redirect \(307\) to http:\/\/127\.0\.0\.1:\d+\/api\/v1\/namespaces; is url the nsprov service\?$/m);
  assert.equal(service.requests.length, 1);
  assert.equal(elsewhere.requests.length, 0);
});

test('text from the service stays on one line and cannot start a workflow command', async (t) => {
  const ws = await makeWorkspace(t);
  const service = await startFakeService(t, (req, res, n) => {
    if (n === 1) {
      res.writeHead(502, { 'Content-Type': 'text/html' });
      res.end('<html>\n::warning::from the proxy\n</html>');
    } else {
      sendProblem(res, 400, 'Bad Request', 'ttl is invalid\n::error::injected');
    }
  });
  const proc = new FakeProcess(mainEnv(ws, service, { ttl: '400h' }), ws.files);
  await run({ runner: new Runner(proc) });
  assert.equal(proc.exitCode, 1);
  const lines = proc.lines.map(({ line }) => line);
  assert.ok(lines.some((line) => /^Attempt 1 failed \(.*502 Bad Gateway: <html> ::warning::from the proxy <\/html>\)/.test(line)), proc.output);
  assert.ok(!lines.some((line) => line.startsWith('::warning::from')), proc.output);
  assert.deepEqual(lines.filter((line) => line.startsWith('::error::')), [
    `::error::POST ${service.url}/api/v1/namespaces?ttl=400h: 400 Bad Request: ttl is invalid ::error::injected`,
  ]);
});
