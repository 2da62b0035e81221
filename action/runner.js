// The GitHub Actions runner's protocol for a JavaScript action, without @actions/core.
//
// Inputs arrive as INPUT_* environment variables; workflow commands (masks,
// annotations) are lines on stdout; outputs, exported variables and state are
// appended to the files named by GITHUB_OUTPUT, GITHUB_ENV and GITHUB_STATE.
// Everything here mirrors what @actions/core does, because the runner parses
// exactly that and nothing more lenient.

import { randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { EOL } from 'node:os';

const TRUE_VALUES = ['true', 'True', 'TRUE'];
const FALSE_VALUES = ['false', 'False', 'FALSE'];

/** Escapes the data part of a workflow command (`::name::data`). */
export function escapeData(value) {
  return String(value).replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

/** Escapes a property value of a workflow command (`::name key=value::`). */
export function escapeProperty(value) {
  return escapeData(value).replace(/:/g, '%3A').replace(/,/g, '%2C');
}

/** `::name key=value,...::data`, one line. */
export function formatCommand(name, properties, data) {
  const props = Object.entries(properties ?? {})
    .filter(([, value]) => value !== undefined && value !== null && value !== '')
    .map(([key, value]) => `${key}=${escapeProperty(value)}`)
    .join(',');
  return `::${name}${props ? ` ${props}` : ''}::${escapeData(data)}`;
}

/** The environment variable the runner sets for an input: spaces become `_`, hyphens stay. */
export function inputVariableName(name) {
  return `INPUT_${name.replace(/ /g, '_').toUpperCase()}`;
}

/** A fresh heredoc delimiter; random so that a value cannot end the heredoc early. */
export function newDelimiter() {
  return `ghadelimiter_${randomUUID()}`;
}

/**
 * One entry of a file command: `name<<DELIMITER`, the value, `DELIMITER`.
 * Refuses a name or value that contains the delimiter, and a name the runner
 * would misread (empty, multi-line, or containing `=` or `<<`).
 */
export function formatFileCommand(name, value, delimiter = newDelimiter()) {
  const text = String(value);
  if (name === '' || /[\r\n=]|<</.test(name)) {
    throw new Error(`Unexpected input: name ${JSON.stringify(name)} is not a valid file command name`);
  }
  if (name.includes(delimiter)) {
    throw new Error(`Unexpected input: name should not contain the delimiter "${delimiter}"`);
  }
  if (text.includes(delimiter)) {
    throw new Error(`Unexpected input: value should not contain the delimiter "${delimiter}"`);
  }
  return `${name}<<${delimiter}${EOL}${text}${EOL}${delimiter}${EOL}`;
}

/**
 * The runner as seen from inside one step. `proc` is the process the step runs
 * in (tests pass a stand-in): its env, its stdout, and its exitCode.
 */
export class Runner {
  #proc;

  constructor(proc = process) {
    this.#proc = proc;
  }

  get env() {
    return this.#proc.env;
  }

  getInput(name, { required = false, trimWhitespace = true } = {}) {
    const value = this.env[inputVariableName(name)] ?? '';
    if (required && value === '') {
      throw new Error(`Input required and not supplied: ${name}`);
    }
    return trimWhitespace ? value.trim() : value;
  }

  /**
   * A boolean input in the YAML 1.2 core schema spellings the runner accepts.
   * An absent input takes `defaultValue` when one is given: the runner fills in
   * action.yml defaults, but a step started by hand (or by a test) may not.
   */
  getBooleanInput(name, { required = false, defaultValue } = {}) {
    const value = this.getInput(name, { required });
    if (value === '' && defaultValue !== undefined) return defaultValue;
    if (TRUE_VALUES.includes(value)) return true;
    if (FALSE_VALUES.includes(value)) return false;
    throw new TypeError(
      `Input does not meet YAML 1.2 "Core Schema" specification: ${name}\n` +
        'Support boolean input list: `true | True | TRUE | false | False | FALSE`',
    );
  }

  /**
   * Registers a secret with the runner's log masker. The masker matches one
   * line at a time, so each line of a multi-line secret is registered as well.
   */
  setSecret(secret) {
    const text = String(secret ?? '');
    const lines = text.split(/\r?\n/).filter((line) => line.trim() !== '');
    const values = lines.length > 1 ? lines : [text];
    for (const value of values) {
      if (value.trim() !== '') this.#command('add-mask', {}, value);
    }
  }

  setOutput(name, value) {
    this.#fileCommand('GITHUB_OUTPUT', name, value);
  }

  /** Sets a variable for later steps and for the rest of this one. */
  exportVariable(name, value) {
    this.#fileCommand('GITHUB_ENV', name, value);
    this.env[name] = String(value);
  }

  /** Saves a value for this action's post step, which reads it with getState. */
  saveState(name, value) {
    this.#fileCommand('GITHUB_STATE', name, value);
  }

  getState(name) {
    return this.env[`STATE_${name}`] ?? '';
  }

  /** Appends Markdown to the job's summary page; false when the runner gave none. */
  appendSummary(markdown) {
    const path = this.env.GITHUB_STEP_SUMMARY;
    if (!path) return false;
    appendFileSync(path, `${markdown}${EOL}`, { encoding: 'utf8' });
    return true;
  }

  info(message) {
    this.#write(String(message));
  }

  debug(message) {
    this.#command('debug', {}, message);
  }

  warning(message, properties = {}) {
    this.#command('warning', properties, message);
  }

  error(message, properties = {}) {
    this.#command('error', properties, message);
  }

  /** Logs an error annotation and makes the step fail once it exits. */
  setFailed(message) {
    this.#proc.exitCode = 1;
    this.error(message);
  }

  #command(name, properties, data) {
    this.#write(formatCommand(name, properties, data));
  }

  #write(line) {
    this.#proc.stdout.write(`${line}${EOL}`);
  }

  #fileCommand(variable, name, value) {
    const path = this.env[variable];
    if (!path) {
      throw new Error(`${variable} is not set: is this running as a step on a GitHub Actions runner?`);
    }
    appendFileSync(path, formatFileCommand(name, value), { encoding: 'utf8' });
  }
}
