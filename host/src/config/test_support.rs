//! Test helpers shared by the config and routing tests: a self-deleting temp directory
//! (no `tempfile` crate) and one-call config building with a fake environment.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Config, ConfigErrors, EnvLookup, Source, from_source};

/// A fresh directory under `std::env::temp_dir()`, removed (best effort) on drop.
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a directory unique to this process and call.
    pub(crate) fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "switchboard-config-test-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `rel` (creating parent directories); returns the full path.
    pub(crate) fn write(&self, rel: &str, contents: &[u8]) -> PathBuf {
        let path = self.path.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dir");
        }
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// An environment with no variables set.
pub(crate) fn no_env(_: &str) -> Option<String> {
    None
}

/// Builds a config from `text` as if it were `DIR/agents.toml`, where `DIR` is a new
/// temp dir containing `echo.wasm` (so `path = "echo.wasm"` is valid). The `TempDir` is
/// returned so the plugin file outlives the config.
pub(crate) fn build(text: &str, env: EnvLookup<'_>) -> (TempDir, Result<Config, ConfigErrors>) {
    let dir = TempDir::new();
    dir.write("echo.wasm", b"\0asm");
    let source = Source::new(dir.path().join("agents.toml"), text);
    let result = from_source(&source, env);
    (dir, result)
}

/// [`build`] that must succeed.
pub(crate) fn build_ok(text: &str) -> (TempDir, Config) {
    let (dir, result) = build(text, &no_env);
    match result {
        Ok(config) => (dir, config),
        Err(errors) => panic!("config should be valid, got:\n{errors}"),
    }
}

/// [`build`] that must fail; returns the errors.
pub(crate) fn build_err(text: &str, env: EnvLookup<'_>) -> ConfigErrors {
    match build(text, env).1 {
        Ok(config) => panic!("config should be invalid, got {config:#?}"),
        Err(errors) => errors,
    }
}
