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
    const fd = fs.openSync(path, fs.constants.O_WRONLY); // libuv adds O_CLOEXEC (node has no constant for it);
    try {
      fs.writeSync(fd, Buffer.from(data, 'utf8'));
    } finally {
      fs.closeSync(fd);
    }
    reply = { id, ok: true };
  } catch (e) {
    reply = { id, ok: false, code: e.code || 'EIO', message: e.message };
  }
  // One write(2) of the whole line, blocking (the daemon reads its end as a stream).
  writeAll(Buffer.from(JSON.stringify(reply) + '\n', 'utf8'));
}

// A millisecond's sleep, for a descriptor that answers EAGAIN (see below).
const nap = () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);

function writeAll(bytes) {
  for (let off = 0; off < bytes.length;) {
    try {
      off += fs.writeSync(1, bytes, off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      nap();
    }
  }
}

// Requests are read by blocking read(2) calls on stdin, with no event loop or
// stream: a write's round trip through here is the engine's cost per step,
// and on a slow machine (the kernel tier's TCG guest) waking node's event
// loop and its stream machinery was a good part of it. libuv hands a child its
// stdio blocking; EAGAIN (a descriptor someone made non-blocking) only naps.
// End of input (the daemon closed our stdin, or exited) ends the process.
const { StringDecoder } = require('node:string_decoder');
const decoder = new StringDecoder('utf8');
const chunk = Buffer.alloc(64 * 1024);
let pending = '';
for (;;) {
  let n;
  try {
    n = fs.readSync(0, chunk, 0, chunk.length, null);
  } catch (e) {
    if (e.code === 'EAGAIN') {
      nap();
      continue;
    }
    if (e.code === 'EOF') break;
    throw e;
  }
  if (n === 0) break;
  pending += decoder.write(chunk.subarray(0, n));
  let end;
  while ((end = pending.indexOf('\n')) !== -1) {
    const line = pending.slice(0, end);
    pending = pending.slice(end + 1);
    if (line !== '') handle(line);
  }
}
