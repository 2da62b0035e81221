// Entry point of the Action's main step (action.yml: runs.main).
import { run } from './provision.js';

// The runner cancels a step with SIGINT, then SIGTERM. Handling them stops
// further retries while letting a request already in flight finish, so that a
// namespace the service created is still recorded for the post step.
const cancel = new AbortController();
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => cancel.abort(new Error(`received ${signal}`)));
}

await run({ signal: cancel.signal });
