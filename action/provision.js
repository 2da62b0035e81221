// The Action's main step: ask nsprov for a namespace and hand its kubeconfig
// to the rest of the job.
//
// The order of the steps below is the point of this module:
//  1. mask the token before anything can print it;
//  2. read and check every input (and that kubeconfig-path is free) before
//     creating anything;
//  3. get the bearer token (the input, or an OIDC ID token masked on arrival);
//  4. record the Idempotency-Key for the post step before the first POST, so
//     post can find and delete a namespace whose answer never came back;
//  5. record the namespace for the post step as soon as the service names it,
//     so that whatever fails afterwards, post can still delete it;
//  6. mask the kubeconfig's credentials and check expiresAt before any output,
//     variable or file can carry them;
//  7. only then write the file, the outputs and KUBECONFIG.

import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { bearerToken, readCredentials } from './credentials.js';
import { MODES as DIAGNOSTICS_MODES } from './diagnostics.js';
import { parseDuration, positiveDurationInput } from './duration.js';
import { existingIsOurs, findKubeconfigSecrets, makePrivateDir, writeKubeconfig } from './kubeconfig.js';
import { CLEANUP_TIMING, PROVISION_TIMING, stepTiming, timingFromEnv } from './retry.js';
import { Runner } from './runner.js';
import { NsprovClient, ServiceError, requireSecureUrl } from './service-client.js';

/** Names under which main leaves facts for post (post reads them as STATE_<name>). */
export const STATE = Object.freeze({
  idempotencyKey: 'idempotency_key',
  key: 'key',
  namespace: 'namespace',
  expiresAt: 'expires_at',
  kubeconfig: 'kubeconfig',
  kubeconfigDir: 'kubeconfig_dir',
});

/** What the step does: provision (and post cleans up), or only delete a preview key's namespace. */
export const MODES = Object.freeze(['create', 'delete']);

/** When post deletes the namespace: input delete. */
export const DELETE_WHEN = Object.freeze(['always', 'on-success', 'never']);

/** A preview key, as the service takes it (e.g. pr-42). */
const KEY = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;

/** A Kubernetes namespace name (an RFC 1123 label). */
const NAMESPACE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** RFC 3339 date-time (section 5.6); the field ranges are checked in isRfc3339. */
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$/;

/**
 * Whether `value` is an RFC 3339 date-time. expiresAt comes from the service
 * and goes into an output that workflows paste into shell scripts, so anything
 * else (a newline, a quote, `$(...)`) is refused rather than passed on.
 */
export function isRfc3339(value) {
  const match = typeof value === 'string' ? RFC3339.exec(value) : null;
  if (!match) return false;
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number);
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  const offsetOk = match[8] === undefined || (Number(match[8]) <= 23 && Number(match[9]) <= 59);
  // Second 60 is a leap second, which RFC 3339 allows.
  return month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth && hour <= 23 && minute <= 59 && second <= 60 && offsetOk;
}

/**
 * Runs the main step. `runner` talks to the runner (tests pass one built on a
 * stand-in process); `signal` aborts when the runner cancels the job.
 */
export async function run({ runner = new Runner(), signal, fetch } = {}) {
  const secrets = [];
  try {
    await provision(runner, secrets, { signal, fetch });
  } catch (err) {
    runner.setFailed(redact(err?.message ?? String(err), ...secrets));
  }
}

async function provision(runner, secrets, { signal, fetch }) {
  const credentials = readCredentials(runner);
  secrets.push(credentials.token ?? credentials.oidc.requestToken);
  const url = requireSecureUrl(runner.getInput('url', { required: true }), {
    allowInsecure: runner.getBooleanInput('allow-insecure-url', { defaultValue: false }),
  });
  const mode = modeInput(runner);
  const key = keyInput(runner);
  if (mode === 'delete') {
    if (!key) throw new Error('mode: delete needs key, the preview key whose namespace it ends');
    await deleteKeyed(runner, secrets, credentials, url, key, { signal, fetch });
    return;
  }
  const ttl = runner.getInput('ttl');
  const server = runner.getInput('server');
  const requestedPath = runner.getInput('kubeconfig-path');
  const exportKubeconfig = runner.getBooleanInput('export-kubeconfig', { defaultValue: true });
  if (ttl) checkTtl(ttl);
  // Post reads these; a typo should fail here, before a namespace exists.
  deleteInput(runner, key);
  runner.getBooleanInput('fail-on-cleanup-error', { defaultValue: false });
  diagnosticsInput(runner);
  positiveDurationInput('keep-on-failure', runner.getInput('keep-on-failure'));
  const timing = stepTiming(timingFromEnv(runner.env, PROVISION_TIMING));
  if (requestedPath) await existingIsOurs(requestedPath);

  signal?.addEventListener(
    'abort',
    () => runner.info('Cancelled: no further attempts; a request in flight may still finish so post can delete its namespace.'),
    { once: true },
  );
  const onRetry = ({ error, attempt, delayMs }) =>
    runner.info(`Attempt ${attempt} failed (${error.message}); retrying in ${(delayMs / 1000).toFixed(1)}s`);
  const token = await bearerToken(runner, credentials, { timing, fetch, signal, onRetry });
  secrets.push(token);
  const waitForSlot = runner.getBooleanInput('wait-for-slot', { defaultValue: false });
  const client = new NsprovClient({ url, token, timing, signal, fetch, onRetry, waitForSlot });

  // With a preview key, post finds the namespace by the key; without, by an Idempotency-Key.
  const idempotencyKey = key ? '' : randomUUID();
  const found = key ? STATE.key : STATE.idempotencyKey;
  runner.saveState(found, key || idempotencyKey);
  const forKey = key ? ` for key ${key}` : '';
  runner.info(`Requesting a namespace${forKey} from ${url}${ttl ? ` with ttl ${ttl}` : ''}`);
  let created;
  try {
    created = await client.createNamespace({ ttl, server, idempotencyKey, key });
  } catch (err) {
    // The service refused the first and only attempt (4xx): no namespace carries
    // the key, so post need not look for one (and repeat the same refusal).
    if (err instanceof ServiceError && err.attempt === 1 && err.status >= 400 && err.status < 500) {
      runner.saveState(found, '');
    }
    throw err;
  }

  const namespace = created.namespace;
  if (typeof namespace !== 'string' || !NAMESPACE_NAME.test(namespace)) {
    throw new Error(`POST ${url}/api/v1/namespaces: the response names no valid namespace (${created.parseError ?? `got ${JSON.stringify(namespace)}`})`);
  }
  runner.saveState(STATE.namespace, namespace);

  const kubeconfig = created.kubeconfig;
  if (typeof kubeconfig !== 'string' || kubeconfig.trim() === '') {
    throw new Error(`POST ${url}/api/v1/namespaces: the response for namespace ${namespace} has no kubeconfig${created.parseError ? ` (${created.parseError})` : ''}`);
  }
  const kubeconfigSecrets = findKubeconfigSecrets(kubeconfig);
  for (const secret of kubeconfigSecrets) runner.setSecret(secret);
  if (kubeconfigSecrets.length === 0) {
    runner.warning('The kubeconfig holds no token or key that could be masked; check the service version.');
  }
  const expiresAt = created.expiresAt;
  if (!isRfc3339(expiresAt)) {
    const shown = typeof expiresAt === 'string' ? JSON.stringify(expiresAt.slice(0, 64)) : String(expiresAt);
    throw new Error(`POST ${url}/api/v1/namespaces: the response for namespace ${namespace} has no RFC 3339 expiresAt (got ${shown}); post deletes the namespace`);
  }
  runner.saveState(STATE.expiresAt, expiresAt);

  let path = requestedPath;
  if (!path) {
    const dir = await makePrivateDir(runner.env.RUNNER_TEMP);
    runner.saveState(STATE.kubeconfigDir, dir);
    path = join(dir, 'kubeconfig');
  }
  try {
    await writeKubeconfig(path, kubeconfig);
  } catch (err) {
    throw new Error(`Writing the kubeconfig for namespace ${namespace} to ${path} failed: ${err.message}`);
  }
  runner.saveState(STATE.kubeconfig, path);

  runner.setOutput('namespace', namespace);
  runner.setOutput('kubeconfig', path);
  runner.setOutput('expires-at', expiresAt);
  if (key) runner.setOutput('reused', String(created.reused));
  if (exportKubeconfig) runner.exportVariable('KUBECONFIG', path);
  const how = key ? (created.reused ? ` (reused for key ${key})` : ` (new for key ${key})`) : '';
  runner.info(`Namespace ${namespace}${how} is ready until ${expiresAt}; kubeconfig: ${path}`);
}

/** mode: delete: end the preview key's namespace (a pull request's closed event). */
async function deleteKeyed(runner, secrets, credentials, url, key, { signal, fetch }) {
  const timing = stepTiming(timingFromEnv(runner.env, CLEANUP_TIMING));
  const onRetry = ({ error, attempt, delayMs }) =>
    runner.info(`Attempt ${attempt} failed (${error.message}); retrying in ${(delayMs / 1000).toFixed(1)}s`);
  const token = await bearerToken(runner, credentials, { timing, fetch, signal, onRetry });
  secrets.push(token);
  const client = new NsprovClient({ url, token, timing, signal, fetch, onRetry });
  const name = await client.deleteByKey(key);
  if (name === null) {
    runner.info(`No namespace for key ${key}: nothing to delete.`);
    runner.setOutput('namespace', '');
    return;
  }
  runner.setOutput('namespace', name);
  runner.info(`Namespace ${name} (key ${key}) is marked for deletion.`);
}

/** The mode input: create (the default) or delete. */
export function modeInput(runner) {
  const mode = runner.getInput('mode') || 'create';
  if (!MODES.includes(mode)) throw new Error(`mode must be one of ${MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  return mode;
}

/** The key input: empty, or a preview key the service would take. */
export function keyInput(runner) {
  const key = runner.getInput('key');
  if (key && !KEY.test(key)) {
    throw new Error(`key must be 1 to 63 letters, digits, '.', '_' or '-', beginning and ending with a letter or digit (e.g. pr-42), got ${JSON.stringify(key.slice(0, 80))}`);
  }
  return key;
}

/**
 * When post deletes: the delete input; left empty, always, or never with a key
 * (a preview lives across pushes until mode: delete ends it). cleanup: false is
 * the older spelling of never.
 */
export function deleteInput(runner, key) {
  const cleanup = runner.getBooleanInput('cleanup', { defaultValue: true });
  const when = runner.getInput('delete');
  if (when && !DELETE_WHEN.includes(when)) {
    throw new Error(`delete must be one of ${DELETE_WHEN.join(', ')}, got ${JSON.stringify(when)}`);
  }
  if (!cleanup) {
    if (when && when !== 'never') throw new Error(`cleanup: false and delete: ${when} disagree; use delete alone`);
    return 'never';
  }
  return when || (key ? 'never' : 'always');
}

/** A ttl the service could read (it decides the bounds); a typo fails before any request. */
function checkTtl(ttl) {
  let seconds;
  try {
    seconds = parseDuration(ttl);
  } catch (err) {
    throw new Error(`ttl: ${err.message}`);
  }
  if (seconds < 0) throw new Error(`ttl must not be negative, got ${JSON.stringify(ttl)}`);
}

/** The diagnostics input: on-failure (the default), always or never. */
export function diagnosticsInput(runner) {
  const mode = runner.getInput('diagnostics') || 'on-failure';
  if (!DIAGNOSTICS_MODES.includes(mode)) {
    throw new Error(`diagnostics must be one of ${DIAGNOSTICS_MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  }
  return mode;
}

/** The message with every occurrence of each secret replaced; belt and braces to the mask. */
export function redact(message, ...secrets) {
  return secrets.filter(Boolean).reduce((text, secret) => text.split(secret).join('***'), message);
}
