// A stand-in for the nsprov service on 127.0.0.1 (port 0) that answers the
// way the real one does, and records every request it got.

import { once } from 'node:events';
import { createServer } from 'node:http';

export const EXPIRES_AT = '2026-01-02T15:04:05Z';

/** A kubeconfig shaped like the service's (PyYAML output), with `token` as the user token. */
export function kubeconfigFor(namespace, token) {
  return [
    'apiVersion: v1',
    'clusters:',
    '- cluster:',
    '    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUM=',
    '    server: https://127.0.0.1:6443',
    '  name: nsprov',
    'contexts:',
    '- context:',
    '    cluster: nsprov',
    `    namespace: ${namespace}`,
    `    user: ${namespace}`,
    `  name: ${namespace}`,
    `current-context: ${namespace}`,
    'kind: Config',
    'preferences: {}',
    'users:',
    `- name: ${namespace}`,
    '  user:',
    `    token: ${token}`,
    '',
  ].join('\n');
}

export function sendJson(res, status, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

/** An RFC 9457 problem, as the service sends its errors. */
export function sendProblem(res, status, title, detail, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'application/problem+json', ...headers });
  res.end(JSON.stringify({ type: 'about:blank', title, status, detail }));
}

/** 201 for POST /api/v1/namespaces. */
export function sendCreated(res, { namespace = 'np-abc12', token = 'sa-token-abc.def', expiresAt = EXPIRES_AT } = {}) {
  sendJson(
    res,
    201,
    { namespace, expiresAt, kubeconfig: kubeconfigFor(namespace, token) },
    { Location: `/api/v1/namespaces/${namespace}`, 'X-Namespace': namespace, 'X-Expires-At': expiresAt },
  );
}

/** 200 for GET /api/v1/namespaces?idempotencyKey=: the namespaces that key made (0 or 1). */
export function sendFound(res, idempotencyKey, names) {
  const items = names.map((name) => ({ name, owner: 'ci', createdAt: '2026-01-02T14:04:05Z', expiresAt: EXPIRES_AT, state: 'ACTIVE' }));
  sendJson(res, 200, { idempotencyKey, items });
}

/** 202 for DELETE /api/v1/namespaces/{name}. */
export function sendMarked(res, name) {
  sendJson(res, 202, { name, state: 'MARKED_FOR_DELETION' });
}

/**
 * Starts a server whose n-th request (1-based) is answered by
 * `respond(request, res, n)`; `respond` may also never answer. Returns its
 * base URL, the recorded requests, `waitForRequests(n)` and `close()`.
 */
export async function startFakeService(t, respond) {
  const requests = [];
  let arrived = () => {};
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const url = new URL(req.url, 'http://service');
      const request = {
        method: req.method,
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        rawQuery: url.search,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        at: Date.now(),
      };
      requests.push(request);
      arrived();
      respond(request, res, requests.length);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const close = async () => {
    if (!server.listening) return;
    server.closeAllConnections();
    server.close();
    await once(server, 'close');
  };
  t.after(close);
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    close,
    /** Resolves once `count` requests have arrived. */
    waitForRequests(count) {
      return new Promise((resolve) => {
        const check = () => {
          if (requests.length >= count) resolve(requests.slice(0, count));
          else arrived = check;
        };
        check();
      });
    },
  };
}
