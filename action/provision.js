// The Action's main step: ask nsprov for a namespace and hand its kubeconfig
// to the rest of the job.
//
// The order of the steps below is the point of this module:
//  1. mask the token before anything can print it;
//  2. read and check every input before creating anything;
//  3. record the namespace for the post step as soon as the service names it,
//     so that whatever fails afterwards, post can still delete it;
//  4. mask the kubeconfig's credentials before any output, variable or file
//     can carry them;
//  5. only then write the file, the outputs and KUBECONFIG.

import { join } from 'node:path';
import { findKubeconfigSecrets, makePrivateDir, writeKubeconfig } from './kubeconfig.js';
import { PROVISION_TIMING, timingFromEnv } from './retry.js';
import { Runner } from './runner.js';
import { NsprovClient, serviceBaseUrl } from './service-client.js';

/** Names under which main leaves facts for post (post reads them as STATE_<name>). */
export const STATE = Object.freeze({
  namespace: 'namespace',
  expiresAt: 'expires_at',
  kubeconfig: 'kubeconfig',
  kubeconfigDir: 'kubeconfig_dir',
});

/** A Kubernetes namespace name (an RFC 1123 label). */
const NAMESPACE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/**
 * Runs the main step. `runner` talks to the runner (tests pass one built on a
 * stand-in process); `signal` aborts when the runner cancels the job.
 */
export async function run({ runner = new Runner(), signal, fetch } = {}) {
  let token = '';
  try {
    token = runner.getInput('token', { required: true });
    runner.setSecret(token);
    await provision(runner, token, { signal, fetch });
  } catch (err) {
    runner.setFailed(redact(err?.message ?? String(err), token));
  }
}

async function provision(runner, token, { signal, fetch }) {
  const url = serviceBaseUrl(runner.getInput('url', { required: true }));
  const ttl = runner.getInput('ttl');
  const server = runner.getInput('server');
  const requestedPath = runner.getInput('kubeconfig-path');
  const exportKubeconfig = runner.getBooleanInput('export-kubeconfig', { defaultValue: true });
  // Post reads these; a typo should fail here, before a namespace exists.
  runner.getBooleanInput('cleanup', { defaultValue: true });
  runner.getBooleanInput('fail-on-cleanup-error', { defaultValue: false });
  const timing = timingFromEnv(runner.env, PROVISION_TIMING);

  signal?.addEventListener(
    'abort',
    () => runner.info('Cancelled: no further attempts; a request in flight may still finish so post can delete its namespace.'),
    { once: true },
  );
  const client = new NsprovClient({
    url,
    token,
    timing,
    signal,
    fetch,
    onRetry: ({ error, attempt, delayMs }) =>
      runner.info(`Attempt ${attempt} failed (${error.message}); retrying in ${(delayMs / 1000).toFixed(1)}s`),
  });
  runner.info(`Requesting a namespace from ${url}${ttl ? ` with ttl ${ttl}` : ''}`);
  const created = await client.createNamespace({ ttl, server });

  const namespace = created.namespace;
  if (typeof namespace !== 'string' || !NAMESPACE_NAME.test(namespace)) {
    throw new Error(`POST ${url}/api/v1/namespaces: the response names no valid namespace (${created.parseError ?? `got ${JSON.stringify(namespace)}`})`);
  }
  runner.saveState(STATE.namespace, namespace);

  const kubeconfig = created.kubeconfig;
  if (typeof kubeconfig !== 'string' || kubeconfig.trim() === '') {
    throw new Error(`POST ${url}/api/v1/namespaces: the response for namespace ${namespace} has no kubeconfig${created.parseError ? ` (${created.parseError})` : ''}`);
  }
  const secrets = findKubeconfigSecrets(kubeconfig);
  for (const secret of secrets) runner.setSecret(secret);
  if (secrets.length === 0) {
    runner.warning('The kubeconfig holds no token or key that could be masked; check the service version.');
  }
  const expiresAt = typeof created.expiresAt === 'string' ? created.expiresAt : '';
  if (expiresAt) runner.saveState(STATE.expiresAt, expiresAt);

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
  if (exportKubeconfig) runner.exportVariable('KUBECONFIG', path);
  runner.info(`Namespace ${namespace} is ready${expiresAt ? ` until ${expiresAt}` : ''}; kubeconfig: ${path}`);
}

/** The message with every occurrence of the token replaced; belt and braces to the mask. */
export function redact(message, token) {
  return token ? message.split(token).join('***') : message;
}
