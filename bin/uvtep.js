#!/usr/bin/env node
import { main } from '../dist/cli.js';

main(process.argv).catch((err) => {
  process.stderr.write(`uvtep: ${err && err.stack ? err.stack : String(err)}\n`);
  process.exit(1);
});
