// The nsprov HTTP API (v1) as the Action uses it: create a namespace, find the
// one a create made by its Idempotency-Key, delete it.
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
  constructor(message, { status = null, detail = null, attempt = null } = {}) {
    super(message);
    this.name = 'ServiceError';
    this.status = status;
    this.detail = detail;
    // Which attempt got this answer: a refusal of the first one means nothing was made.
    this.attempt = attempt;
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

/** 127.0.0.0/8, ::1 and localhost: the only hosts a token may reach over plain http. */
export function isLoopbackHost(hostname) {
  // WHATWG URL parsing has already normalised 127.1 and 0x7f.0.0.1 to dotted decimal.
  const host = hostname.toLowerCase();
  return host === 'localhost' || host === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * Refuses to send a bearer token over plain http to anything but loopback, where
 * anyone on the path could read it and use it until it expires.
 * `allowInsecure` (input allow-insecure-url) is the user's explicit override.
 */
export function requireSecureUrl(url, { allowInsecure = false } = {}) {
  const parsed = new URL(serviceBaseUrl(url));
  if (parsed.protocol === 'http:' && !allowInsecure && !isLoopbackHost(parsed.hostname)) {
    throw new Error(
      `url ${parsed.origin} is plain http and not loopback, so the token would cross the network unencrypted; use https, or set allow-insecure-url: true if that is what you want`,
    );
  }
  return serviceBaseUrl(url);
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
  #waitForSlot;

  /**
   * url: the service's base URL; token: its bearer token; timing: see retry.js;
   * signal: aborts further retries (not the request in flight) when the step is
   * cancelled; onRetry: called before each backoff sleep; waitForSlot: retry a
   * cap's 429 (input wait-for-slot) instead of failing at once.
   */
  constructor({ url, token, timing, signal, onRetry, fetch = globalThis.fetch, waitForSlot = false }) {
    this.#waitForSlot = waitForSlot;
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
  async createNamespace({ ttl = '', server = '', idempotencyKey = randomUUID(), key = '' } = {}) {
    const url = new URL(`${this.#base}/api/v1/namespaces`);
    if (ttl) url.searchParams.set('ttl', ttl);
    if (server) url.searchParams.set('server', server);
    // A preview key: the caller's live namespace for it (200) or a new one (201). Repeating
    // it is safe by itself, so no Idempotency-Key; a 409 (its namespace is still being
    // deleted: a reopened pull request) is retried until the name is free.
    if (key) url.searchParams.set('key', key);
    const { response, text } = key
      ? await this.#exchange('POST', url, {}, { conflictIsTransient: true })
      : await this.#exchange('POST', url, { 'Idempotency-Key': idempotencyKey });
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
      reused: response.status === 200,
      parseError,
    };
  }

  /**
   * DELETE /api/v1/namespaces?key=: end the caller's namespace for a preview key.
   * Returns its name, or null when the key has no namespace (404).
   */
  async deleteByKey(key) {
    const url = new URL(`${this.#base}/api/v1/namespaces`);
    url.searchParams.set('key', key);
    const { response, text } = await this.#exchange('DELETE', url, {}, { notFoundIsDone: true });
    if (response.status === 404) return null;
    const name = problemOf(text)?.name;
    if (typeof name !== 'string' || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name)) {
      throw new ServiceError(`DELETE ${url.origin}${url.pathname}: the answer names no namespace; is the service older than the Action?`);
    }
    return name;
  }

  /**
   * GET /api/v1/namespaces?idempotencyKey=: the name of the live namespace a
   * POST with this key made for the same caller, or null when there is none.
   */
  async findByIdempotencyKey(idempotencyKey) {
    const url = new URL(`${this.#base}/api/v1/namespaces`);
    url.searchParams.set('idempotencyKey', idempotencyKey);
    const { text } = await this.#exchange('GET', url, {});
    const body = problemOf(text);
    // An nsprov without this lookup ignores the parameter and lists every namespace
    // of the caller; only an answer that echoes the key is about the key.
    if (body?.idempotencyKey !== idempotencyKey || !Array.isArray(body?.items)) {
      throw new ServiceError(`GET ${url.origin}${url.pathname}: the answer is not a lookup by Idempotency-Key; is the service older than the Action?`);
    }
    const items = body.items;
    if (items.length === 0) return null;
    const name = items[0]?.name;
    if (items.length > 1 || typeof name !== 'string' || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name)) {
      throw new ServiceError(`GET ${url.origin}${url.pathname}: the lookup by Idempotency-Key should name one namespace, got ${JSON.stringify(items).slice(0, 120)}`);
    }
    return name;
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

  /**
   * PATCH /api/v1/namespaces/{name}?ttl=: the new expiry is now + ttl, within
   * the tenant's bounds (the service refuses more with a 400). Returns the new
   * expiresAt. The fresh kubeconfig in the answer is not kept: the job is over.
   */
  async extendNamespace(name, ttl) {
    const url = new URL(`${this.#base}/api/v1/namespaces/${encodeURIComponent(name)}`);
    url.searchParams.set('ttl', ttl);
    const { text } = await this.#exchange('PATCH', url, {});
    const expiresAt = problemOf(text)?.expiresAt;
    if (typeof expiresAt !== 'string') {
      throw new ServiceError(`PATCH ${url.origin}${url.pathname}: the answer has no expiresAt`);
    }
    return expiresAt;
  }

  #exchange(method, url, headers, { notFoundIsDone = false, conflictIsTransient = false } = {}) {
    const describe = `${method} ${url.href}`;
    const options = { notFoundIsDone, conflictIsTransient };
    return withRetries(
      ({ timeoutMs, attempt }) => this.#attempt(method, url, headers, timeoutMs, options, attempt),
      this.#timing,
      { signal: this.#signal, onRetry: this.#onRetry, describe },
    );
  }

  async #attempt(method, url, headers, timeoutMs, { notFoundIsDone, conflictIsTransient }, attempt) {
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
      // TLS, certificate and unknown-host errors meet the same server and the same DNS
      // answer on every attempt: two minutes of retries only hid them.
      const permanent = permanentNetworkError(err);
      if (permanent) throw new ServiceError(`${describe}: ${permanent}`);
      throw new TransientError(`${describe}: ${describeNetworkError(err, timeoutMs)}`, { cause: err });
    }
    if (response.ok || (notFoundIsDone && response.status === 404)) {
      return { response, text };
    }
    // The service's request id ends the line: the operator finds its log lines by it.
    const message = `${describe}: ${describeFailure(response, text)}${requestIdOf(response, text)}`;
    // A full cap stays full for minutes: two minutes of retries hid it and
    // counted a refusal each. Fail at once unless the workflow asks to wait.
    if (response.status === 429 && !this.#waitForSlot) {
      throw new ServiceError(message.replace(/( \(request id [^)]*\))?$/, '; wait-for-slot: true waits for a free slot$1'), {
        status: 429, detail: problemOf(text)?.detail ?? null, attempt,
      });
    }
    if (TRANSIENT_STATUSES.has(response.status) || (conflictIsTransient && response.status === 409)) {
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
    throw new ServiceError(message, { status: response.status, detail: problemOf(text)?.detail ?? null, attempt });
  }
}

/** What is wrong when another attempt cannot help (TLS, certificate, no such host); else null. */
export function permanentNetworkError(err) {
  const code = String(err?.cause?.code ?? '');
  if (code === 'ENOTFOUND') return `cannot resolve the host (${code}): is url right?`;
  if (/^ERR_SSL_WRONG_VERSION_NUMBER$/.test(code)) {
    return `TLS handshake failed (${code}): is url https:// for a plain-http service?`;
  }
  if (/^(ERR_SSL_|ERR_TLS_)|CERT|SELF_SIGNED|UNABLE_TO_VERIFY/.test(code)) {
    return `TLS failed (${code}): ${flatten(err.cause.message ?? '')}`;
  }
  return null;
}

export function describeNetworkError(err, timeoutMs) {
  if (err?.name === 'TimeoutError' || err?.name === 'AbortError') {
    return `no response within ${(timeoutMs / 1000).toFixed(1)}s`;
  }
  const cause = err?.cause;
  // An AggregateError (IPv4 and IPv6 both refused) has an empty message but a code.
  const reason = cause?.message || cause?.code || err?.message || String(err);
  return `request failed: ${reason}`;
}

/** ` (request id ID)` from the X-Request-Id header or the problem's requestId; '' when neither. */
export function requestIdOf(response, text) {
  const id = response.headers.get('x-request-id') || problemOf(text)?.requestId;
  // The id is printed: only the service's own shape, which cannot start a workflow command.
  return typeof id === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(id) ? ` (request id ${id})` : '';
}

export function problemOf(text) {
  try {
    const body = JSON.parse(text);
    return body && typeof body === 'object' ? body : null;
  } catch {
    return null;
  }
}

/** "401 Unauthorized: <detail>", from a problem+json body when there is one. */
export function describeFailure(response, text) {
  const problem = problemOf(text);
  const title = flatten((typeof problem?.title === 'string' && problem.title) || response.statusText || 'error');
  // One line, so that text from the service can never start a workflow command of its own.
  // `detail` from problem+json; `message` from other JSON errors (GitHub's token endpoint).
  const said = [problem?.detail, problem?.message].find((value) => typeof value === 'string');
  let detail = said ? flatten(said) : '';
  if (!problem && text.trim()) {
    const flat = flatten(text);
    detail = flat.length > 200 ? `${flat.slice(0, 200)}...` : flat;
  }
  return detail ? `${response.status} ${title}: ${detail}` : `${response.status} ${title}`;
}

function flatten(text) {
  return text.replace(/\s+/g, ' ').trim();
}
