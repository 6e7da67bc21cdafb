'use strict';
// The official Node server: npm azure-mobile-apps 4.0.2 on express 4 with its sqlite provider.
// It is the reference the interop harness and the client SDK's tests compare against
// (protocol.md Appendix A records what it does).
//
// Contract (other crates' tests rely on it):
//   env DB_FILE  SQLite data file (required; created when missing)
//   env PORT     TCP port on 127.0.0.1; 0 (the default) picks a free port
//   Prints exactly one line `listening on http://127.0.0.1:<port>` on stdout when ready.
//   Exits when stdin closes (so it never outlives the test that spawned it) or on SIGTERM/SIGINT.
// Tables: TodoItem (soft delete, columns text: string, complete: boolean, dynamic schema) and
// PlainItem (no soft delete, dynamic schema).

const express = require('express');
const azureMobileApps = require('azure-mobile-apps');

const dbFile = process.env.DB_FILE;
if (!dbFile) {
  process.stderr.write('official-server: env DB_FILE (the SQLite data file) is required\n');
  process.exit(2);
}
const port = Number.parseInt(process.env.PORT || '0', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`official-server: invalid PORT ${JSON.stringify(process.env.PORT)}\n`);
  process.exit(2);
}

const app = express();
const mobile = azureMobileApps({
  homePage: false,
  swagger: false,
  data: { provider: 'sqlite', filename: dbFile, dynamicSchema: true },
  // Keep stdout for the single "listening on" line; the server's own logs go to stderr.
  logging: { level: process.env.OFFICIAL_SERVER_LOG_LEVEL || 'warn', transports: [] },
});

mobile.tables.add('TodoItem', {
  softDelete: true,
  columns: { text: 'string', complete: 'boolean' },
});
mobile.tables.add('PlainItem', {});
app.use(mobile);

let server;
function shutdown(code) {
  if (server) {
    server.close();
  }
  process.exit(code);
}

process.on('SIGTERM', () => shutdown(0));
process.on('SIGINT', () => shutdown(0));
process.stdin.on('end', () => shutdown(0));
process.stdin.on('error', () => shutdown(0));
process.stdin.resume();

mobile.tables
  .initialize()
  .then(() => {
    server = app.listen(port, '127.0.0.1', () => {
      process.stdout.write(`listening on http://127.0.0.1:${server.address().port}\n`);
    });
    server.on('error', (err) => {
      process.stderr.write(`official-server: ${err.message}\n`);
      process.exit(1);
    });
  })
  .catch((err) => {
    process.stderr.write(`official-server: table initialisation failed: ${err && err.stack}\n`);
    process.exit(1);
  });
