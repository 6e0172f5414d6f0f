#!/usr/bin/env -S node --no-memory-reducer
// V8's memory reducer runs full mark-compact collections when a process turns quiet, which is
// exactly when a lone packet (a ping) arrives: 5-15 ms pauses on the data path. uvtep's heap is
// small and steady, so the CLI runs without it (the shebang's flag; the library leaves the host
// process's flags alone). Run as `node bin/uvtep.js`, pass `--no-memory-reducer` to node too.
import { main } from '../dist/cli/main.js';

main(process.argv).catch((err) => {
  process.stderr.write(`uvtep: ${err && err.stack ? err.stack : String(err)}\n`);
  process.exit(1);
});
