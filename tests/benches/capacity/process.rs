//! The gateway under load as a process of its own, and what `/proc` says of it: shared by the
//! capacity and languages benches.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use switchboard::audio::mulaw;
use switchboard_tests::workspace_root;

/// The gateway as its own process, killed when dropped.
pub struct GatewayProcess {
    child: Child,
    /// The gateway's process id.
    pub pid: u32,
    /// `host:port` it listens on.
    pub address: String,
    warnings: Arc<Mutex<Vec<String>>>,
    loads: Arc<Mutex<Vec<String>>>,
}

impl GatewayProcess {
    /// Starts `binary serve --config CONFIG` through `sh` (to raise its open-file limit) and
    /// waits for the `address=` line of its log.
    pub fn start(
        binary: &Path,
        config: &Path,
        log: &str,
        workers: Option<usize>,
        shards: Option<usize>,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new("sh");
        if let Some(n) = workers {
            command.env("TOKIO_WORKER_THREADS", n.to_string());
        }
        let mut child = command
            .arg("-c")
            .arg(
                "ulimit -n 65536 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; \
                 exec \"$0\" serve --config \"$@\"",
            )
            .arg(binary)
            .arg(config)
            .args(
                shards
                    .map(|n| ["--shards".to_string(), n.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .env("RUST_LOG", log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id();
        let stderr = child.stderr.take().context("the gateway's stderr")?;
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let loads = Arc::new(Mutex::new(Vec::new()));
        let (kept, kept_loads) = (warnings.clone(), loads.clone());
        // Read the log on a thread: the address, then warnings, draining the pipe so the gateway
        // never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("address=").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                } else if line.contains("plugin loaded")
                    && let Ok(mut l) = kept_loads.lock()
                {
                    l.push(line);
                } else if (line.contains("WARN") || line.contains("ERROR"))
                    && let Ok(mut w) = kept.lock()
                {
                    w.push(line);
                }
            }
        });
        let mut gateway = Self {
            child,
            pid,
            address: String::new(),
            warnings,
            loads,
        };
        gateway.address = rx.recv_timeout(Duration::from_secs(120)).context(
            "the gateway did not log its listening address (is `switchboard=info` in --log?)",
        )?;
        Ok(gateway)
    }

    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// The `plugin loaded` lines of its log so far (logged at info by `switchboard::plugin`,
    /// with `load_ms` and `cached`), when the log filter lets them through.
    pub fn plugin_loads(&self) -> Vec<String> {
        self.loads.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the gateway reports no active call (the previous row's calls have ended).
pub async fn wait_idle(http: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // `Connection: close`: no pooled connection left open to count as the gateway's.
        let body = client
            .get(format!("{http}/healthz"))
            .header("connection", "close")
            .send()
            .await
            .context("GET /healthz")?
            .text()
            .await
            .context("GET /healthz")?;
        let body: serde_json::Value =
            serde_json::from_str(&body).context("GET /healthz: not JSON")?;
        if body["active_calls"].as_u64() == Some(0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the gateway still has {} active calls",
                body["active_calls"]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The rest of every frame: a quiet 500 Hz tone (audible, so nothing treats it as silence),
/// free of the codes 0x7F and 0xFF (both zero: the round trip turns 0x7F into 0xFF).
pub fn tone() -> [u8; 160] {
    let mut frame = [0u8; 160];
    for (i, b) in frame.iter_mut().enumerate() {
        let t = i as f64 / 8000.0;
        let s = (300.0 * (2.0 * std::f64::consts::PI * 500.0 * t).sin()) as i16;
        *b = match mulaw::encode(s) {
            0xFF => 0xFE,
            0x7F => 0x7E,
            c => c,
        };
    }
    frame
}

/// Clock ticks per second of `/proc/*/stat` CPU times (`getconf CLK_TCK`; 100 on Linux).
pub fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// utime + stime of process `pid`, in clock ticks (fields 14 and 15 of `/proc/PID/stat`).
pub fn proc_cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// [`proc_cpu_ticks`] summed over a row's gateways.
pub fn sum_cpu_ticks(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter().map(|p| proc_cpu_ticks(*p)).sum()
}

/// [`proc_status_kib`] summed over a row's gateways.
pub fn sum_status_kib(pids: &[u32], key: &str) -> anyhow::Result<u64> {
    pids.iter().map(|p| proc_status_kib(*p, key)).sum()
}

/// Busy time of the whole machine (every CPU: user, nice, system, irq, softirq, steal), in clock
/// ticks, from the first line of `/proc/stat`.
pub fn machine_busy_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("empty /proc/stat")?;
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| fields.get(i).copied().unwrap_or(0))
        .sum();
    Ok(busy)
}

pub fn self_cpu_ticks() -> anyhow::Result<u64> {
    stat_ticks("/proc/self/stat")
}

pub fn stat_ticks(path: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The fields after `(comm)` start at field 3 (state): utime is field 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("odd stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field =
        |i: usize| -> anyhow::Result<u64> { Ok(fields.get(i).context("short stat")?.parse()?) };
    Ok(field(11)? + field(12)?)
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// Builds the release gateway (`cargo build --release -p switchboard`, in the workspace); returns
/// the path of the binary under the target directory.
pub fn build_release_gateway() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the release gateway…");
    let built = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "-p", "switchboard"])
        .status()
        .context("running cargo build")?;
    if !built.success() {
        bail!("cargo build --release -p switchboard failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/switchboard"))
}

/// Writes the gateway's agents.toml into `dir` and returns its path: the echo plugin `echo` in
/// immediate mode as the default agent, Twilio signatures checked with `auth_token`, call records
/// as `records` (the body of `[records]`), `server` (more `[server]` lines, or empty), a free
/// loopback port.
pub fn write_echo_config(
    dir: &Path,
    auth_token: &str,
    echo: &Path,
    records: &str,
    server: &str,
) -> anyhow::Result<PathBuf> {
    let config = dir.join("agents.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
{server}

[twilio]
auth_token = "{auth_token}"

[records]
{records}

[plugins.echo]
path = "{echo}"

[[agents]]
name = "echo"
realtime = {{ plugin = "echo", settings = {{ mode = "immediate" }} }}

[routing]
default = "echo"
"#,
            echo = echo.display(),
        ),
    )?;
    Ok(config)
}
