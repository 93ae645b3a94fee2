//! Python plugins for the e2e tests: builds the Python SDK's template (echo), the Python
//! realtime bridge and the misbehaving fixture from source with `plugin-api/python/build.sh`
//! (componentize-py, installed by `scripts/setup`), once per test process, and runs their
//! `unittest` suites under plain CPython.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::workspace_root;

/// The Python plugins built from source: source directory (under the workspace) and the
/// component file name each is built to.
pub const PYTHON_PLUGINS: [(&str, &str); 3] = [
    ("plugin-api/python/template", "echo_py.wasm"),
    (
        "plugins/python-realtime-bridge",
        "python_realtime_bridge.wasm",
    ),
    ("tests/plugins/python-misbehave", "python_misbehave.wasm"),
];

/// What [`python_plugins`] built.
#[derive(Debug, Clone)]
pub struct PythonPlugins {
    /// The directory holding the components (`target/plugins/python`).
    pub dir: PathBuf,
    /// Each component's file name, size (bytes) and build time, as built.
    pub built: Vec<(String, u64, Duration)>,
}

/// Builds the [`PYTHON_PLUGINS`] into `target/plugins/python/`, all at once, once per test
/// process; each build's time and size are printed (figures for the docs).
///
/// # Errors
/// A build failed, with its output: when componentize-py is missing, its message says to run
/// `scripts/setup` (the tests fail, never skip).
pub fn python_plugins() -> anyhow::Result<PythonPlugins> {
    static BUILT: OnceLock<Result<PythonPlugins, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let dir = root.join("target/plugins/python");
            let builds: Vec<_> = PYTHON_PLUGINS
                .iter()
                .map(|(src, file)| {
                    let (src, out) = (root.join(src), dir.join(file));
                    let script = root.join("plugin-api/python/build.sh");
                    std::thread::spawn(move || build_one(&script, &src, &out))
                })
                .collect();
            let mut built = Vec::new();
            for ((_, file), build) in PYTHON_PLUGINS.iter().zip(builds) {
                let took = build
                    .join()
                    .map_err(|_| format!("building {file}: the build thread panicked"))??;
                let size = std::fs::metadata(dir.join(file))
                    .map_err(|e| format!("{file}: {e}"))?
                    .len();
                println!(
                    "python plugin {file}: built in {:.1} s, {:.1} MB",
                    took.as_secs_f64(),
                    size as f64 / 1e6
                );
                built.push(((*file).to_string(), size, took));
            }
            Ok(PythonPlugins { dir, built })
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_one(script: &Path, src: &Path, out: &Path) -> Result<Duration, String> {
    let started = Instant::now();
    let result = Command::new("bash")
        .arg(script)
        .arg(src)
        .arg(out)
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !result.status.success() {
        return Err(format!(
            "building the Python plugin {} failed (run scripts/setup if componentize-py is missing):\n{}{}",
            src.display(),
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        ));
    }
    Ok(started.elapsed())
}

/// Runs `python3 -m unittest` in `dir` (a plugin's directory, relative to the workspace) with the
/// SDK on `PYTHONPATH`; returns its report (unittest writes it to stderr).
///
/// # Errors
/// python3 could not run, or a test failed (the report is in the error).
pub fn run_unittest(dir: &str) -> anyhow::Result<String> {
    let root = workspace_root();
    let out = Command::new("python3")
        .args(["-m", "unittest", "-v"])
        .current_dir(root.join(dir))
        .env("PYTHONPATH", root.join("plugin-api/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .map_err(|e| anyhow::anyhow!("running python3 -m unittest in {dir}: {e}"))?;
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    anyhow::ensure!(out.status.success(), "unittest in {dir} failed:\n{report}");
    Ok(report)
}
