// The sysfs writer's child process (see sysfs-writer.ts for why writes are
// made here and not in the daemon). Plain CommonJS with no dependencies, run
// as `node sysfs-writer-child.cjs`: it needs neither a build nor a loader, so
// it is the same file under tsx and in dist/.
//
// One request per line on stdin: {"id","path","data"}; one reply per line on
// stdout: {"id","ok"} or {"id","ok":false,"code","message"}. O_WRONLY without
// O_CREAT: a sysfs attribute that is not there must fail (ENOENT), never be
// created as a regular file under a mistaken root. Each request is one
// write(2) of the whole data, as sysfs expects.
'use strict';

const fs = require('node:fs');
const readline = require('node:readline');

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const { id, path, data } = JSON.parse(line);
  let reply;
  try {
    const fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_CLOEXEC);
    try {
      fs.writeSync(fd, Buffer.from(data, 'utf8'));
    } finally {
      fs.closeSync(fd);
    }
    reply = { id, ok: true };
  } catch (e) {
    reply = { id, ok: false, code: e.code || 'EIO', message: e.message };
  }
  process.stdout.write(JSON.stringify(reply) + '\n');
});
