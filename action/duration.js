// Durations as the service reads them (service/nsprov/core/ttl.py): Go's syntax
// (30s, 5m, 1h30m, 1.5h) plus days (1d, 2d12h; a day is 24 h).
//
// The service has the last word on ttl; the Action checks its own inputs
// (ttl, keep-on-failure) in main so that a typo fails the step before a
// namespace exists, not in post when the job is over.

const UNIT_SECONDS = {
  ns: 1e-9, us: 1e-6, '\u00b5s': 1e-6, '\u03bcs': 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600, d: 86400,
};
const NUMBER = '[0-9]+\\.?[0-9]*|\\.[0-9]+';
// Sticky (y): each term must start where the previous one ended, as in Go.
const TERM = new RegExp(`(${NUMBER})(ns|us|\u00b5s|\u03bcs|ms|s|m|h|d)`, 'y');

/** Seconds in `text` (a duration); throws an Error saying what is wrong with it. */
export function parseDuration(text) {
  const raw = String(text ?? '').trim();
  if (raw === '') throw new Error('empty duration');
  let sign = 1;
  let body = raw;
  if (body[0] === '+' || body[0] === '-') {
    sign = body[0] === '-' ? -1 : 1;
    body = body.slice(1);
  }
  if (body === '0') return 0;
  if (body === '') throw new Error(`invalid duration ${JSON.stringify(raw)}`);
  let total = 0;
  TERM.lastIndex = 0;
  while (TERM.lastIndex < body.length) {
    const at = TERM.lastIndex;
    const match = TERM.exec(body);
    if (!match) {
      if (new RegExp(`^(${NUMBER})$`).test(body.slice(at))) {
        throw new Error(`missing unit in duration ${JSON.stringify(raw)} (use ns, us, ms, s, m, h or d, e.g. 30m)`);
      }
      throw new Error(`invalid duration ${JSON.stringify(raw)} (expected e.g. 30s, 5m, 1h30m, 2d)`);
    }
    total += Number(match[1]) * UNIT_SECONDS[match[2]];
  }
  return sign * total;
}

/** An input that must be a positive duration, or empty; the error names the input. */
export function positiveDurationInput(name, value) {
  if (value === '') return null;
  let seconds;
  try {
    seconds = parseDuration(value);
  } catch (err) {
    throw new Error(`${name}: ${err.message}`);
  }
  if (!(seconds > 0)) throw new Error(`${name} must be a positive duration, got ${JSON.stringify(value)}`);
  return seconds;
}
