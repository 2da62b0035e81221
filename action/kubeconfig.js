// The kubeconfig the service returns: which of its values are secrets, and
// how it lands on disk.
//
// A line-based scan instead of a YAML parser keeps the Action dependency-free.
// It only has to find scalar values of a few well-known keys, which kubeconfig
// writers (the service's PyYAML, kubectl) emit on one line each.

import { randomBytes } from 'node:crypto';
import { chmod, link, lstat, mkdir, mkdtemp, open, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';

/** Keys whose values are credentials: user tokens, passwords, private keys. */
const SECRET_KEY = /^(token|password|id-token|refresh-token|access-token|client-secret|[A-Za-z-]*key-data)$/;

/** `  key: value`, optionally as a list item (`- key: value`). */
const KEY_VALUE = /^\s*(?:-\s+)?([A-Za-z][A-Za-z0-9_-]*)\s*:\s+(.*)$/;

/** The secret values in a kubeconfig, in order of appearance, without duplicates. */
export function findKubeconfigSecrets(text) {
  const secrets = new Set();
  for (const line of String(text).split(/\r?\n/)) {
    const match = KEY_VALUE.exec(line);
    if (!match || !SECRET_KEY.test(match[1])) continue;
    const value = scalarValue(match[2]);
    if (value) secrets.add(value);
  }
  return [...secrets];
}

/** The value of a one-line YAML scalar: quotes removed, trailing comment dropped. */
function scalarValue(raw) {
  const text = raw.trim();
  if (text.startsWith("'")) {
    const end = text.lastIndexOf("'");
    return end > 0 ? text.slice(1, end).replace(/''/g, "'") : '';
  }
  if (text.startsWith('"')) {
    const end = text.lastIndexOf('"');
    return end > 0 ? text.slice(1, end).replace(/\\"/g, '"').replace(/\\\\/g, '\\') : '';
  }
  // Block scalars (| or >) and flow collections are not how kubeconfigs carry tokens.
  if (/^[|>{[]/.test(text)) return '';
  return text.replace(/\s+#.*$/, '').trim();
}

/**
 * The API server, CA, token and namespace of a kubeconfig the service wrote
 * (one cluster, one user, one context): the first value of each key. Throws
 * when one is missing.
 */
export function kubeconfigAccess(text) {
  const found = {};
  for (const line of String(text).split(/\r?\n/)) {
    const match = KEY_VALUE.exec(line);
    if (match && !(match[1] in found)) found[match[1]] = scalarValue(match[2]);
  }
  for (const key of ['server', 'token', 'namespace']) {
    if (!found[key]) throw new Error(`the kubeconfig has no ${key}`);
  }
  const ca = found['certificate-authority-data'];
  return {
    server: found.server.replace(/\/+$/, ''),
    token: found.token,
    namespace: found.namespace,
    ca: ca ? Buffer.from(ca, 'base64').toString('utf8') : null,
  };
}

/** A new private directory (mode 0700) under RUNNER_TEMP for the default kubeconfig path. */
export async function makePrivateDir(runnerTemp) {
  const parent = runnerTemp || tmpdir();
  await mkdir(parent, { recursive: true });
  return mkdtemp(join(parent, 'nsprov-'));
}

/**
 * The first line of every kubeconfig the Action writes. It is how the Action
 * recognises a file at kubeconfig-path as its own (from an earlier run of it
 * on the same runner, or an earlier step of the job) and may replace it; any
 * other file there (a developer's ~/.kube/config on a self-hosted runner) is
 * left alone. A YAML comment, so kubectl and client libraries ignore it.
 */
export const OWN_MARKER = '# Written by the nsprov GitHub Action, which may replace or delete this file.';

/** Why a file at kubeconfig-path is not the Action's to replace. */
export class NotOurFile extends Error {
  constructor(path, reason) {
    super(`kubeconfig-path ${path} ${reason}: refusing to overwrite it; remove it or choose another path`);
    this.name = 'NotOurFile';
  }
}

/**
 * Whether `path` holds the Action's own kubeconfig (true) or nothing (false);
 * throws NotOurFile for anything else. Main calls it before asking for a
 * namespace, so a clash costs nothing.
 */
export async function existingIsOurs(path) {
  let info;
  try {
    info = await lstat(path);
  } catch (err) {
    if (err.code === 'ENOENT') return false;
    throw err;
  }
  if (!info.isFile()) throw new NotOurFile(path, 'exists and is not a regular file');
  const file = await open(path, 'r');
  try {
    const head = Buffer.alloc(OWN_MARKER.length + 2);
    const { bytesRead } = await file.read(head, 0, head.length, 0);
    const firstLine = head.subarray(0, bytesRead).toString('utf8').split(/\r?\n/, 1)[0];
    if (firstLine !== OWN_MARKER) throw new NotOurFile(path, 'already exists and was not written by this Action');
  } finally {
    await file.close();
  }
  return true;
}

/**
 * Writes the kubeconfig, marked as ours, with mode 0600. It goes to a fresh
 * file first, so an existing, more readable file at `path` never holds the
 * credentials, not even for a moment. That file is renamed over our own
 * kubeconfig, or hard-linked to `path` when there is none: the link fails if a
 * file appeared there meanwhile, so a foreign file is never replaced.
 */
export async function writeKubeconfig(path, text) {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temporary = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(temporary, `${OWN_MARKER}\n${text}`, { mode: 0o600, flag: 'wx' });
    await chmod(temporary, 0o600);
    if (await existingIsOurs(path)) {
      await rename(temporary, path);
    } else {
      try {
        await link(temporary, path);
      } catch (err) {
        if (err.code === 'EEXIST') throw new NotOurFile(path, 'appeared while the Action was writing it');
        throw err;
      }
    }
  } finally {
    await rm(temporary, { force: true });
  }
}

/**
 * Removes a kubeconfig main wrote, and the private directory main made for it.
 * The directory goes only if it is the file's own parent and has our prefix,
 * so a damaged state entry cannot point this at anything else.
 */
export async function removeKubeconfig(path, privateDir) {
  if (path) await rm(path, { force: true });
  if (privateDir && path && dirname(path) === privateDir && basename(privateDir).startsWith('nsprov-')) {
    await rm(privateDir, { recursive: true, force: true });
  }
}
