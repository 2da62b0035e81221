// A stand-in for the runner's OIDC ID token endpoint on 127.0.0.1: what
// ACTIONS_ID_TOKEN_REQUEST_URL points at in a job with `id-token: write`.
//
// Like GitHub's, the URL it hands out already carries a query
// (`?api-version=2.0`), it wants `Authorization: Bearer <request token>`, and
// it answers `{"value": "<jwt>"}` with a fresh token for every request.

import { randomBytes } from 'node:crypto';

import { sendJson, sendProblem, startFakeService } from './fake-service.js';

/** A JWT-shaped token (header.payload.signature) for `audience`, different every time. */
export function fakeIdToken(audience) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'RS256', typ: 'JWT' })}.${part({ aud: audience, jti: randomBytes(8).toString('hex') })}.${randomBytes(32).toString('base64url')}`;
}

/**
 * Starts the endpoint. `respond(request, res, n)` may replace the default
 * answer (a fresh token). Returns `env` (the two ACTIONS_ID_TOKEN_REQUEST_*
 * variables), the recorded `requests`, and `issued`: the tokens handed out, in order.
 */
export async function startFakeTokenEndpoint(t, { respond, query = '?api-version=2.0' } = {}) {
  const requestToken = `request-token-${randomBytes(6).toString('hex')}`;
  const issued = [];
  const endpoint = await startFakeService(t, (req, res, n) => {
    if (req.headers.authorization !== `Bearer ${requestToken}`) {
      sendProblem(res, 401, 'Unauthorized', 'bad request token');
      return;
    }
    if (respond) {
      respond(req, res, n, issue);
      return;
    }
    sendJson(res, 200, { count: 1, value: issue(req.query.audience) });
  });
  function issue(audience) {
    const token = fakeIdToken(audience);
    issued.push(token);
    return token;
  }
  return {
    ...endpoint,
    requestToken,
    issued,
    env: {
      ACTIONS_ID_TOKEN_REQUEST_URL: `${endpoint.url}/_apis/idtoken${query}`,
      ACTIONS_ID_TOKEN_REQUEST_TOKEN: requestToken,
    },
  };
}
