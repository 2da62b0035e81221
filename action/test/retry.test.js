import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  CLEANUP_TIMING,
  Cancelled,
  DeadlineExceeded,
  PROVISION_TIMING,
  TransientError,
  backoffDelay,
  timingFromEnv,
  withRetries,
} from '../retry.js';

const FAST = { deadlineMs: 1000, attemptTimeoutMs: 500, backoffMs: 10, backoffMaxMs: 40 };

test('backoff doubles up to the cap, jittered within the upper half', () => {
  const timing = { backoffMs: 100, backoffMaxMs: 1000 };
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((n) => backoffDelay(n, timing, () => 1)), [100, 200, 400, 800, 1000, 1000]);
  assert.deepEqual([0, 1, 2, 3].map((n) => backoffDelay(n, timing, () => 0)), [50, 100, 200, 400]);
});

test('timings come from defaults, overridden by NSPROV_ACTION_* variables', () => {
  assert.deepEqual(timingFromEnv({}, PROVISION_TIMING), PROVISION_TIMING);
  assert.ok(CLEANUP_TIMING.deadlineMs <= 20_000, 'post must fit in the seconds a cancelled job leaves');
  const timing = timingFromEnv({ NSPROV_ACTION_DEADLINE_MS: '900', NSPROV_ACTION_BACKOFF_MS: ' 5 ' }, CLEANUP_TIMING);
  assert.equal(timing.deadlineMs, 900);
  assert.equal(timing.backoffMs, 5);
  assert.equal(timing.attemptTimeoutMs, CLEANUP_TIMING.attemptTimeoutMs);
  assert.throws(() => timingFromEnv({ NSPROV_ACTION_DEADLINE_MS: '2m' }, PROVISION_TIMING), /NSPROV_ACTION_DEADLINE_MS/);
  assert.throws(() => timingFromEnv({ NSPROV_ACTION_DEADLINE_MS: '0' }, PROVISION_TIMING), /positive/);
});

test('transient failures are retried until an attempt succeeds', async () => {
  const retries = [];
  let calls = 0;
  const result = await withRetries(
    async ({ attempt }) => {
      calls++;
      assert.equal(attempt, calls);
      if (calls < 3) throw new TransientError(`flaky ${calls}`);
      return 'done';
    },
    FAST,
    { onRetry: (info) => retries.push(info.attempt) },
  );
  assert.equal(result, 'done');
  assert.deepEqual(retries, [1, 2]);
});

test('any other error ends the loop at once', async () => {
  let calls = 0;
  await assert.rejects(
    withRetries(async () => {
      calls++;
      throw new Error('401 Unauthorized');
    }, FAST),
    /401 Unauthorized/,
  );
  assert.equal(calls, 1);
});

test('persistent failures give up before the deadline, with the last error', async () => {
  const started = Date.now();
  let calls = 0;
  await assert.rejects(
    withRetries(async () => {
      calls++;
      throw new TransientError(`503 number ${calls}`);
    }, { ...FAST, deadlineMs: 300 }, { describe: 'POST x' }),
    (err) => err instanceof DeadlineExceeded && err.message.includes(`503 number ${calls}`) && /^POST x: gave up after \d+ attempt/.test(err.message),
  );
  // Timers may fire a little late; the loop itself never starts an attempt past the deadline.
  assert.ok(Date.now() - started < 400, `took ${Date.now() - started} ms`);
  assert.ok(calls >= 3, `only ${calls} attempts`);
});

test('attempt timeouts are cut to what is left of the deadline', async () => {
  const timeouts = [];
  await assert.rejects(
    withRetries(async ({ timeoutMs }) => {
      timeouts.push(timeoutMs);
      await new Promise((resolve) => setTimeout(resolve, 60));
      throw new TransientError('slow');
    }, { deadlineMs: 200, attemptTimeoutMs: 150, backoffMs: 1, backoffMaxMs: 1 }),
    DeadlineExceeded,
  );
  assert.equal(timeouts[0], 150);
  assert.ok(timeouts.at(-1) < 150, `timeouts ${timeouts}`);
});

test('a Retry-After longer than the backoff is honoured', async () => {
  const at = [];
  await withRetries(async () => {
    at.push(Date.now());
    if (at.length === 1) throw new TransientError('429', { retryAfterMs: 150 });
    return 'ok';
  }, FAST);
  assert.ok(at[1] - at[0] >= 145, `waited ${at[1] - at[0]} ms`);
});

test('a Retry-After beyond the deadline gives up at once', async () => {
  const started = Date.now();
  await assert.rejects(
    withRetries(async () => {
      throw new TransientError('429 Too Many Requests', { retryAfterMs: 60_000 });
    }, FAST),
    (err) => err instanceof DeadlineExceeded && err.attempts === 1,
  );
  assert.ok(Date.now() - started < 500);
});

test('cancelling stops the retries but not the attempt in flight', async () => {
  const cancel = new AbortController();
  let calls = 0;
  const result = withRetries(async () => {
    calls++;
    if (calls === 1) {
      cancel.abort();
      throw new TransientError('503');
    }
    return 'unreachable';
  }, { ...FAST, backoffMs: 10_000, backoffMaxMs: 10_000, deadlineMs: 60_000 }, { signal: cancel.signal });
  await assert.rejects(result, Cancelled);
  assert.equal(calls, 1);

  const inFlight = new AbortController();
  const finished = await withRetries(async () => {
    inFlight.abort();
    return 'finished anyway';
  }, FAST, { signal: inFlight.signal });
  assert.equal(finished, 'finished anyway');
});

test('cancelling during a backoff sleep ends it early', async () => {
  const cancel = new AbortController();
  const started = Date.now();
  const result = withRetries(async () => {
    setImmediate(() => cancel.abort());
    throw new TransientError('503');
  }, { ...FAST, backoffMs: 10_000, backoffMaxMs: 10_000, deadlineMs: 60_000 }, { signal: cancel.signal });
  await assert.rejects(result, Cancelled);
  assert.ok(Date.now() - started < 1000);
});
