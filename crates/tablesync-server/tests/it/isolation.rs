//! The user-isolation property, on both stores: random operations by three users on the
//! per-user table (inserts, reads, updates, deletes, undeletes and lists with hostile filters,
//! over a small shared pool of ids so users collide on ids all the time), and no response to
//! one user ever contains another user's name (every value a user writes carries it) or a row
//! owned by anyone else. A model of each user's rows checks that the operations really ran.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use reqwest::Method;
use serde_json::{json, Value};

use crate::tokens::{self, *};
use crate::{send, StoreKind, TestServer};

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const IDS: [&str; 4] = ["x", "y", "z", "w"];
/// Scripts per store, and operations per script.
const CASES: u32 = 12;
const OPS_MAX: usize = 24;

#[derive(Clone, Debug)]
enum Op {
    Insert(usize),
    Get(usize, bool),
    Patch(usize),
    Delete(usize),
    Undelete(usize),
    List(usize),
}

const LISTS: [&str; 6] = [
    "",
    "__includedeleted=true",
    "$filter=userId%20ne%20'nobody'%20or%20true&__includedeleted=true",
    "$filter=userId%20eq%20'alice'%20or%20userId%20eq%20'bob'%20or%20userId%20eq%20'carol'",
    "$orderby=userId%20desc,text&$inlinecount=allpages&__includedeleted=true",
    "$select=userId,text&$filter=startswith(text,'a')%20or%20startswith(text,'b')%20or%20startswith(text,'c')",
];

fn op() -> impl Strategy<Value = Op> {
    let id = 0..IDS.len();
    prop_oneof![
        3 => id.clone().prop_map(Op::Insert),
        2 => (id.clone(), any::<bool>()).prop_map(|(i, d)| Op::Get(i, d)),
        2 => id.clone().prop_map(Op::Patch),
        1 => id.clone().prop_map(Op::Delete),
        1 => id.clone().prop_map(Op::Undelete),
        2 => (0..LISTS.len()).prop_map(Op::List),
    ]
}

fn script() -> impl Strategy<Value = Vec<(usize, Op)>> {
    prop::collection::vec((0..USERS.len(), op()), 1..OPS_MAX)
}

/// Each user's rows: id → deleted.
type Model = [BTreeMap<String, bool>; 3];

async fn run_script(
    kind: StoreKind,
    script: Vec<(usize, Op)>,
    writes: &AtomicU64,
) -> Result<(), String> {
    let s = TestServer::with_clock(kind, config_with(auth_config()), tokens::clock()).await;
    let mut model: Model = Default::default();
    for (step, (u, op)) in script.iter().enumerate() {
        let user = USERS[*u];
        let value = format!("{user}-{step}");
        let rb = |m: Method, path: String| s.req(m, &path).header("X-ZUMO-AUTH", token(user));
        let item = |i: &usize| format!("/tables/Todo/{}", IDS[*i]);
        let r = match op {
            Op::Insert(i) => {
                send(
                    rb(Method::POST, "/tables/Todo".into())
                        .json(&json!({"id": IDS[*i], "text": value})),
                )
                .await
            }
            Op::Get(i, deleted) => {
                let q = if *deleted {
                    "?__includedeleted=true"
                } else {
                    ""
                };
                send(rb(Method::GET, format!("{}{q}", item(i)))).await
            }
            Op::Patch(i) => send(rb(Method::PATCH, item(i)).json(&json!({"text": value}))).await,
            Op::Delete(i) => send(rb(Method::DELETE, item(i))).await,
            Op::Undelete(i) => send(rb(Method::POST, item(i))).await,
            Op::List(q) => send(rb(Method::GET, format!("/tables/Todo?{}", LISTS[*q]))).await,
        };
        let text = String::from_utf8_lossy(&r.raw);
        for other in USERS.iter().filter(|o| **o != user) {
            if text.contains(other) {
                return Err(format!("step {step}: {user} {op:?} saw {other}: {text}"));
            }
        }
        // Every row in the answer is the caller's.
        let rows: Vec<&Value> = match r.body.get("results").unwrap_or(&r.body) {
            Value::Array(rows) => rows.iter().collect(),
            row @ Value::Object(_) if row.get("id").is_some() => vec![row],
            _ => vec![],
        };
        for row in rows {
            if let Some(owner) = row.get("userId") {
                if owner != user {
                    return Err(format!("step {step}: {user} got a row of {owner}"));
                }
            }
        }
        // The model: what the user's own rows are now.
        let rows = &mut model[*u];
        let id = |i: &usize| IDS[*i].to_owned();
        let expected = match op {
            Op::Insert(i) => match rows.get(&id(i)) {
                None => {
                    rows.insert(id(i), false);
                    201
                }
                Some(_) => 409,
            },
            Op::Get(i, deleted) => match rows.get(&id(i)) {
                Some(false) => 200,
                Some(true) if *deleted => 200,
                _ => 404,
            },
            Op::Patch(i) => match rows.get(&id(i)) {
                Some(false) => 200,
                _ => 404,
            },
            Op::Delete(i) => match rows.get_mut(&id(i)) {
                Some(d @ false) => {
                    *d = true;
                    200
                }
                _ => 404,
            },
            Op::Undelete(i) => match rows.get_mut(&id(i)) {
                Some(d) => {
                    *d = false;
                    200
                }
                None => 404,
            },
            Op::List(_) => 200,
        };
        if r.status != expected {
            return Err(format!(
                "step {step}: {user} {op:?} answered {} (model: {expected}): {text}",
                r.status
            ));
        }
        if matches!(
            op,
            Op::Insert(_) | Op::Patch(_) | Op::Delete(_) | Op::Undelete(_)
        ) && r.status < 300
        {
            writes.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Each user's full listing is exactly their model.
    for (u, user) in USERS.iter().enumerate() {
        let r = send(
            s.req(Method::GET, "/tables/Todo?__includedeleted=true&$top=100")
                .header("X-ZUMO-AUTH", token(user)),
        )
        .await;
        let listed: BTreeMap<String, bool> = r
            .body
            .as_array()
            .ok_or("not a list")?
            .iter()
            .map(|row| {
                (
                    row["id"].as_str().unwrap_or("").to_owned(),
                    row["deleted"] == true,
                )
            })
            .collect();
        if listed != model[u] {
            return Err(format!(
                "{user} lists {listed:?}, the model says {:?}",
                model[u]
            ));
        }
    }
    Ok(())
}

async fn no_answer_to_one_user_contains_another_users_data(kind: StoreKind) {
    let runtime = tokio::runtime::Handle::current();
    let writes = std::sync::Arc::new(AtomicU64::new(0));
    let counted = writes.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let config = ProptestConfig {
            cases: CASES,
            failure_persistence: None,
            max_shrink_iters: 100,
            ..ProptestConfig::default()
        };
        let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
        let mut runner = TestRunner::new_with_rng(config, rng);
        runner
            .run(&script(), |s| {
                runtime
                    .block_on(run_script(kind, s, &counted))
                    .map_err(TestCaseError::fail)
            })
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    if let Err(e) = outcome {
        panic!("{e}");
    }
    assert!(
        writes.load(Ordering::Relaxed) > u64::from(CASES),
        "the scripts must really write"
    );
}

crate::store_tests!(no_answer_to_one_user_contains_another_users_data);
