'use strict';
// An emulation of the Cordova `window.sqlitePlugin` API (cordova-sqlite-storage) on top of sql.js
// (SQLite compiled to WebAssembly), so the official JS client's own MobileServiceSqliteStore, sync
// context, push, pull and conflict handling run unmodified under Node.js (protocol.md Appendix B).
//
// The store (azure-mobile-apps-client/sdk/src/Platform/cordova/MobileServiceSqliteStore.js) uses:
//   sqlitePlugin.openDatabase({name, location}, success(), error(err)) -> db (returned synchronously)
//   db.close(success(), error(err))
//   db.transaction(fn(tx), error(err), success())      (WebSQL argument order: error before success)
//   tx.executeSql(sql, params, success(tx, resultSet), error(tx, err))
//   db.executeSql(sql, params, success(resultSet), error(err))
//   resultSet.rows.length, resultSet.rows.item(i)
// readTransaction, sqlBatch, rowsAffected and insertId are provided too, for completeness.
//
// Semantics kept from the plugin (the store relies on them):
// * every callback runs asynchronously, never inside the caller's stack;
// * transactions on one database run one at a time, in the order they were requested;
// * statements queued from a statement's success callback run in the same transaction, in order;
// * a failing statement without an error callback (or whose error callback does not return
//   false), an exception thrown by the transaction function or by a statement callback rolls the
//   whole transaction back and calls the transaction's error callback.
//
// Databases live in memory, keyed by name: re-opening a name in the same process sees the same
// data (as a file would), and two different names are two independent client stores.

const initSqlJs = require('sql.js');

/** Turns a sql.js/JS error into the plugin's error shape ({message, code}). */
function pluginError(err) {
  const message = err && err.message ? err.message : String(err);
  const e = new Error(message);
  e.code = 0;
  return e;
}

/** Binds values the way the plugin does: undefined becomes NULL, booleans become 0/1. */
function bindable(params) {
  if (!params) return [];
  return params.map((v) => {
    if (v === undefined) return null;
    if (typeof v === 'boolean') return v ? 1 : 0;
    return v;
  });
}

/** A WebSQL-like SQLResultSet. */
function resultSet(rows, rowsAffected, insertId) {
  return {
    rows: {
      length: rows.length,
      item: (i) => rows[i],
    },
    rowsAffected,
    insertId,
  };
}

/** Runs one statement on a sql.js database and returns its result set. Throws on SQL errors. */
function runStatement(sqlDb, sql, params) {
  const stmt = sqlDb.prepare(sql);
  const rows = [];
  try {
    stmt.bind(bindable(params));
    while (stmt.step()) {
      rows.push(stmt.getAsObject());
    }
  } finally {
    stmt.free();
  }
  const rowsAffected = sqlDb.getRowsModified();
  let insertId;
  if (/^\s*insert/i.test(sql) && rowsAffected > 0) {
    const r = sqlDb.exec('SELECT last_insert_rowid()');
    insertId = r.length ? r[0].values[0][0] : undefined;
  }
  return resultSet(rows, rowsAffected, insertId);
}

class Transaction {
  constructor(readOnly) {
    this.readOnly = readOnly;
    this.queue = [];
  }

  executeSql(sql, params, success, error) {
    if (typeof params === 'function') {
      // executeSql(sql, success, error) form
      error = success;
      success = params;
      params = [];
    }
    this.queue.push({ sql, params: params || [], success, error });
  }
}

class Database {
  constructor(name, sqlDb) {
    this.name = name;
    this.sqlDb = sqlDb;
    this.open = true;
    this.pending = [];
    this.running = false;
  }

  transaction(fn, error, success) {
    this._enqueue(fn, error, success, false);
  }

  readTransaction(fn, error, success) {
    this._enqueue(fn, error, success, true);
  }

  executeSql(sql, params, success, error) {
    let result;
    this._enqueue(
      (tx) => {
        tx.executeSql(sql, params, (_tx, rs) => {
          result = rs;
        });
      },
      (err) => {
        if (error) error(err);
      },
      () => {
        if (success) success(result);
      },
      false,
    );
  }

  sqlBatch(statements, success, error) {
    this._enqueue(
      (tx) => {
        for (const s of statements) {
          if (Array.isArray(s)) tx.executeSql(s[0], s[1] || []);
          else tx.executeSql(s, []);
        }
      },
      error,
      success,
      false,
    );
  }

  close(success, error) {
    // Let already requested transactions finish first, as the plugin does.
    this._enqueueTask(() => {
      this.open = false;
      if (success) setImmediate(success);
    });
    void error;
  }

  _enqueue(fn, error, success, readOnly) {
    this._enqueueTask(() => this._run(fn, error, success, readOnly));
  }

  _enqueueTask(task) {
    this.pending.push(task);
    if (!this.running) {
      this.running = true;
      setImmediate(() => this._drain());
    }
  }

  _drain() {
    while (this.pending.length > 0) {
      const task = this.pending.shift();
      task();
    }
    this.running = false;
  }

  _run(fn, error, success, readOnly) {
    if (!this.open) {
      if (error) setImmediate(() => error(pluginError('database is closed')));
      return;
    }
    const tx = new Transaction(readOnly);
    let failure = null;
    try {
      this.sqlDb.run(readOnly ? 'BEGIN DEFERRED' : 'BEGIN IMMEDIATE');
    } catch (e) {
      if (error) setImmediate(() => error(pluginError(e)));
      return;
    }
    try {
      fn(tx);
      while (tx.queue.length > 0 && !failure) {
        const st = tx.queue.shift();
        if (readOnly && !/^\s*(select|pragma)/i.test(st.sql)) {
          failure = pluginError('read-only transaction: ' + st.sql);
          break;
        }
        let rs;
        try {
          rs = runStatement(this.sqlDb, st.sql, st.params);
        } catch (e) {
          const err = pluginError(e);
          // WebSQL: an error callback returning exactly false lets the transaction go on.
          if (st.error && st.error(tx, err) === false) {
            continue;
          }
          failure = err;
          break;
        }
        if (st.success) st.success(tx, rs);
      }
    } catch (e) {
      // Exceptions from the store's own code (validation errors) are passed on unchanged.
      failure = e instanceof Error ? e : pluginError(e);
    }
    if (failure) {
      try {
        this.sqlDb.run('ROLLBACK');
      } catch (_) {
        // The transaction may already be gone (SQLite rolls back on some errors itself).
      }
      if (error) setImmediate(() => error(failure));
      return;
    }
    try {
      this.sqlDb.run('COMMIT');
    } catch (e) {
      if (error) setImmediate(() => error(pluginError(e)));
      return;
    }
    if (success) setImmediate(() => success());
  }
}

/**
 * Loads sql.js and returns an object with the `window.sqlitePlugin` API.
 * @returns {Promise<{openDatabase: Function, deleteDatabase: Function}>}
 */
async function createSqlitePlugin() {
  const SQL = await initSqlJs();
  const databases = new Map(); // name -> sql.js Database (kept open across close/re-open)

  function dbName(options) {
    if (typeof options === 'string') return options;
    if (options && typeof options.name === 'string') return options.name;
    throw new Error('openDatabase: a database name is required');
  }

  return {
    openDatabase(options, success, error) {
      let name;
      try {
        name = dbName(options);
      } catch (e) {
        if (error) setImmediate(() => error(pluginError(e)));
        return undefined;
      }
      let sqlDb = databases.get(name);
      if (!sqlDb) {
        sqlDb = new SQL.Database();
        databases.set(name, sqlDb);
      }
      const db = new Database(name, sqlDb);
      if (success) setImmediate(() => success(db));
      return db;
    },
    deleteDatabase(options, success, error) {
      try {
        const name = dbName(options);
        const sqlDb = databases.get(name);
        if (sqlDb) sqlDb.close();
        databases.delete(name);
      } catch (e) {
        if (error) setImmediate(() => error(pluginError(e)));
        return;
      }
      if (success) setImmediate(success);
    },
  };
}

/**
 * Installs the emulation as `window.sqlitePlugin` (creating a minimal `window` global when there is
 * none) and returns the plugin.
 */
async function installSqlitePlugin() {
  const plugin = await createSqlitePlugin();
  if (typeof global.window === 'undefined') {
    global.window = {};
  }
  global.window.sqlitePlugin = plugin;
  return plugin;
}

module.exports = { createSqlitePlugin, installSqlitePlugin };
