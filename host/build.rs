//! Embeds the web console's files: lists every file directly under `assets/console/` (not its
//! `tests/`, not `package.json`, which only serves `node --test`, not dotfiles) with its
//! `Content-Type`, as `include_bytes!`, in `$OUT_DIR/console_assets.rs`, which
//! `server::console::assets` includes. A file dropped in that folder is served at
//! `/console/assets/<name>` on the next build, with no list to keep.

use std::fmt::Write as _;
use std::path::Path;

/// Files of the folder that are not the console's (tooling).
const NOT_SERVED: &[&str] = &["package.json", "package-lock.json"];

/// The `Content-Type` served for a file name's extension; `None`: not served.
fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        // RFC 9239: one type for classic scripts, modules and worklets.
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/console");
    // A directory is watched whole: any file added, edited or removed rebuilds the list.
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<(String, &'static str, String)> = Vec::new();
    if dir.is_dir() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type()?.is_file()
                || name.starts_with('.')
                || NOT_SERVED.contains(&name.as_str())
            {
                continue;
            }
            let Some(kind) = content_type(&name) else {
                println!("cargo:warning=assets/console/{name} is not served: unknown type");
                continue;
            };
            files.push((name, kind, entry.path().display().to_string()));
        }
    }
    files.sort();
    let mut out = String::from("&[\n");
    for (name, kind, path) in &files {
        writeln!(
            out,
            "    Asset {{ name: {name:?}, content_type: {kind:?}, body: include_bytes!({path:?}) }},"
        )?;
    }
    out.push_str("]\n");
    let target = Path::new(&std::env::var("OUT_DIR")?).join("console_assets.rs");
    std::fs::write(target, out)?;
    Ok(())
}
