// Retrying one HTTP exchange under a total deadline.
//
// The deadline is what matters to a CI job (a step that hangs for ten minutes
// is worse than one that fails in two), so every attempt's timeout and every
// backoff sleep is cut to fit inside it, and we give up early rather than sleep
// past it.

import { setTimeout as sleep } from 'node:timers/promises';

/** A failure worth another attempt: network error, timeout, 429, 502/503/504. */
export class TransientError extends Error {
  constructor(message, { retryAfterMs = null, cause } = {}) {
    super(message, { cause });
    this.name = 'TransientError';
    this.retryAfterMs = retryAfterMs;
  }
}

/** Thrown when the deadline leaves no room for another attempt. */
export class DeadlineExceeded extends Error {
  constructor(message, { attempts, cause } = {}) {
    super(message, { cause });
    this.name = 'DeadlineExceeded';
    this.attempts = attempts;
  }
}

/** Thrown when the step is cancelled between attempts. */
export class Cancelled extends Error {
  constructor(message) {
    super(message);
    this.name = 'Cancelled';
  }
}

/**
 * Timings of a retry loop, in milliseconds.
 * deadlineMs: total budget for all attempts and sleeps.
 * attemptTimeoutMs: one attempt, from sending the request to the end of the body.
 * backoffMs, backoffMaxMs: first backoff sleep, and its cap as it doubles.
 */
export const PROVISION_TIMING = Object.freeze({
  deadlineMs: 120_000,
  attemptTimeoutMs: 30_000,
  backoffMs: 1_000,
  backoffMaxMs: 15_000,
});

/** A cancelled job leaves a post step only seconds, so cleanup gets a short budget. */
export const CLEANUP_TIMING = Object.freeze({
  deadlineMs: 20_000,
  attemptTimeoutMs: 5_000,
  backoffMs: 500,
  backoffMaxMs: 4_000,
});

const TIMING_VARIABLES = {
  deadlineMs: 'NSPROV_ACTION_DEADLINE_MS',
  attemptTimeoutMs: 'NSPROV_ACTION_ATTEMPT_TIMEOUT_MS',
  backoffMs: 'NSPROV_ACTION_BACKOFF_MS',
  backoffMaxMs: 'NSPROV_ACTION_BACKOFF_MAX_MS',
};

/** `defaults`, overridden by NSPROV_ACTION_* variables (tests use them to run fast). */
export function timingFromEnv(env, defaults) {
  const timing = { ...defaults };
  for (const [field, variable] of Object.entries(TIMING_VARIABLES)) {
    const raw = env[variable];
    if (raw === undefined || raw === '') continue;
    if (!/^\d+$/.test(raw.trim()) || Number(raw) <= 0) {
      throw new Error(`${variable} must be a positive number of milliseconds, got ${JSON.stringify(raw)}`);
    }
    timing[field] = Number(raw);
  }
  return timing;
}

/**
 * `timing` with one absolute deadline for the whole step: a step makes several
 * exchanges (an ID token, a lookup, a delete), and the budget is the step's,
 * not each exchange's, because the runner's patience is per step.
 */
export function stepTiming(timing, now = Date.now()) {
  return { ...timing, deadlineAt: now + timing.deadlineMs };
}

/** Exponential backoff with jitter: a random point in the upper half of the window. */
export function backoffDelay(retry, { backoffMs, backoffMaxMs }, random = Math.random) {
  const window = Math.min(backoffMaxMs, backoffMs * 2 ** retry);
  return Math.round(window / 2 + random() * (window / 2));
}

/**
 * Calls `attempt({ timeoutMs, attempt })` until it resolves, throws something
 * other than a TransientError, or the deadline leaves no room for another try.
 * A Retry-After hint longer than the computed backoff wins; one that reaches
 * past the deadline ends the loop at once. `signal` (the step being cancelled)
 * stops further attempts but never interrupts the one in flight. A
 * `timing.deadlineAt` (from stepTiming) caps the loop's deadline further.
 */
export async function withRetries(attempt, timing, { signal, onRetry, describe = 'request' } = {}) {
  const started = Date.now();
  const deadline = Math.min(started + timing.deadlineMs, timing.deadlineAt ?? Infinity);
  const giveUp = (n, error) => {
    const elapsed = ((Date.now() - started) / 1000).toFixed(1);
    return new DeadlineExceeded(`${describe}: gave up after ${n} attempt(s) in ${elapsed}s: ${error.message}`, {
      attempts: n,
      cause: error,
    });
  };
  const cancelled = (n, error) => new Cancelled(`${describe}: cancelled after ${n} attempt(s): ${error.message}`);
  for (let n = 1; ; n++) {
    const timeoutMs = Math.max(1, Math.min(timing.attemptTimeoutMs, deadline - Date.now()));
    let error;
    try {
      return await attempt({ timeoutMs, attempt: n });
    } catch (err) {
      if (!(err instanceof TransientError)) throw err;
      error = err;
    }
    if (signal?.aborted) throw cancelled(n, error);
    const delay = Math.max(backoffDelay(n - 1, timing), error.retryAfterMs ?? 0);
    if (Date.now() + delay >= deadline) throw giveUp(n, error);
    onRetry?.({ error, attempt: n, delayMs: delay });
    try {
      await sleep(delay, undefined, { signal });
    } catch {
      throw cancelled(n, error);
    }
    // A late timer must not start an attempt past the deadline.
    if (Date.now() >= deadline) throw giveUp(n, error);
  }
}
