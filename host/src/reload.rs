//! Hot reload of the agents file: operators edit `agents.toml` while calls are live, and new
//! calls get the edit without a restart.
//!
//! A reload ([`reload`]) reads and validates the whole file, loads its plugins, builds a new
//! [`CallContext`] and hands it to [`AppState::replace`] — only if every step succeeded. A bad
//! edit changes nothing: the gateway keeps serving the previous configuration and every
//! problem is logged, one error line each naming `FILE:LINE:COLUMN: KEY`. Calls in flight keep
//! the configuration and plugin instances they started with to their end (each call holds its
//! own `CallContext`), including calls of agents the edit removed.
//!
//! [`spawn`] runs reloads for `serve`: on SIGHUP, and when the file (or a plugin file it names)
//! changes on disk. Editors save by writing a new file and renaming it over the old one, so the
//! watcher watches each file's *directory* and picks out events by path; a burst of events (one
//! save is several) becomes one reload after [`DEBOUNCE`] of quiet. The files watched are those
//! of the configuration in force: a plugin file added by an edit that was refused (because the
//! file did not exist yet, say) is not watched until an edit or SIGHUP loads it.
//!
//! Two keys take effect only at start: `[server] listen` (the socket is bound) and
//! `[records] path` (the database is open). A reload that changes them warns and keeps the
//! running values. Native plugin libraries stay loaded for the life of the process
//! ([`crate::plugin::native`]): a rebuilt one needs a restart too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::call::CallContext;
use crate::check;
use crate::config::{self, Config, ConfigError, ConfigErrors, PluginKind};
use crate::plugin::Plugins;
use crate::plugin::wasm::WasmEngine;
use crate::server::AppState;
use crate::twilio::rest::RestError;

/// The link a Kubernetes ConfigMap or Secret volume renames atomically on an update; the files
/// in the volume are links through it, so their own paths see no event.
const K8S_DATA_LINK: &str = "..data";

/// Quiet time after the last file event before a reload starts. One save is a burst of events
/// (write, close, rename) within a few milliseconds; a quarter second covers an editor's burst
/// without making the operator wait.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Longest a stream of file events may put a reload off (a file rewritten continuously, say).
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

/// Changed paths queued between the watcher's thread and the reload task. One queued path is
/// enough to start a reload; the rest only name what changed in the log, so when the queue is
/// full an event is dropped rather than waited for.
const EVENT_QUEUE: usize = 16;

/// What a successful reload put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Agents, plugins and default agent of the configuration new calls now get.
    pub config: check::Summary,
    /// Keys the file changed that take effect only after a restart; the running values stay.
    pub restart_needed: Vec<RestartNeeded>,
    /// What `switchboard check` would warn about in the new configuration.
    pub warnings: Vec<check::Warning>,
}

/// A key whose new value takes effect only after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartNeeded {
    /// `server.listen`, `server.plugin_cache`, `records.path` or `records.url`.
    pub key: &'static str,
    /// The value in force.
    pub running: String,
    /// The value in the file.
    pub file: String,
}

/// Why a reload was refused. The gateway keeps serving the previous configuration.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read, or did not validate: every problem, one per line.
    #[error("{0}")]
    Config(ConfigErrors),
    /// A plugin did not load (or implements the wrong contract for an agent), located at its
    /// `plugins.NAME.path`.
    #[error("{0}")]
    Plugins(ConfigError),
    /// The Twilio REST client could not be built from the new `[twilio]` table.
    #[error("{path}: setting up Twilio's REST client: {error}")]
    Rest {
        /// The agents file.
        path: PathBuf,
        /// What went wrong.
        error: RestError,
    },
    /// Loading the plugins did not finish: the loader panicked, or the runtime is shutting
    /// down.
    #[error("loading the plugins did not finish: {0}")]
    Interrupted(String),
    /// The SIGHUP handler could not be installed ([`spawn`] only).
    #[error("cannot listen for SIGHUP: {0}")]
    Signal(std::io::Error),
}

impl ReloadError {
    /// The problems, one line each (`FILE:LINE:COLUMN: KEY: message` where known).
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::Config(errors) => errors.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// Reloads the agents file at `path` into `state`: load, parse, interpolate (from the process
/// environment) and validate it in full, load its plugins with `engine`, build a new
/// [`CallContext`], and serve it to new calls ([`AppState::replace`]). Nothing changes unless
/// every step succeeds. Calls in flight keep their context.
///
/// Logs nothing and counts nothing itself (see [`spawn`], which does both). May take seconds:
/// plugins are compiled again, on a blocking thread so live calls keep the async workers.
/// Meant to run one at a time ([`spawn`] runs them in turn): of two at once, the last to
/// finish is the one served.
///
/// # Errors
/// [`ReloadError::Config`] with every problem in the file, [`ReloadError::Plugins`] for a
/// plugin that did not load, [`ReloadError::Rest`] for a `[twilio]` table the REST client
/// refuses, [`ReloadError::Interrupted`] if the plugin loader panicked.
pub async fn reload(
    state: &AppState,
    engine: &WasmEngine,
    path: &Path,
) -> Result<ReloadSummary, ReloadError> {
    let (source, config) =
        check::validate(path, &|name| std::env::var(name).ok()).map_err(ReloadError::Config)?;
    let (config, plugins) = load_off_workers(engine, &source, config).await?;
    let summary = ReloadSummary {
        config: check::Summary::of(&config),
        restart_needed: restart_needed(&state.context().config, &config),
        warnings: check::warnings(&source, &config),
    };
    let ctx = CallContext::new(Arc::new(config), plugins).map_err(|error| ReloadError::Rest {
        path: path.to_path_buf(),
        error,
    })?;
    state.replace(ctx);
    Ok(summary)
}

/// [`Plugins::load`] on a blocking thread: compiling a component takes the thread for seconds,
/// and the async workers are running live calls meanwhile. Hands `config` back with them.
///
/// # Errors
/// [`ReloadError::Plugins`] located in `source`; [`ReloadError::Interrupted`] if the loader
/// panicked or the runtime is shutting down.
async fn load_off_workers(
    engine: &WasmEngine,
    source: &config::Source,
    config: Config,
) -> Result<(Config, Plugins), ReloadError> {
    let engine = engine.clone();
    let runtime = tokio::runtime::Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        let loaded = runtime.block_on(Plugins::load(&engine, &config));
        (config, loaded)
    });
    match task.await {
        Ok((config, Ok(plugins))) => Ok((config, plugins)),
        Ok((_, Err(e))) => Err(ReloadError::Plugins(check::plugin_load_error(source, e))),
        Err(e) => Err(ReloadError::Interrupted(e.to_string())),
    }
}

/// The start-only keys whose value in `file` differs from `running`.
fn restart_needed(running: &Config, file: &Config) -> Vec<RestartNeeded> {
    let mut changed = Vec::new();
    if running.server.listen != file.server.listen {
        changed.push(RestartNeeded {
            key: "server.listen",
            running: running.server.listen.to_string(),
            file: file.server.listen.to_string(),
        });
    }
    if running.records.path != file.records.path {
        let show = |path: &Option<PathBuf>| match path {
            Some(path) => path.display().to_string(),
            None => "\"\" (in memory)".to_string(),
        };
        changed.push(RestartNeeded {
            key: "records.path",
            running: show(&running.records.path),
            file: show(&file.records.path),
        });
    }
    if running.server.plugin_cache != file.server.plugin_cache {
        // The engine, and so its compiled-code cache, is built once at start.
        let show = |dir: &Option<PathBuf>| match dir {
            Some(dir) => dir.display().to_string(),
            None => "off".to_string(),
        };
        changed.push(RestartNeeded {
            key: "server.plugin_cache",
            running: show(&running.server.plugin_cache),
            file: show(&file.server.plugin_cache),
        });
    }
    if running.records.url != file.records.url {
        let show = |url: &Option<crate::config::Secret>| match url {
            Some(_) => "postgres://… (redacted)".to_string(),
            None => "(none)".to_string(),
        };
        changed.push(RestartNeeded {
            key: "records.url",
            running: show(&running.records.url),
            file: show(&file.records.url),
        });
    }
    changed
}

/// Starts reloading `path` into `state` (plugins compiled with `engine`) on SIGHUP and
/// whenever the file, or a plugin file it names, changes. Each reload is logged — at info
/// with the new agent and plugin counts, or one error line per problem — and counted in
/// [`crate::metrics::RELOADS`] (`result` = `ok` or `failed`). If the files cannot be watched
/// (no inotify watches left, say), a warning says so and SIGHUP still works.
///
/// Must be called inside a tokio runtime. The task runs until aborted.
///
/// # Errors
/// [`ReloadError::Signal`]: the SIGHUP handler could not be installed.
pub fn spawn(
    state: AppState,
    engine: WasmEngine,
    path: PathBuf,
) -> Result<JoinHandle<()>, ReloadError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).map_err(ReloadError::Signal)?;
    let mut watch = FileWatch::new();
    watch.set(watched_files(&path, &state.context().config));
    Ok(tokio::spawn(async move {
        loop {
            let (trigger, changed) = tokio::select! {
                changed = watch.next() => ("file", changed),
                signal = hangup.recv() => match signal {
                    Some(()) => ("SIGHUP", BTreeSet::new()),
                    None => return,
                },
            };
            if reload_and_log(&state, &engine, &path, trigger, &changed).await {
                watch.set(watched_files(&path, &state.context().config));
            }
        }
    }))
}

/// Runs one reload for `spawn`, logs and counts it; whether it succeeded.
async fn reload_and_log(
    state: &AppState,
    engine: &WasmEngine,
    path: &Path,
    trigger: &'static str,
    changed: &BTreeSet<PathBuf>,
) -> bool {
    let started = std::time::Instant::now();
    match reload(state, engine, path).await {
        Ok(summary) => {
            metrics::counter!(crate::metrics::RELOADS, "result" => "ok").increment(1);
            for key in &summary.restart_needed {
                tracing::warn!(
                    key = key.key,
                    running = %key.running,
                    file = %key.file,
                    "changed in the agents file, but takes effect only after a restart"
                );
            }
            for warning in &summary.warnings {
                tracing::warn!(key = %warning.key, "{}", warning.message);
            }
            let config = Arc::clone(&state.context().config);
            for plugin in config.plugins.values() {
                if plugin.kind == PluginKind::Native && changed.contains(&absolute(&plugin.path)) {
                    tracing::warn!(
                        plugin = %plugin.name,
                        path = %plugin.path.display(),
                        "native plugin file changed: native libraries stay loaded until a \
                         restart, so calls still run the old build"
                    );
                }
            }
            tracing::info!(
                trigger,
                path = %path.display(),
                agents = summary.config.agents,
                plugins = summary.config.plugins,
                default_agent = summary.config.default_agent.as_deref().unwrap_or(""),
                ms = started.elapsed().as_millis() as u64,
                "configuration reloaded: new calls get it, calls in flight keep theirs"
            );
            true
        }
        Err(error) => {
            metrics::counter!(crate::metrics::RELOADS, "result" => "failed").increment(1);
            let lines = error.lines();
            for line in &lines {
                tracing::error!(trigger, problem = %line, "agents file rejected");
            }
            tracing::error!(
                trigger,
                path = %path.display(),
                problems = lines.len(),
                "configuration not reloaded: still serving the previous one"
            );
            false
        }
    }
}

/// The files a reload depends on: the agents file and every plugin file it names, absolute.
fn watched_files(path: &Path, config: &Config) -> BTreeSet<PathBuf> {
    std::iter::once(path)
        .chain(config.plugins.values().map(|p| p.path.as_path()))
        .map(absolute)
        .collect()
}

/// `path` made absolute against the working directory (as the watcher reports paths), without
/// resolving symlinks; `path` itself if that fails.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether an event of this kind can mean new content. Opening or reading a file (as a reload
/// itself does) cannot; closing it after writing, creating, renaming, removing, writing and
/// `touch` can.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}

/// Watches the directories of a set of files (non-recursively) and reports changes to those
/// files only, debounced.
struct FileWatch {
    /// `None` when no watcher could be made (a warning was logged).
    watcher: Option<notify::RecommendedWatcher>,
    /// The files whose events count; shared with the watcher's callback.
    files: Arc<Mutex<BTreeSet<PathBuf>>>,
    /// The directories being watched.
    dirs: BTreeSet<PathBuf>,
    /// Changed files, from the watcher's callback.
    events: mpsc::Receiver<PathBuf>,
}

impl FileWatch {
    /// A watcher of nothing yet; logs a warning if the platform's watcher cannot be made.
    fn new() -> Self {
        let files: Arc<Mutex<BTreeSet<PathBuf>>> = Arc::default();
        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        let wanted = Arc::clone(&files);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "watching the agents file");
                    return;
                }
            };
            if !is_change(&event.kind) {
                return;
            }
            let wanted = wanted.lock().unwrap_or_else(|p| p.into_inner());
            for path in event.paths {
                if wanted.contains(&path) {
                    // Full: a reload is already due, and it reads the file afresh.
                    let _ = tx.try_send(path);
                } else if path.file_name() == Some(std::ffi::OsStr::new(K8S_DATA_LINK)) {
                    // A Kubernetes ConfigMap volume swapped its `..data` link: every watched
                    // file in that directory (a link through it) has new content.
                    for file in wanted.iter().filter(|f| f.parent() == path.parent()) {
                        let _ = tx.try_send(file.clone());
                    }
                }
            }
        });
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot watch the agents file; send SIGHUP to reload it"
                );
                None
            }
        };
        Self {
            watcher,
            files,
            dirs: BTreeSet::new(),
            events,
        }
    }

    /// Watches `files` (and no others) from now on.
    fn set(&mut self, files: BTreeSet<PathBuf>) {
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        if let Some(watcher) = &mut self.watcher {
            for gone in self.dirs.difference(&dirs) {
                let _ = watcher.unwatch(gone);
            }
            for dir in dirs.difference(&self.dirs) {
                if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(
                        dir = %dir.display(),
                        error = %e,
                        "cannot watch for changes; send SIGHUP to reload"
                    );
                }
            }
        }
        self.dirs = dirs;
        *self.files.lock().unwrap_or_else(|p| p.into_inner()) = files;
    }

    /// Waits for a change to a watched file, then for [`DEBOUNCE`] of quiet (at most
    /// [`MAX_DEBOUNCE`]); returns the files that changed. Never returns without a watcher.
    async fn next(&mut self) -> BTreeSet<PathBuf> {
        let mut changed = BTreeSet::new();
        if self.watcher.is_none() {
            return std::future::pending().await;
        }
        match self.events.recv().await {
            Some(path) => changed.insert(path),
            None => return std::future::pending().await,
        };
        let deadline = Instant::now() + MAX_DEBOUNCE;
        loop {
            let quiet = (Instant::now() + DEBOUNCE).min(deadline);
            tokio::select! {
                more = self.events.recv() => match more {
                    Some(path) => { changed.insert(path); }
                    None => return changed,
                },
                () = tokio::time::sleep_until(quiet) => return changed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{TempDir, build_ok};
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    #[test]
    fn reads_are_not_changes() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Read)));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
    }

    #[test]
    fn restart_needed_names_listen_and_records() {
        let base = "[plugins.echo]\npath = \"echo.wasm\"\n\n[[agents]]\nname = \"a\"\nrealtime = { plugin = \"echo\" }\n";
        let (_a, running) = build_ok(base);
        let (_b, same) = build_ok(base);
        // Different temp dirs: the default records path (beside the file) differs too.
        let keys: Vec<_> = restart_needed(&running, &same)
            .iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["records.path"]);
        let (_c, moved) = build_ok(&format!(
            "[server]\nlisten = \"127.0.0.1:9999\"\n[records]\npath = \"\"\n{base}"
        ));
        let changed = restart_needed(&running, &moved);
        assert_eq!(changed.len(), 2);
        assert_eq!(changed[0].key, "server.listen");
        assert_eq!(changed[0].file, "127.0.0.1:9999");
        assert_eq!(changed[1].file, "\"\" (in memory)");
        assert!(restart_needed(&running, &running).is_empty());
    }

    #[test]
    fn watched_files_are_the_config_and_its_plugins() {
        let base = "[plugins.echo]\npath = \"echo.wasm\"\n\n[[agents]]\nname = \"a\"\nrealtime = { plugin = \"echo\" }\n";
        let (dir, config) = build_ok(base);
        let files = watched_files(&dir.path().join("agents.toml"), &config);
        let expected: BTreeSet<PathBuf> = [
            absolute(&dir.path().join("agents.toml")),
            absolute(&dir.path().join("echo.wasm")),
        ]
        .into();
        assert_eq!(files, expected);
    }

    /// Writing a watched file wakes the watch once per burst; writing a file beside it (the
    /// call records, say) does not; a file that is only read does not.
    /// A Kubernetes ConfigMap volume updates by writing a new timestamped directory and renaming
    /// a `..data` link to it; `agents.toml` is a link through `..data`.
    #[tokio::test]
    async fn a_configmap_update_is_a_change() {
        use std::os::unix::fs::symlink;
        let dir = TempDir::new();
        dir.write("..2026_12_07_1/agents.toml", b"a = 1\n");
        let root = dir.path().to_path_buf();
        symlink("..2026_12_07_1", root.join("..data")).expect("link");
        symlink("..data/agents.toml", root.join("agents.toml")).expect("link");
        let config = root.join("agents.toml");
        let mut watch = FileWatch::new();
        watch.set([absolute(&config)].into());
        dir.write("..2026_12_07_2/agents.toml", b"a = 2\n");
        symlink("..2026_12_07_2", root.join("..data_tmp")).expect("link");
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
        let changed = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("the ConfigMap update is reported");
        assert_eq!(changed, [absolute(&config)].into());
        assert_eq!(std::fs::read_to_string(&config).expect("read"), "a = 2\n");
    }

    #[tokio::test]
    async fn watch_reports_changes_to_watched_files_only() {
        let dir = TempDir::new();
        let config = dir.write("agents.toml", b"a = 1\n");
        let other = dir.write("calls.db", b"");
        let mut watch = FileWatch::new();
        assert!(watch.watcher.is_some(), "a watcher on this platform");
        watch.set([absolute(&config)].into());

        std::fs::write(&other, b"row").expect("write");
        let _ = std::fs::read_to_string(&config).expect("read");
        assert!(
            tokio::time::timeout(Duration::from_millis(800), watch.next())
                .await
                .is_err(),
            "no event for other files or reads"
        );

        // An editor's save: write a temporary file, rename it over the old one.
        let tmp = dir.write("agents.toml.swp", b"a = 2\n");
        std::fs::rename(&tmp, &config).expect("rename");
        std::fs::write(&config, b"a = 3\n").expect("write");
        let changed = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("the change is reported");
        assert_eq!(changed, [absolute(&config)].into());
        // One burst, one wake-up.
        assert!(
            tokio::time::timeout(Duration::from_millis(600), watch.next())
                .await
                .is_err(),
            "the burst was reported once"
        );
    }
}
