//! Push: send the queue to the server, in queue order, across all tables (protocol.md 6.7).
//!
//! The shape is "pure decisions, thin IO shell":
//! * [`plan`] chooses the next batch from the head of the queue (bounds, atomicity groups);
//! * [`batch`] encodes it and reads the batch's answer into one answer per operation;
//! * [`classify`] turns one operation's answer into an [`Outcome`];
//! * [`operation`] is the operation a handler sees, with the follow-ups that need the server's
//!   copy (an insert's 409, an update's 404, a 412);
//! * the loop here claims operations, sends them, hands each to the handler and applies the
//!   outcomes to the store in queue order.
//!
//! **Two paths, one meaning.** Against a server that offers batches (`docs/extensions.md`, and
//! `ClientOptions::batch_push` on) the queue goes as OData JSON batches, one request per batch;
//! otherwise one request per operation. An operation's answer means the same on both paths
//! (the batch answers each operation exactly as its own request), so the same outcomes follow.
//! A batch's answer that cannot be read operation by operation stops the push
//! (`CancelledByServerError`) with the queue intact and the same idempotency keys: the next
//! push sends the batch again, which a server keeping idempotency records answers from them.
//! No answer stops the push (`CancelledByNetworkError`), a 401 too
//! (`CancelledByAuthenticationError`), exactly as on the single path; a batch whose answer was
//! lost is sent again whole with the same keys.
//!
//! Operations are claimed (read, payload read, marked Attempted, their body remembered) in one
//! local transaction (`store::queue::claim_next`/`claim_window`), so a local write never slips
//! between reading an operation and sending it. The outcomes of a batch are applied in one
//! local transaction.

pub(crate) mod batch;
pub(crate) mod classify;
pub(crate) mod operation;
pub(crate) mod plan;

use serde_json::{Map, Value};

use self::batch::BatchAnswer;
use self::classify::{is_definite_refusal, Outcome};
use self::operation::{Claim, TableOperation};
use self::plan::{BatchPlan, Limits, PlanItem};
use super::session::Session;
use crate::capabilities::BatchCapability;
use crate::conflict::{PushCompletionResult, Resolver};
use crate::error::{Error, PushStatus, Result};
use crate::operation_error::OperationError;
use crate::store::queue::{self as q, Claimed, Effect, Payload, Window};
use crate::transport::{HttpResponse, Method};

/// How the walk over the queue ended.
struct Walk {
    status: PushStatus,
    cause: Option<String>,
}

impl Walk {
    fn complete() -> Self {
        Walk {
            status: PushStatus::Complete,
            cause: None,
        }
    }
}

/// Pushes the whole queue. `Ok(())` when every operation went through or every error was handled.
///
/// A failure of the local store stops the push like a network error does: the handler's
/// `on_push_complete` still runs, and the push fails with `CancelledBySyncStoreError` whose
/// message is the store's error (protocol.md 6.7, "local store failure").
pub(crate) async fn push_all(session: &Session) -> Result<()> {
    let store = &session.store;
    let walk = match walk_queue(session).await {
        Ok(walk) => walk,
        Err(e) if e.is_store_failure() => Walk {
            status: PushStatus::CancelledBySyncStoreError,
            cause: Some(e.to_string()),
        },
        Err(e) => return Err(e),
    };
    let mut result = match store.run(|c, _| q::list_errors(c)).await {
        Ok(errors) => PushCompletionResult {
            status: walk.status,
            errors,
            message: walk.cause,
        },
        Err(e) if e.is_store_failure() => PushCompletionResult {
            status: PushStatus::CancelledBySyncStoreError,
            errors: Vec::new(),
            message: walk.cause.or_else(|| Some(e.to_string())),
        },
        Err(e) => return Err(e),
    };
    let resolver = Resolver::new(store.clone());
    session
        .handler
        .on_push_complete(&mut result, &resolver)
        .await?;
    let unhandled: Vec<OperationError> = result.errors.into_iter().filter(|e| !e.handled).collect();
    if result.status == PushStatus::Complete && unhandled.is_empty() {
        Ok(())
    } else {
        Err(Error::PushFailed {
            status: result.status,
            errors: unhandled,
            message: result.message,
        })
    }
}

/// Sends the queue in order and records outcomes. `Err` only for store failures.
async fn walk_queue(session: &Session) -> Result<Walk> {
    let store = &session.store;
    store.run(|c, _| q::clear_errors(c)).await?;
    let total = store.run(|c, _| q::pending_count(c, None)).await?;
    if total == 0 {
        return Ok(Walk::complete());
    }
    let monitor = &session.monitor;
    monitor.pushed(0, total);
    let batch = session.batch_for_push().await;
    let mut last_sequence = 0;
    loop {
        let step = match &batch {
            Some(b) => batch_step(session, b, last_sequence).await?,
            None => single_step(session, last_sequence).await?,
        };
        match step {
            Step::Done => {
                monitor.pushed(total, total);
                return Ok(Walk::complete());
            }
            Step::Continue { last } => {
                last_sequence = last;
                // A checkpoint: the outcomes up to `last` are recorded.
                let left = store
                    .run(move |c, _| crate::store::meta::queued_after(c, last))
                    .await?;
                monitor.pushed(total.saturating_sub(left), total);
                if monitor.cancel_requested() {
                    return Err(Error::Cancelled);
                }
            }
            Step::Stop(walk) => return Ok(walk),
        }
    }
}

/// What one step of the walk did.
enum Step {
    /// The queue has nothing after the last sequence.
    Done,
    /// Operations up to sequence `last` were pushed (or recorded as errors).
    Continue { last: i64 },
    /// The push stops here.
    Stop(Walk),
}

/// Claims and sends the next operation as one request.
async fn single_step(session: &Session, after: i64) -> Result<Step> {
    let Some(claimed) = session
        .store
        .run(move |c, tables| q::claim_next(c, tables, after))
        .await?
    else {
        return Ok(Step::Done);
    };
    let last = claimed.op.sequence;
    Ok(match run_operation(session, claimed, None).await? {
        Some(walk) => Step::Stop(walk),
        None => Step::Continue { last },
    })
}

/// Claims the next batch of operations (as [`plan::plan_batch`] chooses) and sends it as one
/// request; then hands each operation, with its answer, to the handler in queue order.
async fn batch_step(session: &Session, batch: &BatchCapability, after: i64) -> Result<Step> {
    let limits = Limits {
        operations_max: batch.operations_max,
        body_bytes_max: batch.body_bytes_max,
    };
    let window = session
        .store
        .run(move |c, tables| {
            q::claim_window(c, tables, after, limits.operations_max, |window| {
                let members: Vec<String> = window.iter().map(request_members).collect();
                let items: Vec<PlanItem> = window
                    .iter()
                    .zip(&members)
                    .map(|(c, m)| PlanItem {
                        sequence: c.op.sequence,
                        group_end: c.group_end,
                        members_bytes: m.len(),
                    })
                    .collect();
                let plan = plan::plan_batch(&items, limits);
                (plan.len(), (plan, members))
            })
        })
        .await?;
    let (ops, plan, members) = match window {
        None => return Ok(Step::Done),
        // Not sendable: recorded as its operation error (never a reason to stop).
        Some(Window::Missing(claimed)) => {
            let last = claimed.op.sequence;
            run_operation(session, *claimed, None).await?;
            return Ok(Step::Continue { last });
        }
        Some(Window::Batch(ops, (plan, members))) => (ops, plan, members),
    };
    let last = ops.last().map_or(after, |c| c.op.sequence);
    let groups = match plan {
        BatchPlan::Single => {
            let mut ops = ops;
            return Ok(match run_operation(session, ops.remove(0), None).await? {
                Some(walk) => Step::Stop(walk),
                None => Step::Continue { last },
            });
        }
        BatchPlan::Batch { groups } => groups,
    };
    let client = &session.client;
    let mut request = client.request(Method::Post, batch.url.clone(), None);
    request
        .headers
        .push(("Content-Type".into(), "application/json".into()));
    request.body = Some(batch::encode_batch(&members[..ops.len()], &groups));
    let answer = client.transport().send(request).await;
    let (status, cause) = match batch::read_batch_answer(ops.len(), &answer) {
        BatchAnswer::Answers(answers) => return apply_batch(session, ops, answers, last).await,
        BatchAnswer::NetworkError(m) => (PushStatus::CancelledByNetworkError, m),
        BatchAnswer::Unauthorized(m) => (PushStatus::CancelledByAuthenticationError, m),
        BatchAnswer::NotAnswered { status, message } => {
            // A refusal of the whole batch (nothing applied) will not change on a retry: the
            // rest of this session pushes one request per operation.
            if is_definite_refusal(Some(status)) {
                session.refuse_batches();
            }
            (
                PushStatus::CancelledByServerError,
                format!("the server answered the batch with {status}: {message}"),
            )
        }
        BatchAnswer::Unreadable(reason) => (PushStatus::CancelledByServerError, reason),
    };
    // The answer says nothing reliable about any one operation: every operation of the batch
    // stays queued as it is (its key too), and the push stops.
    tracing::warn!(%status, %cause, "batch push stopped");
    let effects = ops
        .iter()
        .map(|c| Effect::Interrupted {
            op_id: c.op.id.clone(),
        })
        .collect();
    apply(session, effects).await?;
    Ok(Step::Stop(Walk {
        status,
        cause: Some(cause),
    }))
}

/// Hands each operation of a batch, with its answer, to the handler in queue order, then applies
/// every outcome in one local transaction.
async fn apply_batch(
    session: &Session,
    ops: Vec<Claimed>,
    answers: Vec<HttpResponse>,
    last: i64,
) -> Result<Step> {
    tracing::debug!(operations = ops.len(), "pushed a batch");
    let mut effects = Vec::with_capacity(ops.len());
    let mut stopped = None;
    for (claimed, answer) in ops.into_iter().zip(answers) {
        if let Some(walk) =
            run_operation_deferred(session, claimed, Some(answer), &mut effects).await?
        {
            stopped = Some(walk);
            break;
        }
    }
    apply(session, effects).await?;
    Ok(match stopped {
        Some(walk) => Step::Stop(walk),
        None => Step::Continue { last },
    })
}

/// The request members of a claimed operation (see [`batch::request_members`]).
fn request_members(c: &Claimed) -> String {
    let (body, version) = match &c.payload {
        Payload::Item { body, version } => (body, version.as_deref()),
        // Not reached: a window holds only operations with a payload.
        Payload::Missing(_) => return String::new(),
    };
    let mut body = body.clone();
    body.insert("id".into(), Value::String(c.op.item_id.clone()));
    batch::request_members(
        c.op.kind,
        &c.op.table,
        &c.op.item_id,
        &body,
        version,
        &c.op.idempotency_key,
    )
}

/// Runs one claimed operation (with the answer a batch brought, if any) through the handler
/// and applies its effect at once. `Some` when the push stops.
async fn run_operation(
    session: &Session,
    claimed: Claimed,
    answer: Option<HttpResponse>,
) -> Result<Option<Walk>> {
    let mut effects = Vec::with_capacity(1);
    let stop = run_operation_deferred(session, claimed, answer, &mut effects).await?;
    apply(session, effects).await?;
    Ok(stop)
}

/// Runs one claimed operation through the handler and adds its effect to `effects` (applied
/// by the caller). `Some` when the push stops.
async fn run_operation_deferred(
    session: &Session,
    claimed: Claimed,
    answer: Option<HttpResponse>,
    effects: &mut Vec<Effect>,
) -> Result<Option<Walk>> {
    let Claimed {
        op,
        payload,
        sent_before,
        ..
    } = claimed;
    let (mut body, version) = match payload {
        Payload::Item { body, version } => (body, version),
        Payload::Missing(reason) => {
            let mut item = Map::new();
            item.insert("id".into(), Value::String(op.item_id.clone()));
            effects.push(Effect::Fail {
                error: OperationError {
                    operation_id: op.id.clone(),
                    operation_version: op.version,
                    kind: op.kind,
                    table: op.table.clone(),
                    item_id: op.item_id.clone(),
                    item,
                    status: None,
                    raw_result: reason.into(),
                    result: None,
                    handled: false,
                },
                replace_key: false,
            });
            return Ok(None);
        }
    };
    // The claim found the definition; a missing one here would be a bug, not input.
    let def = session.store.table(&op.table)?.clone();
    body.insert("id".into(), Value::String(op.item_id.clone()));
    let mut top = TableOperation::new(
        session.client.clone(),
        def,
        Claim {
            kind: op.kind,
            table: op.table.clone(),
            item_id: op.item_id.clone(),
            item: body,
            version,
            idempotency_key: op.idempotency_key.clone(),
            sent_before,
        },
        answer,
    );
    let outcome = session.handler.execute_table_operation(&mut top).await;
    tracing::debug!(table = %op.table, id = %op.item_id, kind = %op.kind, ?outcome, "pushed operation");
    let mut sent = top.item().clone();
    if let Some(v) = top.version() {
        sent.insert("version".into(), Value::String(v.to_string()));
    }
    let stop = |status, message| {
        Some(Walk {
            status,
            cause: Some(message),
        })
    };
    let (effect, walk) = match outcome {
        Outcome::Success { item } => (
            Effect::Complete {
                op,
                server_item: item,
                sent,
            },
            None,
        ),
        Outcome::NetworkError(message) => (
            Effect::Interrupted { op_id: op.id },
            stop(PushStatus::CancelledByNetworkError, message),
        ),
        Outcome::Unauthorized(message) => (
            Effect::Interrupted { op_id: op.id },
            stop(PushStatus::CancelledByAuthenticationError, message),
        ),
        Outcome::Failed {
            status,
            raw,
            server_item,
        } => (
            Effect::Fail {
                replace_key: is_definite_refusal(status),
                error: OperationError {
                    operation_id: op.id.clone(),
                    operation_version: op.version,
                    kind: op.kind,
                    table: op.table,
                    item_id: op.item_id,
                    item: sent,
                    status,
                    raw_result: raw,
                    result: server_item,
                    handled: false,
                },
            },
            None,
        ),
    };
    effects.push(effect);
    Ok(walk)
}

/// Applies effects in one local transaction.
async fn apply(session: &Session, effects: Vec<Effect>) -> Result<()> {
    if effects.is_empty() {
        return Ok(());
    }
    session
        .store
        .run(move |c, tables| q::apply_effects(c, tables, effects))
        .await
}
