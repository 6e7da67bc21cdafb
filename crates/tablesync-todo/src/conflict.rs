//! A conflict as the app shows it: one operation error of the last push that carries the
//! server's copy of the item (a 409/412, or an item the server confirmed deleted), seen as two
//! versions of a todo item — mine (what the push sent) and the server's — and the two choices
//! the dialog offers. Pure: reading the SDK's [`OperationError`] and deciding what each choice
//! writes; `App::resolve` applies it through the SDK's `Resolver`.

use serde_json::{Map, Value};
use tablesync_client::{OpKind, OperationError};

/// One side of a conflict: the item's text and completion, or a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    /// The item exists with this content.
    Item {
        /// Its text.
        text: String,
        /// Whether it is done.
        complete: bool,
    },
    /// The item is deleted (my queued delete, or the server's tombstone).
    Deleted,
}

impl Version {
    /// The version an item body (JSON object) holds; `deleted: true` is a delete.
    fn of(item: &Map<String, Value>) -> Version {
        if item.get("deleted") == Some(&Value::Bool(true)) {
            return Version::Deleted;
        }
        Version::Item {
            text: item
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            complete: item
                .get("complete")
                .and_then(Value::as_bool)
                .unwrap_or_default(),
        }
    }

    /// `[x] Buy milk`, or `(deleted)`.
    pub fn display(&self) -> String {
        match self {
            Version::Item { text, complete } => {
                format!("{} {text}", if *complete { "[x]" } else { "[ ]" })
            }
            Version::Deleted => "(deleted)".to_string(),
        }
    }
}

/// Which version a resolution keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Mine: the local change goes to the server on the next push (client wins).
    Mine,
    /// The server's: the local change is dropped and the server's copy becomes the local row.
    Server,
}

/// A conflict of the last push, for the dialog. Plain data taken from the SDK's error; the
/// resolution looks the error up again by [`Conflict::operation_id`], so it always applies to
/// the store's current one.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The queued operation's id: the same conflict across two pushes has the same one.
    pub operation_id: String,
    /// The queued operation's kind.
    pub kind: OpKind,
    /// What the push sent.
    pub item: Map<String, Value>,
    /// The server's copy (a tombstone when it deleted the item).
    pub server_item: Map<String, Value>,
    /// What this app sent, as a version.
    pub mine: Version,
    /// What the server holds, as a version.
    pub server: Version,
}

impl Conflict {
    /// The conflict an operation error describes: only errors that carry the server's copy
    /// (anything else — a 5xx, no answer — stays queued and is retried, it is not a choice).
    pub fn from_error(error: &OperationError) -> Option<Conflict> {
        Some(Conflict::new(
            &error.operation_id,
            error.kind,
            error.item.clone(),
            error.result.clone()?,
        ))
    }

    /// A conflict from its parts (what [`Conflict::from_error`] reads).
    pub fn new(
        operation_id: &str,
        kind: OpKind,
        item: Map<String, Value>,
        server_item: Map<String, Value>,
    ) -> Conflict {
        let server = Version::of(&server_item);
        let mine = if kind == OpKind::Delete {
            Version::Deleted
        } else {
            Version::of(&item)
        };
        Conflict {
            operation_id: operation_id.to_string(),
            kind,
            item,
            server_item,
            mine,
            server,
        }
    }

    /// The item's text, from whichever side has one (for headlines).
    pub fn text(&self) -> &str {
        match (&self.mine, &self.server) {
            (Version::Item { text, .. }, _) | (_, Version::Item { text, .. }) => text,
            _ => "",
        }
    }

    /// One sentence saying what happened.
    pub fn headline(&self) -> String {
        let text = self.text();
        match (&self.mine, &self.server) {
            (Version::Item { .. }, Version::Deleted) => {
                format!("\u{201c}{text}\u{201d} was deleted on the server; you changed it.")
            }
            (Version::Deleted, _) => {
                format!("You deleted \u{201c}{text}\u{201d}; the server changed it.")
            }
            (Version::Item { .. }, Version::Item { .. }) if self.kind == OpKind::Insert => {
                format!("\u{201c}{text}\u{201d} already exists on the server, with other content.")
            }
            (Version::Item { .. }, Version::Item { .. }) => {
                format!("\u{201c}{text}\u{201d} was changed here and on the server.")
            }
        }
    }

    /// The body "keep mine" queues for an item the server still has: my item with the
    /// server's `version`, so the next push overwrites the server's copy (the SDK's
    /// update-operation, as `tablesync resolve --keep client`). `None` when the server deleted
    /// the item: it cannot be updated, keeping mine means adding it again.
    pub fn mine_over_server(&self) -> Option<Map<String, Value>> {
        if self.server == Version::Deleted {
            return None;
        }
        let mut item = self.item.clone();
        if let Some(version) = self.server_item.get("version") {
            item.insert("version".into(), version.clone());
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(kind: OpKind, item: Value, result: Value) -> Conflict {
        let obj = |v: Value| v.as_object().cloned().unwrap();
        Conflict::new("op-1", kind, obj(item), obj(result))
    }

    #[test]
    fn versions_headlines_and_keep_mine_bodies() {
        let c = error(
            OpKind::Update,
            json!({"id": "i1", "text": "Buy milk", "complete": true, "version": "v1"}),
            json!({"id": "i1", "text": "Buy oat milk", "complete": false, "version": "v2"}),
        );
        assert_eq!(c.mine.display(), "[x] Buy milk");
        assert_eq!(c.server.display(), "[ ] Buy oat milk");
        assert_eq!(
            c.headline(),
            "\u{201c}Buy milk\u{201d} was changed here and on the server."
        );
        let body = c.mine_over_server().unwrap();
        assert_eq!(body["version"], json!("v2"));
        assert_eq!(body["text"], json!("Buy milk"));

        let gone = error(
            OpKind::Update,
            json!({"id": "i1", "text": "Walk", "complete": false}),
            json!({"id": "i1", "deleted": true}),
        );
        assert_eq!(gone.server, Version::Deleted);
        assert_eq!(gone.mine_over_server(), None);
        assert!(gone.headline().contains("deleted on the server"));

        let mine_deleted = error(
            OpKind::Delete,
            json!({"id": "i1", "text": "Old", "complete": false}),
            json!({"id": "i1", "text": "New", "complete": false, "version": "v3"}),
        );
        assert_eq!(mine_deleted.mine, Version::Deleted);
        assert_eq!(mine_deleted.text(), "New");
        assert!(mine_deleted.headline().starts_with("You deleted"));
    }
}
