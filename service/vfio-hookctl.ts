#!/usr/bin/env node
/** vfio-hookctl: wiring only; the command lives in lib/cli/hookctl.ts. */
import { runHookctl } from '../lib/cli/hookctl.js';

const code = await runHookctl(process.argv.slice(2), {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  ...(process.stdout.isTTY ? { columns: process.stdout.columns } : {}),
});
process.exitCode = code;
