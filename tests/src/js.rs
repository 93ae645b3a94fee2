//! JavaScript plugins for the end-to-end tests: built from source with the JS SDK's build script
//! (`node plugin-api/js/build.mjs`, componentize-js pinned in plugin-api/js/package-lock.json,
//! installed by `scripts/setup`), once per test process. The build picks each plugin's world
//! (realtime or a pipeline stage) from what its module declares.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::workspace_root;

/// The JavaScript plugins the tests load: `(component name, plugin module under the workspace)`.
pub const JS_PLUGINS: &[(&str, &str)] = &[
    ("js_echo", "plugin-api/js/template/plugin.js"),
    ("js_realtime_bridge", "plugins/js-realtime-bridge/plugin.js"),
    ("js_misbehave", "tests/js-plugins/misbehave/plugin.js"),
    ("js_openai_llm", "plugins/js-openai-llm/plugin.js"),
    ("js_example_stt", "plugin-api/js/examples/stt.js"),
    ("js_example_tts", "plugin-api/js/examples/tts.js"),
];

/// What [`js_plugins`] built.
#[derive(Debug, Clone)]
pub struct JsPlugins {
    /// The directory holding `<name>.wasm` for every entry of [`JS_PLUGINS`].
    pub dir: PathBuf,
    /// How long each build took, by name.
    pub build_times: Vec<(String, Duration)>,
}

/// The JS SDK's directory (`plugin-api/js`), after checking its toolchain is installed.
///
/// # Errors
/// `node` is missing, or `plugin-api/js/node_modules` is (`scripts/setup` installs both).
pub fn sdk_dir() -> anyhow::Result<PathBuf> {
    let sdk = workspace_root().join("plugin-api/js");
    if !sdk
        .join("node_modules/@bytecodealliance/componentize-js")
        .is_dir()
    {
        bail!(
            "{}/node_modules is missing: run scripts/setup (it runs `npm ci` there) to build JavaScript plugins",
            sdk.display()
        );
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(sdk),
        Ok(out) => bail!(
            "node --version failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => bail!("node is not installed ({e}): run scripts/setup"),
    }
}

/// Builds every plugin of [`JS_PLUGINS`] into `target/js-plugins/`, at once (one `node` each),
/// once per test process.
///
/// # Errors
/// The toolchain is missing (see [`sdk_dir`]) or a build failed (its output says why).
pub fn js_plugins() -> anyhow::Result<JsPlugins> {
    static BUILT: OnceLock<Result<JsPlugins, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_all().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_all() -> anyhow::Result<JsPlugins> {
    let sdk = sdk_dir()?;
    let root = workspace_root();
    let dir = root.join("target/js-plugins");
    std::fs::create_dir_all(&dir)?;
    let build = sdk.join("build.mjs");
    let started = Instant::now();
    let mut children = Vec::new();
    for (name, source) in JS_PLUGINS {
        let out = dir.join(format!("{name}.wasm"));
        let child = Command::new("node")
            .arg(&build)
            .arg(root.join(source))
            .arg(&out)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("running node {}: {e}", build.display()))?;
        children.push((*name, child));
    }
    let mut build_times = Vec::new();
    let mut failures = String::new();
    for (name, child) in children {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            failures.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        build_times.push((name.to_string(), started.elapsed()));
        print!("{}", String::from_utf8_lossy(&out.stderr));
    }
    if !failures.is_empty() {
        bail!("building the JavaScript plugins failed:\n{failures}");
    }
    Ok(JsPlugins { dir, build_times })
}

/// `body` with `{js}` replaced by [`js_plugins`]' directory (then passed on to
/// [`crate::write_config`], which replaces `{plugins}`).
///
/// # Errors
/// As [`js_plugins`] and [`crate::write_config`].
pub fn write_config(body: &str) -> anyhow::Result<PathBuf> {
    let js = js_plugins()?;
    crate::write_config(&body.replace("{js}", &js.dir.display().to_string()))
}

/// Runs `node --test` on `dir` (a JS plugin's own tests, with the SDK's test kit).
///
/// # Errors
/// The toolchain is missing, or node could not be run.
pub fn node_test(dir: &Path) -> anyhow::Result<Output> {
    sdk_dir()?;
    Ok(Command::new("node").arg("--test").arg(dir).output()?)
}
