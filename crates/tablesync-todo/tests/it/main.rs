//! End-to-end tests of the todo app against a real `tablesync serve` process: the tutorial's
//! three sections through the subcommands, and the terminal UI driven through tmux.

/// For each listed `fn name(kind: StoreKind)`, a module `name` with the tests `sqlite` and
/// `postgres` running it against a `tablesync serve` on that store (a module per test because
/// `macro_rules!` cannot glue identifiers; the same scheme as the server's and the client's
/// tests). PostgreSQL tests fail, never skip, when PostgreSQL cannot be reached.
macro_rules! store_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name($crate::util::StoreKind::Sqlite)
                }

                #[test]
                fn postgres() {
                    super::$name($crate::util::StoreKind::Postgres)
                }
            }
        )+
    };
}

mod demo;
mod tui;
mod tutorial;
mod util;
