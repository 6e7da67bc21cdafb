//! The pull queries are index scans on both stores: the database's plan (`EXPLAIN QUERY PLAN` on
//! SQLite, `EXPLAIN` on PostgreSQL) for exactly the SQL the server runs, over enough rows that a
//! sequential scan would be the planner's choice if the index did not fit, after `ANALYZE` (no
//! `enable_seqscan = off` tricks). The plans are printed (`cargo test -- --nocapture` shows them).
//! On PostgreSQL that holds with the server's `pg_random_page_cost` (1.1): the last test shows a
//! pull's last full page planned as a sequential scan and a sort with PostgreSQL's default (4).

use tablesync_server::{Config, Server};

use crate::StoreKind;

/// Rows seeded straight into the table (faster than HTTP), one second of `updatedAt` apart.
const ROWS: u32 = 20_000;

/// Insert [`ROWS`] rows `row-00001`… with `updatedAt` = 2024-01-01T00:00:00Z + i seconds, then
/// refresh the planner statistics.
async fn seed(kind: StoreKind, url: &str) {
    match kind {
        StoreKind::Sqlite => {
            let conn = rusqlite::Connection::open(url).unwrap();
            conn.execute_batch(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
                 INSERT INTO \"TodoItem\" (\"id\", \"text\", \"complete\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\") \
                 SELECT printf('row-%05d', i), 'x', i % 2, \
                        strftime('%Y-%m-%dT%H:%M:%fZ', 1704067200 + i, 'unixepoch'), \
                        strftime('%Y-%m-%dT%H:%M:%fZ', 1704067200 + i, 'unixepoch'), 'v', i % 10 = 0 FROM n; \
                 ANALYZE;"
            ))
            .unwrap();
        }
        StoreKind::Postgres => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(&format!(
                "INSERT INTO \"TodoItem\" (\"id\", \"text\", \"complete\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\") \
                 SELECT 'row-' || lpad(i::text, 5, '0'), 'x', i % 2 = 1, ts, ts, 'v', i % 10 = 0 \
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

/// Pull tokens: near the end of the table (an incremental pull, the common case) and near its
/// start (the first pull of a large table). `(updatedAt, id)` of row 19 990 and row 10.
const TOKENS: [(&str, &str, &str); 2] = [
    ("late token", "2024-01-01T05:33:10.000Z", "row-19990"),
    ("early token", "2024-01-01T00:00:10.000Z", "row-00010"),
];

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// How a pull query reads the index.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// Reads the (updatedAt, id) index in order from the token on: a range seek, no sort.
    OrderedSeek,
    /// Uses the (updatedAt, id) index, possibly as two index searches OR-ed (BitmapOr /
    /// MULTI-INDEX OR) whose matching rows are then sorted: still only rows past the token.
    Index,
}

/// The pull queries for one token, as `(what, raw query string, expectation)`.
fn pull_queries(at: &str, id: &str) -> Vec<(&'static str, String, Expect)> {
    let keyset = format!(
        "(updatedAt gt datetimeoffset'{at}') or ((updatedAt eq datetimeoffset'{at}') and (id gt '{id}'))"
    );
    vec![
        (
            "the bare keyset condition (what the client sent before it added the range bound)",
            format!(
                "$filter={}&$orderby=updatedAt,id&$top=50&__includeDeleted=true",
                enc(&keyset)
            ),
            Expect::Index,
        ),
        (
            "our keyset pull as the client sends it: with the leading range bound",
            format!(
                "$filter={}&$orderby=updatedAt,id&$top=50&__includeDeleted=true",
                enc(&format!(
                    "(updatedAt ge datetimeoffset'{at}') and ({keyset})"
                ))
            ),
            Expect::OrderedSeek,
        ),
        (
            "our keyset pull with a leading range bound and a user filter, no tombstones",
            format!(
                "$filter={}&$orderby=updatedAt,id&$top=50",
                enc(&format!(
                    "(complete eq false) and (updatedAt ge datetimeoffset'{at}') and ({keyset})"
                ))
            ),
            Expect::OrderedSeek,
        ),
        (
            "the official clients' pull, a later page",
            format!(
                "$filter={}&$orderby=updatedAt&$top=50&$skip=50&__includeDeleted=true",
                enc(&format!("updatedAt ge datetimeoffset'{at}'"))
            ),
            Expect::OrderedSeek,
        ),
    ]
}

/// Whether `plan` reads the (updatedAt, id) index, never the whole table.
fn uses_updated_at_index(kind: StoreKind, plan: &str) -> bool {
    match kind {
        StoreKind::Sqlite => {
            plan.contains("USING INDEX ix_TodoItem_updatedAt_id")
                || plan.contains("USING COVERING INDEX ix_TodoItem_updatedAt_id")
        }
        StoreKind::Postgres => {
            plan.contains("Index Scan using ix_TodoItem_") && plan.contains("_updated")
                || plan.contains("Index Scan on \"ix_TodoItem_") && plan.contains("_updated")
                || plan.contains("Index Scan using \"ix_TodoItem_") && plan.contains("_updated")
        }
    }
}

/// Whether `plan` is an in-order range read of the index starting at the token, with no sort.
fn is_ordered_seek(kind: StoreKind, plan: &str) -> bool {
    match kind {
        StoreKind::Sqlite => {
            plan.contains("SEARCH TodoItem USING INDEX ix_TodoItem_updatedAt_id (updatedAt>")
                && !plan.contains("TEMP B-TREE")
        }
        StoreKind::Postgres => {
            plan.contains("Index Cond: (\"updatedAt\" >=")
                && !plan.contains("Sort")
                && !plan.contains("Bitmap")
        }
    }
}

fn scans_whole_table(kind: StoreKind, plan: &str) -> bool {
    match kind {
        StoreKind::Sqlite => plan.lines().any(|l| {
            l.trim() == "SCAN TodoItem" || l.contains("SCAN TodoItem USING INDEX sqlite_autoindex")
        }),
        StoreKind::Postgres => plan.contains("Seq Scan"),
    }
}

async fn pull_queries_are_index_scans(kind: StoreKind) {
    let db = crate::fresh_database(kind).await;
    let server = Server::open(Config::default_todo().with_database(db.url()))
        .await
        .unwrap();
    seed(kind, db.url()).await;
    // Print every plan first, so a failure shows them all.
    let mut checked = Vec::new();
    for (token, at, id) in TOKENS {
        for (what, query, expect) in pull_queries(at, id) {
            let plan = server.explain_list("TodoItem", &query).await.unwrap();
            println!("--- {} plan of {what}, {token}:\n{plan}\n", kind.name());
            checked.push((format!("{what}, {token}"), plan, expect));
        }
    }
    for (what, plan, expect) in &checked {
        assert!(
            uses_updated_at_index(kind, plan),
            "{what}: not on the (updatedAt, id) index:\n{plan}"
        );
        assert!(
            !scans_whole_table(kind, plan),
            "{what}: scans the whole table:\n{plan}"
        );
        if *expect == Expect::OrderedSeek {
            assert!(
                is_ordered_seek(kind, plan),
                "{what}: not an in-order index range read from the token:\n{plan}"
            );
        }
        // PostgreSQL: the token is bound as a `timestamptz`, not as text cast to one. Text
        // input to `timestamptz` is a stable function that is never folded into a constant,
        // so it showed in the plan as `('…'::cstring)::timestamp with time zone` and was
        // parsed again for every row the keyset filter tested.
        if kind == StoreKind::Postgres {
            assert!(
                !plan.contains("cstring"),
                "{what}: a date parsed from text in the plan:\n{plan}"
            );
        }
    }
}

/// Per-user tables: 20 users' rows in one table; a user's keyset pull reads the
/// (owner, updatedAt, id) index in order from the token within that owner, with no sort.
async fn per_user_pulls_are_index_range_reads_within_the_owner(kind: StoreKind) {
    let db = crate::fresh_database(kind).await;
    let mut todo = Config::todo_table();
    todo.owner_column = Some("userId".into());
    let config = Config::default_todo()
        .with_tables(vec![todo])
        .with_auth(tablesync_server::auth::AuthConfig::with_secret(
            "explain-secret-0123456789abcdef01",
        ))
        .with_database(db.url());
    let server = Server::open(config).await.unwrap();
    // 20 000 rows over 20 owners, one second of `updatedAt` apart.
    match kind {
        StoreKind::Sqlite => {
            let conn = rusqlite::Connection::open(db.url()).unwrap();
            conn.execute_batch(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
                 INSERT INTO \"TodoItem\" (\"userId\", \"id\", \"text\", \"complete\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\") \
                 SELECT 'user' || (i % 20), printf('row-%05d', i), 'x', i % 2, \
                        strftime('%Y-%m-%dT%H:%M:%fZ', 1704067200 + i, 'unixepoch'), \
                        strftime('%Y-%m-%dT%H:%M:%fZ', 1704067200 + i, 'unixepoch'), 'v', 0 FROM n; \
                 ANALYZE;"
            ))
            .unwrap();
        }
        StoreKind::Postgres => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
            sqlx::query(&format!(
                "INSERT INTO \"TodoItem\" (\"userId\", \"id\", \"text\", \"complete\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\") \
                 SELECT 'user' || (i % 20), 'row-' || lpad(i::text, 5, '0'), 'x', i % 2 = 1, ts, ts, 'v', false \
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
    let (at, id) = ("2024-01-01T05:33:10.000Z", "row-19990");
    let keyset = format!(
        "(updatedAt ge datetimeoffset'{at}') and ((updatedAt gt datetimeoffset'{at}') or ((updatedAt eq datetimeoffset'{at}') and (id gt '{id}')))"
    );
    let query = format!(
        "$filter={}&$orderby=updatedAt,id&$top=50&__includeDeleted=true",
        enc(&keyset)
    );
    let plan = server
        .explain_list_as("TodoItem", Some("user7"), &query)
        .await
        .unwrap();
    println!(
        "--- {} plan of a per-user keyset pull:\n{plan}\n",
        kind.name()
    );
    let ordered = match kind {
        StoreKind::Sqlite => plan.contains(
            "SEARCH TodoItem USING INDEX ix_TodoItem_owner_updatedAt_id (userId=? AND updatedAt>",
        ) && !plan.contains("TEMP B-TREE"),
        StoreKind::Postgres => {
            plan.contains("_updated_owner")
                && plan.contains("\"userId\" = ")
                && plan.contains("\"updatedAt\" >=")
                && !plan.contains("Sort")
                && !plan.contains("Seq Scan")
        }
    };
    assert!(
        ordered,
        "not an in-order range read of the owner's index:\n{plan}"
    );
}

crate::store_tests!(
    pull_queries_are_index_scans,
    per_user_pulls_are_index_range_reads_within_the_owner
);

/// The last full page of an official-way pull (`$top=1000` with about 1000 rows left) on a
/// PostgreSQL table where a fifth of the rows were updated: with the server's
/// `pg_random_page_cost` (1.1) an in-order index range read; with PostgreSQL's own default (4),
/// the same page on the same data is planned as a sequential scan and a sort, which is what
/// this data is for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_page_of_a_pull_is_an_index_read_with_the_servers_page_cost() {
    use sqlx::Connection;
    let db = crate::fresh_database(StoreKind::Postgres).await;
    let ours = Server::open(Config::default_todo().with_database(db.url()))
        .await
        .unwrap();
    let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
    for statement in [
        // 5000 rows 1 ms apart, as inserts leave them, then 1000 of them updated (new row
        // versions at the end of the heap, later stamps), then fresh statistics.
        "INSERT INTO \"TodoItem\" (\"id\", \"text\", \"complete\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\") \
         SELECT md5(i::text)::uuid::text, 'item ' || i, i % 2 = 1, ts, ts, 'AAAAAAAAAAE=', false \
         FROM (SELECT i, timestamptz '2024-01-01T00:00:00Z' + i * interval '1 millisecond' AS ts \
               FROM generate_series(1, 5000) i) s",
        "UPDATE \"TodoItem\" t SET \"text\" = t.\"text\" || ' edited', \"version\" = 'AAAAAAAAAAF=', \
         \"updatedAt\" = timestamptz '2024-01-02T00:00:00Z' + u.n * interval '1 millisecond' \
         FROM (SELECT \"id\", row_number() OVER (ORDER BY \"id\") AS n FROM \"TodoItem\" \
               ORDER BY \"id\" LIMIT 1000) u WHERE t.\"id\" = u.\"id\"",
        "ANALYZE \"TodoItem\"",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    // The token that leaves 1010 rows: the official clients' page before the last.
    let token: String = sqlx::query_scalar(
        "SELECT to_char(\"updatedAt\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') \
         FROM \"TodoItem\" ORDER BY \"updatedAt\" OFFSET 3990 LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let query = format!(
        "$filter={}&$orderby=updatedAt&$top=1000&__includeDeleted=true",
        enc(&format!("updatedAt ge datetimeoffset'{token}'"))
    );
    let plan = ours.explain_list("TodoItem", &query).await.unwrap();
    println!("--- with the server's pg_random_page_cost:\n{plan}\n");

    let mut database_default = Config::default_todo().with_database(db.url());
    database_default.store.pg_random_page_cost = 4.0;
    let theirs = Server::open(database_default).await.unwrap();
    let default_plan = theirs.explain_list("TodoItem", &query).await.unwrap();
    println!("--- with PostgreSQL's default random_page_cost (4):\n{default_plan}\n");

    assert!(
        is_ordered_seek(StoreKind::Postgres, &plan)
            && !scans_whole_table(StoreKind::Postgres, &plan),
        "the page is not an in-order index range read:\n{plan}"
    );
    assert!(
        scans_whole_table(StoreKind::Postgres, &default_plan),
        "the data no longer shows the difference (PostgreSQL's default also reads the index):\n{default_plan}"
    );
}
