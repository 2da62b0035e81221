import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { EOL } from 'node:os';
import { describe, test } from 'node:test';

import {
  Runner,
  escapeData,
  escapeProperty,
  formatCommand,
  formatFileCommand,
  inputVariableName,
  newDelimiter,
} from '../runner.js';
import { FakeProcess, makeWorkspace, parseFileCommands } from '../test-support/step.js';

const UUID = /^ghadelimiter_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function runnerWith(env = {}) {
  const proc = new FakeProcess(env);
  return { proc, runner: new Runner(proc) };
}

describe('command escaping', () => {
  test('escapeData escapes %, CR and LF, % first', () => {
    assert.equal(escapeData('100%\r\nnext%0A'), '100%25%0D%0Anext%250A');
    assert.equal(escapeData('a:b,c'), 'a:b,c');
  });

  test('escapeProperty also escapes : and ,', () => {
    assert.equal(escapeProperty('a:b,c%\n'), 'a%3Ab%2Cc%25%0A');
  });

  test('formatCommand with and without properties', () => {
    assert.equal(formatCommand('add-mask', {}, 'x%y'), '::add-mask::x%25y');
    assert.equal(
      formatCommand('warning', { title: 'T: 1,2', file: undefined }, 'line1\nline2'),
      '::warning title=T%3A 1%2C2::line1%0Aline2',
    );
  });
});

describe('inputs', () => {
  test('names map to INPUT_ + upper case, spaces to underscores, hyphens kept', () => {
    assert.equal(inputVariableName('kubeconfig-path'), 'INPUT_KUBECONFIG-PATH');
    assert.equal(inputVariableName('my input'), 'INPUT_MY_INPUT');
    assert.equal(inputVariableName('Mixed Case-x'), 'INPUT_MIXED_CASE-X');
  });

  test('getInput reads the mapped variable and trims it', () => {
    const { runner } = runnerWith({ 'INPUT_KUBECONFIG-PATH': '  /tmp/kc \n', INPUT_MY_INPUT: 'v' });
    assert.equal(runner.getInput('kubeconfig-path'), '/tmp/kc');
    assert.equal(runner.getInput('kubeconfig-path', { trimWhitespace: false }), '  /tmp/kc \n');
    assert.equal(runner.getInput('my input'), 'v');
    assert.equal(runner.getInput('absent'), '');
  });

  test('a required input that is absent or empty is an error naming it', () => {
    const { runner } = runnerWith({ INPUT_TOKEN: '' });
    assert.throws(() => runner.getInput('token', { required: true }), /Input required and not supplied: token/);
    assert.throws(() => runner.getInput('url', { required: true }), /Input required and not supplied: url/);
  });

  test('getBooleanInput accepts exactly the YAML 1.2 core spellings', () => {
    for (const value of ['true', 'True', 'TRUE']) {
      assert.equal(runnerWith({ INPUT_CLEANUP: value }).runner.getBooleanInput('cleanup'), true, value);
    }
    for (const value of ['false', 'False', 'FALSE']) {
      assert.equal(runnerWith({ INPUT_CLEANUP: value }).runner.getBooleanInput('cleanup'), false, value);
    }
    for (const value of ['yes', 'tRue', '1', 'on', '']) {
      assert.throws(
        () => runnerWith({ INPUT_CLEANUP: value }).runner.getBooleanInput('cleanup'),
        (err) => err instanceof TypeError && /Core Schema.*: cleanup/.test(err.message),
        JSON.stringify(value),
      );
    }
  });

  test('getBooleanInput falls back to a default only when the input is absent', () => {
    assert.equal(runnerWith({}).runner.getBooleanInput('cleanup', { defaultValue: true }), true);
    assert.equal(runnerWith({ INPUT_CLEANUP: ' ' }).runner.getBooleanInput('cleanup', { defaultValue: false }), false);
    assert.throws(() => runnerWith({ INPUT_CLEANUP: 'nope' }).runner.getBooleanInput('cleanup', { defaultValue: true }));
  });
});

describe('masking', () => {
  test('setSecret prints an escaped add-mask command', () => {
    const { proc, runner } = runnerWith();
    runner.setSecret('p%ss:w,rd');
    assert.deepEqual(proc.lines.map((l) => l.line), ['::add-mask::p%25ss:w,rd']);
  });

  test('each line of a multi-line secret is masked separately', () => {
    const { proc, runner } = runnerWith();
    runner.setSecret('-----BEGIN KEY-----\r\nabc\n\ndef\n-----END KEY-----\n');
    assert.deepEqual(
      proc.lines.map((l) => l.line),
      ['::add-mask::-----BEGIN KEY-----', '::add-mask::abc', '::add-mask::def', '::add-mask::-----END KEY-----'],
    );
  });

  test('empty secrets print nothing', () => {
    const { proc, runner } = runnerWith();
    runner.setSecret('');
    runner.setSecret(' \n ');
    assert.deepEqual(proc.lines, []);
  });
});

describe('file commands', () => {
  test('formatFileCommand writes a heredoc with a random UUID delimiter', () => {
    const text = formatFileCommand('kubeconfig', 'line 1\nline 2');
    const [first, ...rest] = text.split(EOL);
    const [name, delimiter] = first.split('<<');
    assert.equal(name, 'kubeconfig');
    assert.match(delimiter, UUID);
    assert.deepEqual(rest, ['line 1', 'line 2', delimiter, '']);
    assert.notEqual(newDelimiter(), newDelimiter());
  });

  test('a delimiter inside the name or the value is refused', () => {
    const delimiter = 'ghadelimiter_fixed';
    assert.throws(() => formatFileCommand('x', `a\n${delimiter}\nb`, delimiter), /value should not contain the delimiter/);
    assert.throws(() => formatFileCommand(`x${delimiter}`, 'a', delimiter), /name should not contain the delimiter/);
    assert.equal(formatFileCommand('x', 'a', delimiter), `x<<${delimiter}${EOL}a${EOL}${delimiter}${EOL}`);
  });

  test('names the runner would misread are refused', () => {
    for (const name of ['', 'a=b', 'a<<b', 'a\nb']) {
      assert.throws(() => formatFileCommand(name, 'v'), /not a valid file command name/, JSON.stringify(name));
    }
  });

  test('setOutput, exportVariable and saveState append to their files', async (t) => {
    const ws = await makeWorkspace(t);
    const { proc, runner } = runnerWith(ws.env);
    runner.setOutput('namespace', 'np-1');
    runner.setOutput('multi', 'a\nb=c\n<<d');
    runner.exportVariable('KUBECONFIG', '/tmp/kc');
    runner.saveState('namespace', 'np-1');
    assert.deepEqual(await ws.outputs(), { namespace: 'np-1', multi: 'a\nb=c\n<<d' });
    assert.deepEqual(await ws.exported(), { KUBECONFIG: '/tmp/kc' });
    assert.deepEqual(await ws.state(), { namespace: 'np-1' });
    assert.equal(proc.env.KUBECONFIG, '/tmp/kc', 'exportVariable also sets it for this step');
    const raw = await readFile(ws.files.GITHUB_OUTPUT, 'utf8');
    const delimiters = [...raw.matchAll(/^[a-z]+<<(ghadelimiter_.*)$/gm)].map((m) => m[1]);
    assert.equal(delimiters.length, 2);
    assert.notEqual(delimiters[0], delimiters[1], 'a fresh delimiter per entry');
    assert.deepEqual(proc.lines, [], 'file commands print nothing');
  });

  test('a missing file variable is an error, not a silent loss', () => {
    const { runner } = runnerWith({});
    assert.throws(() => runner.setOutput('a', 'b'), /GITHUB_OUTPUT is not set/);
    assert.throws(() => runner.saveState('a', 'b'), /GITHUB_STATE is not set/);
  });

  test('getState reads STATE_<name>', () => {
    const { runner } = runnerWith({ STATE_namespace: 'np-1', STATE_kubeconfig_dir: '/d' });
    assert.equal(runner.getState('namespace'), 'np-1');
    assert.equal(runner.getState('kubeconfig_dir'), '/d');
    assert.equal(runner.getState('absent'), '');
  });

  test('the test parser rejects an unterminated heredoc', () => {
    assert.throws(() => parseFileCommands('a<<EOF\nvalue\n'), /no closing delimiter/);
    assert.deepEqual(parseFileCommands(`a<<D${EOL}x${EOL}D${EOL}b=c${EOL}`), { a: 'x', b: 'c' });
  });
});

describe('messages', () => {
  test('info, warning, error print lines; annotations are escaped', () => {
    const { proc, runner } = runnerWith();
    runner.info('plain 100%');
    runner.warning('50% done\nnext');
    runner.error('bad', { title: 'a:b' });
    runner.debug('d');
    assert.deepEqual(proc.lines.map((l) => l.line), [
      'plain 100%',
      '::warning::50%25 done%0Anext',
      '::error title=a%3Ab::bad',
      '::debug::d',
    ]);
    assert.equal(proc.exitCode, undefined);
  });

  test('setFailed prints an error and sets exitCode 1', () => {
    const { proc, runner } = runnerWith();
    runner.setFailed('it broke');
    assert.equal(proc.exitCode, 1);
    assert.deepEqual(proc.lines.map((l) => l.line), ['::error::it broke']);
  });

  test('the default Runner reads the real process environment', () => {
    assert.equal(new Runner().env, process.env);
  });
});
