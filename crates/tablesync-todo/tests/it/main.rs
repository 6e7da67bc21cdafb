//! End-to-end tests of the todo app against a real `tablesync serve` process: the tutorial's
//! three sections through the subcommands, and the terminal UI driven through tmux.

mod tui;
mod tutorial;
mod util;
