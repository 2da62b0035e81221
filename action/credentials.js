// Who the Action is to the nsprov service: the `token` input or, without one,
// an OIDC ID token from the GitHub Actions runner (keyless: no secret to store
// or rotate; the service maps the token's claims to an owner).
//
// The runner offers ID tokens only to jobs with `permissions: id-token: write`,
// through ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN. Main
// and post each ask for their own: an ID token is short-lived, and a job may
// run far longer than the one main got. Each is masked the moment it arrives.

import { TransientError, withRetries } from './retry.js';
import { describeFailure, describeNetworkError, parseRetryAfter, problemOf } from './service-client.js';

export const DEFAULT_AUDIENCE = 'nsprov';

/** The one line a step fails with when it has no way to authenticate. */
export const NO_CREDENTIALS =
  'No credentials for nsprov: set the token input (e.g. token: ${{ secrets.NSPROV_TOKEN }}), ' +
  'or give the job "permissions: id-token: write" so the Action can use an OIDC ID token instead';

/** The token endpoint is GitHub's infrastructure: its 5xx and 429 are worth another try. */
const RETRIED_STATUSES = new Set([408, 429, 500, 502, 503, 504]);
const USER_AGENT = 'nsprov-action';

/**
 * How this step authenticates, decided without any network: `{ token }` from
 * the input (already masked), or `{ oidc: { requestUrl, requestToken, audience } }`.
 * Throws NO_CREDENTIALS when there is neither.
 */
export function readCredentials(runner) {
  const token = runner.getInput('token');
  if (token) {
    runner.setSecret(token);
    return { token };
  }
  const requestUrl = runner.env.ACTIONS_ID_TOKEN_REQUEST_URL ?? '';
  const requestToken = runner.env.ACTIONS_ID_TOKEN_REQUEST_TOKEN ?? '';
  if (!requestUrl || !requestToken) throw new Error(NO_CREDENTIALS);
  const audience = runner.getInput('audience') || DEFAULT_AUDIENCE;
  if (/[\s\x00-\x1f\x7f]/.test(audience)) {
    throw new Error(`audience must not contain whitespace or control characters, got ${JSON.stringify(audience)}`);
  }
  return { oidc: { requestUrl, requestToken, audience } };
}

/**
 * The bearer token for the service: the input's, or a fresh ID token, masked
 * before this returns (and so before anything can print or send it).
 */
export async function bearerToken(runner, credentials, { timing, fetch = globalThis.fetch, signal, onRetry }) {
  if (credentials.token) return credentials.token;
  const { requestUrl, requestToken, audience } = credentials.oidc;
  runner.info(`Requesting an OIDC ID token for audience ${JSON.stringify(audience)}`);
  const idToken = await requestIdToken({ requestUrl, requestToken, audience, timing, fetch, signal, onRetry });
  runner.setSecret(idToken);
  return idToken;
}

/**
 * The runner's token URL with `audience` added. The URL the runner gives
 * already has a query (`?api-version=2.0`), so the audience is appended to it
 * with `&`, and becomes the whole query when there is none.
 */
export function idTokenUrl(requestUrl, audience) {
  let url;
  try {
    url = new URL(requestUrl);
  } catch {
    throw new Error('ACTIONS_ID_TOKEN_REQUEST_URL is not a valid URL');
  }
  const query = url.search.replace(/^\?/, '').replace(/&+$/, '');
  url.search = `${query}${query ? '&' : ''}audience=${encodeURIComponent(audience)}`;
  return url;
}

/** GET the ID token with retries; `{"value": "<jwt>"}` is the answer. */
export async function requestIdToken({ requestUrl, requestToken, audience, timing, fetch = globalThis.fetch, signal, onRetry }) {
  const url = idTokenUrl(requestUrl, audience);
  const describe = `OIDC ID token request (audience ${JSON.stringify(audience)}) to ${url.origin}${url.pathname}`;
  const attempt = async ({ timeoutMs }) => {
    let response;
    let text;
    try {
      response = await fetch(url, {
        headers: { Authorization: `Bearer ${requestToken}`, Accept: 'application/json', 'User-Agent': USER_AGENT },
        // The request token must not follow a redirect to wherever it points.
        redirect: 'manual',
        signal: AbortSignal.timeout(timeoutMs),
      });
      text = await response.text();
    } catch (err) {
      throw new TransientError(`${describe}: ${describeNetworkError(err, timeoutMs)}`, { cause: err });
    }
    if (RETRIED_STATUSES.has(response.status)) {
      throw new TransientError(`${describe}: ${describeFailure(response, text)}`, {
        retryAfterMs: parseRetryAfter(response.headers.get('retry-after')),
      });
    }
    if (!response.ok) throw new Error(`${describe}: ${describeFailure(response, text)}`);
    const value = problemOf(text)?.value;
    // A JWT is printable ASCII without spaces; anything else cannot be a bearer token.
    if (typeof value !== 'string' || !/^[\x21-\x7e]+$/.test(value)) {
      throw new Error(`${describe}: the answer (${response.status}) has no ID token in "value"`);
    }
    return value;
  };
  return withRetries(attempt, timing, { signal, onRetry, describe });
}
