//! Queue, error and token tables, and the transactions that combine them with row changes.
//!
//! Each public function here is one SQLite transaction, so a row change and its queue change
//! commit together or not at all (ARCHITECTURE.md invariant).
//!
//! Per operation the queue keeps, beside what [`Operation`] shows, `sentItems`: the bodies its
//! attempts sent since its base version (the version of the local row it was queued on), at
//! most [`SENT_ITEMS_MAX`], newest last. An attempt whose answer was lost may have landed; when a
//! later 412/409 shows a server copy holding one of these bodies, the push knows it did
//! (`sync::push::operation`). The list survives collapses (that is its point: the user edited
//! after the lost answer) and is cleared when the base moves (a push completed, a resolution).

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, OptionalExtension, Transaction};
use serde_json::{Map, Value};

use super::page::{PageWriter, PulledPage};
use super::rows;
use super::{new_idempotency_key, TableDefinition};
use crate::error::{Error, Result};
use crate::operation_error::OperationError;
use crate::queue::{collapse, Decision, OpKind, OpState, Operation};

/// Most bodies remembered per operation from earlier attempts (`sentItems`), in bodies; the
/// oldest is forgotten first. Each needs a lost answer followed by a local edit, so more than a
/// few are rare; forgetting one can only turn a landed write into a reported conflict.
pub(crate) const SENT_ITEMS_MAX: usize = 8;

const OP_COLUMNS: &str = "\"id\", \"sequence\", \"kind\", \"state\", \"tableName\", \"itemId\", \
     \"item\", \"version\", \"idempotencyKey\", \"groupId\"";

fn op_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<std::result::Result<Operation, String>> {
    let kind: i64 = r.get(2)?;
    let state: i64 = r.get(3)?;
    let item: Option<String> = r.get(6)?;
    let id: String = r.get(0)?;
    let key: Option<String> = r.get(8)?;
    let parsed = (|| {
        let kind = OpKind::from_code(kind).ok_or_else(|| format!("operation {id}: kind {kind}"))?;
        let state =
            OpState::from_code(state).ok_or_else(|| format!("operation {id}: state {state}"))?;
        let item = match item {
            None => None,
            Some(t) => match serde_json::from_str::<Value>(&t) {
                Ok(Value::Object(m)) => Some(m),
                _ => return Err(format!("operation {id}: item is not a JSON object")),
            },
        };
        let key = key.ok_or_else(|| format!("operation {id}: no idempotency key"))?;
        Ok((kind, state, item, key))
    })();
    Ok(match parsed {
        Ok((kind, state, item, idempotency_key)) => Ok(Operation {
            id,
            sequence: r.get(1)?,
            kind,
            state,
            table: r.get(4)?,
            item_id: r.get(5)?,
            item,
            version: r.get(7)?,
            idempotency_key,
            group: r.get(9)?,
        }),
        Err(e) => Err(e),
    })
}

fn collect_ops(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Operation>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, op_from_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r?.map_err(Error::CorruptStore)?);
    }
    Ok(out)
}

/// The queued operation for an item, if any.
pub(crate) fn find_op(conn: &Connection, table: &str, item_id: &str) -> Result<Option<Operation>> {
    Ok(collect_ops(
        conn,
        &format!("SELECT {OP_COLUMNS} FROM \"__operations\" WHERE \"tableName\" = ?1 AND \"itemId\" = ?2"),
        [table, item_id],
    )?
    .pop())
}

/// Up to `limit` operations with a sequence greater than `after`, in push order. The limit is
/// a literal: SQLite plans a statement again whenever a bound LIMIT gets a new binding.
fn next_ops(conn: &Connection, after: i64, limit: usize) -> Result<Vec<Operation>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    collect_ops(
        conn,
        &format!("SELECT {OP_COLUMNS} FROM \"__operations\" WHERE \"sequence\" > ?1 ORDER BY \"sequence\" LIMIT {limit}"),
        [after],
    )
}

/// The whole queue in push order.
pub(crate) fn list_ops(conn: &Connection) -> Result<Vec<Operation>> {
    collect_ops(
        conn,
        &format!("SELECT {OP_COLUMNS} FROM \"__operations\" ORDER BY \"sequence\""),
        [],
    )
}

/// Number of queued operations, for one table or all.
pub(crate) fn pending_count(conn: &Connection, table: Option<&str>) -> Result<u64> {
    let n: i64 = match table {
        Some(t) => conn.query_row(
            "SELECT count(*) FROM \"__operations\" WHERE \"tableName\" = ?1",
            [t],
            |r| r.get(0),
        )?,
        None => conn.query_row("SELECT count(*) FROM \"__operations\"", [], |r| r.get(0))?,
    };
    Ok(n.max(0) as u64)
}

/// The bodies earlier attempts of an operation sent (`sentItems`), oldest first.
fn sent_items(conn: &Connection, op_id: &str) -> Result<Vec<Map<String, Value>>> {
    let text: Option<String> = conn
        .prepare_cached("SELECT \"sentItems\" FROM \"__operations\" WHERE \"id\" = ?1")?
        .query_row([op_id], |r| r.get(0))
        .optional()?
        .flatten();
    match text {
        None => Ok(Vec::new()),
        Some(t) => match serde_json::from_str::<Vec<Value>>(&t) {
            Ok(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::Object(m) => Ok(m),
                    _ => Err(Error::CorruptStore(format!(
                        "operation {op_id}: sent item is not a JSON object"
                    ))),
                })
                .collect(),
            Err(e) => Err(Error::CorruptStore(format!(
                "operation {op_id}: sent items: {e}"
            ))),
        },
    }
}

/// The `sentItems` text of a list (`NULL` when empty).
fn sent_items_text(items: &[Map<String, Value>]) -> Option<String> {
    if items.is_empty() {
        return None;
    }
    Some(Value::Array(items.iter().cloned().map(Value::Object).collect()).to_string())
}

#[allow(clippy::too_many_arguments)]
fn insert_op(
    tx: &Connection,
    kind: OpKind,
    table: &str,
    item_id: &str,
    item: Option<&Map<String, Value>>,
    version: i64,
    group: Option<&str>,
    sent: &[Map<String, Value>],
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO \"__operations\" (\"id\", \"kind\", \"state\", \"tableName\", \"itemId\", \"item\", \
         \"version\", \"idempotencyKey\", \"groupId\", \"sentItems\") \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(rusqlite::params![
        uuid::Uuid::new_v4().to_string(),
        kind.code(),
        OpState::Pending.code(),
        table,
        item_id,
        item.map(|m| Value::Object(m.clone()).to_string()),
        version,
        new_idempotency_key(),
        group,
        sent_items_text(sent),
    ])?;
    Ok(())
}

fn delete_op(tx: &Connection, op_id: &str) -> Result<()> {
    tx.execute("DELETE FROM \"__operations\" WHERE \"id\" = ?1", [op_id])?;
    tx.execute(
        "DELETE FROM \"__errors\" WHERE \"operationId\" = ?1",
        [op_id],
    )?;
    Ok(())
}

/// Every operation of group `from` joins group `into` (both the ids of local transactions).
fn merge_groups(tx: &Connection, from: Option<&str>, into: Option<&str>) -> Result<()> {
    if let (Some(from), Some(into)) = (from, into) {
        if from != into {
            tx.execute(
                "UPDATE \"__operations\" SET \"groupId\" = ?2 WHERE \"groupId\" = ?1",
                [from, into],
            )?;
        }
    }
    Ok(())
}

/// Applies the collapse decision for a new local operation (inside the caller's transaction).
///
/// `group` is the atomicity group of the local transaction making the write (`None` for a
/// single write). Groups follow the data: when a write of a transaction collapses with an
/// operation queued by an earlier transaction, that operation now carries changes of both, so
/// both transactions' groups become one (the earlier group joins the new one), and whatever
/// operation the collapse leaves belongs to it. A single write collapsing into a grouped
/// operation leaves the group as it is (the operation stays in it; the delete that replaces an
/// update inherits the update's group). The push sends a group as one atomicity group, so the
/// server never sees half of a local transaction, even after later edits.
fn enqueue(
    tx: &Transaction<'_>,
    kind: OpKind,
    table: &str,
    item_id: &str,
    delete_item: Option<&Map<String, Value>>,
    group: Option<&str>,
) -> Result<()> {
    let existing = find_op(tx, table, item_id)?;
    match collapse(existing.as_ref().map(|o| (o.kind, o.state)), kind) {
        // `collapse` only rejects against an existing operation; the error carries both kinds
        // (and displays the reference's message).
        Decision::Reject(_) => {
            if let Some(op) = existing {
                return Err(Error::QueueConflict {
                    existing: op.kind,
                    existing_state: op.state,
                    new: kind,
                });
            }
        }
        Decision::Enqueue => insert_op(tx, kind, table, item_id, delete_item, 1, group, &[])?,
        Decision::KeepExisting => {
            if let Some(op) = existing {
                merge_groups(tx, op.group.as_deref(), group)?;
                // The operation changes, so it is a new request: a new idempotency key. Its
                // `sentItems` stay: an earlier attempt may have landed, and the next push must
                // still recognise that.
                tx.execute(
                    "UPDATE \"__operations\" SET \"version\" = \"version\" + 1, \"idempotencyKey\" = ?2, \
                     \"groupId\" = coalesce(?3, \"groupId\") WHERE \"id\" = ?1",
                    rusqlite::params![op.id, new_idempotency_key(), group],
                )?;
                // A stored error no longer describes the operation (protocol.md 6.6 note).
                tx.execute(
                    "DELETE FROM \"__errors\" WHERE \"operationId\" = ?1",
                    [&op.id],
                )?;
            }
        }
        Decision::DropBoth => {
            if let Some(op) = existing {
                merge_groups(tx, op.group.as_deref(), group)?;
                delete_op(tx, &op.id)?;
            }
        }
        Decision::ReplaceWithNew => {
            let version = existing.as_ref().map_or(1, |o| o.version + 1);
            let mut inherited_group = group.map(str::to_string);
            let mut sent = Vec::new();
            if let Some(op) = existing {
                merge_groups(tx, op.group.as_deref(), group)?;
                if inherited_group.is_none() {
                    inherited_group = op.group.clone();
                }
                // What the replaced update sent may have landed: the delete must recognise it.
                sent = sent_items(tx, &op.id)?;
                delete_op(tx, &op.id)?;
            }
            insert_op(
                tx,
                kind,
                table,
                item_id,
                delete_item,
                version,
                inherited_group.as_deref(),
                &sent,
            )?;
        }
        #[allow(unreachable_patterns)]
        _ => return Err(Error::CorruptStore("unsupported queue decision".into())),
    }
    Ok(())
}

/// A local insert inside the caller's transaction: refuses an existing id. Returns the stored row.
fn insert_in(
    tx: &Transaction<'_>,
    def: &TableDefinition,
    mut item: Map<String, Value>,
    group: Option<&str>,
) -> Result<Map<String, Value>> {
    let id = match rows::item_id(&item)? {
        Some(id) => id,
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            item.insert("id".into(), Value::String(id.clone()));
            id
        }
    };
    if rows::row_exists(tx, def.name(), &id)? {
        return Err(Error::ItemAlreadyExists(id));
    }
    // Validate the queue first so a refused write leaves no row behind (the transaction would
    // roll back anyway; this keeps the error the queue's).
    enqueue(tx, OpKind::Insert, def.name(), &id, None, group)?;
    rows::write_local(tx, def, &id, &item, false)?;
    rows::read_row(tx, def, &id)?.ok_or(Error::ItemNotFound(id))
}

/// A local update (merge of the given properties) inside the caller's transaction: the row
/// must exist. Returns the stored row.
fn update_in(
    tx: &Transaction<'_>,
    def: &TableDefinition,
    item: Map<String, Value>,
    group: Option<&str>,
) -> Result<Map<String, Value>> {
    let id = rows::item_id(&item)?.ok_or(Error::MissingId)?;
    if !rows::row_exists(tx, def.name(), &id)? {
        return Err(Error::ItemNotFound(id));
    }
    enqueue(tx, OpKind::Update, def.name(), &id, None, group)?;
    rows::write_local(tx, def, &id, &item, true)?;
    rows::read_row(tx, def, &id)?.ok_or(Error::ItemNotFound(id))
}

/// A local delete inside the caller's transaction: the row must exist; the queued delete keeps
/// the item (with its version).
fn delete_in(
    tx: &Transaction<'_>,
    def: &TableDefinition,
    id: &str,
    group: Option<&str>,
) -> Result<()> {
    let row = rows::read_row(tx, def, id)?.ok_or_else(|| Error::ItemNotFound(id.to_string()))?;
    let (mut item, version) = rows::payload(&row);
    if let Some(v) = version {
        item.insert("version".into(), Value::String(v));
    }
    enqueue(tx, OpKind::Delete, def.name(), id, Some(&item), group)?;
    rows::delete_row(tx, def.name(), id)?;
    Ok(())
}

/// Local insert: refuses an existing id; row + queue in one transaction. Returns the stored row.
pub(crate) fn local_insert(
    conn: &mut Connection,
    def: &TableDefinition,
    item: Map<String, Value>,
) -> Result<Map<String, Value>> {
    let tx = conn.transaction()?;
    let row = insert_in(&tx, def, item, None)?;
    tx.commit()?;
    Ok(row)
}

/// Local update (merge of the given properties): the row must exist.
pub(crate) fn local_update(
    conn: &mut Connection,
    def: &TableDefinition,
    item: Map<String, Value>,
) -> Result<Map<String, Value>> {
    let tx = conn.transaction()?;
    let row = update_in(&tx, def, item, None)?;
    tx.commit()?;
    Ok(row)
}

/// Local delete: the row must exist; the queued delete keeps the item (with its version).
pub(crate) fn local_delete(conn: &mut Connection, def: &TableDefinition, id: &str) -> Result<()> {
    let tx = conn.transaction()?;
    delete_in(&tx, def, id, None)?;
    tx.commit()?;
    Ok(())
}

/// One write of a local transaction ([`local_transaction`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LocalWrite {
    /// Insert `item` into `table` (a missing id is generated).
    Insert {
        table: String,
        item: Map<String, Value>,
    },
    /// Merge `item` (which names its id) into the row of `table`.
    Update {
        table: String,
        item: Map<String, Value>,
    },
    /// Delete the row `id` of `table`.
    Delete { table: String, id: String },
}

/// Several local writes, possibly on several tables, in ONE SQLite transaction: every row
/// change and its queued operation commit together, or (when any write is refused) nothing
/// does. Two or more writes form an atomicity group (a fresh id recorded on their operations,
/// see [`enqueue`] for what collapses do to it); a single write is an ordinary write. Returns,
/// per write, the stored row (`None` for a delete).
pub(crate) fn local_transaction(
    conn: &mut Connection,
    tables: &BTreeMap<String, TableDefinition>,
    writes: Vec<LocalWrite>,
) -> Result<Vec<Option<Map<String, Value>>>> {
    let group = (writes.len() >= 2).then(|| uuid::Uuid::new_v4().to_string());
    let group = group.as_deref();
    let def_of = |name: &str| {
        super::find_table(tables, name).ok_or_else(|| Error::UnknownTable(name.to_string()))
    };
    let tx = conn.transaction()?;
    let mut out = Vec::with_capacity(writes.len());
    for write in writes {
        out.push(match write {
            LocalWrite::Insert { table, item } => {
                Some(insert_in(&tx, def_of(&table)?, item, group)?)
            }
            LocalWrite::Update { table, item } => {
                Some(update_in(&tx, def_of(&table)?, item, group)?)
            }
            LocalWrite::Delete { table, id } => {
                delete_in(&tx, def_of(&table)?, &id, group)?;
                None
            }
        });
    }
    tx.commit()?;
    Ok(out)
}

/// What the push sends for a claimed operation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload {
    /// The body (system columns stripped, `id` kept) and the version for `If-Match`.
    Item {
        body: Map<String, Value>,
        version: Option<String>,
    },
    /// The operation cannot be sent; the reason becomes its operation error (status `None`).
    Missing(&'static str),
}

/// An operation claimed for sending, with what to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Claimed {
    /// The operation (state Attempted once claimed with an item payload).
    pub(crate) op: Operation,
    /// What to send.
    pub(crate) payload: Payload,
    /// The bodies this operation's attempts sent since its base version, the current one
    /// included (see the module docs), oldest first.
    pub(crate) sent_before: Vec<Map<String, Value>>,
    /// The largest sequence of the operation's group among the queued operations (so a
    /// planner knows where the group ends), `None` without a group.
    pub(crate) group_end: Option<i64>,
}

/// Reads what the push sends for `op`: the local row with every column the SQLite table has
/// (`push_defs` caches the definitions those rows are read with, per table), or the item
/// queued with a delete.
fn payload_of(
    tx: &Connection,
    tables: &BTreeMap<String, TableDefinition>,
    push_defs: &mut HashMap<String, TableDefinition>,
    op: &Operation,
) -> Result<Payload> {
    let Some(def) = super::find_table(tables, &op.table) else {
        return Ok(Payload::Missing(
            "the table is not defined in the local store",
        ));
    };
    if op.kind == OpKind::Delete {
        let (body, version) = rows::payload(op.item.as_ref().unwrap_or(&Map::new()));
        return Ok(Payload::Item { body, version });
    }
    let full = match push_defs.get(def.name()) {
        Some(full) => full,
        None => {
            let full = rows::push_definition(tx, def)?;
            push_defs.entry(def.name().to_string()).or_insert(full)
        }
    };
    Ok(match rows::read_row(tx, full, &op.item_id)? {
        Some(row) => {
            let (body, version) = rows::payload(&row);
            Payload::Item { body, version }
        }
        None => Payload::Missing("the item is missing from the local table"),
    })
}

/// Marks a claimed operation Attempted and remembers the body it is about to send (inserts
/// and updates; a delete sends none) in its `sentItems`. Returns the list.
fn mark_attempted(
    tx: &Connection,
    op: &mut Operation,
    payload: &Payload,
) -> Result<Vec<Map<String, Value>>> {
    let mut sent = sent_items(tx, &op.id)?;
    if let (Payload::Item { body, .. }, OpKind::Insert | OpKind::Update) = (payload, op.kind) {
        if !sent.contains(body) {
            sent.push(body.clone());
            if sent.len() > SENT_ITEMS_MAX {
                sent.remove(0);
            }
        }
    }
    tx.prepare_cached(
        "UPDATE \"__operations\" SET \"state\" = ?2, \"sentItems\" = ?3 WHERE \"id\" = ?1",
    )?
    .execute(rusqlite::params![
        op.id,
        OpState::Attempted.code(),
        sent_items_text(&sent)
    ])?;
    op.state = OpState::Attempted;
    Ok(sent)
}

/// The largest queued sequence of `group`.
fn group_end(tx: &Connection, group: &str) -> Result<i64> {
    Ok(tx
        .prepare_cached("SELECT max(\"sequence\") FROM \"__operations\" WHERE \"groupId\" = ?1")?
        .query_row([group], |r| r.get(0))?)
}

/// Claims the next operation after sequence `after` for the push, in ONE immediate
/// transaction: reads it, reads its payload (the local row with every column it has, or the
/// item queued with a delete) and marks it Attempted. A local write therefore lands either
/// before the claim (a deleted pending insert is simply gone, nothing is sent) or after it
/// (it meets an Attempted operation and collapses or is refused accordingly); it can never
/// drop the operation between the read and the send. An operation without a payload is returned
/// unchanged (Pending) with [`Payload::Missing`].
pub(crate) fn claim_next(
    conn: &mut Connection,
    tables: &BTreeMap<String, TableDefinition>,
    after: i64,
) -> Result<Option<Claimed>> {
    let claimed = claim_window(conn, tables, after, 1, |_| (1, ()))?;
    Ok(claimed.map(|w| match w {
        Window::Missing(c) => *c,
        // A window of one operation holds exactly one.
        Window::Batch(mut ops, ()) => ops.remove(0),
    }))
}

/// What [`claim_window`] claimed.
#[derive(Debug)]
pub(crate) enum Window<P> {
    /// The next operation cannot be sent (its table or row is missing); it is not claimed.
    Missing(Box<Claimed>),
    /// The claimed operations, in queue order (at least one), and the plan that chose them.
    Batch(Vec<Claimed>, P),
}

/// Claims the next operations after sequence `after`, in ONE immediate transaction (as
/// [`claim_next`] does for one): reads up to `window_max` of them with their payloads
/// (stopping before the first that has none), lets `plan` choose how many to send (it sees
/// them in queue order and returns a count, clamped to 1..=their number, and its own plan),
/// and marks the chosen ones Attempted. `None` when the queue has nothing after `after`.
pub(crate) fn claim_window<P>(
    conn: &mut Connection,
    tables: &BTreeMap<String, TableDefinition>,
    after: i64,
    window_max: usize,
    plan: impl FnOnce(&[Claimed]) -> (usize, P),
) -> Result<Option<Window<P>>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let ops = next_ops(&tx, after, window_max.max(1))?;
    if ops.is_empty() {
        tx.commit()?;
        return Ok(None);
    }
    let mut push_defs = HashMap::new();
    let mut group_ends: HashMap<String, i64> = HashMap::new();
    let mut window = Vec::with_capacity(ops.len());
    for op in ops {
        let payload = payload_of(&tx, tables, &mut push_defs, &op)?;
        if let Payload::Missing(_) = payload {
            if window.is_empty() {
                let sent_before = sent_items(&tx, &op.id)?;
                tx.commit()?;
                return Ok(Some(Window::Missing(Box::new(Claimed {
                    op,
                    payload,
                    sent_before,
                    group_end: None,
                }))));
            }
            break;
        }
        let group_end = match &op.group {
            None => None,
            Some(g) => Some(match group_ends.get(g) {
                Some(end) => *end,
                None => *group_ends.entry(g.clone()).or_insert(group_end(&tx, g)?),
            }),
        };
        window.push(Claimed {
            op,
            payload,
            sent_before: Vec::new(),
            group_end,
        });
    }
    let (take, chosen) = plan(&window);
    window.truncate(take.clamp(1, window.len()));
    for c in &mut window {
        c.sent_before = mark_attempted(&tx, &mut c.op, &c.payload)?;
    }
    tx.commit()?;
    Ok(Some(Window::Batch(window, chosen)))
}

/// Marks an operation's state (push bookkeeping).
pub(crate) fn set_state(conn: &Connection, op_id: &str, state: OpState) -> Result<()> {
    conn.prepare_cached("UPDATE \"__operations\" SET \"state\" = ?2 WHERE \"id\" = ?1")?
        .execute(rusqlite::params![op_id, state.code()])?;
    Ok(())
}

/// What the push learned about one sent operation, applied by [`apply_effects`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// The server applied the operation: remove it (unless it changed meanwhile) and write the
    /// server's copy back (see [`complete_in`]). When the copy cannot be written (another id, a
    /// wrongly typed value), an operation error with `sent` as its item is recorded instead.
    Complete {
        op: Operation,
        server_item: Option<Map<String, Value>>,
        sent: Map<String, Value>,
    },
    /// The operation failed: record its error (and mark it Failed). `replace_key` after a
    /// definite refusal: the request did not apply, so the next attempt is a new request.
    Fail {
        error: OperationError,
        replace_key: bool,
    },
    /// No usable answer (network failure, 401): the operation stays queued as it is, its
    /// idempotency key included, marked Failed.
    Interrupted { op_id: String },
}

/// Applies the effects of a push step in queue order, in ONE transaction (a batch of a
/// thousand operations is one commit, not a thousand). `Err` only for store failures; a
/// server copy that cannot be written becomes that operation's error, the others still apply.
pub(crate) fn apply_effects(
    conn: &mut Connection,
    tables: &BTreeMap<String, TableDefinition>,
    effects: Vec<Effect>,
) -> Result<()> {
    let mut tx = conn.transaction()?;
    for effect in effects {
        match effect {
            Effect::Complete {
                op,
                server_item,
                sent,
            } => {
                let done = {
                    let sp = tx.savepoint()?;
                    let done = super::find_table(tables, &op.table)
                        .ok_or_else(|| Error::UnknownTable(op.table.clone()))
                        .and_then(|def| complete_in(&sp, def, &op, server_item.as_ref()));
                    if done.is_ok() {
                        sp.commit()?;
                    }
                    done
                };
                match done {
                    Ok(()) => {}
                    Err(e) if e.is_store_failure() => return Err(e),
                    // The answer could not be written back (another id, a wrongly typed value:
                    // only possible for outcomes a handler made up, the push checks its own).
                    Err(e) => {
                        tracing::warn!(table = %op.table, id = %op.item_id, error = %e, "push answer refused");
                        let error = OperationError {
                            operation_id: op.id.clone(),
                            operation_version: op.version,
                            kind: op.kind,
                            table: op.table.clone(),
                            item_id: op.item_id.clone(),
                            item: sent,
                            status: None,
                            raw_result: server_item
                                .map(|m| Value::Object(m).to_string())
                                .unwrap_or_default(),
                            result: None,
                            handled: false,
                        };
                        record_error_in(&tx, &error, false)?;
                    }
                }
            }
            Effect::Fail { error, replace_key } => record_error_in(&tx, &error, replace_key)?,
            Effect::Interrupted { op_id } => set_state(&tx, &op_id, OpState::Failed)?,
        }
    }
    tx.commit()?;
    Ok(())
}

/// After a successful push of `op`: removes the entry if unchanged and writes the server's copy
/// back. If the app changed the item meanwhile, the entry stays (to push the newer data) and only
/// the server-owned columns are written back, so the app's edit is not overwritten; its base is
/// now the server's version, so its `sentItems` are forgotten.
pub(crate) fn complete_in(
    tx: &Connection,
    def: &TableDefinition,
    op: &Operation,
    server_item: Option<&Map<String, Value>>,
) -> Result<()> {
    // The answer must be about this item: writing another id's copy would overwrite an
    // unrelated local row, even one with pending changes.
    if let Some(item) = server_item {
        if op.kind != OpKind::Delete && item.get("id") != Some(&Value::String(op.item_id.clone())) {
            return Err(Error::InvalidResponse(format!(
                "the answer is an item with id {}, not {:?}",
                item.get("id").unwrap_or(&Value::Null),
                op.item_id
            )));
        }
    }
    let removed = tx
        .prepare_cached("DELETE FROM \"__operations\" WHERE \"id\" = ?1 AND \"version\" = ?2")?
        .execute(rusqlite::params![op.id, op.version])?
        > 0;
    tx.prepare_cached("DELETE FROM \"__errors\" WHERE \"operationId\" = ?1")?
        .execute([&op.id])?;
    if let Some(item) = server_item {
        if op.kind == OpKind::Delete {
            // Nothing to write: the row is gone locally.
        } else if removed {
            rows::write_server(tx, def, item)?;
        } else {
            rows::write_server_system_columns(tx, def, item)?;
            // The app deleted the item while its update was in flight: the queued delete must
            // carry the version the server now has, or it would fail with 412.
            if let (Some(current), Some(Value::String(v))) =
                (find_op(tx, def.name(), &op.item_id)?, item.get("version"))
            {
                if current.kind == OpKind::Delete {
                    let mut qi = current.item.clone().unwrap_or_default();
                    qi.insert("version".into(), Value::String(v.clone()));
                    tx.execute(
                        "UPDATE \"__operations\" SET \"item\" = ?2, \"sentItems\" = NULL WHERE \"id\" = ?1",
                        rusqlite::params![current.id, Value::Object(qi).to_string()],
                    )?;
                }
            }
        }
    }
    if !removed {
        tx.execute(
            "UPDATE \"__operations\" SET \"state\" = ?2, \"sentItems\" = NULL WHERE \"id\" = ?1",
            rusqlite::params![op.id, OpState::Pending.code()],
        )?;
        // The insert reached the server but the app edited the item meanwhile (insert + update
        // collapsed into the insert): the server has the item now, so what is left to send is an
        // update, which the written-back version makes conditional. Another request: a new key.
        if op.kind == OpKind::Insert {
            tx.execute(
                "UPDATE \"__operations\" SET \"kind\" = ?2, \"idempotencyKey\" = ?4 \
                 WHERE \"id\" = ?1 AND \"kind\" = ?3",
                rusqlite::params![
                    op.id,
                    OpKind::Update.code(),
                    OpKind::Insert.code(),
                    new_idempotency_key()
                ],
            )?;
        }
    }
    Ok(())
}

/// Records an operation error and marks the operation Failed, replacing its idempotency key
/// when `replace_key` (see [`Effect::Fail`]).
fn record_error_in(tx: &Connection, e: &OperationError, replace_key: bool) -> Result<()> {
    set_state(tx, &e.operation_id, OpState::Failed)?;
    if replace_key {
        tx.prepare_cached("UPDATE \"__operations\" SET \"idempotencyKey\" = ?2 WHERE \"id\" = ?1")?
            .execute([e.operation_id.as_str(), &new_idempotency_key()])?;
    }
    tx.prepare_cached(
        "INSERT OR REPLACE INTO \"__errors\" (\"operationId\", \"operationVersion\", \"operationKind\", \
         \"tableName\", \"itemId\", \"item\", \"httpStatus\", \"rawResult\", \"serverItem\") \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(rusqlite::params![
        e.operation_id,
        e.operation_version,
        e.kind.code(),
        e.table,
        e.item_id,
        Value::Object(e.item.clone()).to_string(),
        e.status.map(i64::from),
        e.raw_result,
        e.result.as_ref().map(|m| Value::Object(m.clone()).to_string()),
    ])?;
    Ok(())
}

/// Deletes all stored operation errors (start of a push).
pub(crate) fn clear_errors(conn: &Connection) -> Result<()> {
    conn.execute("DELETE FROM \"__errors\"", [])?;
    Ok(())
}

/// The stored operation errors, in queue order.
pub(crate) fn list_errors(conn: &Connection) -> Result<Vec<OperationError>> {
    let mut stmt = conn.prepare(
        "SELECT e.\"operationId\", e.\"operationVersion\", e.\"operationKind\", e.\"tableName\", \
         e.\"itemId\", e.\"item\", e.\"httpStatus\", e.\"rawResult\", e.\"serverItem\" \
         FROM \"__errors\" e LEFT JOIN \"__operations\" o ON o.\"id\" = e.\"operationId\" \
         ORDER BY o.\"sequence\"",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, Option<i64>>(6)?,
            r.get::<_, String>(7)?,
            r.get::<_, Option<String>>(8)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (op_id, op_version, kind, table, item_id, item, status, raw, server) = r?;
        let kind = OpKind::from_code(kind)
            .ok_or_else(|| Error::CorruptStore(format!("error {op_id}: kind {kind}")))?;
        let obj = |t: &str| match serde_json::from_str::<Value>(t) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(Error::CorruptStore(format!(
                "error {op_id}: item is not a JSON object"
            ))),
        };
        out.push(OperationError {
            operation_id: op_id.clone(),
            operation_version: op_version,
            kind,
            table,
            item_id,
            item: obj(&item)?,
            status: status.and_then(|s| u16::try_from(s).ok()),
            raw_result: raw,
            result: server.as_deref().map(obj).transpose()?,
            handled: false,
        });
    }
    Ok(out)
}

/// Checks that the operation behind an error is unchanged; returns it.
fn guarded_op(tx: &Connection, e: &OperationError) -> Result<Operation> {
    let op = find_op(tx, &e.table, &e.item_id)?.ok_or(Error::OperationChanged)?;
    if op.id != e.operation_id || op.version != e.operation_version {
        return Err(Error::OperationChanged);
    }
    Ok(op)
}

/// Resolution: drop the operation and take `item` (usually the server's copy) as server data.
/// An item with `deleted: true` removes the local row.
pub(crate) fn cancel_and_update(
    conn: &mut Connection,
    def: &TableDefinition,
    e: &OperationError,
    item: &Map<String, Value>,
) -> Result<()> {
    let tx = conn.transaction()?;
    let op = guarded_op(&tx, e)?;
    delete_op(&tx, &op.id)?;
    if item.get("deleted") == Some(&Value::Bool(true)) {
        rows::delete_row(&tx, def.name(), &op.item_id)?;
    } else {
        let mut item = item.clone();
        item.insert("id".into(), Value::String(op.item_id.clone()));
        rows::write_server(&tx, def, &item)?;
    }
    tx.commit()?;
    Ok(())
}

/// Resolution: drop the operation and the local row.
pub(crate) fn cancel_and_discard(
    conn: &mut Connection,
    def: &TableDefinition,
    e: &OperationError,
) -> Result<()> {
    let tx = conn.transaction()?;
    let op = guarded_op(&tx, e)?;
    delete_op(&tx, &op.id)?;
    rows::delete_row(&tx, def.name(), &op.item_id)?;
    tx.commit()?;
    Ok(())
}

/// Resolution: keep the operation (version bumped, state Pending, a new idempotency key) with
/// `item` as its data: for a delete the queued item is replaced; otherwise `item` (including its
/// `version`) is written to the local row, so the next push sends it with that version in
/// `If-Match`.
pub(crate) fn update_operation(
    conn: &mut Connection,
    def: &TableDefinition,
    e: &OperationError,
    item: &Map<String, Value>,
) -> Result<()> {
    let tx = conn.transaction()?;
    let op = guarded_op(&tx, e)?;
    let mut item = item.clone();
    item.insert("id".into(), Value::String(op.item_id.clone()));
    // An insert refused with 409 because the row exists on the server can only go through as
    // an update of that row (as `complete_op` does for an insert that landed while the app
    // edited the item): resending the insert would get 409 forever. Its `If-Match` is the
    // given item's version, or the server copy's when the item has none.
    if op.kind == OpKind::Insert {
        if let (Some(409), Some(server)) = (e.status, &e.result) {
            if !item.contains_key("version") {
                if let Some(v) = server.get("version") {
                    item.insert("version".into(), v.clone());
                }
            }
            tx.execute(
                "UPDATE \"__operations\" SET \"kind\" = ?2 WHERE \"id\" = ?1",
                rusqlite::params![op.id, OpKind::Update.code()],
            )?;
        }
    }
    if op.kind == OpKind::Delete {
        let (mut body, _) = rows::payload(&item);
        if let Some(v) = item.get("version") {
            body.insert("version".into(), v.clone());
        }
        tx.execute(
            "UPDATE \"__operations\" SET \"item\" = ?2 WHERE \"id\" = ?1",
            rusqlite::params![op.id, Value::Object(body).to_string()],
        )?;
    } else {
        let (body, version) = rows::payload(&item);
        let mut body = body;
        body.insert("version".into(), version.map_or(Value::Null, Value::String));
        rows::write_local(&tx, def, &op.item_id, &body, true)?;
    }
    // A new request on a new base: a new idempotency key, and what earlier attempts sent no
    // longer says anything about the server.
    tx.execute(
        "UPDATE \"__operations\" SET \"version\" = \"version\" + 1, \"state\" = ?2, \
         \"idempotencyKey\" = ?3, \"sentItems\" = NULL WHERE \"id\" = ?1",
        rusqlite::params![op.id, OpState::Pending.code(), new_idempotency_key()],
    )?;
    tx.execute(
        "DELETE FROM \"__errors\" WHERE \"operationId\" = ?1",
        [&op.id],
    )?;
    tx.commit()?;
    Ok(())
}

/// Key of a delta token in `__config`.
pub(crate) fn token_key(table: &str, query_id: &str) -> String {
    format!("deltaToken|{table}|{query_id}")
}

/// A pull's position: the (`updatedAt`, `id`) of the last row applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct DeltaToken {
    #[serde(rename = "updatedAt")]
    pub(crate) updated_at: String,
    pub(crate) id: String,
}

/// Reads a saved delta token.
pub(crate) fn load_token(
    conn: &Connection,
    table: &str,
    query_id: &str,
) -> Result<Option<DeltaToken>> {
    match super::get_config(conn, &token_key(table, query_id))? {
        None => Ok(None),
        Some(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| Error::CorruptStore(format!("delta token {table}|{query_id}: {e}"))),
    }
}

/// Result of applying one pulled page.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PageApplied {
    pub(crate) upserted: u64,
    pub(crate) deleted: u64,
    pub(crate) skipped: u64,
    /// Ids of the rows written or removed, in page order (what the app is told changed).
    pub(crate) changed_ids: Vec<String>,
}

/// The ids among `ids` that have a queued operation on `table`, in one query (a pull checks a
/// whole page at once, not row by row).
pub(crate) fn pending_item_ids(
    conn: &Connection,
    table: &str,
    ids: &[&str],
) -> Result<std::collections::HashSet<String>> {
    if ids.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    let ids_json = serde_json::to_string(ids).map_err(|e| Error::CorruptStore(e.to_string()))?;
    let mut stmt = conn.prepare_cached(
        "SELECT \"itemId\" FROM \"__operations\" \
         WHERE \"tableName\" = ?1 AND \"itemId\" IN (SELECT \"value\" FROM json_each(?2))",
    )?;
    let found = stmt
        .query_map(rusqlite::params![table, ids_json], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(found)
}

/// Applies one pulled page in ONE transaction and (when `query_id` is given) saves `token` in
/// it, so a page's rows and the position after them commit together or not at all. Rows with a
/// queued operation are not touched (ARCHITECTURE.md invariant); the page's ids are checked
/// against the queue with one query. `deleted: true` rows are removed; the others are upserted
/// through cached prepared statements.
///
/// The page commits with `synchronous = NORMAL` (no fsync in WAL mode; the connection's own
/// setting is restored afterwards): power loss may drop the last pages a pull applied, but
/// always together with their token, so the next pull downloads them again. Local writes keep
/// the connection's setting (FULL), and their fsync also covers every page committed before.
pub(crate) fn apply_page(
    conn: &mut Connection,
    def: &TableDefinition,
    page: &PulledPage,
    query_id: Option<&str>,
    token: Option<&DeltaToken>,
) -> Result<PageApplied> {
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    let checkpoint_pages: i64 =
        conn.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", pull_checkpoint_pages(conn)?)?;
    let applied = apply_page_in_one_transaction(conn, def, page, query_id, token);
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "wal_autocheckpoint", checkpoint_pages)?;
    applied
}

/// How many pages the write-ahead log may hold before a pulled page's commit checkpoints it:
/// as many as the page cache holds (`LocalStore::with_page_cache_bytes_max`), and at least
/// SQLite's default of 1000. Each page of a cold pull dirties index pages all over the id index;
/// with the default a 1000-row page checkpointed (copy back, two fsyncs) every other commit.
fn pull_checkpoint_pages(conn: &Connection) -> Result<i64> {
    const SQLITE_DEFAULT_CHECKPOINT_PAGES: i64 = 1000;
    let cache: i64 = conn.pragma_query_value(None, "cache_size", |r| r.get(0))?;
    let page_bytes: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    // `cache_size` is in pages when positive, in KiB when negative.
    let cache_pages = if cache < 0 {
        cache.saturating_mul(-1024) / page_bytes.max(1)
    } else {
        cache
    };
    Ok(cache_pages.max(SQLITE_DEFAULT_CHECKPOINT_PAGES))
}

fn apply_page_in_one_transaction(
    conn: &mut Connection,
    def: &TableDefinition,
    page: &PulledPage,
    query_id: Option<&str>,
    token: Option<&DeltaToken>,
) -> Result<PageApplied> {
    // Immediate: the page writes anyway, and taking the write lock first lets SQLite's busy
    // timeout wait for another process's writer (a deferred transaction that read first fails
    // at once when it cannot upgrade).
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let pending = pending_item_ids(&tx, def.name(), &page.ids())?;
    let mut applied = PageApplied::default();
    {
        // The writer's statements borrow the transaction: dropped before it commits.
        let mut writer = PageWriter::new(&tx, def);
        for r in 0..page.len() {
            let Some(id) = page.id(r) else {
                applied.skipped += 1;
                continue;
            };
            if pending.contains(id) {
                applied.skipped += 1;
                continue;
            }
            if page.is_deleted(r) {
                if writer.delete(id)? {
                    applied.deleted += 1;
                    applied.changed_ids.push(id.to_owned());
                }
            } else {
                writer.upsert(page, r)?;
                applied.upserted += 1;
                applied.changed_ids.push(id.to_owned());
            }
        }
    }
    if let (Some(q), Some(t)) = (query_id, token) {
        let text = serde_json::to_string(t).map_err(|e| Error::CorruptStore(e.to_string()))?;
        super::set_config(&tx, &token_key(def.name(), q), &text)?;
    }
    tx.commit()?;
    Ok(applied)
}

/// Ids of the rows matching a lowered filter.
fn matching_ids(
    tx: &Connection,
    table: &str,
    where_sql: Option<&str>,
    params: &[rusqlite::types::Value],
) -> Result<Vec<String>> {
    let sql = match where_sql {
        Some(w) => format!("SELECT \"id\" FROM \"{table}\" WHERE {w}"),
        None => format!("SELECT \"id\" FROM \"{table}\""),
    };
    let mut stmt = tx.prepare(&sql)?;
    let ids = stmt
        .query_map(rusqlite::params_from_iter(params.iter()), |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

/// Purge: removes the rows matching the filter and resets the table's delta tokens: all of them
/// when rows were removed (or the whole table was purged), else only the query's. With
/// pending operations it refuses unless `force`; forced, it drops the operations (and errors) of
/// the purged rows only — or all of the table's operations when there is no filter.
pub(crate) fn purge(
    conn: &mut Connection,
    def: &TableDefinition,
    query_id: Option<&str>,
    where_sql: Option<&str>,
    params: &[rusqlite::types::Value],
    force: bool,
) -> Result<u64> {
    let tx = conn.transaction()?;
    let table = def.name();
    if pending_count(&tx, Some(table))? > 0 {
        if !force {
            return Err(Error::PurgeRefused(table.to_string()));
        }
        if where_sql.is_none() {
            tx.execute("DELETE FROM \"__errors\" WHERE \"tableName\" = ?1", [table])?;
            tx.execute(
                "DELETE FROM \"__operations\" WHERE \"tableName\" = ?1",
                [table],
            )?;
        } else {
            for id in matching_ids(&tx, table, where_sql, params)? {
                if let Some(op) = find_op(&tx, table, &id)? {
                    delete_op(&tx, &op.id)?;
                }
            }
        }
    }
    let removed = match where_sql {
        Some(w) => tx.execute(
            &format!("DELETE FROM \"{table}\" WHERE {w}"),
            rusqlite::params_from_iter(params.iter()),
        )?,
        None => tx.execute(&format!("DELETE FROM \"{table}\""), [])?,
    };
    // Every token of the table goes when rows went (protocol.md 8.5): a token of another query
    // that covered the purged rows would otherwise keep them away for good, and keyset pulls
    // make re-downloading from scratch cheap. Without removed rows only the named query resets
    // (a whole-table purge of an empty table resets everything, as before).
    if removed > 0 || (query_id.is_none() && where_sql.is_none()) {
        let prefix = format!("deltaToken|{table}|");
        tx.execute(
            "DELETE FROM \"__config\" WHERE substr(\"key\", 1, ?2) = ?1",
            rusqlite::params![prefix, prefix.len() as i64],
        )?;
    } else if let Some(q) = query_id {
        tx.execute(
            "DELETE FROM \"__config\" WHERE \"key\" = ?1",
            [token_key(table, q)],
        )?;
    }
    tx.commit()?;
    Ok(removed as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;
    use tablesync_protocol::odata::sql::ColumnType;

    fn setup() -> (Connection, BTreeMap<String, TableDefinition>) {
        let def = TableDefinition::new("TodoItem")
            .column("text", ColumnType::String)
            .column("complete", ColumnType::Boolean);
        let mut c = Connection::open_in_memory().unwrap();
        super::super::migrate(&mut c).unwrap();
        let tx = c.transaction().unwrap();
        super::super::create_or_extend(&tx, &def).unwrap();
        tx.commit().unwrap();
        let mut tables = BTreeMap::new();
        tables.insert("TodoItem".to_string(), def);
        (c, tables)
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn claiming_an_operation_reads_it_and_marks_it_attempted_in_one_transaction() {
        let (mut c, tables) = setup();
        let def = tables["TodoItem"].clone();
        local_insert(&mut c, &def, obj(json!({"id": "a", "text": "x"}))).unwrap();
        let Claimed { op, payload, .. } = claim_next(&mut c, &tables, 0).unwrap().unwrap();
        assert_eq!(
            (op.kind, op.state, op.item_id.as_str()),
            (OpKind::Insert, OpState::Attempted, "a")
        );
        assert_eq!(
            payload,
            Payload::Item {
                body: obj(json!({"id": "a", "text": "x", "complete": null})),
                version: None
            }
        );
        assert_eq!(
            find_op(&c, "TodoItem", "a").unwrap().unwrap().state,
            OpState::Attempted
        );
        // A local delete after the claim meets an attempted insert: refused, row and queue kept.
        let err = local_delete(&mut c, &def, "a").unwrap_err();
        assert!(
            matches!(
                err,
                Error::QueueConflict {
                    existing: OpKind::Insert,
                    existing_state: OpState::Attempted,
                    new: OpKind::Delete
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), crate::queue::MSG_INCONSISTENT);
        assert!(rows::row_exists(&c, "TodoItem", "a").unwrap());
        // A local delete before the claim removes a pending insert: nothing is left to claim.
        local_insert(&mut c, &def, obj(json!({"id": "b", "text": "y"}))).unwrap();
        local_delete(&mut c, &def, "b").unwrap();
        assert_eq!(claim_next(&mut c, &tables, op.sequence).unwrap(), None);
        // An update whose row vanished is claimed as missing and stays Pending (recorded by the push).
        local_insert(&mut c, &def, obj(json!({"id": "m", "text": "z"}))).unwrap();
        rows::delete_row(&c, "TodoItem", "m").unwrap();
        let Claimed {
            op: op_m, payload, ..
        } = claim_next(&mut c, &tables, op.sequence).unwrap().unwrap();
        assert_eq!(
            payload,
            Payload::Missing("the item is missing from the local table")
        );
        assert_eq!(op_m.state, OpState::Pending);
    }

    /// A row the server has (at `version`), with no queued operation, as a pull leaves it.
    fn server_row(c: &Connection, def: &TableDefinition, id: &str, version: &str) {
        rows::write_server(
            c,
            def,
            &obj(json!({"id": id, "text": "server", "version": version})),
        )
        .unwrap();
    }

    fn op(c: &Connection, id: &str) -> Operation {
        find_op(c, "TodoItem", id).unwrap().unwrap()
    }

    #[test]
    fn a_key_is_kept_by_claims_and_failures_and_replaced_by_every_change() {
        let (mut c, tables) = setup();
        let def = tables["TodoItem"].clone();
        local_insert(&mut c, &def, obj(json!({"id": "a", "text": "x"}))).unwrap();
        let k0 = op(&c, "a").idempotency_key;
        assert_eq!(uuid::Uuid::parse_str(&k0).unwrap().get_version_num(), 4);
        // Claims (retries) and undecided failures keep it.
        let claimed = claim_next(&mut c, &tables, 0).unwrap().unwrap();
        assert_eq!(claimed.op.idempotency_key, k0);
        let error = |status| OperationError {
            operation_id: claimed.op.id.clone(),
            operation_version: claimed.op.version,
            kind: OpKind::Insert,
            table: "TodoItem".into(),
            item_id: "a".into(),
            item: Map::new(),
            status,
            raw_result: String::new(),
            result: None,
            handled: false,
        };
        apply_effects(
            &mut c,
            &tables,
            vec![
                Effect::Interrupted {
                    op_id: claimed.op.id.clone(),
                },
                Effect::Fail {
                    error: error(Some(503)),
                    replace_key: false,
                },
            ],
        )
        .unwrap();
        assert_eq!(
            claim_next(&mut c, &tables, 0)
                .unwrap()
                .unwrap()
                .op
                .idempotency_key,
            k0
        );
        // A decided refusal replaces it.
        apply_effects(
            &mut c,
            &tables,
            vec![Effect::Fail {
                error: error(Some(400)),
                replace_key: true,
            }],
        )
        .unwrap();
        let k1 = op(&c, "a").idempotency_key;
        assert_ne!(k1, k0);
        // So does a local edit collapsing into the operation.
        local_update(&mut c, &def, obj(json!({"id": "a", "text": "y"}))).unwrap();
        let k2 = op(&c, "a").idempotency_key;
        assert_ne!(k2, k1);
        // And a resolution.
        let mut e = error(Some(409));
        e.operation_version = op(&c, "a").version;
        update_operation(&mut c, &def, &e, &obj(json!({"text": "z"}))).unwrap();
        assert_ne!(op(&c, "a").idempotency_key, k2);
    }

    #[test]
    fn what_attempts_sent_is_remembered_across_collapses_and_forgotten_when_the_base_moves() {
        let (mut c, tables) = setup();
        let def = tables["TodoItem"].clone();
        server_row(&c, &def, "u", "v1");
        local_update(&mut c, &def, obj(json!({"id": "u", "text": "v2"}))).unwrap();
        let first = claim_next(&mut c, &tables, 0).unwrap().unwrap();
        let v2 = obj(json!({"id": "u", "text": "v2", "complete": null}));
        assert_eq!(first.sent_before, vec![v2.clone()]);
        // Claimed again unchanged: remembered once.
        assert_eq!(
            claim_next(&mut c, &tables, 0).unwrap().unwrap().sent_before,
            vec![v2.clone()]
        );
        // The user edits after the lost answer: both bodies are candidates.
        local_update(&mut c, &def, obj(json!({"id": "u", "text": "v3"}))).unwrap();
        let v3 = obj(json!({"id": "u", "text": "v3", "complete": null}));
        let second = claim_next(&mut c, &tables, 0).unwrap().unwrap();
        assert_eq!(second.sent_before, vec![v2.clone(), v3.clone()]);
        // A delete replacing the update inherits them (its own attempts send no body).
        local_delete(&mut c, &def, "u").unwrap();
        let del = claim_next(&mut c, &tables, 0).unwrap().unwrap();
        assert_eq!(del.op.kind, OpKind::Delete);
        assert_eq!(del.sent_before, vec![v2, v3]);

        // A push that completes while the app edited: the entry stays, on the server's new
        // version, and what was sent before says nothing any more.
        server_row(&c, &def, "w", "v1");
        local_update(&mut c, &def, obj(json!({"id": "w", "text": "a"}))).unwrap();
        let w = claim_window(&mut c, &tables, del.op.sequence, 10, |_| (1, ())).unwrap();
        let Some(Window::Batch(mut claimed, ())) = w else {
            panic!()
        };
        let w = claimed.remove(0);
        assert_eq!(w.sent_before.len(), 1);
        local_update(&mut c, &def, obj(json!({"id": "w", "text": "b"}))).unwrap();
        apply_effects(
            &mut c,
            &tables,
            vec![Effect::Complete {
                op: w.op.clone(),
                server_item: Some(obj(json!({"id": "w", "text": "a", "version": "v2"}))),
                sent: Map::new(),
            }],
        )
        .unwrap();
        assert_eq!(
            sent_items(&c, &w.op.id).unwrap(),
            Vec::<Map<String, Value>>::new()
        );
        assert_eq!(op(&c, "w").state, OpState::Pending);
        assert_eq!(
            rows::read_row(&c, &def, "w").unwrap().unwrap()["version"],
            json!("v2")
        );
    }

    #[test]
    fn at_most_sent_items_max_bodies_are_remembered_newest_kept() {
        let (mut c, tables) = setup();
        let def = tables["TodoItem"].clone();
        server_row(&c, &def, "n", "v1");
        for i in 0..SENT_ITEMS_MAX + 3 {
            local_update(
                &mut c,
                &def,
                obj(json!({"id": "n", "text": format!("t{i}")})),
            )
            .unwrap();
            claim_next(&mut c, &tables, 0).unwrap().unwrap();
        }
        let sent = sent_items(&c, &op(&c, "n").id).unwrap();
        assert_eq!(sent.len(), SENT_ITEMS_MAX);
        assert_eq!(sent[0]["text"], json!("t3"));
        assert_eq!(
            sent[SENT_ITEMS_MAX - 1]["text"],
            json!(format!("t{}", SENT_ITEMS_MAX + 2))
        );
    }

    fn groups(c: &Connection) -> Vec<(String, Option<String>)> {
        list_ops(c)
            .unwrap()
            .into_iter()
            .map(|o| (o.item_id, o.group))
            .collect()
    }

    fn insert(table: &str, id: &str) -> LocalWrite {
        LocalWrite::Insert {
            table: table.into(),
            item: obj(json!({"id": id, "text": id})),
        }
    }

    #[test]
    fn a_transaction_is_a_group_and_collapses_merge_groups() {
        let (mut c, tables) = setup();
        let def = tables["TodoItem"].clone();
        // One write is an ordinary write; two or more are a group.
        local_transaction(&mut c, &tables, vec![insert("TodoItem", "s")]).unwrap();
        local_transaction(
            &mut c,
            &tables,
            vec![insert("TodoItem", "a"), insert("todoitem", "b")],
        )
        .unwrap();
        let g1 = op(&c, "a").group.unwrap();
        assert_eq!(op(&c, "b").group.as_deref(), Some(g1.as_str()));
        assert_eq!(op(&c, "s").group, None);
        // A single write collapsing into a grouped operation leaves the group alone.
        local_update(&mut c, &def, obj(json!({"id": "a", "text": "a2"}))).unwrap();
        assert_eq!(op(&c, "a").group.as_deref(), Some(g1.as_str()));
        // A transaction collapsing into it merges both transactions into one group, and takes
        // the ungrouped operation it collapses into with it.
        local_transaction(
            &mut c,
            &tables,
            vec![
                LocalWrite::Update {
                    table: "TodoItem".into(),
                    item: obj(json!({"id": "a", "text": "a3"})),
                },
                LocalWrite::Update {
                    table: "TodoItem".into(),
                    item: obj(json!({"id": "s", "text": "s2"})),
                },
                insert("TodoItem", "c"),
            ],
        )
        .unwrap();
        let g2 = op(&c, "c").group.unwrap();
        assert_ne!(g2, g1);
        assert_eq!(
            groups(&c),
            vec![
                ("s".to_string(), Some(g2.clone())),
                ("a".to_string(), Some(g2.clone())),
                ("b".to_string(), Some(g2.clone())),
                ("c".to_string(), Some(g2.clone())),
            ]
        );
        // A transaction whose delete cancels a pending insert still takes its group.
        local_transaction(
            &mut c,
            &tables,
            vec![
                LocalWrite::Delete {
                    table: "TodoItem".into(),
                    id: "b".into(),
                },
                insert("TodoItem", "d"),
            ],
        )
        .unwrap();
        let g3 = op(&c, "d").group.unwrap();
        assert!(groups(&c)
            .iter()
            .all(|(_, g)| g.as_deref() == Some(g3.as_str())));
        // A delete replacing a grouped update inherits its group.
        server_row(&c, &def, "e", "v1");
        server_row(&c, &def, "f", "v1");
        local_transaction(
            &mut c,
            &tables,
            vec![
                LocalWrite::Update {
                    table: "TodoItem".into(),
                    item: obj(json!({"id": "e", "text": "e2"})),
                },
                LocalWrite::Update {
                    table: "TodoItem".into(),
                    item: obj(json!({"id": "f", "text": "f2"})),
                },
            ],
        )
        .unwrap();
        let g4 = op(&c, "e").group.unwrap();
        local_delete(&mut c, &def, "e").unwrap();
        assert_eq!(op(&c, "e").kind, OpKind::Delete);
        assert_eq!(op(&c, "e").group.as_deref(), Some(g4.as_str()));
    }

    #[test]
    fn a_refused_write_rolls_back_the_whole_transaction() {
        let (mut c, tables) = setup();
        let before = list_ops(&c).unwrap();
        for bad in [
            LocalWrite::Update {
                table: "TodoItem".into(),
                item: obj(json!({"id": "missing", "text": "x"})),
            },
            insert("Nope", "n"),
            insert("TodoItem", "x"),
        ] {
            let err =
                local_transaction(&mut c, &tables, vec![insert("TodoItem", "x"), bad]).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::ItemNotFound(_) | Error::UnknownTable(_) | Error::ItemAlreadyExists(_)
                ),
                "{err:?}"
            );
            assert_eq!(list_ops(&c).unwrap(), before);
            assert!(!rows::row_exists(&c, "TodoItem", "x").unwrap());
        }
        assert_eq!(
            local_transaction(&mut c, &tables, Vec::new()).unwrap(),
            Vec::<Option<Map<String, Value>>>::new()
        );
    }

    #[test]
    fn a_window_stops_before_an_operation_without_payload_and_knows_where_groups_end() {
        let (mut c, tables) = setup();
        let def = tables["TodoItem"].clone();
        local_transaction(
            &mut c,
            &tables,
            vec![insert("TodoItem", "a"), insert("TodoItem", "b")],
        )
        .unwrap();
        local_insert(&mut c, &def, obj(json!({"id": "m", "text": "x"}))).unwrap();
        rows::delete_row(&c, "TodoItem", "m").unwrap();
        local_insert(&mut c, &def, obj(json!({"id": "z", "text": "x"}))).unwrap();
        let mut seen = Vec::new();
        let w = claim_window(&mut c, &tables, 0, 10, |cands| {
            seen = cands
                .iter()
                .map(|c| (c.op.item_id.clone(), c.group_end))
                .collect();
            (1, ())
        })
        .unwrap();
        let b_seq = op(&c, "b").sequence;
        assert_eq!(
            seen,
            vec![
                ("a".to_string(), Some(b_seq)),
                ("b".to_string(), Some(b_seq))
            ]
        );
        // The plan took one: only that one is claimed.
        let Some(Window::Batch(claimed, ())) = w else {
            panic!()
        };
        assert_eq!(claimed.len(), 1);
        assert_eq!(op(&c, "a").state, OpState::Attempted);
        assert_eq!(op(&c, "b").state, OpState::Pending);
        // The operation without a row comes alone, unclaimed.
        let w = claim_window(&mut c, &tables, b_seq, 10, |_| (10, ())).unwrap();
        let Some(Window::Missing(m)) = w else {
            panic!("{w:?}")
        };
        assert_eq!((m.op.item_id.as_str(), m.op.state), ("m", OpState::Pending));
    }

    fn token(id: &str) -> DeltaToken {
        DeltaToken {
            updated_at: "2024-01-01T00:00:00.000Z".into(),
            id: id.into(),
        }
    }

    /// `rows` as the page a server would answer with them, decoded.
    fn page_of(def: &TableDefinition, rows: &[Map<String, Value>]) -> PulledPage {
        let body = serde_json::to_vec(rows).unwrap();
        PulledPage::decode(def, &body, || Ok(())).unwrap()
    }

    fn pulled_row(id: &str, text: &str) -> Map<String, Value> {
        obj(
            json!({"id": id, "updatedAt": "2024-01-01T00:00:00.000Z", "version": "v1",
                   "deleted": false, "text": text, "complete": true}),
        )
    }

    #[test]
    fn a_page_and_its_token_commit_together_or_not_at_all() {
        let (mut c, tables) = setup();
        let def = tables["TodoItem"].clone();
        // The last row cannot be stored: nothing of the page is, and the token does not move.
        let mut bad = vec![pulled_row("a", "x"), pulled_row("b", "y")];
        bad.push(obj(json!({"id": "c", "text": 7})));
        let err = apply_page(
            &mut c,
            &def,
            &page_of(&def, &bad),
            Some("q"),
            Some(&token("c")),
        )
        .unwrap_err();
        assert!(matches!(err, Error::TypeMismatch { .. }), "{err:?}");
        assert!(!rows::row_exists(&c, "TodoItem", "a").unwrap());
        assert_eq!(load_token(&c, "TodoItem", "q").unwrap(), None);
        let good = vec![pulled_row("a", "x"), pulled_row("b", "y")];
        let applied = apply_page(
            &mut c,
            &def,
            &page_of(&def, &good),
            Some("q"),
            Some(&token("b")),
        )
        .unwrap();
        assert_eq!(
            (applied.upserted, applied.deleted, applied.skipped),
            (2, 0, 0)
        );
        assert_eq!(load_token(&c, "TodoItem", "q").unwrap(), Some(token("b")));
        assert_eq!(
            rows::read_row(&c, &def, "b").unwrap().unwrap()["text"],
            json!("y")
        );
        // Pages commit without fsync; local writes keep the connection's setting (FULL) and
        // its checkpoint interval.
        let synchronous: i64 = c
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(synchronous, 2);
        let checkpoint: i64 = c
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap();
        assert_eq!(checkpoint, 1000);
    }

    #[test]
    fn a_pull_checkpoints_after_as_many_pages_as_the_cache_holds() {
        let (c, _) = setup();
        c.pragma_update(None, "cache_size", -32768).unwrap();
        assert_eq!(pull_checkpoint_pages(&c).unwrap(), 8192);
        c.pragma_update(None, "cache_size", 5000).unwrap();
        assert_eq!(pull_checkpoint_pages(&c).unwrap(), 5000);
        // Never more often than SQLite's default.
        c.pragma_update(None, "cache_size", -64).unwrap();
        assert_eq!(pull_checkpoint_pages(&c).unwrap(), 1000);
    }

    #[test]
    fn a_page_never_overwrites_or_deletes_rows_with_queued_operations() {
        let (mut c, tables) = setup();
        let def = tables["TodoItem"].clone();
        apply_page(
            &mut c,
            &def,
            &page_of(
                &def,
                &[pulled_row("u", "server 1"), pulled_row("d", "server 1")],
            ),
            None,
            None,
        )
        .unwrap();
        local_insert(&mut c, &def, obj(json!({"id": "i", "text": "local"}))).unwrap();
        local_update(&mut c, &def, obj(json!({"id": "u", "text": "local"}))).unwrap();
        local_update(&mut c, &def, obj(json!({"id": "d", "text": "local"}))).unwrap();
        let mut tombstone = pulled_row("d", "server 2");
        tombstone.insert("deleted".into(), json!(true));
        let page = vec![
            pulled_row("i", "server 2"),
            pulled_row("u", "server 2"),
            tombstone,
            pulled_row("free", "server 2"),
        ];
        let applied = apply_page(
            &mut c,
            &def,
            &page_of(&def, &page),
            Some("q"),
            Some(&token("free")),
        )
        .unwrap();
        assert_eq!(
            (applied.upserted, applied.deleted, applied.skipped),
            (1, 0, 3)
        );
        for id in ["i", "u", "d"] {
            assert_eq!(
                rows::read_row(&c, &def, id).unwrap().unwrap()["text"],
                json!("local"),
                "{id}"
            );
            assert!(find_op(&c, "TodoItem", id).unwrap().is_some());
        }
        assert_eq!(
            rows::read_row(&c, &def, "free").unwrap().unwrap()["text"],
            json!("server 2")
        );
        // The token moves past the skipped rows (keyset paging cannot revisit them).
        assert_eq!(
            load_token(&c, "TodoItem", "q").unwrap(),
            Some(token("free"))
        );
        // Once the queue is empty, the same page is applied in full.
        c.execute("DELETE FROM \"__operations\"", []).unwrap();
        let applied = apply_page(&mut c, &def, &page_of(&def, &page), None, None).unwrap();
        assert_eq!(
            (applied.upserted, applied.deleted, applied.skipped),
            (3, 1, 0)
        );
        assert!(!rows::row_exists(&c, "TodoItem", "d").unwrap());
        assert_eq!(
            rows::read_row(&c, &def, "u").unwrap().unwrap()["text"],
            json!("server 2")
        );
    }

    /// Makes every write of `what` (`INSERT`, `UPDATE` or `DELETE`) on `table` fail from now on
    /// (a test-only trigger): a store failure at exactly that point of a transaction.
    fn fail_on(c: &Connection, what: &str, table: &str) {
        c.execute_batch(&format!(
            "CREATE TRIGGER \"fail_{what}_{table}\" BEFORE {what} ON \"{table}\" \
             BEGIN SELECT RAISE(ABORT, 'injected {what} failure'); END;"
        ))
        .unwrap();
    }

    /// The row write of a local update or delete fails after its operation was queued: the
    /// queue is as before (one transaction), not left with an operation for a write that never
    /// happened. Fails if `local_update`/`local_delete` commit the queue entry on its own.
    #[test]
    fn a_row_write_failing_after_queueing_leaves_the_queue_as_it_was() {
        let (mut c, tables) = setup();
        let def = tables["TodoItem"].clone();
        // Rows from the server: no queued operation yet.
        apply_page(
            &mut c,
            &def,
            &page_of(
                &def,
                &[pulled_row("u", "server"), pulled_row("d", "server")],
            ),
            None,
            None,
        )
        .unwrap();
        // And one with a queued insert, whose entry a split transaction would rewrite.
        local_insert(&mut c, &def, obj(json!({"id": "i", "text": "local"}))).unwrap();
        let before = list_ops(&c).unwrap();
        assert_eq!(before.len(), 1);

        fail_on(&c, "UPDATE", "TodoItem");
        for id in ["u", "i"] {
            let err =
                local_update(&mut c, &def, obj(json!({"id": id, "text": "new"}))).unwrap_err();
            assert!(err.to_string().contains("injected UPDATE failure"), "{err}");
            assert_eq!(list_ops(&c).unwrap(), before, "update of {id}");
        }
        fail_on(&c, "DELETE", "TodoItem");
        for id in ["d", "i"] {
            let err = local_delete(&mut c, &def, id).unwrap_err();
            assert!(err.to_string().contains("injected DELETE failure"), "{err}");
            assert_eq!(list_ops(&c).unwrap(), before, "delete of {id}");
            assert!(rows::row_exists(&c, "TodoItem", id).unwrap());
        }
        assert_eq!(
            rows::read_row(&c, &def, "u").unwrap().unwrap()["text"],
            json!("server")
        );
    }

    /// The store fails between a page's rows and its delta token: neither commits. Fails if the
    /// token is saved in a transaction of its own after the rows (the rows would stay without
    /// their token, or, the other way round, the token would move past rows never stored).
    #[test]
    fn a_failing_token_write_takes_the_page_rows_with_it() {
        let (mut c, tables) = setup();
        let def = tables["TodoItem"].clone();
        let first = vec![pulled_row("a", "x")];
        apply_page(
            &mut c,
            &def,
            &page_of(&def, &first),
            Some("q"),
            Some(&token("a")),
        )
        .unwrap();
        fail_on(&c, "INSERT", "__config");
        fail_on(&c, "UPDATE", "__config");
        let page = vec![pulled_row("a", "changed"), pulled_row("b", "y")];
        let err = apply_page(
            &mut c,
            &def,
            &page_of(&def, &page),
            Some("q"),
            Some(&token("b")),
        )
        .unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        assert!(!rows::row_exists(&c, "TodoItem", "b").unwrap());
        assert_eq!(
            rows::read_row(&c, &def, "a").unwrap().unwrap()["text"],
            json!("x")
        );
        assert_eq!(load_token(&c, "TodoItem", "q").unwrap(), Some(token("a")));
        // Without a query id there is no token to write: the page applies.
        apply_page(&mut c, &def, &page_of(&def, &page), None, None).unwrap();
        assert!(rows::row_exists(&c, "TodoItem", "b").unwrap());
    }

    #[test]
    fn pending_ids_are_found_in_one_query_whatever_the_ids() {
        let (mut c, tables) = setup();
        let def = tables["TodoItem"].clone();
        for id in ["a", "o'k", "with space \u{1F600}", "é"] {
            local_insert(&mut c, &def, obj(json!({"id": id, "text": "x"}))).unwrap();
        }
        let found = pending_item_ids(
            &c,
            "TodoItem",
            &["a", "o'k", "with space \u{1F600}", "é", "none"],
        )
        .unwrap();
        let mut found: Vec<String> = found.into_iter().collect();
        found.sort();
        assert_eq!(found, vec!["a", "o'k", "with space \u{1F600}", "é"]);
        assert!(pending_item_ids(&c, "Other", &["a"]).unwrap().is_empty());
        assert!(pending_item_ids(&c, "TodoItem", &[]).unwrap().is_empty());
    }
}
