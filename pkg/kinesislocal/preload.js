// Preloaded into the kinesis-mock emulator (node -r) by package kinesislocal.
//
//  1. kinesis-mock hard-codes 0.0.0.0 as its listen address: every TCP server
//     in the process listens on GERRITFLOW_KINESIS_BIND (127.0.0.1 by default)
//     instead, and each bound address is reported on stderr with a marker line,
//     so the Go side knows that its own process (not another one) holds the ports.
//  2. On SIGTERM kinesis-mock shuts down gracefully but waits for open (keep-alive)
//     client connections, i.e. forever while a client is alive: close them.
//  3. Wall clock offset (GERRITFLOW_KINESIS_CLOCK_FILE): on SIGUSR2 the offset in
//     milliseconds is read from that file and added to Date.now() and
//     performance.timeOrigin (the emulator's real-time clock), so tests can expire
//     shard iterators (valid 300s) without waiting.
'use strict';
const net = require('net');
const fs = require('fs');

const host = process.env.GERRITFLOW_KINESIS_BIND || '127.0.0.1';
const marker = 'gerritflow-kinesislocal: ';
const origListen = net.Server.prototype.listen;
const sockets = new Set();

function isPort(v) {
  return typeof v === 'number' || (typeof v === 'string' && /^[0-9]+$/.test(v));
}

net.Server.prototype.listen = function (...args) {
  if (isPort(args[0])) {
    // listen(port[, host][, backlog][, cb])
    if (typeof args[1] === 'string') {
      args[1] = host;
    } else {
      args.splice(1, 0, host);
    }
  } else if (args[0] && typeof args[0] === 'object' &&
             !('fd' in args[0]) && !('path' in args[0]) &&
             !('handle' in args[0]) && !('_handle' in args[0])) {
    // listen(options[, cb])
    args[0] = Object.assign({}, args[0], { host: host });
  }
  this.once('listening', () => {
    const a = this.address();
    if (a && typeof a === 'object') {
      process.stderr.write(marker + 'listening ' + JSON.stringify({ address: a.address, port: a.port }) + '\n');
    }
  });
  this.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  return origListen.apply(this, args);
};

process.on('SIGTERM', () => {
  process.stderr.write(marker + 'SIGTERM, closing ' + sockets.size + ' client connections\n');
  for (const s of sockets) s.end();
  setTimeout(() => process.exit(143), 3000).unref();
});

const clockFile = process.env.GERRITFLOW_KINESIS_CLOCK_FILE;
if (clockFile) {
  let offset = 0;
  const origNow = Date.now;
  Date.now = function now() { return origNow.call(Date) + offset; };
  const origin = performance.timeOrigin;
  Object.defineProperty(performance, 'timeOrigin', {
    configurable: true,
    enumerable: true,
    get() { return origin + offset; },
  });
  process.on('SIGUSR2', () => {
    try {
      const v = Number(fs.readFileSync(clockFile, 'utf8').trim());
      if (Number.isFinite(v)) offset = v;
    } catch (e) {
      process.stderr.write(marker + 'clock error ' + e + '\n');
    }
    process.stderr.write(marker + 'clock ' + JSON.stringify({ offset: offset }) + '\n');
  });
}
