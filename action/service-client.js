// The nsprov HTTP API (v1) as the Action uses it: create a namespace, delete it.
//
// Error messages name the method and URL and carry the service's problem
// `detail`; they never contain the token, which only ever travels in the
// Authorization header.

import { randomUUID } from 'node:crypto';
import { TransientError, withRetries } from './retry.js';

const TRANSIENT_STATUSES = new Set([429, 502, 503, 504]);
const USER_AGENT = 'nsprov-action';

/** A response the service gave that retrying will not change. */
export class ServiceError extends Error {
  constructor(message, { status = null, detail = null } = {}) {
    super(message);
    this.name = 'ServiceError';
    this.status = status;
    this.detail = detail;
  }
}

/** The service's base URL without trailing slashes; http(s) only. */
export function serviceBaseUrl(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`url is not a valid URL: ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new Error(`url must be an http(s) URL, got ${JSON.stringify(url)}`);
  }
  if (parsed.username || parsed.password) {
    throw new Error('url must not contain credentials: pass the token in the token input');
  }
  if (parsed.search || parsed.hash) {
    throw new Error(`url must not have a query or fragment, got ${JSON.stringify(url)}`);
  }
  return parsed.href.replace(/\/+$/, '');
}

/** Retry-After in milliseconds: delay-seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value, now = Date.now()) {
  if (value === null || value === undefined || value.trim() === '') return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

export class NsprovClient {
  #base;
  #token;
  #timing;
  #signal;
  #onRetry;
  #fetch;

  /**
   * url: the service's base URL; token: its bearer token; timing: see retry.js;
   * signal: aborts further retries (not the request in flight) when the step is
   * cancelled; onRetry: called before each backoff sleep.
   */
  constructor({ url, token, timing, signal, onRetry, fetch = globalThis.fetch }) {
    this.#base = serviceBaseUrl(url);
    this.#token = token;
    this.#timing = timing;
    this.#signal = signal;
    this.#onRetry = onRetry;
    this.#fetch = fetch;
  }

  /**
   * POST /api/v1/namespaces. Every retry carries the same Idempotency-Key, so
   * a request that reached the service but whose answer got lost does not
   * provision a second namespace. Returns what the service said, unvalidated:
   * the caller records the namespace before it checks anything else.
   */
  async createNamespace({ ttl = '', server = '', idempotencyKey = randomUUID() } = {}) {
    const url = new URL(`${this.#base}/api/v1/namespaces`);
    if (ttl) url.searchParams.set('ttl', ttl);
    if (server) url.searchParams.set('server', server);
    const { response, text } = await this.#exchange('POST', url, { 'Idempotency-Key': idempotencyKey });
    let body = null;
    let parseError = null;
    try {
      body = JSON.parse(text);
    } catch (err) {
      parseError = `response is not JSON (${response.headers.get('content-type') ?? 'no content type'}): ${err.message}`;
    }
    return {
      namespace: body?.namespace ?? response.headers.get('x-namespace') ?? null,
      expiresAt: body?.expiresAt ?? response.headers.get('x-expires-at') ?? null,
      kubeconfig: body?.kubeconfig ?? null,
      parseError,
    };
  }

  /**
   * DELETE /api/v1/namespaces/{name}. Returns "deleted" (202: the service
   * marked it for deletion) or "gone" (404: already deleted, expired, or never
   * ours; either way there is nothing left to do).
   */
  async deleteNamespace(name) {
    const url = new URL(`${this.#base}/api/v1/namespaces/${encodeURIComponent(name)}`);
    const { response } = await this.#exchange('DELETE', url, {}, { notFoundIsDone: true });
    return response.status === 404 ? 'gone' : 'deleted';
  }

  #exchange(method, url, headers, { notFoundIsDone = false } = {}) {
    const describe = `${method} ${url.href}`;
    return withRetries(
      ({ timeoutMs }) => this.#attempt(method, url, headers, timeoutMs, notFoundIsDone),
      this.#timing,
      { signal: this.#signal, onRetry: this.#onRetry, describe },
    );
  }

  async #attempt(method, url, headers, timeoutMs, notFoundIsDone) {
    const describe = `${method} ${url.href}`;
    let response;
    let text;
    try {
      response = await this.#fetch(url, {
        method,
        headers: {
          Authorization: `Bearer ${this.#token}`,
          Accept: 'application/json',
          'User-Agent': USER_AGENT,
          ...headers,
        },
        // A redirect would be a misconfigured url; never replay the token elsewhere.
        redirect: 'manual',
        signal: AbortSignal.timeout(timeoutMs),
      });
      text = await response.text();
    } catch (err) {
      throw new TransientError(`${describe}: ${describeNetworkError(err, timeoutMs)}`, { cause: err });
    }
    if (response.ok || (notFoundIsDone && response.status === 404)) {
      return { response, text };
    }
    const message = `${describe}: ${describeFailure(response, text)}`;
    if (TRANSIENT_STATUSES.has(response.status)) {
      throw new TransientError(message, {
        retryAfterMs: parseRetryAfter(response.headers.get('retry-after')),
      });
    }
    if (response.status >= 300 && response.status < 400) {
      const location = response.headers.get('location') ?? 'nowhere';
      throw new ServiceError(`${describe}: unexpected redirect (${response.status}) to ${location}; is url the nsprov service?`, {
        status: response.status,
      });
    }
    throw new ServiceError(message, { status: response.status, detail: problemOf(text)?.detail ?? null });
  }
}

function describeNetworkError(err, timeoutMs) {
  if (err?.name === 'TimeoutError' || err?.name === 'AbortError') {
    return `no response within ${(timeoutMs / 1000).toFixed(1)}s`;
  }
  const cause = err?.cause;
  // An AggregateError (IPv4 and IPv6 both refused) has an empty message but a code.
  const reason = cause?.message || cause?.code || err?.message || String(err);
  return `request failed: ${reason}`;
}

function problemOf(text) {
  try {
    const body = JSON.parse(text);
    return body && typeof body === 'object' ? body : null;
  } catch {
    return null;
  }
}

/** "401 Unauthorized: <detail>", from a problem+json body when there is one. */
function describeFailure(response, text) {
  const problem = problemOf(text);
  const title = flatten((typeof problem?.title === 'string' && problem.title) || response.statusText || 'error');
  // One line, so that text from the service can never start a workflow command of its own.
  let detail = typeof problem?.detail === 'string' ? flatten(problem.detail) : '';
  if (!problem && text.trim()) {
    const flat = flatten(text);
    detail = flat.length > 200 ? `${flat.slice(0, 200)}...` : flat;
  }
  return detail ? `${response.status} ${title}: ${detail}` : `${response.status} ${title}`;
}

function flatten(text) {
  return text.replace(/\s+/g, ' ').trim();
}
