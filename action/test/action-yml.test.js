// action.yml, the code and action/README.md agree on the inputs: the runner
// only passes inputs that action.yml declares, so an input the code reads but
// action.yml lacks would silently be empty in a real workflow.

import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';

import { ACTION_DIR } from '../test-support/step.js';

/** Each input of action.yml with its `required` and `default` (a line scan of our own file). */
async function declaredInputs() {
  const text = await readFile(join(ACTION_DIR, '..', 'action.yml'), 'utf8');
  const block = text.split(/^inputs:\n/m)[1].split(/^\S/m)[0];
  const inputs = {};
  let current = null;
  for (const line of block.split('\n')) {
    const name = /^ {2}([a-z][a-z-]*):\s*$/.exec(line);
    if (name) inputs[(current = name[1])] = {};
    const field = /^ {4}(required|default):\s*(.*)$/.exec(line);
    if (field && current) inputs[current][field[1]] = field[2].replace(/^'(.*)'$/, '$1');
  }
  return inputs;
}

async function inputsTheCodeReads() {
  const names = new Set();
  for (const file of (await readdir(ACTION_DIR)).filter((name) => name.endsWith('.js'))) {
    const text = await readFile(join(ACTION_DIR, file), 'utf8');
    for (const match of text.matchAll(/get(?:Boolean)?Input\('([a-z-]+)'/g)) names.add(match[1]);
  }
  return names;
}

test('every input the code reads is declared in action.yml and documented', async () => {
  const declared = await declaredInputs();
  const readme = await readFile(join(ACTION_DIR, 'README.md'), 'utf8');
  for (const name of await inputsTheCodeReads()) {
    assert.ok(declared[name], `${name} is read but not declared in action.yml`);
    assert.match(readme, new RegExp(`^\\| \`${name}\` \\|`, 'm'), `${name} missing from the inputs table`);
  }
});

test('token is optional (keyless works), url required, the new inputs have safe defaults', async () => {
  const declared = await declaredInputs();
  assert.equal(declared.token.required, 'false');
  assert.equal(declared.url.required, 'true');
  assert.equal(declared.audience.default, 'nsprov');
  assert.equal(declared['allow-insecure-url'].default, 'false');
});

test('a preview: key and delete default to empty, mode to create, and reused is an output', async () => {
  const declared = await declaredInputs();
  assert.equal(declared.key.default, '');
  assert.equal(declared.delete.default, '');
  assert.equal(declared.mode.default, 'create');
  const text = await readFile(join(ACTION_DIR, '..', 'action.yml'), 'utf8');
  assert.match(text.split(/^outputs:\n/m)[1], /^ {2}reused:$/m);
});
