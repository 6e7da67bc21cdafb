//! Issue 10.1: a `kill -9` of the server in the middle of group commits loses no acknowledged
//! write. The kill harness of `crash.rs`, with many more concurrent writers, so that writes
//! queue for the writer (SQLite) or a table's clock row (PostgreSQL) and commit in groups;
//! every write is acknowledged only after the commit holding it returned, so every
//! acknowledged write must be in the database after each kill (the one in flight per writer
//! may or may not be). Before each kill the server's metrics are read: the kills must come
//! while commits of several writes happen, or the test would prove nothing about groups.

use crate::crash::server_killed_mid_writes_with;
use crate::util::StoreKind;

/// Concurrent writers, one request at a time each: enough to form groups on 2 cores.
const GROUP_WRITERS: usize = 16;

fn killed_mid_group_commits(kind: StoreKind) {
    let grouped = server_killed_mid_writes_with(kind, GROUP_WRITERS);
    assert!(
        grouped.iter().any(|&n| n > 0.0),
        "no commit carried more than one write before any kill: {grouped:?}"
    );
}

#[test]
fn server_killed_mid_group_commits_loses_no_acknowledged_write_sqlite() {
    killed_mid_group_commits(StoreKind::Sqlite);
}

#[test]
fn server_killed_mid_group_commits_loses_no_acknowledged_write_postgres() {
    killed_mid_group_commits(StoreKind::Postgres);
}
