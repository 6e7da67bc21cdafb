//! Declared indexes (`indexes = [["complete", "text"]]`) and the `startswith` range: the store
//! creates the declared indexes and drops the ones no longer declared; the lowered
//! `startswith(text, 'lit')` is a range read of such an index (the database's own plan says so);
//! and it answers exactly like a reference `str::starts_with` on both stores, with and without
//! the index, for prefixes at the edges of code point order (U+10FFFF, the surrogate gap, the
//! empty prefix, LIKE wildcards, quotes).

use serde_json::{json, Value};
use tablesync_server::{Config, Server};

use crate::{StoreKind, TestServer};

/// The names of the declared indexes (`ixd_…`) the database holds on `table`, sorted.
async fn declared_index_names(kind: StoreKind, url: &str, table: &str) -> Vec<String> {
    let mut names = index_names(kind, url, table).await;
    names.retain(|n| n.starts_with("ixd_"));
    names
}

/// The names of every index the database holds on `table`, sorted.
async fn index_names(kind: StoreKind, url: &str, table: &str) -> Vec<String> {
    let mut names: Vec<String> = match kind {
        StoreKind::Sqlite => {
            let conn = rusqlite::Connection::open(url).unwrap();
            let mut stmt = conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1")
                .unwrap();
            let rows = stmt.query_map([table], |r| r.get(0)).unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        }
        StoreKind::Postgres => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE tablename = $1")
                .bind(table)
                .fetch_all(&mut conn)
                .await
                .unwrap()
        }
    };
    names.sort();
    names
}

fn todo_with_indexes(url: &str, indexes: &[&[&str]]) -> Config {
    let mut todo = Config::todo_table();
    todo.indexes = indexes
        .iter()
        .map(|i| i.iter().map(|c| (*c).to_owned()).collect())
        .collect();
    Config::default_todo()
        .with_tables(vec![todo])
        .with_database(url)
}

async fn declared_indexes_are_created_and_dropped_with_the_configuration(kind: StoreKind) {
    let db = crate::fresh_database(kind).await;
    let open = |indexes: &'static [&'static [&'static str]]| {
        let config = todo_with_indexes(db.url(), indexes);
        async move { drop(Server::open(config).await.unwrap()) }
    };
    open(&[&["complete", "text"], &["text"]]).await;
    let both = declared_index_names(kind, db.url(), "TodoItem").await;
    assert_eq!(both.len(), 2, "{both:?}");
    // Opening again with the same declaration changes nothing.
    open(&[&["complete", "text"], &["text"]]).await;
    assert_eq!(declared_index_names(kind, db.url(), "TodoItem").await, both);
    // One index left out: it is dropped, the other one kept.
    open(&[&["text"]]).await;
    let one = declared_index_names(kind, db.url(), "TodoItem").await;
    assert_eq!(one.len(), 1, "{one:?}");
    assert!(both.contains(&one[0]), "{one:?} not among {both:?}");
    // A changed key is a new index; none declared: none left, the pull indexes untouched.
    open(&[&["text", "complete"]]).await;
    let changed = declared_index_names(kind, db.url(), "TodoItem").await;
    assert_eq!(changed.len(), 1);
    assert!(!both.contains(&changed[0]), "{changed:?}");
    open(&[]).await;
    assert!(declared_index_names(kind, db.url(), "TodoItem")
        .await
        .is_empty());
    // The pull indexes, (updatedAt, id) and (createdAt, id), are still there.
    let pull: Vec<String> = index_names(kind, db.url(), "TodoItem")
        .await
        .into_iter()
        .filter(|n| n.starts_with("ix_TodoItem_"))
        .collect();
    assert_eq!(pull.len(), 2, "pull indexes gone: {pull:?}");
    // SQLite also reads the (updatedAt, id) one for a pull of the empty table. (PostgreSQL's
    // plan of an empty table that was never analyzed is a coin toss between that index and a
    // sequential scan with a sort; `explain.rs` shows its pull plans over 20 000 rows.)
    if kind == StoreKind::Sqlite {
        let server = Server::open(todo_with_indexes(db.url(), &[]))
            .await
            .unwrap();
        let plan = server
            .explain_list(
                "TodoItem",
                "$filter=updatedAt%20ge%20datetimeoffset'2024-01-01T00:00:00Z'&$orderby=updatedAt",
            )
            .await
            .unwrap();
        assert!(plan.contains("ix_TodoItem_"), "pull index gone:\n{plan}");
    }
}

/// 20 000 rows `item 1` … `item 20000`, half of them complete, then planner statistics.
async fn seed_items(kind: StoreKind, url: &str) {
    const ROWS: u32 = 20_000;
    match kind {
        StoreKind::Sqlite => {
            let conn = rusqlite::Connection::open(url).unwrap();
            conn.execute_batch(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
                 INSERT INTO \"TodoItem\" (\"id\", \"text\", \"complete\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\") \
                 SELECT printf('row-%05d', i), 'item ' || i, i % 2, \
                        strftime('%Y-%m-%dT%H:%M:%fZ', 1704067200 + i, 'unixepoch'), \
                        strftime('%Y-%m-%dT%H:%M:%fZ', 1704067200 + i, 'unixepoch'), 'v', 0 FROM n; \
                 ANALYZE;"
            ))
            .unwrap();
        }
        StoreKind::Postgres => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(&format!(
                "INSERT INTO \"TodoItem\" (\"id\", \"text\", \"complete\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\") \
                 SELECT 'row-' || lpad(i::text, 5, '0'), 'item ' || i, i % 2 = 1, ts, ts, 'v', false \
                 FROM (SELECT i, timestamptz '2024-01-01T00:00:00Z' + i * interval '1 second' AS ts \
                       FROM generate_series(1, {ROWS}) i) s"
            ))
            .execute(&mut conn)
            .await
            .unwrap();
            sqlx::query("ANALYZE \"TodoItem\"")
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// The bench's query with a selective prefix: `complete eq false and startswith(text, …)`,
/// ordered by text, top 50.
const QUERY: &str =
    "$filter=complete%20eq%20false%20and%20startswith(text,'item%201234')&$orderby=text&$top=50";

async fn startswith_on_an_indexed_column_is_an_index_range_read(kind: StoreKind) {
    let db = crate::fresh_database(kind).await;
    let server = Server::open(todo_with_indexes(db.url(), &[&["complete", "text"]]))
        .await
        .unwrap();
    seed_items(kind, db.url()).await;
    let plan = server.explain_list("TodoItem", QUERY).await.unwrap();
    println!("--- {} plan with the index:\n{plan}\n", kind.name());
    let ranged = match kind {
        // Equality on `complete`, the range on `text`; ORDER BY text, id straight from the
        // index (`id` is its last key column), so no sort either.
        StoreKind::Sqlite => {
            plan.contains("USING INDEX ixd_TodoItem_")
                && plan.contains("(complete=? AND text>? AND text<?)")
                && !plan.contains("TEMP B-TREE")
        }
        StoreKind::Postgres => {
            // The name is quoted: it has capitals.
            plan.contains("Index Scan using \"ixd_TodoItem_")
                && plan.contains("(text >= ")
                && plan.contains("(text < ")
                && !plan.contains("Seq Scan")
                && !plan.contains("Sort")
        }
    };
    assert!(ranged, "not a range read of the declared index:\n{plan}");
    drop(server);
    // The same query without the index: the plan cannot use one (what the bench's "without"
    // row measures), which also shows the check above is not vacuous.
    let server = Server::open(todo_with_indexes(db.url(), &[]))
        .await
        .unwrap();
    let plan = server.explain_list("TodoItem", QUERY).await.unwrap();
    println!("--- {} plan without it:\n{plan}\n", kind.name());
    assert!(!plan.contains("ixd_"), "{plan}");
}

/// Texts at the edges of code point order and of the old substring test.
const TEXTS: &[&str] = &[
    "",
    "a",
    "ab",
    "abc",
    "a\u{10FFFF}",
    "a\u{10FFFF}\u{10FFFF}b",
    "b",
    "\u{10FFFF}",
    "\u{10FFFF}x",
    "\u{D7FF}",
    "\u{D7FF}z",
    "\u{E000}",
    "\u{FFFF}",
    "\u{10000}",
    "\u{7F}",
    "\u{80}",
    "é",
    "e\u{301}",
    "%",
    "%a",
    "_",
    "a_b",
    "it's",
    "'",
    "\\",
    "Z",
    "z",
    "漢字",
    "🦀",
    "🦀x",
    "item 1",
    "item 10",
    "item 2",
];

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A prefix: a stored text, a piece of one, or one with a character changed at its end.
fn prefix(rng: &mut Rng) -> String {
    let text: Vec<char> = TEXTS[(rng.next() % TEXTS.len() as u64) as usize]
        .chars()
        .collect();
    let cut = if text.is_empty() {
        0
    } else {
        (rng.next() % (text.len() as u64 + 1)) as usize
    };
    let mut p: String = text[..cut].iter().collect();
    match rng.next() % 5 {
        0 => p.push('\u{10FFFF}'),
        1 => p.push('\u{D7FF}'),
        2 => p.push(char::from_u32(0x61 + (rng.next() % 26) as u32).unwrap()),
        _ => {}
    }
    p
}

fn ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {body}"))
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

async fn startswith_answers_like_the_reference_with_and_without_an_index(kind: StoreKind) {
    let s = TestServer::with_toml(
        kind,
        r#"
        [[tables]]
        name = "Plain"
        columns = { text = "string" }
        [[tables]]
        name = "Indexed"
        columns = { text = "string" }
        indexes = [["text"]]
        "#,
    )
    .await;
    for table in ["Plain", "Indexed"] {
        for (n, text) in TEXTS.iter().enumerate() {
            let r = s
                .post(
                    &format!("/tables/{table}"),
                    json!({"id": format!("r{n:02}"), "text": text}),
                )
                .await;
            assert_eq!(r.status, 201, "{:?}", r.body);
        }
        // A row without text: neither `startswith` nor its negation holds for it.
        let r = s
            .post(&format!("/tables/{table}"), json!({"id": "null"}))
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut prefixes: Vec<String> = vec![
        String::new(),
        "\u{10FFFF}".into(),
        "a\u{10FFFF}".into(),
        "\u{D7FF}".into(),
        "%".into(),
        "_".into(),
        "'".into(),
    ];
    prefixes.extend((0..120).map(|_| prefix(&mut rng)));
    for p in &prefixes {
        let literal = p.replace('\'', "''");
        let want: Vec<String> = {
            let mut w: Vec<String> = TEXTS
                .iter()
                .enumerate()
                .filter(|(_, t)| t.starts_with(p.as_str()))
                .map(|(n, _)| format!("r{n:02}"))
                .collect();
            w.sort();
            w
        };
        let not_want: Vec<String> = {
            let mut w: Vec<String> = TEXTS
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.starts_with(p.as_str()))
                .map(|(n, _)| format!("r{n:02}"))
                .collect();
            w.sort();
            w
        };
        for table in ["Plain", "Indexed"] {
            for (filter, expected) in [
                (format!("startswith(text, '{literal}')"), &want),
                (format!("not startswith(text, '{literal}')"), &not_want),
            ] {
                let query = format!(
                    "$filter={}&$top=1000",
                    percent_encoding::utf8_percent_encode(
                        &filter,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                );
                let r = s.get(&format!("/tables/{table}?{query}")).await;
                assert_eq!(r.status, 200, "{table} {filter:?}: {:?}", r.body);
                assert_eq!(&ids(&r.body), expected, "{table} {filter:?}");
            }
        }
    }
}

crate::store_tests!(
    declared_indexes_are_created_and_dropped_with_the_configuration,
    startswith_on_an_indexed_column_is_an_index_range_read,
    startswith_answers_like_the_reference_with_and_without_an_index
);
