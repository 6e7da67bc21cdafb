//! Fitting text into a terminal of any size: display widths (a CJK character takes two
//! columns), ellipsizing, word wrapping, packing short segments into lines, and a URL shortened
//! to its host and port. Pure; the screen at 50×12 and at 200×50 is built from these.

use ratatui::text::Span;

/// The ellipsis that ends a cut text.
pub const ELLIPSIS: char = '\u{2026}';

/// Separator between the segments of a packed line (help keys, status facts).
pub const SEPARATOR: &str = " \u{b7} ";

/// Columns `c` takes on screen (as ratatui counts them).
fn char_width(c: char) -> usize {
    let mut buf = [0u8; 4];
    Span::raw(&*c.encode_utf8(&mut buf)).width()
}

/// Columns `s` takes on screen.
pub fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// Control characters become spaces: text from the store or the server must not move the
/// cursor or change the terminal's state.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `s` cut to at most `max` columns, ending in `…` when cut.
pub fn ellipsize(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_width(c);
        if used + w > max - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push(ELLIPSIS);
    out
}

/// `s` wrapped at spaces into lines of at most `max` columns; a word longer than a line is cut
/// across lines. Newlines in `s` start new lines. Always at least one line.
pub fn wrap(s: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut lines = Vec::new();
    for para in s.split('\n') {
        let mut line = String::new();
        let mut used = 0;
        for word in para.split(' ').filter(|w| !w.is_empty()) {
            let w = width(word);
            if used > 0 && used + 1 + w <= max {
                line.push(' ');
                line.push_str(word);
                used += 1 + w;
                continue;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut line));
                used = 0;
            }
            // Cut a word that does not fit a line on its own.
            for c in word.chars() {
                let cw = char_width(c);
                if used + cw > max && used > 0 {
                    lines.push(std::mem::take(&mut line));
                    used = 0;
                }
                line.push(c);
                used += cw;
            }
        }
        lines.push(line);
    }
    lines
}

/// The segments joined with [`SEPARATOR`] into lines of at most `max` columns, in order, a
/// segment never split (one wider than a line is ellipsized); at most `lines_max` lines, the
/// segments that do not fit dropped (callers put the important ones first).
pub fn pack(segments: &[String], max: usize, lines_max: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for seg in segments {
        let seg = ellipsize(seg, max);
        if line.is_empty() {
            line = seg;
        } else if width(&line) + width(SEPARATOR) + width(&seg) <= max {
            line.push_str(SEPARATOR);
            line.push_str(&seg);
        } else {
            lines.push(std::mem::replace(&mut line, seg));
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines.truncate(lines_max);
    lines
}

/// The host and port of a URL (`http://127.0.0.1:8080/very/long?x=…` → `127.0.0.1:8080`):
/// what a person needs to tell which server, without the path, query or credentials.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipsize_wrap_and_pack_respect_the_width() {
        assert_eq!(ellipsize("Buy milk", 8), "Buy milk");
        assert_eq!(ellipsize("Buy milk", 5), "Buy \u{2026}");
        assert_eq!(ellipsize("Buy milk", 0), "");
        // Wide characters count two columns.
        assert_eq!(width("日本"), 4);
        assert_eq!(ellipsize("日本語", 4), "日\u{2026}");

        assert_eq!(wrap("one two three four", 9), ["one two", "three", "four"]);
        assert_eq!(wrap(&"x".repeat(12), 5), ["xxxxx", "xxxxx", "xx"]);
        assert_eq!(wrap("a\nb", 10), ["a", "b"]);
        assert_eq!(wrap("", 10), [""]);
        for line in wrap(&"word ".repeat(100), 17) {
            assert!(width(&line) <= 17, "{line}");
        }

        let segs: Vec<String> = ["a add", "d delete", "q quit"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(pack(&segs, 80, 2), ["a add \u{b7} d delete \u{b7} q quit"]);
        assert_eq!(pack(&segs, 16, 2), ["a add \u{b7} d delete", "q quit"]);
        assert_eq!(pack(&segs, 16, 1), ["a add \u{b7} d delete"]);
        assert_eq!(
            pack(&["x".repeat(30)], 10, 2),
            [format!("{}\u{2026}", "x".repeat(9))]
        );
    }

    #[test]
    fn host_port_drops_path_query_and_credentials() {
        assert_eq!(host_port("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(
            host_port(&format!("http://127.0.0.1:9/{}?q=1", "a%20".repeat(150))),
            "127.0.0.1:9"
        );
        assert_eq!(host_port("https://u:p@example.com/x"), "example.com");
        assert_eq!(host_port("example.com:80"), "example.com:80");
    }

    #[test]
    fn printable_replaces_control_characters() {
        assert_eq!(printable("a\u{7}b\nc"), "a b c");
    }
}
