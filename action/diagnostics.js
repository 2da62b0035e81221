// What a failed job's namespace looked like, read in the post step just before
// the delete: its events (oldest first), its pods' phases, conditions,
// container states and restarts, and the last 100 lines of each container's
// log (the previous container's too after a restart). The same report as
// `nsprov run --diagnostics` (service/nsprov/client/diagnostics.py).
//
// It reads with the job's own kubeconfig, so it sees what the job could see and
// nothing more; a read the tenant's grant forbids is a line of the report. It
// reads events, pod status and logs only: never a Secret, never a pod's spec
// (where environment values live).
//
// node:https rather than fetch: the kubeconfig's API server is trusted through
// the kubeconfig's own CA, and fetch takes no CA without a dependency (undici's
// Agent) or a variable set before Node starts (NODE_EXTRA_CA_CERTS).
//
// Bounded, because the delete comes after it: 5 s per request, 20 s in all
// (a hung API server costs that, not the post step), 30 pods, 64 KiB per log,
// 1 MiB per report.

import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { randomBytes } from 'node:crypto';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { kubeconfigAccess } from './kubeconfig.js';

export const MODES = Object.freeze(['on-failure', 'always', 'never']);
export const LIMITS = Object.freeze({
  deadlineMs: 20_000,
  requestMs: 5_000,
  logLines: 100,
  logBytes: 64 * 1024,
  pods: 30,
  events: 300,
  reportBytes: 1024 * 1024,
});

/** Whether `mode` asks for a report of a job that failed (or did not). */
export function wanted(mode, failed) {
  return mode === 'always' || (mode === 'on-failure' && failed);
}

class OutOfTime extends Error {}

class ApiError extends Error {}

function get(access, path, params, { deadline, limitBytes, requestMs }) {
  const left = deadline - Date.now();
  if (left <= 0) return Promise.reject(new OutOfTime());
  const url = new URL(`${access.server}${path}`);
  for (const [name, value] of Object.entries(params ?? {})) url.searchParams.set(name, value);
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const timeoutMs = Math.min(requestMs, left);
    const req = send(url, {
      headers: { Authorization: `Bearer ${access.token}`, Accept: 'application/json, */*' },
      ca: access.ca ?? undefined,
      timeout: timeoutMs,
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${(timeoutMs / 1000).toFixed(1)}s`)), timeoutMs);
    req.on('timeout', () => req.destroy(new Error(`no answer within ${(timeoutMs / 1000).toFixed(1)}s`)));
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(Date.now() >= deadline ? new OutOfTime() : new ApiError(err.message));
    });
    req.on('response', (res) => {
      const chunks = [];
      let size = 0;
      res.on('data', (chunk) => {
        if (size < limitBytes) chunks.push(chunk.subarray(0, limitBytes - size));
        size += chunk.length;
      });
      res.on('end', () => {
        clearTimeout(timer);
        const body = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode >= 200 && res.statusCode < 300) return resolve(body);
        let message = res.statusMessage;
        try {
          message = JSON.parse(body).message || message;
        } catch {}
        reject(new ApiError(`${res.statusCode} ${message}`));
      });
      res.on('error', (err) => {
        clearTimeout(timer);
        reject(new ApiError(err.message));
      });
    });
    req.end();
  });
}

async function getJson(access, path, params, options) {
  const text = await get(access, path, params, { ...options, limitBytes: 4 * 1024 * 1024 });
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError('the answer is not JSON');
  }
}

function oneLine(text) {
  return String(text ?? '').replace(/\s+/g, ' ').trim();
}

function eventTime(event) {
  return String(event.lastTimestamp || event.eventTime || event.firstTimestamp || event.metadata?.creationTimestamp || '');
}

function eventLines(events) {
  return [...events]
    .sort((a, b) => (eventTime(a) < eventTime(b) ? -1 : eventTime(a) > eventTime(b) ? 1 : 0))
    .map((event) => {
      const involved = event.involvedObject ?? {};
      const what = `${String(involved.kind ?? '?').toLowerCase()}/${involved.name ?? '?'}`;
      const count = event.count > 1 ? ` (x${event.count})` : '';
      return `${eventTime(event).slice(0, 20).padEnd(20)}  ${String(event.type ?? '-').padEnd(7)}  ${event.reason ?? '-'}  ${what}${count}: ${oneLine(event.message)}`;
    });
}

function containerStatuses(pod) {
  return [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])];
}

function describeState(state) {
  const entries = Object.entries(state ?? {});
  if (entries.length === 0) return 'unknown';
  const [kind, detail = {}] = entries[0];
  const said = [];
  if (detail?.reason) said.push(detail.reason);
  if (detail && 'exitCode' in detail) said.push(`exit ${detail.exitCode}`);
  if (detail?.message) said.push(oneLine(detail.message).slice(0, 300));
  return said.length ? `${kind} (${said.join(', ')})` : kind;
}

function podLines(pod) {
  const status = pod.status ?? {};
  const reason = status.reason ? ` (${status.reason}: ${status.message ?? ''})` : '';
  const lines = [`pod/${pod.metadata?.name ?? '?'}: phase ${status.phase ?? '?'}${reason}`];
  for (const condition of status.conditions ?? []) {
    if (condition.status !== 'True') {
      lines.push(`  ${condition.type}=False ${condition.reason ?? ''}: ${oneLine(condition.message)}`.replace(/[: ]+$/, ''));
    }
  }
  for (const container of containerStatuses(pod)) {
    let line = `  container ${container.name}: ${describeState(container.state)}, restarts ${container.restartCount ?? 0}`;
    if (container.lastState && Object.keys(container.lastState).length) line += `, last ${describeState(container.lastState)}`;
    lines.push(line);
  }
  return lines;
}

async function* sections(access, options) {
  const base = `/api/v1/namespaces/${encodeURIComponent(access.namespace)}`;
  yield '';
  yield '== events (oldest first)';
  try {
    const events = (await getJson(access, `${base}/events`, { limit: String(LIMITS.events) }, options)).items ?? [];
    yield* events.length ? eventLines(events) : ['(none)'];
  } catch (err) {
    if (err instanceof OutOfTime) throw err;
    yield `(cannot list events: ${err.message})`;
  }
  yield '';
  yield '== pods';
  let pods;
  try {
    pods = (await getJson(access, `${base}/pods`, { limit: String(LIMITS.pods) }, options)).items ?? [];
  } catch (err) {
    if (err instanceof OutOfTime) throw err;
    yield `(cannot list pods: ${err.message})`;
    return;
  }
  if (pods.length === 0) yield '(none)';
  for (const pod of pods) yield* podLines(pod);
  for (const pod of pods) {
    const name = pod.metadata?.name ?? '';
    for (const container of containerStatuses(pod)) {
      const state = container.state ?? {};
      if (!('running' in state || 'terminated' in state || container.restartCount)) continue;
      for (const previous of container.restartCount ? [false, true] : [false]) {
        yield '';
        yield `== log of pod/${name} container ${container.name}${previous ? ', previous' : ''} (last ${LIMITS.logLines} lines)`;
        const params = { container: container.name, tailLines: String(LIMITS.logLines), limitBytes: String(LIMITS.logBytes) };
        if (previous) params.previous = 'true';
        try {
          const text = await get(access, `${base}/pods/${encodeURIComponent(name)}/log`, params, { ...options, limitBytes: LIMITS.logBytes });
          const lines = text.split(/\r?\n/);
          if (lines.at(-1) === '') lines.pop();
          yield* lines.length ? lines : ['(empty)'];
        } catch (err) {
          if (err instanceof OutOfTime) throw err;
          yield `(cannot read the log: ${err.message})`;
        }
      }
    }
  }
}

/**
 * The report on the namespace `kubeconfig` is for, as text. Never throws for
 * the cluster's sake: a failed read is a line of the report.
 */
export async function collect(kubeconfig, { why, deadlineMs = LIMITS.deadlineMs, requestMs = LIMITS.requestMs, now = Date.now } = {}) {
  let access;
  try {
    access = kubeconfigAccess(kubeconfig);
  } catch (err) {
    return `nsprov diagnostics: cannot read the kubeconfig: ${err.message}\n`;
  }
  const stamp = new Date(now()).toISOString().replace(/\.\d+Z$/, 'Z');
  const lines = [`nsprov diagnostics: namespace ${access.namespace} at ${stamp} (${why})`];
  let size = Buffer.byteLength(lines[0]);
  const options = { deadline: Date.now() + deadlineMs, requestMs };
  try {
    for await (const line of sections(access, options)) {
      size += Buffer.byteLength(line) + 1;
      if (size > LIMITS.reportBytes) {
        lines.push(`(the report stops here: it reached ${LIMITS.reportBytes} bytes)`);
        break;
      }
      lines.push(line);
    }
  } catch (err) {
    if (!(err instanceof OutOfTime)) throw err;
    lines.push(`(the report stops here: the ${Math.round(deadlineMs / 1000)}s budget ran out)`);
  }
  return `${lines.join('\n')}\n`;
}

/** `<directory>/<namespace>.txt`, for an artifact upload step after the job. */
export async function writeReport(directory, namespace, text) {
  await mkdir(directory, { recursive: true });
  const path = join(directory, `${namespace}.txt`);
  const temporary = join(directory, `.${namespace}.${randomBytes(6).toString('hex')}.tmp`);
  await writeFile(temporary, text, { mode: 0o644 });
  await rename(temporary, path);
  return path;
}

/**
 * The report as the job log shows it: a collapsed group in which no line (a
 * pod's log is the tenant's text) can act as a workflow command.
 */
export function logLines(title, text) {
  const resume = randomBytes(16).toString('hex');
  const body = text.split('\n');
  if (body.at(-1) === '') body.pop();
  return [`::group::${title}`, `::stop-commands::${resume}`, ...body, `::${resume}::`, '::endgroup::'];
}
