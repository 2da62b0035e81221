// The Action's post step: delete the namespace main made, and the kubeconfig
// main wrote.
//
// Post runs even when the job failed or was cancelled (`post-if: always()`),
// and then it may have only seconds, so the retry budget is short. A failed
// delete is a warning by default: the namespace's TTL reclaims it anyway, and a
// cleanup hiccup should not turn a green job red unless the user asks for that.
//
// Main records the Idempotency-Key before its POST and the namespace once the
// answer arrives. With only the key (main was killed mid-request, or the answer
// was lost), post asks the service which namespace that key made, and deletes it.

import { bearerToken, readCredentials } from './credentials.js';
import { removeKubeconfig } from './kubeconfig.js';
import { STATE, redact } from './provision.js';
import { CLEANUP_TIMING, stepTiming, timingFromEnv } from './retry.js';
import { Runner } from './runner.js';
import { NsprovClient, requireSecureUrl } from './service-client.js';

export async function run({ runner = new Runner(), fetch } = {}) {
  const recorded = runner.getState(STATE.namespace);
  const idempotencyKey = runner.getState(STATE.idempotencyKey);
  if (!recorded && !idempotencyKey) {
    runner.info('Nothing to clean up: main did not get as far as asking the service for a namespace.');
    return;
  }
  const expiresAt = runner.getState(STATE.expiresAt);
  const what = recorded ? `namespace ${recorded}` : 'the namespace main asked for';
  const secrets = [];
  let failOnError = false;
  try {
    // The token is masked first, before anything else can fail and print.
    const credentials = readCredentials(runner);
    secrets.push(credentials.token ?? credentials.oidc.requestToken);
    failOnError = runner.getBooleanInput('fail-on-cleanup-error', { defaultValue: false });
    if (!runner.getBooleanInput('cleanup', { defaultValue: true })) {
      runner.info(`cleanup is false: leaving ${what} to expire${expiresAt ? ` at ${expiresAt}` : ' with its TTL'}.`);
      return;
    }
    try {
      await deleteNamespace(runner, credentials, secrets, { recorded, idempotencyKey, fetch });
    } finally {
      // The credentials die with the namespace; the file goes whatever happened to the delete.
      await removeKubeconfig(runner.getState(STATE.kubeconfig), runner.getState(STATE.kubeconfigDir));
    }
  } catch (err) {
    const message = `Cleanup of ${what} failed; it is deleted when its TTL runs out${expiresAt ? ` (${expiresAt})` : ''}: ${redact(err?.message ?? String(err), ...secrets)}`;
    if (failOnError) runner.setFailed(message);
    else runner.warning(message);
  }
}

async function deleteNamespace(runner, credentials, secrets, { recorded, idempotencyKey, fetch }) {
  const url = requireSecureUrl(runner.getInput('url', { required: true }), {
    allowInsecure: runner.getBooleanInput('allow-insecure-url', { defaultValue: false }),
  });
  const timing = stepTiming(timingFromEnv(runner.env, CLEANUP_TIMING));
  const onRetry = ({ error, attempt, delayMs }) =>
    runner.info(`Attempt ${attempt} failed (${error.message}); retrying in ${(delayMs / 1000).toFixed(1)}s`);
  // Post asks for its own ID token: the one main used may have expired by now.
  const token = await bearerToken(runner, credentials, { timing, fetch, onRetry });
  secrets.push(token);
  const client = new NsprovClient({ url, token, timing, fetch, onRetry });

  let namespace = recorded;
  if (!namespace) {
    runner.info('Main recorded no namespace (cancelled, or the answer was lost): looking it up by its Idempotency-Key.');
    namespace = await client.findByIdempotencyKey(idempotencyKey);
    if (!namespace) {
      runner.info('The service has no live namespace for this Idempotency-Key: nothing to delete.');
      return;
    }
    runner.info(`Found namespace ${namespace} by its Idempotency-Key.`);
  }
  const outcome = await client.deleteNamespace(namespace);
  runner.info(
    outcome === 'gone'
      ? `Namespace ${namespace} is already gone (404).`
      : `Namespace ${namespace} is marked for deletion.`,
  );
}
