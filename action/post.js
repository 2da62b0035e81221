// Entry point of the Action's post step (action.yml: runs.post, post-if: always()).
import { run } from './cleanup.js';

await run();
