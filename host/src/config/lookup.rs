//! Caller context: `[lookups.NAME]` files of known callers (a CSV file with a header row, or a
//! JSON array of objects), loaded with the config and looked up by a value of the call — the
//! caller's number by default — at call start, from memory, so a lookup never delays a greeting.
//!
//! A phone number matches however it was written: `+1 (500) 555-0001`, `+15005550001` and
//! `1-500-555-0001` are one key (see [`normalize`]). Other keys match exactly, trimmed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest lookup file loaded (bytes): 64 MiB, about a million customers. It is held in memory.
pub const MAX_LOOKUP_BYTES: u64 = 64 << 20;

/// One caller's row: column name → value.
pub type Row = BTreeMap<String, String>;

/// A loaded lookup file.
#[derive(Debug, PartialEq)]
pub struct Lookup {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The column rows are keyed by.
    pub key: String,
    /// Every column name, in file order (CSV) or sorted (JSON).
    pub columns: Vec<String>,
    rows: HashMap<String, Arc<Row>>,
}

/// Why a lookup file did not load.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is larger than [`MAX_LOOKUP_BYTES`].
    #[error("{path} is {bytes} bytes; the limit is {MAX_LOOKUP_BYTES}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// The extension is neither `.csv` nor `.json`.
    #[error("{path}: a lookup file is .csv (with a header row) or .json (an array of objects)")]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// The CSV or JSON does not parse, or is not a table.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where (record or line).
        message: String,
    },
    /// No column has the key's name.
    #[error("{path}: no column {key:?} to key rows by (columns: {columns})")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key column asked for.
        key: String,
        /// The columns there are.
        columns: String,
    },
    /// Two rows have the same key.
    #[error("{path}: rows {first} and {second} both have {key} {value:?}")]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The key column.
        key: String,
        /// The value (as written in the second row).
        value: String,
        /// 1-based data row of the first.
        first: usize,
        /// 1-based data row of the second.
        second: usize,
    },
}

impl Lookup {
    /// Loads `path`, keyed by the column `key`. Rows whose key is empty are skipped.
    ///
    /// # Errors
    /// [`LookupError`]: unreadable, too large, neither CSV nor JSON, malformed, no `key`
    /// column, or two rows with one key.
    pub fn load(path: &Path, key: &str) -> Result<Self, LookupError> {
        let unreadable = |error| LookupError::Unreadable {
            path: path.to_path_buf(),
            error,
        };
        let bytes = std::fs::metadata(path).map_err(unreadable)?.len();
        if bytes > MAX_LOOKUP_BYTES {
            return Err(LookupError::TooLarge {
                path: path.to_path_buf(),
                bytes,
            });
        }
        let text = std::fs::read(path).map_err(unreadable)?;
        let parse = |message: String| LookupError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let (columns, records) = match extension.as_deref() {
            Some("csv") => read_csv(&text).map_err(parse)?,
            Some("json") => read_json(&text).map_err(parse)?,
            _ => {
                return Err(LookupError::Format {
                    path: path.to_path_buf(),
                });
            }
        };
        if !columns.iter().any(|c| c == key) {
            return Err(LookupError::MissingKey {
                path: path.to_path_buf(),
                key: key.to_string(),
                columns: columns.join(", "),
            });
        }
        let mut rows = HashMap::with_capacity(records.len());
        let mut first_row: HashMap<String, usize> = HashMap::new();
        for (i, row) in records.into_iter().enumerate() {
            let Some(value) = row.get(key).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            let normalized = normalize(value);
            if let Some(first) = first_row.get(&normalized) {
                return Err(LookupError::Duplicate {
                    path: path.to_path_buf(),
                    key: key.to_string(),
                    value: value.clone(),
                    first: *first,
                    second: i + 1,
                });
            }
            first_row.insert(normalized.clone(), i + 1);
            rows.insert(normalized, Arc::new(row));
        }
        Ok(Self {
            path: path.to_path_buf(),
            key: key.to_string(),
            columns,
            rows,
        })
    }

    /// The row whose key is `value` (normalized as [`normalize`] says), if any.
    pub fn get(&self, value: &str) -> Option<&Arc<Row>> {
        self.rows.get(&normalize(value))
    }

    /// Rows loaded.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no row was loaded.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The key a value is matched by: a phone number (only digits, spaces and `+-().`, with at
/// least 7 digits) as its digits, with a leading `+` when written with one or when it has more
/// than 10 digits (E.164 without the plus); 10 digits are taken as a North American number
/// (`+1` added). Anything else, trimmed.
pub fn normalize(value: &str) -> String {
    let value = value.trim();
    let phone_like = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c));
    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
    if !phone_like || digits.len() < 7 {
        return value.to_string();
    }
    if value.starts_with('+') || digits.len() > 10 {
        format!("+{digits}")
    } else if digits.len() == 10 {
        format!("+1{digits}")
    } else {
        digits
    }
}

/// Header and rows of a CSV file (RFC 4180, by the `csv` crate).
fn read_csv(bytes: &[u8]) -> Result<(Vec<String>, Vec<Row>), String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(str::to_string)
        .collect();
    if columns.iter().any(String::is_empty) {
        return Err("the header row has an empty column name".into());
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        rows.push(
            columns
                .iter()
                .cloned()
                .zip(record.iter().map(str::to_string))
                .collect(),
        );
    }
    Ok((columns, rows))
}

/// Columns and rows of a JSON array of flat objects (strings, numbers, booleans; null is left
/// out).
fn read_json(bytes: &[u8]) -> Result<(Vec<String>, Vec<Row>), String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let serde_json::Value::Array(items) = value else {
        return Err("expected an array of objects".into());
    };
    let mut columns = std::collections::BTreeSet::new();
    let mut rows = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let serde_json::Value::Object(object) = item else {
            return Err(format!("item {}: expected an object", i + 1));
        };
        let mut row = Row::new();
        for (name, value) in object {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => continue,
                _ => {
                    return Err(format!(
                        "item {}: {name}: expected a string, number or boolean",
                        i + 1
                    ));
                }
            };
            columns.insert(name.clone());
            row.insert(name, text);
        }
        rows.push(row);
    }
    Ok((columns.into_iter().collect(), rows))
}

/// Fills `{caller.COLUMN}` placeholders of `template` from `row`; with no row (an unknown
/// caller), or a column the row lacks, the placeholder becomes empty text.
pub fn render_caller(template: &str, row: Option<&Row>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{caller.") {
        let after = &rest[start + "{caller.".len()..];
        let Some(end) = after.find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let column = &after[..end];
        if let Some(value) = row.and_then(|r| r.get(column)) {
            out.push_str(value);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Instructions for a call of an agent with a caller context: `template` with its
/// `{caller.COLUMN}` placeholders filled ([`render_caller`]); a template without any gets the
/// caller's row appended as a paragraph when the caller was found (so a model knows whom it
/// speaks to), and is left as it is when not.
pub fn caller_instructions(template: &str, row: Option<&Row>, lookup: &str) -> String {
    if !caller_placeholders(template).is_empty() {
        return render_caller(template, row);
    }
    let Some(row) = row else {
        return template.to_string();
    };
    let mut out = template.trim_end().to_string();
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(&format!("The caller, as the {lookup} file knows them: "));
    let fields: Vec<String> = row.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    out.push_str(&fields.join("; "));
    out.push('.');
    out
}

/// The `{caller.COLUMN}` placeholders `template` names, in order.
pub fn caller_placeholders(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{caller.") {
        let after = &rest[start + "{caller.".len()..];
        let Some(end) = after.find('}') else {
            break;
        };
        names.push(&after[..end]);
        rest = &after[end + 1..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::test_support::TempDir;

    fn file(name: &str, text: &str) -> (TempDir, PathBuf) {
        let dir = TempDir::new();
        let path = dir.write(name, text.as_bytes());
        (dir, path)
    }

    #[test]
    fn numbers_match_however_they_are_written() {
        for written in [
            "+15005550001",
            "+1 (500) 555-0001",
            "1-500-555-0001",
            "(500) 555-0001",
            " +1.500.555.0001 ",
        ] {
            assert_eq!(normalize(written), "+15005550001", "{written}");
        }
        assert_eq!(normalize("+44 20 7946 0958"), "+442079460958");
        assert_eq!(normalize("merchant-7"), "merchant-7");
        assert_eq!(normalize(" 12345 "), "12345", "too short for a number");
    }

    #[test]
    fn a_csv_file_loads_keyed_by_its_column() {
        let (_dir, path) = file(
            "customers.csv",
            "phone,name,order\n+1 (500) 555-0001,Ada Lovelace,1234\n\"+15005550002\",\"Hopper, Grace\",\n,No Number,9\n",
        );
        let lookup = Lookup::load(&path, "phone").unwrap();
        assert_eq!(lookup.len(), 2, "the row without a number is skipped");
        assert_eq!(lookup.columns, ["phone", "name", "order"]);
        let ada = lookup.get("+15005550001").unwrap();
        assert_eq!(ada["name"], "Ada Lovelace");
        assert_eq!(ada["order"], "1234");
        assert_eq!(lookup.get("500-555-0002").unwrap()["name"], "Hopper, Grace");
        assert!(lookup.get("+15005550003").is_none());
    }

    #[test]
    fn a_json_file_loads_keyed_by_its_field() {
        let (_dir, path) = file(
            "merchants.json",
            r#"[{"id": "m-7", "name": "Corner Shop", "open": true, "tables": 12, "note": null}]"#,
        );
        let lookup = Lookup::load(&path, "id").unwrap();
        let row = lookup.get("m-7").unwrap();
        assert_eq!(row["open"], "true");
        assert_eq!(row["tables"], "12");
        assert!(!row.contains_key("note"));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let (_d1, missing_key) = file("a.csv", "number,name\n+15005550001,Ada\n");
        let e = Lookup::load(&missing_key, "phone").unwrap_err().to_string();
        assert!(
            e.contains("no column \"phone\"") && e.contains("number, name"),
            "{e}"
        );

        let (_d2, duplicate) = file(
            "b.csv",
            "phone,name\n+15005550001,Ada\n(500) 555-0001,Eve\n",
        );
        let e = Lookup::load(&duplicate, "phone").unwrap_err().to_string();
        assert!(e.contains("rows 1 and 2"), "{e}");

        let (_d3, ragged) = file("c.csv", "phone,name\n+15005550001,Ada,extra\n");
        assert!(matches!(
            Lookup::load(&ragged, "phone"),
            Err(LookupError::Parse { .. })
        ));

        let (_d4, not_a_table) = file("d.json", r#"{"phone": "+15005550001"}"#);
        let e = Lookup::load(&not_a_table, "phone").unwrap_err().to_string();
        assert!(e.contains("array of objects"), "{e}");

        let (_d5, nested) = file("e.json", r#"[{"phone": "+15005550001", "orders": [1]}]"#);
        let e = Lookup::load(&nested, "phone").unwrap_err().to_string();
        assert!(e.contains("item 1: orders"), "{e}");

        let (_d6, yaml) = file("f.yaml", "phone: 1");
        assert!(matches!(
            Lookup::load(&yaml, "phone"),
            Err(LookupError::Format { .. })
        ));
        assert!(matches!(
            Lookup::load(Path::new("/nonexistent/x.csv"), "phone"),
            Err(LookupError::Unreadable { .. })
        ));
    }

    #[test]
    fn placeholders_fill_from_the_row_or_empty() {
        let row: Row = [("name".to_string(), "Ada".to_string())].into();
        let template = "Hello {caller.name}{caller.title}! {task.prompt} {caller.";
        assert_eq!(
            render_caller(template, Some(&row)),
            "Hello Ada! {task.prompt} {caller."
        );
        assert_eq!(
            render_caller(template, None),
            "Hello ! {task.prompt} {caller."
        );
        assert_eq!(caller_placeholders(template), ["name", "title"]);
    }

    #[test]
    fn instructions_get_the_caller_filled_in_or_appended() {
        let row: Row = [
            ("name".to_string(), "Ada".to_string()),
            ("order".to_string(), "1234".to_string()),
        ]
        .into();
        assert_eq!(
            caller_instructions("Greet {caller.name}.", Some(&row), "customers"),
            "Greet Ada."
        );
        assert_eq!(
            caller_instructions("Be brief.", Some(&row), "customers"),
            "Be brief.\n\nThe caller, as the customers file knows them: name: Ada; order: 1234."
        );
        assert_eq!(
            caller_instructions("Be brief.", None, "customers"),
            "Be brief."
        );
    }
}
