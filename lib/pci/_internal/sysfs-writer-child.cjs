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

function handle(line) {
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
  // One write(2) of the whole line. Lines are split by hand rather than by
  // readline, and the reply is written without a stream: each write costs a
  // round trip through here, and on a slow machine (the kernel tier's TCG
  // guest) the stream machinery was a good part of it.
  const text = JSON.stringify(reply) + '\n';
  try {
    fs.writeSync(1, text);
  } catch (e) {
    if (e.code !== 'EAGAIN') throw e;
    process.stdout.write(text); // a non-blocking pipe that is full: let the stream queue it
  }
}

let pending = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  pending += chunk;
  let end;
  while ((end = pending.indexOf('\n')) !== -1) {
    const line = pending.slice(0, end);
    pending = pending.slice(end + 1);
    if (line !== '') handle(line);
  }
});
