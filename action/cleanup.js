// The Action's post step: delete the namespace main made, and the kubeconfig
// main wrote; for a failed job, first report what the namespace looked like,
// and keep it instead of deleting it when keep-on-failure asks.
//
// Post runs even when the job failed or was cancelled (`post-if: always()`),
// and then it may have only seconds, so the retry budget is short and the
// diagnostics have a deadline of their own. A failed delete is a warning by
// default: the namespace's TTL reclaims it anyway, and a cleanup hiccup should
// not turn a green job red unless the user asks for that.
//
// Whether the job failed comes from the job-status input, whose default is
// `${{ job.status }}`: the runner evaluates a post step's inputs again when
// post starts, so it holds the status of the steps before it.
//
// Main records the Idempotency-Key before its POST and the namespace once the
// answer arrives. With only the key (main was killed mid-request, or the answer
// was lost), post asks the service which namespace that key made, and deletes it.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bearerToken, readCredentials } from './credentials.js';
import { collect, logLines, wanted, writeReport } from './diagnostics.js';
import { removeKubeconfig } from './kubeconfig.js';
import { STATE, deleteInput, diagnosticsInput, redact } from './provision.js';
import { CLEANUP_TIMING, stepTiming, timingFromEnv } from './retry.js';
import { Runner } from './runner.js';
import { NsprovClient, requireSecureUrl } from './service-client.js';

export const REPORT_DIRECTORY = 'nsprov-diagnostics';

export async function run({ runner = new Runner(), fetch } = {}) {
  const recorded = runner.getState(STATE.namespace);
  const idempotencyKey = runner.getState(STATE.idempotencyKey);
  const key = runner.getState(STATE.key);
  if (!recorded && !idempotencyKey && !key) {
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
    const failed = runner.getInput('job-status') === 'failure';
    const keepFor = failed ? runner.getInput('keep-on-failure') : '';
    if (recorded && wanted(diagnosticsInput(runner), failed)) {
      await report(runner, recorded, failed ? 'the job failed' : 'diagnostics: always');
    }
    const when = deleteInput(runner, key);
    const until = expiresAt ? ` at ${expiresAt}` : ' with its TTL';
    if (when === 'never') {
      const why = runner.getBooleanInput('cleanup', { defaultValue: true }) ? 'delete is never' : 'cleanup is false';
      const next = key ? `; mode: delete with key ${key} ends it` : '';
      runner.info(`${why}: leaving ${what} to expire${until}${next}.`);
      return;
    }
    if (when === 'on-success' && failed && !keepFor) {
      runner.info(`delete is on-success and the job failed: leaving ${what} to expire${until}.`);
      return;
    }
    try {
      const client = await serviceClient(runner, credentials, secrets, fetch);
      if (keepFor && recorded) await keep(runner, client, recorded, keepFor, expiresAt);
      else await deleteNamespace(runner, client, { recorded, idempotencyKey, key });
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

/**
 * The diagnostics report: a collapsed group in the log, and a file in the
 * workspace for an artifact upload step. Whatever goes wrong here is a warning:
 * the delete must still happen.
 */
async function report(runner, namespace, why) {
  try {
    const kubeconfig = await readFile(runner.getState(STATE.kubeconfig), 'utf8');
    const text = await collect(kubeconfig, { why });
    for (const line of logLines(`nsprov diagnostics: ${namespace}`, text)) runner.info(line);
    const directory = join(runner.env.GITHUB_WORKSPACE || process.cwd(), REPORT_DIRECTORY);
    const path = await writeReport(directory, namespace, text);
    runner.info(`Diagnostics written to ${path}`);
  } catch (err) {
    runner.warning(`The diagnostics of namespace ${namespace} could not be collected: ${err?.message ?? err}`);
  }
}

async function serviceClient(runner, credentials, secrets, fetch) {
  const url = requireSecureUrl(runner.getInput('url', { required: true }), {
    allowInsecure: runner.getBooleanInput('allow-insecure-url', { defaultValue: false }),
  });
  const timing = stepTiming(timingFromEnv(runner.env, CLEANUP_TIMING));
  const onRetry = ({ error, attempt, delayMs }) =>
    runner.info(`Attempt ${attempt} failed (${error.message}); retrying in ${(delayMs / 1000).toFixed(1)}s`);
  // Post asks for its own ID token: the one main used may have expired by now.
  const token = await bearerToken(runner, credentials, { timing, fetch, onRetry });
  secrets.push(token);
  return new NsprovClient({ url, token, timing, fetch, onRetry });
}

/**
 * keep-on-failure: extend the failed job's namespace instead of deleting it,
 * and say where it is and until when, in the log and on the job's summary page.
 * An extension the service refuses (beyond the tenant's maximum) still keeps
 * the namespace, until its current expiry.
 */
async function keep(runner, client, namespace, ttl, expiresAt) {
  let until = expiresAt;
  let note = '';
  try {
    until = await client.extendNamespace(namespace, ttl);
  } catch (err) {
    note = ` (not extended by ${ttl}: ${err.message})`;
    runner.warning(`Namespace ${namespace} could not be extended by ${ttl}: ${err.message}`);
  }
  runner.info(`The job failed: kept namespace ${namespace} for a look until ${until}${note}.`);
  runner.appendSummary(
    [
      `### nsprov: namespace \`${namespace}\` kept until ${until}`,
      '',
      `The job failed, so \`keep-on-failure: ${ttl}\` kept its namespace instead of deleting it${note}.`,
      `With the nsprov token: \`nsprov extend ${namespace} --ttl 1h --kubeconfig-out kubeconfig\` gives a kubeconfig for it;`,
      `\`nsprov delete ${namespace}\` ends it (otherwise it expires at ${until}).`,
      '',
    ].join('\n'),
  );
}

async function deleteNamespace(runner, client, { recorded, idempotencyKey, key }) {
  let namespace = recorded;
  if (!namespace && key) {
    runner.info(`Main recorded no namespace (cancelled, or the answer was lost): deleting the one for key ${key}.`);
    namespace = await client.deleteByKey(key);
    runner.info(namespace ? `Namespace ${namespace} is marked for deletion.` : `No namespace for key ${key}: nothing to delete.`);
    return;
  }
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
