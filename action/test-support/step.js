// Running the Action's steps the way the runner does: a workspace with the
// file-command files and RUNNER_TEMP, child processes with INPUT_* and STATE_*
// variables, and a reader for what the steps wrote.

import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ACTION_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
export const MAIN = join(ACTION_DIR, 'main.js');
export const POST = join(ACTION_DIR, 'post.js');

/** Timings that keep retry tests fast: 1.5 s deadline, 20-40 ms backoff. */
export const FAST_TIMING = Object.freeze({
  NSPROV_ACTION_DEADLINE_MS: '1500',
  NSPROV_ACTION_ATTEMPT_TIMEOUT_MS: '1000',
  NSPROV_ACTION_BACKOFF_MS: '40',
  NSPROV_ACTION_BACKOFF_MAX_MS: '80',
});

/**
 * Parses a GITHUB_OUTPUT / GITHUB_ENV / GITHUB_STATE file as the runner does
 * (`name<<DELIMITER` heredocs and `name=value` lines) and throws where the
 * runner would reject the file.
 */
export function parseFileCommands(text) {
  const result = {};
  const lines = text.split('\n').map((line) => line.replace(/\r$/, ''));
  if (lines.at(-1) === '') lines.pop();
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const heredoc = line.indexOf('<<');
    const equals = line.indexOf('=');
    if (equals >= 0 && (heredoc < 0 || equals < heredoc)) {
      result[line.slice(0, equals)] = line.slice(equals + 1);
      continue;
    }
    if (heredoc <= 0) throw new Error(`invalid file command line: ${JSON.stringify(line)}`);
    const name = line.slice(0, heredoc);
    const delimiter = line.slice(heredoc + 2);
    const value = [];
    for (i++; i < lines.length && lines[i] !== delimiter; i++) value.push(lines[i]);
    if (i >= lines.length) throw new Error(`heredoc for ${name} has no closing delimiter`);
    result[name] = value.join('\n');
  }
  return result;
}

/** A fresh RUNNER_TEMP and empty GITHUB_OUTPUT/ENV/STATE files, removed after the test. */
export async function makeWorkspace(t) {
  const root = await mkdtemp(join(tmpdir(), 'nsprov-action-test-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const runnerTemp = join(root, 'runner-temp');
  await mkdir(runnerTemp);
  const files = {
    GITHUB_OUTPUT: join(root, 'output'),
    GITHUB_ENV: join(root, 'env'),
    GITHUB_STATE: join(root, 'state'),
  };
  for (const path of Object.values(files)) await writeFile(path, '');
  const read = async (variable) => parseFileCommands(await readFile(files[variable], 'utf8'));
  return {
    root,
    runnerTemp,
    files,
    /** The variables the runner sets for every step. */
    env: { RUNNER_TEMP: runnerTemp, ...files },
    outputs: () => read('GITHUB_OUTPUT'),
    exported: () => read('GITHUB_ENV'),
    state: () => read('GITHUB_STATE'),
    raw: async (variable) => readFile(files[variable], 'utf8'),
    /** STATE_* variables for the post step, from what main saved. */
    async stateEnv() {
      const state = await read('GITHUB_STATE');
      return Object.fromEntries(Object.entries(state).map(([name, value]) => [`STATE_${name}`, value]));
    },
  };
}

/** INPUT_* variables from an inputs object, with the runner's name mapping. */
export function inputEnv(inputs) {
  return Object.fromEntries(
    Object.entries(inputs).map(([name, value]) => [`INPUT_${name.replace(/ /g, '_').toUpperCase()}`, value]),
  );
}

/**
 * Runs a step script as a child process with only PATH and `env`, as the runner
 * would. `onStart(child)` sees the process (to signal it). Resolves to
 * { code, signal, stdout, stderr }; a step that hangs is killed after 20 s.
 */
export function runStep(script, env, { onStart } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script], {
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    onStart?.(child);
  });
}

/**
 * A stand-in for `process` to run a step in-process: its own env, an exitCode,
 * and a stdout that records each line together with the sizes of the
 * file-command files at the moment the line was written.
 */
export class FakeProcess {
  constructor(env, files = {}) {
    this.env = { ...env };
    this.exitCode = undefined;
    this.lines = [];
    this.stdout = {
      write: (text) => {
        for (const line of text.split('\n').filter(Boolean)) {
          this.lines.push({ line, fileSizes: fileSizes(files) });
        }
        return true;
      },
    };
  }

  get output() {
    return this.lines.map(({ line }) => line).join('\n');
  }
}

function fileSizes(files) {
  return Object.fromEntries(Object.entries(files).map(([name, path]) => [name, readSize(path)]));
}

function readSize(path) {
  try {
    return statSync(path).size;
  } catch {
    return -1;
  }
}
