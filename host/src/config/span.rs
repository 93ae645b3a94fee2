//! Source positions for configuration errors: key paths (`agents[1].realtime.plugin`),
//! byte offset -> 1-based line/column, and a [`Locator`] that maps between byte spans
//! and key paths by walking toml's spanned document tree.
//!
//! Typed fields carry their own spans (`toml::Spanned`), but two kinds of error do not:
//! serde/TOML errors (they only have a byte span, and we want the key path too) and
//! problems inside free-form settings tables (they have a key path, and we want the
//! line). The locator re-parses the source text into `toml::de::DeTable`, which keeps a
//! span on every key and value, and answers both questions. It only runs on the error
//! path, so its cost does not matter.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a [`KeyPath`]: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A table key, e.g. `realtime`.
    Key(String),
    /// A 0-based array index, e.g. the `1` of `agents[1]`.
    Index(usize),
}

/// A dotted key path into the configuration document, rendered like
/// `agents[1].realtime.plugin` or `plugins."my.plugin".path`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    /// The path of the document root (renders as an empty string).
    pub(crate) fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by table key `key`.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    /// This path extended by array index `index` (0-based).
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }

    /// Whether this is the root path.
    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path one step up (`agents[1].realtime` for `agents[1].realtime.settings`), or
    /// `None` for the root.
    pub(crate) fn parent(&self) -> Option<Self> {
        let (_, up) = self.0.split_last()?;
        Some(Self(up.to_vec()))
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare_key(k) {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether `key` can be written as a TOML bare key (otherwise it is shown quoted).
fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
///
/// Offsets past the end or inside a multi-byte character are clamped to the nearest
/// preceding character boundary, so this never panics.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Byte offset of `value[pos..]` inside the source text, given the span of the TOML
/// string literal that produced `value`.
///
/// Exact when the literal is a single-line string without escapes (the common case);
/// otherwise falls back to the start of the literal, which is still the right line.
pub(crate) fn offset_in_string(text: &str, span: &Range<usize>, value: &str, pos: usize) -> usize {
    let Some(raw) = text.get(span.clone()) else {
        return span.start;
    };
    for quote in ['"', '\''] {
        if raw.len() >= 2
            && raw.starts_with(quote)
            && raw.ends_with(quote)
            && !raw.starts_with(&format!("{quote}{quote}{quote}"))
            && raw.get(1..raw.len() - 1) == Some(value)
        {
            return span.start + 1 + pos;
        }
    }
    span.start
}

/// Maps byte spans to key paths and key paths to byte spans using toml's spanned
/// document tree.
pub(crate) struct Locator<'t> {
    text: &'t str,
    root: DeTable<'t>,
}

/// A node found while walking the tree: its path, span, and whether it is a table that
/// was opened by a `[header]`.
struct Node {
    path: KeyPath,
    span: Range<usize>,
    is_header_table: bool,
}

impl<'t> Locator<'t> {
    /// Parses `text` (with error recovery, so a partial tree is available even for a
    /// document with syntax errors).
    pub(crate) fn new(text: &'t str) -> Self {
        let (root, _errors) = DeTable::parse_recoverable(text);
        Self {
            text,
            root: root.into_inner(),
        }
    }

    /// The key path of the smallest key or value whose span contains `span`.
    ///
    /// Ties go to the deeper path, so the span of an `[[agents]]` header maps to
    /// `agents[1]` rather than `agents`.
    pub(crate) fn path_at(&self, span: &Range<usize>) -> Option<KeyPath> {
        let mut best: Option<Node> = None;
        self.for_each_node(&mut |node| {
            let contains = node.span.start <= span.start && span.end <= node.span.end;
            if !contains || node.path.is_root() {
                return;
            }
            let better = match &best {
                None => true,
                Some(b) => {
                    let (len, best_len) = (node.span.len(), b.span.len());
                    len < best_len || (len == best_len && node.path.0.len() > b.path.0.len())
                }
            };
            if better {
                best = Some(node);
            }
        });
        best.map(|n| n.path)
    }

    /// The path of the `[header]` table that encloses byte `offset`: the header table
    /// that starts last at or before it. Used for syntax errors, whose span often lies
    /// outside every parsed node.
    pub(crate) fn enclosing_header_table(&self, offset: usize) -> Option<KeyPath> {
        let mut best: Option<Node> = None;
        self.for_each_node(&mut |node| {
            if !node.is_header_table || node.span.start > offset {
                return;
            }
            if best
                .as_ref()
                .is_none_or(|b| node.span.start >= b.span.start)
            {
                best = Some(node);
            }
        });
        best.map(|n| n.path)
    }

    /// The span of the value at `path`, if the document has one.
    pub(crate) fn span_of(&self, path: &KeyPath) -> Option<Range<usize>> {
        let mut segs = path.0.iter();
        let first = match segs.next()? {
            Seg::Key(k) => self.root.get(k.as_str())?,
            Seg::Index(_) => return None,
        };
        let mut current: &Spanned<DeValue<'t>> = first;
        for seg in segs {
            current = match (seg, current.get_ref()) {
                (Seg::Key(k), DeValue::Table(t)) => t.get(k.as_str())?,
                (Seg::Index(i), DeValue::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(current.span())
    }

    /// The span of the value at `path`, or, when the document does not spell that key
    /// out (a default, an absent `settings` table), of its nearest ancestor that it does.
    /// `None` when not even the top-level key is in the document.
    pub(crate) fn span_of_nearest(&self, path: &KeyPath) -> Option<Range<usize>> {
        let mut path = path.clone();
        loop {
            if let Some(span) = self.span_of(&path) {
                return Some(span);
            }
            path = path.parent().filter(|p| !p.is_root())?;
        }
    }

    /// The source text this locator was built from.
    pub(crate) fn text(&self) -> &'t str {
        self.text
    }

    fn for_each_node(&self, f: &mut dyn FnMut(Node)) {
        walk_table(self.text, &self.root, &KeyPath::root(), f);
    }
}

fn walk_table(text: &str, table: &DeTable<'_>, path: &KeyPath, f: &mut dyn FnMut(Node)) {
    for (key, value) in table.iter() {
        let path = path.key(key.get_ref());
        f(Node {
            path: path.clone(),
            span: key.span(),
            is_header_table: false,
        });
        walk_value(text, value, &path, f);
    }
}

fn walk_value(text: &str, value: &Spanned<DeValue<'_>>, path: &KeyPath, f: &mut dyn FnMut(Node)) {
    let span = value.span();
    let is_header_table = matches!(value.get_ref(), DeValue::Table(_))
        && text.as_bytes().get(span.start) == Some(&b'[');
    f(Node {
        path: path.clone(),
        span,
        is_header_table,
    });
    match value.get_ref() {
        DeValue::Table(t) => walk_table(text, t, path, f),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                walk_value(text, item, &path.index(i), f);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_path_renders_dots_indexes_and_quotes() {
        let p = KeyPath::root()
            .key("agents")
            .index(1)
            .key("realtime")
            .key("plugin");
        assert_eq!(p.to_string(), "agents[1].realtime.plugin");
        let q = KeyPath::root().key("plugins").key("my.plugin").key("path");
        assert_eq!(q.to_string(), r#"plugins."my.plugin".path"#);
        assert_eq!(KeyPath::root().to_string(), "");
    }

    #[test]
    fn line_col_is_one_based_and_counts_chars() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_col(text, 6 + 3), (2, 3));
        assert_eq!(line_col(text, 999), (3, 1));
    }

    #[test]
    fn offset_in_string_is_exact_for_plain_literals_only() {
        let text = r#"k = "ab${X}""#;
        let span = 4..text.len();
        assert_eq!(offset_in_string(text, &span, "ab${X}", 2), 7);
        let escaped = r#"k = "a\tb${X}""#;
        let span = 4..escaped.len();
        assert_eq!(offset_in_string(escaped, &span, "a\tb${X}", 3), 4);
    }

    #[test]
    fn locator_maps_both_ways() {
        let text = "[server]\nlisten = \"x\"\n\n[[agents]]\nname = \"a\"\n\n[[agents]]\nname = \"b\"\nrealtime = { plugin = \"p\", settings = { voice = [\"a\", \"b\"] } }\n";
        let loc = Locator::new(text);
        let second_header = text.rfind("[[agents]]").map_or(0, |o| o);
        let p = loc.path_at(&(second_header..second_header + 10));
        assert_eq!(p.map(|p| p.to_string()).as_deref(), Some("agents[1]"));
        let plugin = text.find("\"p\"").map_or(0, |o| o);
        let p = loc.path_at(&(plugin..plugin + 3));
        assert_eq!(
            p.map(|p| p.to_string()).as_deref(),
            Some("agents[1].realtime.plugin")
        );
        let path = KeyPath::root()
            .key("agents")
            .index(1)
            .key("realtime")
            .key("settings")
            .key("voice")
            .index(1);
        let span = loc.span_of(&path).unwrap_or(0..0);
        assert_eq!(&text[span], "\"b\"");
        let absent = KeyPath::root()
            .key("agents")
            .index(0)
            .key("realtime")
            .key("settings");
        let span = loc.span_of_nearest(&absent).unwrap_or(0..0);
        assert_eq!(line_col(text, span.start).0, 4, "falls back to agents[0]");
        assert_eq!(loc.span_of_nearest(&KeyPath::root().key("routing")), None);
        assert_eq!(
            absent.parent().map(|p| p.to_string()).as_deref(),
            Some("agents[0].realtime")
        );
        assert_eq!(KeyPath::root().parent(), None);
        assert_eq!(
            loc.enclosing_header_table(text.len())
                .map(|p| p.to_string())
                .as_deref(),
            Some("agents[1]")
        );
    }
}
