// The preview inputs: key, delete and mode, as main and post read them.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { deleteInput, keyInput, modeInput } from '../provision.js';
import { Runner } from '../runner.js';
import { FakeProcess } from '../test-support/step.js';

const runnerWith = (env) => new Runner(new FakeProcess(env));

test('delete defaults to always, and to never with a key (a preview outlives the job)', () => {
  assert.equal(deleteInput(runnerWith({}), ''), 'always');
  assert.equal(deleteInput(runnerWith({}), 'pr-1'), 'never');
  for (const when of ['always', 'on-success', 'never']) {
    assert.equal(deleteInput(runnerWith({ INPUT_DELETE: when }), 'pr-1'), when);
    assert.equal(deleteInput(runnerWith({ INPUT_DELETE: when }), ''), when);
  }
});

test('cleanup: false is delete: never, and a contrary delete is refused', () => {
  assert.equal(deleteInput(runnerWith({ INPUT_CLEANUP: 'false' }), ''), 'never');
  assert.equal(deleteInput(runnerWith({ INPUT_CLEANUP: 'false', INPUT_DELETE: 'never' }), ''), 'never');
  assert.throws(
    () => deleteInput(runnerWith({ INPUT_CLEANUP: 'false', INPUT_DELETE: 'always' }), ''),
    /cleanup: false and delete: always disagree/,
  );
  assert.throws(() => deleteInput(runnerWith({ INPUT_DELETE: 'sometimes' }), ''), /delete must be one of always, on-success, never/);
});

test('key takes what the service takes, nothing else', () => {
  assert.equal(keyInput(runnerWith({})), '');
  for (const key of ['pr-42', 'a', 'web.pr_7', 'A'.repeat(63)]) assert.equal(keyInput(runnerWith({ INPUT_KEY: key })), key);
  for (const key of ['-pr', 'pr-', 'pr/42', 'pr 42', 'a'.repeat(64), 'pr-1\nmode: delete']) {
    assert.throws(() => keyInput(runnerWith({ INPUT_KEY: key })), /key must be 1 to 63/, key);
  }
});

test('mode is create or delete', () => {
  assert.equal(modeInput(runnerWith({})), 'create');
  assert.equal(modeInput(runnerWith({ INPUT_MODE: 'delete' })), 'delete');
  assert.throws(() => modeInput(runnerWith({ INPUT_MODE: 'destroy' })), /mode must be one of create, delete/);
});
