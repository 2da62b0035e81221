import assert from 'node:assert/strict';
import { access, mkdir, readFile, readdir, stat, symlink, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { test } from 'node:test';

import { OWN_MARKER, existingIsOurs, findKubeconfigSecrets, makePrivateDir, removeKubeconfig, writeKubeconfig } from '../kubeconfig.js';
import { kubeconfigFor } from '../test-support/fake-service.js';
import { makeWorkspace } from '../test-support/step.js';

const exists = (path) => access(path).then(() => true, () => false);

test('the user token of a service kubeconfig is found; CA data and server are not secrets', () => {
  const secrets = findKubeconfigSecrets(kubeconfigFor('np-abc', 'eyJhbGciOiJSUzI1NiJ9.payload.sig'));
  assert.deepEqual(secrets, ['eyJhbGciOiJSUzI1NiJ9.payload.sig']);
});

test('quoted values, key data, passwords and comments', () => {
  const text = [
    'users:',
    '- name: a',
    '  user:',
    '    token: "quoted-token"',
    '    client-certificate-data: Q0VSVA==',
    '    client-key-data: S0VZREFUQQ== # comment',
    '- name: b',
    '  user:',
    "    password: 'it''s'",
    '    username: admin',
    '- user: {token: flow}',
    '    tokenFile: /var/run/token',
    '    token: quoted-token',
    '',
  ].join('\r\n');
  assert.deepEqual(findKubeconfigSecrets(text), ['quoted-token', 'S0VZREFUQQ==', "it's"]);
});

test('a kubeconfig without credentials yields nothing', () => {
  assert.deepEqual(findKubeconfigSecrets('apiVersion: v1\nkind: Config\ntoken:\n'), []);
});

test('writeKubeconfig writes mode 0600, marked as ours, and replaces its own readable file without widening it', async (t) => {
  const ws = await makeWorkspace(t);
  const path = join(ws.root, 'nested', 'dir', 'kubeconfig');
  await writeKubeconfig(path, 'one');
  assert.equal(await readFile(path, 'utf8'), `${OWN_MARKER}\none`);
  assert.equal((await stat(path)).mode & 0o777, 0o600);

  const existing = join(ws.root, 'existing');
  await writeFile(existing, `${OWN_MARKER}\nold`, { mode: 0o644 });
  await writeKubeconfig(existing, 'two');
  assert.equal(await readFile(existing, 'utf8'), `${OWN_MARKER}\ntwo`);
  assert.equal((await stat(existing)).mode & 0o777, 0o600);
  assert.deepEqual((await readdir(ws.root)).sort(), ['env', 'existing', 'nested', 'output', 'runner-temp', 'state'], 'no temporary file left');
});

test('writeKubeconfig refuses to replace a file that is not its own, or a symlink, and leaves it as it was', async (t) => {
  const ws = await makeWorkspace(t);
  const foreign = join(ws.root, 'config');
  await writeFile(foreign, 'apiVersion: v1\n# my own cluster\n', { mode: 0o644 });
  await assert.rejects(writeKubeconfig(foreign, 'x'), /kubeconfig-path .*config already exists and was not written by this Action: refusing to overwrite it/);
  assert.equal(await readFile(foreign, 'utf8'), 'apiVersion: v1\n# my own cluster\n');
  assert.equal((await stat(foreign)).mode & 0o777, 0o644);

  // The marker anywhere but on the first line does not count.
  const later = join(ws.root, 'later');
  await writeFile(later, `apiVersion: v1\n${OWN_MARKER}\n`);
  await assert.rejects(writeKubeconfig(later, 'x'), /not written by this Action/);

  const ours = join(ws.root, 'ours');
  await writeKubeconfig(ours, 'x');
  const link = join(ws.root, 'link');
  await symlink(ours, link);
  await assert.rejects(writeKubeconfig(link, 'y'), /link exists and is not a regular file/);
  assert.equal(await readFile(ours, 'utf8'), `${OWN_MARKER}\nx`);

  const dir = join(ws.root, 'a-directory');
  await mkdir(dir);
  await assert.rejects(existingIsOurs(dir), /not a regular file/);
  assert.equal(await existingIsOurs(join(ws.root, 'absent')), false);
  assert.equal(await existingIsOurs(ours), true);
  assert.deepEqual((await readdir(ws.root)).filter((name) => name.endsWith('.tmp')), [], 'no temporary file left');
});

test('makePrivateDir makes a 0700 nsprov- directory under RUNNER_TEMP', async (t) => {
  const ws = await makeWorkspace(t);
  const dir = await makePrivateDir(ws.runnerTemp);
  assert.ok(dir.startsWith(ws.runnerTemp));
  assert.match(basename(dir), /^nsprov-.{6}$/);
  assert.equal((await stat(dir)).mode & 0o777, 0o700);
  assert.notEqual(await makePrivateDir(ws.runnerTemp), dir);
});

test('removeKubeconfig removes the private directory only when it is the file\'s own nsprov- parent', async (t) => {
  const ws = await makeWorkspace(t);
  const dir = await makePrivateDir(ws.runnerTemp);
  const path = join(dir, 'kubeconfig');
  await writeKubeconfig(path, 'x');
  await removeKubeconfig(path, dir);
  assert.equal(await exists(dir), false);

  const userPath = join(ws.root, 'mine', 'kubeconfig');
  await writeKubeconfig(userPath, 'x');
  await removeKubeconfig(userPath, ws.root);
  assert.equal(await exists(userPath), false);
  assert.equal(await exists(ws.root), true, 'a directory that is not ours survives');
});
