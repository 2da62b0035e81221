// The Action's post step: delete the namespace main recorded, and the
// kubeconfig main wrote.
//
// Post runs even when the job failed or was cancelled (`post-if: always()`),
// and then it may have only seconds, so the retry budget is short. A failed
// delete is a warning by default: the namespace's TTL reclaims it anyway, and a
// cleanup hiccup should not turn a green job red unless the user asks for that.

import { removeKubeconfig } from './kubeconfig.js';
import { STATE, redact } from './provision.js';
import { CLEANUP_TIMING, timingFromEnv } from './retry.js';
import { Runner } from './runner.js';
import { NsprovClient } from './service-client.js';

export async function run({ runner = new Runner(), fetch } = {}) {
  const namespace = runner.getState(STATE.namespace);
  if (!namespace) {
    runner.info('Nothing to clean up: main did not record a namespace (it failed or was cancelled before the service answered).');
    return;
  }
  const expiresAt = runner.getState(STATE.expiresAt);
  let token = '';
  let failOnError = false;
  try {
    token = runner.getInput('token', { required: true });
    runner.setSecret(token);
    failOnError = runner.getBooleanInput('fail-on-cleanup-error', { defaultValue: false });
    if (!runner.getBooleanInput('cleanup', { defaultValue: true })) {
      runner.info(`cleanup is false: leaving namespace ${namespace} to expire${expiresAt ? ` at ${expiresAt}` : ' with its TTL'}.`);
      return;
    }
    await deleteNamespace(runner, token, namespace, { fetch });
  } catch (err) {
    const message = `Cleanup of namespace ${namespace} failed; it is deleted when its TTL runs out${expiresAt ? ` (${expiresAt})` : ''}: ${redact(err?.message ?? String(err), token)}`;
    if (failOnError) runner.setFailed(message);
    else runner.warning(message);
  }
}

async function deleteNamespace(runner, token, namespace, { fetch }) {
  try {
    const client = new NsprovClient({
      url: runner.getInput('url', { required: true }),
      token,
      timing: timingFromEnv(runner.env, CLEANUP_TIMING),
      fetch,
      onRetry: ({ error, attempt, delayMs }) =>
        runner.info(`Attempt ${attempt} failed (${error.message}); retrying in ${(delayMs / 1000).toFixed(1)}s`),
    });
    const outcome = await client.deleteNamespace(namespace);
    runner.info(
      outcome === 'gone'
        ? `Namespace ${namespace} is already gone (404).`
        : `Namespace ${namespace} is marked for deletion.`,
    );
  } finally {
    // The credentials die with the namespace; the file goes whatever happened to the delete.
    await removeKubeconfig(runner.getState(STATE.kubeconfig), runner.getState(STATE.kubeconfigDir));
  }
}
