//! Python plugins for the e2e tests: builds the Python SDK's template (echo), the Python
//! realtime bridge, the Python OpenAI LLM stage, the misbehaving fixture and the SDK's
//! pipeline-stage examples from source with `plugin-api/python/build.sh` (componentize-py,
//! installed by `scripts/setup`; each plugin's world follows from the class it exports), once
//! per test process, and runs their `unittest` suites under plain CPython.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::workspace_root;

/// The Python plugins built from source: source directory (under the workspace) and the
/// component file name each is built to.
pub const PYTHON_PLUGINS: [(&str, &str); 4] = [
    ("plugin-api/python/template", "echo_py.wasm"),
    (
        "plugins/python-realtime-bridge",
        "python_realtime_bridge.wasm",
    ),
    ("plugins/python-openai-llm", "python_openai_llm.wasm"),
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

/// The Python SDK's pipeline-stage examples (`plugin-api/python/examples`, one directory): entry
/// module, the component file name each is built to, and the interface its world exports (the
/// build picks the world from the exported class).
pub const PYTHON_STAGE_EXAMPLES: [(&str, &str, &str); 3] = [
    ("loudness_stt", "loudness_stt_py.wasm", "stt"),
    ("parrot_llm", "parrot_llm_py.wasm", "llm"),
    ("beep_tts", "beep_tts_py.wasm", "tts"),
];

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
            let jobs = PYTHON_PLUGINS
                .iter()
                .map(|(src, file)| (*src, *file, None))
                .collect();
            build_all(&workspace_root().join("target/plugins/python"), jobs)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Builds the [`PYTHON_STAGE_EXAMPLES`] into `target/plugins/python/examples/`, all at once,
/// once per test process, as [`python_plugins`] does.
///
/// # Errors
/// As [`python_plugins`].
pub fn python_stage_examples() -> anyhow::Result<PythonPlugins> {
    static BUILT: OnceLock<Result<PythonPlugins, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let jobs = PYTHON_STAGE_EXAMPLES
                .iter()
                .map(|(entry, file, _)| ("plugin-api/python/examples", *file, Some(*entry)))
                .collect();
            build_all(
                &workspace_root().join("target/plugins/python/examples"),
                jobs,
            )
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Builds each (source directory, component file, entry module) into `dir`, in parallel;
/// prints each build's time and size.
fn build_all(dir: &Path, jobs: Vec<(&str, &str, Option<&str>)>) -> Result<PythonPlugins, String> {
    let root = workspace_root();
    let builds: Vec<_> = jobs
        .iter()
        .map(|(src, file, entry)| {
            let (src, out) = (root.join(src), dir.join(file));
            let script = root.join("plugin-api/python/build.sh");
            let entry = entry.map(str::to_string);
            std::thread::spawn(move || build_one(&script, &src, &out, entry.as_deref()))
        })
        .collect();
    let mut built = Vec::new();
    for ((_, file, _), build) in jobs.iter().zip(builds) {
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
    Ok(PythonPlugins {
        dir: dir.to_path_buf(),
        built,
    })
}

fn build_one(
    script: &Path,
    src: &Path,
    out: &Path,
    entry: Option<&str>,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut command = Command::new("bash");
    command.arg(script).arg(src).arg(out);
    if let Some(entry) = entry {
        command.args(["--entry", entry]);
    }
    let result = command
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
