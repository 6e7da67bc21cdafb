'use strict';
// Runs the official JS client (npm azure-mobile-apps-client 2.0.1, unmodified) against a server
// and checks what it sees, strictly. Usage:
//
//   node interop/js-client.js <baseUrl> [--official] [--auth <aliceToken>,<bobToken>] [--int-ids]
//
// With `--auth`, the server also serves `PerUserItem`, a per-user table (`owner_column =
// "userId"`, every operation authenticated), and the run ends with checks named `auth: …`:
// the client's `currentUser.mobileServiceAuthenticationToken` goes out as X-ZUMO-AUTH, online
// and through the offline sync context, and each user only ever sees their own rows.
//
// With `--int-ids`, the server also serves `IntIdItem`, an integer-id table (`id_type =
// "integer"`, the Node server's `autoIncrement`, columns text, complete and run), and the run
// ends with checks named `int ids: …`: the database assigns numeric ids, and insert, lookup,
// query by id, update (If-Match, 412) and delete work through the client's online table API.
// Its rows carry this run's prefix in `run` (integer ids cannot carry it).
//
// Every check prints `ok - <name>` or `not ok - <name>: <details>`; the last line is
// `N passed, M failed`; the exit code is 0 only when every check passed.
//
// The script is written for tablesync's server. A few checks cover places where tablesync
// deliberately differs from the official Node server (azure-mobile-apps 4.0.2, protocol.md
// Appendix A); with `--official` those checks assert the official server's behaviour instead, so
// the whole script also passes against interop/official-server.js. The differences:
//   * duplicate insert: 409 whose body is the stored item (official: the request's item);
//   * a full page carries a usable `Link` next-page URL (official: no port and no path);
//   * startswith() and the other string functions work (official sqlite provider: match nothing);
//   * a malformed $filter is 400 (official: 500);
//   * undelete answers 200 (official: 201).
//
// All rows this run writes have ids starting with a per-run prefix, and every query is restricted
// to that prefix, so the script also works on a database that already holds data.

const assert = require('node:assert/strict');
const http = require('node:http');

global.XMLHttpRequest = require('xmlhttprequest').XMLHttpRequest;
// Makes the package select its Cordova target, whose exports include MobileServiceSqliteStore.
global.cordova = { version: 'node-interop' };

const { installSqlitePlugin } = require('./sqlite-plugin');
const AzureMobileApps = require('azure-mobile-apps-client');

const TABLE = 'TodoItem';
const DATE_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const SYSTEM_KEYS = ['createdAt', 'updatedAt', 'version', 'deleted'];
// A whole run must not hang the test that spawned it.
const RUN_TIMEOUT_MS = 240000;

const args = process.argv.slice(2);
const authIndex = args.indexOf('--auth');
const authTokens = authIndex >= 0 ? (args[authIndex + 1] || '').split(',') : null;
const positional = args.filter((a, i) => !a.startsWith('--') && !(authIndex >= 0 && i === authIndex + 1));
const baseUrl = (positional[0] || '').replace(/\/+$/, '');
const official = args.includes('--official');
const PER_USER_TABLE = 'PerUserItem';
const INT_ID_TABLE = 'IntIdItem';
const intIds = args.includes('--int-ids');
if (!/^https?:\/\/[^/]+$/.test(baseUrl)) {
  process.stderr.write('usage: node js-client.js <baseUrl like http://127.0.0.1:8080> [--official]\n');
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Tiny test harness

let passed = 0;
let failed = 0;

function oneLine(text) {
  return String(text).replace(/\s*\n\s*/g, ' | ');
}

function describeError(e) {
  if (e && e.request && typeof e.request.status === 'number') {
    return `${oneLine(e.message)} (HTTP ${e.request.status}: ${oneLine(e.request.responseText || '').slice(0, 400)})`;
  }
  if (e instanceof Error) {
    // Assertion messages carry the whole diff; other errors get their first stack frame.
    const frame = e.name === 'AssertionError' ? '' : ` [${oneLine((e.stack || '').split('\n')[1] || '')}]`;
    return `${oneLine(e.message).slice(0, 2000)}${frame}`;
  }
  return oneLine(e);
}

async function check(name, fn) {
  try {
    await fn();
    passed += 1;
    process.stdout.write(`ok - ${name}\n`);
  } catch (e) {
    failed += 1;
    process.stdout.write(`not ok - ${name}: ${describeError(e)}\n`);
  }
}

/** Awaits a promise that must reject; returns the rejection. */
async function rejection(promise, what) {
  let value;
  try {
    value = await promise;
  } catch (e) {
    return e;
  }
  throw new Error(`${what}: expected a failure, got success ${JSON.stringify(value)}`);
}

function statusOf(error) {
  return error && error.request ? error.request.status : undefined;
}

/**
 * Asserts that `item` is exactly a server item: the given user fields plus the five system
 * properties (dates are parsed into Date objects by the client).
 */
function assertServerItem(item, expected, deleted = false) {
  assert.ok(item && typeof item === 'object', `not an object: ${JSON.stringify(item)}`);
  assert.deepEqual(
    Object.keys(item).sort(),
    [...Object.keys(expected), ...SYSTEM_KEYS].sort(),
    `keys of ${JSON.stringify(item)}`,
  );
  for (const [k, v] of Object.entries(expected)) {
    assert.deepEqual(item[k], v, `field ${k} of ${JSON.stringify(item)}`);
  }
  for (const k of ['createdAt', 'updatedAt']) {
    assert.ok(item[k] instanceof Date && !Number.isNaN(item[k].getTime()), `${k} is not a date: ${item[k]}`);
  }
  assert.ok(item.updatedAt.getTime() >= item.createdAt.getTime(), 'updatedAt before createdAt');
  assert.equal(typeof item.version, 'string');
  assert.ok(item.version.length > 0, 'empty version');
  assert.equal(item.deleted, deleted, 'deleted');
}

/** A raw HTTP request (for what the JS client has no API for, e.g. undelete). */
function rawRequest(method, path, headers = {}, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${baseUrl}${path}`, { method, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => {
        text += c;
      });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function rawJson(text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`not JSON: ${text}`);
  }
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const watchdog = setTimeout(() => {
    process.stdout.write(`not ok - run finished in time: still running after ${RUN_TIMEOUT_MS} ms\n`);
    process.stdout.write(`${passed} passed, ${failed + 1} failed\n`);
    process.exit(1);
  }, RUN_TIMEOUT_MS);
  watchdog.unref();

  // Ids of this run sort between `${run}-` and `${run}.` ('.' follows '-' in ASCII).
  const run = `interop${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  const lo = `${run}-`;
  const hi = `${run}.`;
  const id = (n) => `${run}-${n}`;
  const mine = function (a, b) {
    return this.id >= a && this.id < b;
  };

  const client = new AzureMobileApps.MobileServiceClient(baseUrl);
  const table = client.getTable(TABLE);
  const items = {}; // id -> last server item seen
  const seed = [
    [1, 'alpha', false],
    [2, 'bravo', true],
    [3, 'charlie', false],
    [4, 'delta', false],
    [5, 'echo', true],
  ];

  // ---- online table API --------------------------------------------------------------------

  await check('insert with a client id returns the stored item', async () => {
    const result = await table.insert({ id: id(1), text: 'alpha', complete: false });
    assertServerItem(result, { id: id(1), text: 'alpha', complete: false });
    assert.equal(result.updatedAt.getTime(), result.createdAt.getTime(), 'updatedAt = createdAt on insert');
    items[id(1)] = result;
  });

  await check('insert without an id gets a generated UUID', async () => {
    const result = await table.insert({ text: 'no id', complete: true });
    assertServerItem(result, { id: result.id, text: 'no id', complete: true });
    assert.match(result.id, UUID_RE);
  });

  await check('insert four more items', async () => {
    for (const [n, text, complete] of seed.slice(1)) {
      const result = await table.insert({ id: id(n), text, complete });
      assertServerItem(result, { id: id(n), text, complete });
      items[id(n)] = result;
    }
  });

  await check('insert of an existing id is 409', async () => {
    const e = await rejection(table.insert({ id: id(1), text: 'duplicate', complete: true }), 'duplicate insert');
    assert.equal(statusOf(e), 409, describeError(e));
    const body = rawJson(e.request.responseText);
    if (official) {
      // The official server echoes the request's item.
      assert.deepEqual(body, { id: id(1), text: 'duplicate', complete: true });
    } else {
      // tablesync answers with the stored item, so the client can see what it collided with.
      const stored = items[id(1)];
      assert.deepEqual(body, {
        id: id(1),
        text: 'alpha',
        complete: false,
        createdAt: stored.createdAt.toISOString(),
        updatedAt: stored.updatedAt.toISOString(),
        version: stored.version,
        deleted: false,
      });
    }
  });

  await check('read with where, orderByDescending, skip, take, select and includeTotalCount', async () => {
    const result = await table
      .where(mine, lo, hi)
      .where({ complete: false })
      .orderByDescending('text')
      .skip(1)
      .take(1)
      .select('id', 'text')
      .includeTotalCount()
      .read();
    assert.ok(Array.isArray(result), 'result is not an array');
    assert.deepEqual([...result], [{ id: id(3), text: 'charlie' }]);
    assert.equal(result.totalCount, 3);
  });

  await check('read with orderBy and take returns whole items in order and no count', async () => {
    const result = await table.where(mine, lo, hi).orderBy('complete').orderBy('text').take(3).read();
    assert.deepEqual(
      result.map((i) => [i.id, i.text, i.complete]),
      [
        [id(1), 'alpha', false],
        [id(3), 'charlie', false],
        [id(4), 'delta', false],
      ],
    );
    for (const item of result) assertServerItem(item, { id: item.id, text: item.text, complete: item.complete });
    assert.equal(result.totalCount, undefined);
  });

  await check('a full page has a next link the client can follow', async () => {
    const page1 = await table.where(mine, lo, hi).orderBy('text').take(2).read();
    assert.deepEqual(page1.map((i) => i.id), [id(1), id(2)]);
    assert.equal(typeof page1.nextLink, 'string', 'no nextLink: the Link header is missing or unparsable');
    if (official) {
      // The official server's Link has neither the port nor the table path (Appendix A).
      assert.ok(page1.nextLink.startsWith('http://127.0.0.1/?'), `nextLink ${page1.nextLink}`);
      return;
    }
    assert.ok(page1.nextLink.startsWith(`${baseUrl}/tables/${TABLE}?`), `nextLink ${page1.nextLink}`);
    const page2 = await table.read(page1.nextLink);
    assert.deepEqual(page2.map((i) => i.id), [id(3), id(4)]);
    const page3 = await table.read(page2.nextLink);
    assert.deepEqual(page3.map((i) => i.id), [id(5)]);
    assert.equal(page3.nextLink, undefined, 'a short last page has no next link');
  });

  await check('read with string functions (startswith, tolower)', async () => {
    const filter = `startswith(text,'ch') or tolower(text) eq 'delta'`;
    const raw = `$filter=${encodeURIComponent(`(${filter}) and id ge '${lo}' and id lt '${hi}'`)}&$orderby=id`;
    const result = await table.read(raw);
    // The official sqlite provider's startswith matches nothing (Appendix A); tolower/length work.
    const expected = official ? [id(4)] : [id(3), id(4)];
    assert.deepEqual(result.map((i) => i.id), expected);
  });

  await check('a malformed $filter is rejected', async () => {
    const e = await rejection(table.read(`$filter=${encodeURIComponent('text eq')}`), 'malformed filter');
    if (official) {
      assert.equal(statusOf(e), 500, describeError(e));
      return;
    }
    assert.equal(statusOf(e), 400, describeError(e));
    const body = rawJson(e.request.responseText);
    assert.equal(typeof body.error, 'string', `error body ${e.request.responseText}`);
  });

  await check('lookup returns the item with the version from its ETag', async () => {
    const result = await table.lookup(id(1));
    assert.deepEqual(result, items[id(1)]);
  });

  await check('update with the current version', async () => {
    const before = items[id(1)];
    const result = await table.update({ id: id(1), text: 'alpha 2', version: before.version });
    assertServerItem(result, { id: id(1), text: 'alpha 2', complete: false });
    assert.notEqual(result.version, before.version, 'version unchanged by an update');
    assert.equal(result.createdAt.getTime(), before.createdAt.getTime(), 'createdAt changed');
    assert.ok(result.updatedAt.getTime() >= before.updatedAt.getTime(), 'updatedAt went back');
    const fresh = await table.lookup(id(1));
    assert.deepEqual(fresh, result);
    items[id(1)] = result;
  });

  await check('update with a stale version is 412 with the server item', async () => {
    const stale = (await table.lookup(id(4))).version;
    const current = await table.update({ id: id(4), complete: true, version: stale });
    items[id(4)] = current;
    const e = await rejection(table.update({ id: id(4), text: 'lost', version: stale }), 'stale update');
    assert.equal(statusOf(e), 412, describeError(e));
    assert.deepEqual(e.serverInstance, current);
    assertServerItem(e.serverInstance, { id: id(4), text: 'delta', complete: true });
    assert.deepEqual(await table.lookup(id(4)), current, 'the stale update changed the item');
  });

  await check('del with a stale version is 412 with the server item', async () => {
    const stale = items[id(5)].version;
    const current = await table.update({ id: id(5), text: 'echo 2', version: stale });
    items[id(5)] = current;
    const e = await rejection(table.del({ id: id(5), version: stale }), 'stale delete');
    assert.equal(statusOf(e), 412, describeError(e));
    assert.deepEqual(e.serverInstance, current);
    assert.deepEqual(await table.lookup(id(5)), current, 'the stale delete changed the item');
  });

  await check('del with the current version, then lookup is 404', async () => {
    await table.del({ id: id(5), version: items[id(5)].version });
    const e = await rejection(table.lookup(id(5)), 'lookup of a deleted item');
    assert.equal(statusOf(e), 404, describeError(e));
    const list = await table.where(mine, lo, hi).orderBy('id').read();
    assert.deepEqual(list.map((i) => i.id), [id(1), id(2), id(3), id(4)]);
  });

  await check('read with __includeDeleted sees the tombstone', async () => {
    const list = await table.where(mine, lo, hi).orderBy('id').read({ __includeDeleted: true });
    assert.deepEqual(list.map((i) => [i.id, i.deleted]), [
      [id(1), false],
      [id(2), false],
      [id(3), false],
      [id(4), false],
      [id(5), true],
    ]);
    const tomb = list[4];
    assertServerItem(tomb, { id: id(5), text: 'echo 2', complete: true }, true);
    assert.notEqual(tomb.version, items[id(5)].version, 'soft delete did not change the version');
    items[id(5)] = tomb;
  });

  await check('undelete (raw POST) restores the item', async () => {
    const res = await rawRequest('POST', `/tables/${TABLE}/${encodeURIComponent(id(5))}`, {
      'ZUMO-API-VERSION': '2.0.0',
      'If-Match': `"${items[id(5)].version}"`,
    });
    let back;
    try {
      back = await table.lookup(id(5));
    } finally {
      // Delete it again (without a version: unconditional) for the rest of the run, whatever
      // the undelete did.
      try {
        await table.del({ id: id(5) });
      } catch (_) {
        // Reported by the assertions below.
      }
    }
    assert.equal(res.status, official ? 201 : 200, `status ${res.status}: ${res.text}`);
    const body = rawJson(res.text);
    assert.equal(res.headers.etag, `"${body.version}"`);
    assertServerItem(back, { id: id(5), text: 'echo 2', complete: true });
    assert.deepEqual(
      body,
      { ...JSON.parse(JSON.stringify(back)) },
      'undelete body differs from the item read back',
    );
    const e = await rejection(table.lookup(id(5)), 'lookup after the second delete');
    assert.equal(statusOf(e), 404, describeError(e));
  });

  // ---- offline sync through the SDK's own sync context and SQLite store -----------------------

  await installSqlitePlugin();
  const { MobileServiceSqliteStore } = AzureMobileApps;
  const tableDefinition = {
    name: TABLE,
    columnDefinitions: {
      id: 'string',
      text: 'string',
      complete: 'boolean',
      createdAt: 'date',
      updatedAt: 'date',
      version: 'string',
      deleted: 'boolean',
    },
  };

  async function openClient(dbName) {
    const c = new AzureMobileApps.MobileServiceClient(baseUrl);
    const store = new MobileServiceSqliteStore(dbName);
    await store.defineTable(tableDefinition);
    await c.getSyncContext().initialize(store);
    return { client: c, ctx: c.getSyncContext(), sync: c.getSyncTable(TABLE), store };
  }

  async function localRows(sync) {
    const rows = await sync.where(mine, lo, hi).orderBy('id').read();
    return rows.map((r) => [r.id, r.text, r.complete]);
  }

  let one;
  let two;
  await check('offline: store and sync context initialise', async () => {
    one = await openClient(`${run}-client-one.db`);
    two = await openClient(`${run}-client-two.db`);
    assert.deepEqual(await localRows(one.sync), []);
  });

  await check('offline: local insert, update and delete', async () => {
    await one.sync.insert({ id: id('o1'), text: 'offline one', complete: false });
    await one.sync.insert({ id: id('o2'), text: 'offline two', complete: false });
    await one.sync.insert({ id: id('o3'), text: 'offline three', complete: false });
    const o2 = await one.sync.lookup(id('o2'));
    o2.text = 'offline two edited';
    o2.complete = true;
    await one.sync.update(o2);
    await one.sync.del({ id: id('o3') });
    assert.deepEqual(await localRows(one.sync), [
      [id('o1'), 'offline one', false],
      [id('o2'), 'offline two edited', true],
    ]);
    // Nothing reached the server yet.
    const e = await rejection(table.lookup(id('o1')), 'server lookup before push');
    assert.equal(statusOf(e), 404, describeError(e));
  });

  await check('offline: push sends the queued operations', async () => {
    const conflicts = await one.ctx.push();
    assert.deepEqual(conflicts, []);
    const o1 = await table.lookup(id('o1'));
    assertServerItem(o1, { id: id('o1'), text: 'offline one', complete: false });
    const o2 = await table.lookup(id('o2'));
    assertServerItem(o2, { id: id('o2'), text: 'offline two edited', complete: true });
    // The insert+delete of o3 collapsed locally: the server never saw it.
    const e = await rejection(table.lookup(id('o3')), 'lookup of o3');
    assert.equal(statusOf(e), 404, describeError(e));
    // Push wrote the server's answer (version, dates) back into the local store.
    const local = await one.sync.lookup(id('o1'));
    assert.deepEqual(local, o1);
    items[id('o1')] = o1;
    items[id('o2')] = o2;
    // Nothing left to push.
    assert.deepEqual(await one.ctx.push(), []);
  });

  await check('offline: push of a local delete', async () => {
    await one.sync.del(await one.sync.lookup(id('o1')));
    assert.deepEqual(await one.ctx.push(), []);
    const e = await rejection(table.lookup(id('o1')), 'lookup after pushed delete');
    assert.equal(statusOf(e), 404, describeError(e));
  });

  const pullQuery = () => two.sync.where(mine, lo, hi);
  const expectedRows = () =>
    Object.values(items)
      .filter((i) => i && !i.deleted && i.id !== id('o1') && i.id !== id(5))
      .sort((a, b) => (a.id < b.id ? -1 : 1));

  await check('offline: pull with a query id into a second store', async () => {
    await two.ctx.pull(pullQuery(), 'interop-all');
    const rows = await two.sync.where(mine, lo, hi).orderBy('id').read();
    const server = await table.where(mine, lo, hi).orderBy('id').read();
    assert.deepEqual(server.map((i) => i.id), [id(1), id(2), id(3), id(4), id('o2')]);
    assert.deepEqual([...rows], [...server]);
    assert.deepEqual(rows.map((r) => r.id), expectedRows().map((r) => r.id));
  });

  await check('offline: incremental pull brings new items and tombstones', async () => {
    const six = await table.insert({ id: id(6), text: 'foxtrot', complete: false });
    await table.del({ id: id(2) });
    await two.ctx.pull(pullQuery(), 'interop-all');
    const rows = await two.sync.where(mine, lo, hi).orderBy('id').read();
    assert.deepEqual(rows.map((r) => r.id), [id(1), id(3), id(4), id(6), id('o2')]);
    assert.deepEqual(rows[3], six);
  });

  await check('offline: 412 during push, resolved by the push handler (client wins)', async () => {
    const seen = [];
    two.ctx.pushHandler = {
      onConflict: async (pushError) => {
        seen.push({
          status: pushError.getError().request.status,
          action: pushError.getAction(),
          table: pushError.getTableName(),
          server: pushError.getServerRecord(),
          client: pushError.getClientRecord(),
        });
        // Client wins: push our values again with the server's version. (The records handed to
        // the handler are JSON copies whose dates are strings, which the store refuses, so only
        // the user columns and the version are written back.)
        const client = pushError.getClientRecord();
        const resolved = {
          id: client.id,
          text: client.text,
          complete: client.complete,
          version: pushError.getServerRecord().version,
        };
        try {
          await pushError.update(resolved);
        } catch (e) {
          seen.push({ handlerError: describeError(e) });
        }
      },
    };
    // Someone else changes item 3 on the server after our pull...
    const local = await two.sync.lookup(id(3));
    const serverNow = await table.update({ id: id(3), text: 'server edit', version: local.version });
    // ...while we change it locally from the old version.
    local.text = 'client edit';
    await two.sync.update(local);
    const conflicts = await two.ctx.push();
    two.ctx.pushHandler = undefined;
    assert.deepEqual(conflicts, [], 'the handled conflict was still reported');
    assert.equal(seen.length, 1, `onConflict calls: ${JSON.stringify(seen)}`);
    assert.equal(seen[0].status, 412);
    assert.equal(seen[0].action, 'update');
    assert.equal(seen[0].table, TABLE);
    assert.deepEqual(seen[0].server, JSON.parse(JSON.stringify(serverNow)));
    assert.equal(seen[0].client.text, 'client edit');
    const after = await table.lookup(id(3));
    assertServerItem(after, { id: id(3), text: 'client edit', complete: false });
    assert.notEqual(after.version, serverNow.version);
    assert.deepEqual(await two.sync.lookup(id(3)), after);
  });

  await check('offline: unhandled 412 is returned by push and resolved with cancelAndUpdate', async () => {
    const local = await two.sync.lookup(id(4));
    const serverNow = await table.update({ id: id(4), text: 'server only', version: local.version });
    local.text = 'client loses';
    await two.sync.update(local);
    const conflicts = await two.ctx.push();
    assert.equal(conflicts.length, 1, `conflicts: ${conflicts.length}`);
    const conflict = conflicts[0];
    assert.equal(conflict.isConflict(), true);
    assert.equal(conflict.getError().request.status, 412);
    assert.deepEqual(conflict.getServerRecord(), JSON.parse(JSON.stringify(serverNow)));
    // Server wins. getServerRecord() is a JSON copy: its dates are strings the store refuses.
    const serverRecord = conflict.getServerRecord();
    serverRecord.createdAt = new Date(serverRecord.createdAt);
    serverRecord.updatedAt = new Date(serverRecord.updatedAt);
    await conflict.cancelAndUpdate(serverRecord);
    assert.deepEqual(await two.sync.lookup(id(4)), serverNow);
    assert.deepEqual(await two.ctx.push(), [], 'the cancelled operation was pushed again');
    assert.deepEqual(await table.lookup(id(4)), serverNow, 'the server item changed');
  });

  if (authTokens) {
    await perUserChecks(run, mine, lo, hi);
  }
  if (intIds) {
    await intIdChecks(run);
  }

  clearTimeout(watchdog);
}

/** The `--int-ids` checks: an integer-id table through the client's online table API. */
async function intIdChecks(run) {
  const table = new AzureMobileApps.MobileServiceClient(baseUrl).getTable(INT_ID_TABLE);
  const ofRun = function (r) {
    return this.run === r;
  };
  let a;
  let b;
  await check('int ids: insert gets a numeric id from the database', async () => {
    a = await table.insert({ text: 'one', complete: false, run });
    b = await table.insert({ text: 'two', complete: true, run });
    assertServerItem(a, { id: a.id, text: 'one', complete: false, run });
    assertServerItem(b, { id: b.id, text: 'two', complete: true, run });
    assert.ok(Number.isInteger(a.id) && a.id > 0, `id ${JSON.stringify(a.id)}`);
    assert.ok(b.id > a.id, `ids ${a.id} then ${b.id}`);
    // The client refuses an insert carrying an id itself; the server answers one 400.
    await rejection(Promise.resolve().then(() => table.insert({ id: b.id + 1000, text: 'x', run })), 'insert with an id');
    const raw = await rawRequest(
      'POST',
      `/tables/${INT_ID_TABLE}`,
      { 'ZUMO-API-VERSION': '2.0.0', 'Content-Type': 'application/json' },
      JSON.stringify({ id: b.id + 1000, text: 'x', run }),
    );
    assert.equal(raw.status, 400, raw.text);
    assert.equal(rawJson(raw.text).code, 'invalid_id', raw.text);
    const rows = await table.where(ofRun, run).orderBy('id').read();
    assert.deepEqual(rows.map((r) => r.id), [a.id, b.id], 'an insert with an id wrote nothing');
  });

  await check('int ids: lookup and queries by id', async () => {
    assert.deepEqual(await table.lookup(a.id), a);
    assert.deepEqual([...(await table.where({ id: b.id }).read())], [b]);
    const after = await table
      .where(function (r, min) {
        return this.run === r && this.id > min;
      }, run, a.id)
      .read();
    assert.deepEqual([...after], [b]);
    const desc = await table.where(ofRun, run).orderByDescending('id').select('id', 'text').read();
    assert.deepEqual([...desc].map((r) => [r.id, r.text]), [[b.id, 'two'], [a.id, 'one']]);
  });

  await check('int ids: update with the current version, a stale one is 412', async () => {
    const updated = await table.update({ id: a.id, text: 'one edited', version: a.version });
    assertServerItem(updated, { id: a.id, text: 'one edited', complete: false, run });
    assert.notEqual(updated.version, a.version);
    const e = await rejection(table.update({ id: a.id, text: 'lost', version: a.version }), 'stale update');
    assert.equal(statusOf(e), 412, describeError(e));
    assert.deepEqual(e.serverInstance, updated);
    assert.deepEqual(await table.lookup(a.id), updated);
    a = updated;
  });

  await check('int ids: delete, then lookup is 404 and the tombstone is kept', async () => {
    // The client sends If-Match on a delete only for string ids (MobileServiceTable.del), so a
    // stale version is tried raw; the server answers 412 with the current row.
    const stale = await rawRequest('DELETE', `/tables/${INT_ID_TABLE}/${a.id}`, {
      'ZUMO-API-VERSION': '2.0.0',
      'If-Match': `"${b.version}"`,
    });
    assert.equal(stale.status, 412, stale.text);
    assert.equal(rawJson(stale.text).id, a.id, stale.text);
    await table.del({ id: a.id, version: a.version });
    const gone = await rejection(table.lookup(a.id), 'lookup of a deleted item');
    assert.equal(statusOf(gone), 404, describeError(gone));
    const live = await table.where(ofRun, run).read();
    assert.deepEqual([...live].map((r) => r.id), [b.id]);
    const all = await table.where(ofRun, run).orderBy('id').read({ __includeDeleted: true });
    assert.deepEqual([...all].map((r) => [r.id, r.deleted]), [[a.id, true], [b.id, false]]);
  });
}

/** The `--auth` checks: a per-user table through the official client with X-ZUMO-AUTH set. */
async function perUserChecks(run, mine, lo, hi) {
  const [aliceToken, bobToken] = authTokens;
  const id = (n) => `${run}-pu-${n}`;
  const login = (c, userId, token) => {
    // What the client's own login flows leave behind (MobileServiceLogin.js).
    c.currentUser = { userId, mobileServiceAuthenticationToken: token };
    return c;
  };
  const online = (userId, token) => {
    const c = new AzureMobileApps.MobileServiceClient(baseUrl);
    if (token) login(c, userId, token);
    return c.getTable(PER_USER_TABLE);
  };
  const alice = online('alice', aliceToken);
  const bob = online('bob', bobToken);

  await check('auth: without a token the per-user table answers 401', async () => {
    const e = await rejection(online(null, null).read(), 'anonymous read');
    assert.equal(statusOf(e), 401, describeError(e));
    assert.match(e.request.getResponseHeader('WWW-Authenticate') || '', /^Bearer/);
    const bad = await rejection(online('alice', `${aliceToken.slice(0, -4)}AAAA`).read(), 'forged token');
    assert.equal(statusOf(bad), 401, describeError(bad));
  });

  await check('auth: online insert, read and update with X-ZUMO-AUTH', async () => {
    const a1 = await alice.insert({ id: id(1), text: 'alice one', complete: false });
    assert.equal(a1.userId, 'alice', 'the owner comes from the token');
    await alice.insert({ id: id(2), text: 'alice two', complete: false });
    const updated = await alice.update({ id: id(1), text: 'alice one edited', version: a1.version });
    assert.equal(updated.text, 'alice one edited');
    const rows = await alice.where(mine, lo, hi).orderBy('id').read();
    assert.deepEqual(rows.map((r) => [r.id, r.userId]), [[id(1), 'alice'], [id(2), 'alice']]);
  });

  await check('auth: another user sees none of those rows and has their own id space', async () => {
    assert.deepEqual([...(await bob.where(mine, lo, hi).read())], []);
    const e = await rejection(bob.lookup(id(1)), "Bob's lookup of Alice's item");
    assert.equal(statusOf(e), 404, describeError(e));
    const d = await rejection(bob.del({ id: id(1) }), "Bob's delete of Alice's item");
    assert.equal(statusOf(d), 404, describeError(d));
    const own = await bob.insert({ id: id(1), text: 'bob one', complete: true });
    assert.deepEqual([own.userId, own.text], ['bob', 'bob one']);
    assert.equal((await alice.lookup(id(1))).text, 'alice one edited', "Alice's item is untouched");
    const taken = await rejection(bob.insert({ id: id(3), text: 'x', userId: 'alice' }), 'naming another owner');
    assert.equal(statusOf(taken), 400, describeError(taken));
  });

  const { MobileServiceSqliteStore } = AzureMobileApps;
  const definition = {
    name: PER_USER_TABLE,
    columnDefinitions: {
      id: 'string',
      text: 'string',
      complete: 'boolean',
      userId: 'string',
      createdAt: 'date',
      updatedAt: 'date',
      version: 'string',
      deleted: 'boolean',
    },
  };
  const offline = async (userId, token, dbName) => {
    const c = login(new AzureMobileApps.MobileServiceClient(baseUrl), userId, token);
    const store = new MobileServiceSqliteStore(dbName);
    await store.defineTable(definition);
    await c.getSyncContext().initialize(store);
    return { client: c, ctx: c.getSyncContext(), sync: c.getSyncTable(PER_USER_TABLE) };
  };

  await check('auth: offline push and pull through the sync context see only the own rows', async () => {
    const b = await offline('bob', bobToken, `${run}-pu-bob.db`);
    await b.sync.insert({ id: id('o1'), text: 'bob offline', complete: false });
    assert.deepEqual(await b.ctx.push(), []);
    const server = await bob.lookup(id('o1'));
    assert.equal(server.userId, 'bob');
    await b.ctx.pull(b.sync.where(mine, lo, hi), 'perUserItemsbob');
    const rows = await b.sync.where(mine, lo, hi).orderBy('id').read();
    assert.deepEqual(rows.map((r) => [r.id, r.text, r.userId]), [
      [id(1), 'bob one', 'bob'],
      [id('o1'), 'bob offline', 'bob'],
    ]);
    // An offline edit of a pulled row (which carries userId) pushes fine.
    const row = await b.sync.lookup(id('o1'));
    row.text = 'bob offline edited';
    await b.sync.update(row);
    assert.deepEqual(await b.ctx.push(), []);
    assert.equal((await bob.lookup(id('o1'))).text, 'bob offline edited');
    const a = await offline('alice', aliceToken, `${run}-pu-alice.db`);
    await a.ctx.pull(a.sync.where(mine, lo, hi), 'perUserItemsalice');
    const aliceRows = await a.sync.where(mine, lo, hi).orderBy('id').read();
    assert.deepEqual(aliceRows.map((r) => [r.id, r.userId]), [[id(1), 'alice'], [id(2), 'alice']]);
  });

  await check('auth: a push with a refused token fails with 401 and keeps the operation', async () => {
    const c = await offline('alice', `${aliceToken.slice(0, -4)}AAAA`, `${run}-pu-forged.db`);
    await c.sync.insert({ id: id('f1'), text: 'queued', complete: false });
    const e = await rejection(c.ctx.push(), 'push with a forged token');
    // The push aborts with a VError whose cause is the request's error (push.js).
    const cause = e && typeof e.cause === 'function' ? e.cause() : undefined;
    assert.equal(statusOf(cause), 401, describeError(e));
    assert.equal(cause.request.responseText, '{"error":"The authentication token was refused","code":"unauthorized"}');
    login(c.client, 'alice', aliceToken);
    assert.deepEqual(await c.ctx.push(), [], 'the kept operation is pushed with a good token');
    assert.equal((await alice.lookup(id('f1'))).text, 'queued');
  });
}

main()
  .catch((e) => {
    failed += 1;
    process.stdout.write(`not ok - harness: ${describeError(e)}\n`);
  })
  .finally(() => {
    process.stdout.write(`${passed} passed, ${failed} failed\n`);
    process.exit(failed === 0 ? 0 : 1);
  });
