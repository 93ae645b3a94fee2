//! Capacity of one gateway process: how many concurrent calls `switchboard serve` (release
//! build, its own process) carries with every echoed frame back in time.
//!
//! The gateway serves the echo plugin (WASM, `mode = "immediate"`) with signatures checked and
//! call records on. For each N, one client process (this one) opens N Media Streams WebSockets,
//! each signed as Twilio signs the upgrade, sends `connected` and `start`, then one `media` frame
//! every 20 ms at real time for `--duration` seconds, then `stop`.
//! Like Twilio it plays what comes back at real time and echoes each mark once the audio before
//! it has played. Every frame carries its number in its first bytes (μ-law codes whose
//! decode → encode round trip is exact), so each echoed frame is matched to the moment it was sent.
//!
//! Reported per N: calls completed (closed by the gateway after `stop`), frames sent and echoed,
//! marks per echoed frame, frames the client sent more than 20 ms behind schedule (the client
//! itself was overloaded: the row is invalid), echoes later than 20 ms, round-trip p50/p99/max,
//! the gateway's CPU (from `/proc/PID/stat`, over the media phase) and resident memory
//! (`/proc/PID/status`: idle before the first call, peak during the row), this client's CPU, and
//! everything else's (`/proc/stat` less both: the noise of a shared machine). Every row starts a
//! fresh gateway process. Ratios are against the first row: the smallest N, first gateway. The
//! capacity is the largest valid N with every call completed, every frame echoed, none late and
//! p99 < 5 ms.
//!
//! Run: `cargo bench -p switchboard-tests --bench capacity -- [--calls 100,250,500]
//! [--duration 15] [--perf] [--log FILTER] [--client-threads N] [--gateway-workers N]
//! [--gateway-shards N] [--gateway LABEL=BINARY[,ECHO.wasm]]…`.
//! - `--client-threads` (default 2): the client's threads, each with its share of the calls on
//!   one `mio::Poll`, waking every millisecond rather than on each message (see `client`): a
//!   round trip is timed when the client reads the echo, so it includes up to 1 ms of the
//!   client's own polling delay.
//! - `--gateway-workers`: the gateway's runtime worker threads (default: one per core). The
//!   client shares the machine: with as many runnable threads as cores on each side, a gateway
//!   worker the kernel preempts for a client thread holds its queued frames until it runs
//!   again, which is what bounds the round-trip tail on 2 cores; more threads on both sides
//!   spread that wait.
//! - `--gateway-shards N`: runs every gateway of the run with `serve --shards N`
//!   (thread-per-core: N single-threaded runtimes on `SO_REUSEPORT` listeners); builds from
//!   before that option refuse to start with it.
//! - `--perf` records the gateway with `perf record -g` during each row's media phase into
//!   `target/capacity/perf-LABEL-N.data`.
//! - `--log` replaces the gateway's `RUST_LOG`. The default logs warnings only, plus the line that
//!   gives the listening address: per-call info lines are a cost of their own at a thousand
//!   calls, and not the one measured here.
//! - `--soak` (one N, e.g. `--calls 500 --duration 600`): a soak. Every minute of the media
//!   phase it samples the gateway's resident memory, open file descriptors (`/proc/PID/fd`) and
//!   threads; it reports the round-trip p99 of the frames sent in each minute, the RSS growth
//!   after the first minute (warm-up), and the descriptors and RSS once every call has ended,
//!   against the idle gateway before the first call. Flat: RSS growth < 5 %, descriptors back to
//!   the idle count.
//! - `--gateway` adds another build to compare (e.g. a copy of `target/release/switchboard` from
//!   before a change): for each N its row runs before the current build's, in the same run.
//! - `--records sqlite,postgres` (default `sqlite`): a row per backend for each N; `postgres`
//!   starts a throwaway PostgreSQL server (`switchboard::testing::Cluster`, `fsync=off`) and
//!   gives each row a database of its own. `--fleet N` (default 1) runs N gateway processes per
//!   row (instances `a`, `b`, …), call `i` on gateway `i % N`; CPU and RSS are their sums.
//!   `--webhooks` adds each call's other writes (`capacity/records.rs`): six per call. A table of
//!   the records figures follows (`switchboard_records_*` from each gateway's `/metrics`, read
//!   every second; the calls in the database). `--pg-outage` stops the server for the middle
//!   third of each PostgreSQL row's media phase and compares the round trips of the frames sent
//!   while it was down with the others'. The figure in docs/architecture.md ("Call records on
//!   PostgreSQL"): `--calls 200,400 --records sqlite,postgres --fleet 2 --webhooks`, then
//!   `--calls 400 --records sqlite,postgres --fleet 2 --webhooks --pg-outage`.

#[path = "capacity/client.rs"]
mod client;
// Shared with the languages bench, which uses other parts of it.
#[allow(dead_code)]
#[path = "capacity/process.rs"]
mod process;
#[path = "capacity/records.rs"]
mod records;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use client::{CallLog, CallPlan, FRAME, LATE, tag, untag};
use process::{
    GatewayProcess, build_release_gateway, clk_tck, machine_busy_ticks, proc_status_kib,
    self_cpu_ticks, sum_cpu_ticks, sum_status_kib, tone, wait_idle, write_echo_config,
};
use records::Backend;
use switchboard::audio::mulaw;
use switchboard::testing::Cluster;
use switchboard::twilio::signature::{self, Algorithm};
use switchboard_tests::{plugin_dirs, temp_dir};

/// Calls per row when `--calls` is not given: far enough past the 1,000-call goal to find the
/// knee on a 2-core machine.
const DEFAULT_CALLS: [usize; 7] = [100, 250, 500, 750, 1000, 1250, 1500];

/// Seconds of media per call when `--duration` is not given: seven rows in about three minutes.
const DEFAULT_DURATION_S: u64 = 15;

/// Client threads when `--client-threads` is not given: one per core of the 2-core machine.
const DEFAULT_CLIENT_THREADS: usize = 2;

/// The capacity criterion's round-trip p99 bound.
const P99_LIMIT: Duration = Duration::from_millis(5);

/// Longest a row may take to open its calls.
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);

/// Pause between the last call opening and the first media frame, so the gateway has opened every
/// session before the measured window starts.
const SETTLE: Duration = Duration::from_millis(500);

/// How often the gateway's resident memory is sampled during a row.
const RSS_SAMPLE: Duration = Duration::from_millis(100);

/// The Twilio auth token the gateway checks and the client signs with.
const AUTH_TOKEN: &str = "capacity-bench-token";

/// The gateway's log filter: warnings, plus `switchboard`'s own (main.rs) info lines, among them
/// the `address=` line; every module of the library stays at warn.
const GATEWAY_LOG: &str = "warn,switchboard=info,switchboard::audio=warn,switchboard::call=warn,\
switchboard::config=warn,switchboard::plugin=warn,switchboard::records=warn,\
switchboard::routing=warn,switchboard::server=warn,switchboard::simulate=warn,\
switchboard::twilio=warn,switchboard::twiml=warn";

struct Args {
    calls: Vec<usize>,
    duration: Duration,
    perf: bool,
    /// Sample the gateway every minute and report a soak (`print_soak`).
    soak: bool,
    log: String,
    /// Threads (each a single-threaded tokio runtime) the client's calls are spread over.
    client_threads: usize,
    /// The gateway's runtime worker threads (`TOKIO_WORKER_THREADS`, which `serve` honours as
    /// it does `--workers`, and so do older builds); `None`: its default, one per core.
    gateway_workers: Option<usize>,
    /// `serve --shards N` (thread-per-core); `None`: not passed.
    gateway_shards: Option<usize>,
    /// Gateways to compare against the one built from this workspace: (label, binary, echo
    /// component).
    baselines: Vec<(String, PathBuf, Option<PathBuf>)>,
    /// Where the gateways keep call records; each N runs a row per backend, in this order.
    records: Vec<Backend>,
    /// Gateway processes per row, the calls split between them (`--fleet`).
    fleet: usize,
    /// Each call also sends its voice webhook and status callbacks (`records` module).
    webhooks: bool,
    /// PostgreSQL rows: the server is stopped for the middle third of the media phase.
    pg_outage: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        calls: DEFAULT_CALLS.to_vec(),
        duration: Duration::from_secs(DEFAULT_DURATION_S),
        perf: false,
        soak: false,
        log: GATEWAY_LOG.to_string(),
        client_threads: DEFAULT_CLIENT_THREADS,
        gateway_workers: None,
        gateway_shards: None,
        baselines: Vec::new(),
        records: vec![Backend::Sqlite],
        fleet: 1,
        webhooks: false,
        pg_outage: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            // `cargo bench` passes `--bench` to every bench binary.
            "--bench" => {}
            "--calls" => {
                let list = it.next().context("--calls needs a list, e.g. 100,250")?;
                out.calls = list
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--calls {list}: not a list of numbers"))?;
                out.calls.sort_unstable();
                out.calls.dedup();
                if out.calls.first() == Some(&0) || out.calls.iter().any(|n| *n > 0xFFFF) {
                    bail!("--calls: each N must be 1–65535");
                }
            }
            "--duration" => {
                let s = it.next().context("--duration needs seconds")?;
                let secs: u64 = s.parse().with_context(|| format!("--duration {s}"))?;
                if !(1..=1200).contains(&secs) {
                    bail!("--duration: 1–1200 s (frame numbers are 16 bits)");
                }
                out.duration = Duration::from_secs(secs);
            }
            "--perf" => out.perf = true,
            "--soak" => out.soak = true,
            "--gateway-workers" => out.gateway_workers = Some(count(&arg, it.next(), 1024)?),
            "--gateway-shards" => out.gateway_shards = Some(count(&arg, it.next(), 1024)?),
            "--client-threads" => out.client_threads = count(&arg, it.next(), 64)?,
            "--records" => {
                out.records =
                    Backend::parse(&it.next().context("--records needs sqlite,postgres")?)?;
            }
            "--fleet" => out.fleet = count(&arg, it.next(), 16)?,
            "--webhooks" => out.webhooks = true,
            "--pg-outage" => out.pg_outage = true,
            "--log" => out.log = it.next().context("--log needs a RUST_LOG filter")?,
            "--gateway" => {
                let spec = it
                    .next()
                    .context("--gateway needs LABEL=BINARY[,ECHO.wasm]")?;
                let (label, paths) = spec
                    .split_once('=')
                    .with_context(|| format!("--gateway {spec}: expected LABEL=BINARY"))?;
                let (binary, echo) = match paths.split_once(',') {
                    Some((b, e)) => (b, Some(PathBuf::from(e))),
                    None => (paths, None),
                };
                out.baselines
                    .push((label.to_string(), PathBuf::from(binary), echo));
            }
            other => bail!(
                "unknown argument {other:?}; usage: capacity [--calls 100,250,…] [--duration S] \
                 [--perf] [--soak] [--log FILTER] [--client-threads N] [--gateway-workers N] [--gateway-shards N] [--gateway LABEL=BINARY[,ECHO.wasm]]… [--records sqlite,postgres] [--fleet N] [--webhooks] [--pg-outage]"
            ),
        }
    }
    if out.calls.is_empty() {
        bail!("--calls: empty list");
    }
    if out.fleet > 1 && (out.soak || out.perf) {
        bail!("--soak and --perf follow one gateway: not with --fleet");
    }
    if out.pg_outage && !out.records.contains(&Backend::Postgres) {
        bail!("--pg-outage needs --records postgres");
    }
    Ok(out)
}

/// The value of `flag`: a whole number from 1 to `max`.
fn count(flag: &str, value: Option<String>, max: usize) -> anyhow::Result<usize> {
    let value = value.with_context(|| format!("{flag} needs a number"))?;
    value
        .parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .with_context(|| format!("{flag} {value}: 1–{max}"))
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    check_round_trip();
    let clk_tck = clk_tck();
    let binary = build_release_gateway()?;
    let target = binary
        .parent()
        .and_then(Path::parent)
        .context("the gateway binary's target directory")?
        .to_path_buf();
    let plugins = plugin_dirs()?;

    let mut gateways: Vec<(String, PathBuf, PathBuf)> = args
        .baselines
        .iter()
        .map(|(label, binary, echo)| {
            let echo = echo
                .clone()
                .unwrap_or_else(|| plugins.wasm.join("echo.wasm"));
            (label.clone(), binary.clone(), echo)
        })
        .collect();
    // Copies, so that a build elsewhere in the workspace cannot swap them in the middle of a run.
    let pinned = temp_dir()?;
    let (binary_copy, echo_copy) = (pinned.join("switchboard"), pinned.join("echo.wasm"));
    std::fs::copy(&binary, &binary_copy).context("copying the gateway binary")?;
    std::fs::copy(plugins.wasm.join("echo.wasm"), &echo_copy).context("copying echo.wasm")?;
    gateways.push(("current".into(), binary_copy, echo_copy));
    let perf_dir = target.join("capacity");
    if args.perf {
        std::fs::create_dir_all(&perf_dir)?;
    }
    // The row is driven from this thread; its calls run on `--client-threads` threads of their
    // own (`client::run_shard`).
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let nonce = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let started = SystemTime::now();

    // Every row gets a fresh gateway process; with several gateways, their rows alternate per N
    // so that they share the machine's moods alike.
    // One throwaway PostgreSQL server for the run; each PostgreSQL row gets a database of its own.
    let mut cluster = if args.records.contains(&Backend::Postgres) {
        eprintln!("starting a throwaway PostgreSQL server…");
        Some(Cluster::start().context("starting PostgreSQL (--records postgres)")?)
    } else {
        None
    };
    let mut rows = Vec::new();
    let mut nofile = String::new();
    let mut warnings = Vec::new();
    for &n in &args.calls {
        for (label, binary, echo) in &gateways {
            for &backend in &args.records {
                let db = match (&cluster, backend) {
                    (Some(c), Backend::Postgres) => {
                        let name = format!("capacity_{}", rows.len());
                        let url = c.database(&name)?;
                        Some((name, url))
                    }
                    _ => None,
                };
                let mut dirs = Vec::new();
                let mut fleet = Vec::new();
                for i in 0..args.fleet {
                    let dir = temp_dir()?;
                    let instance = ((b'a' + i as u8) as char).to_string();
                    let records =
                        backend.config(&dir, db.as_ref().map(|d| d.1.as_str()), &instance);
                    let config = write_echo_config(&dir, AUTH_TOKEN, echo, &records, "")?;
                    fleet.push(GatewayProcess::start(
                        binary,
                        &config,
                        &args.log,
                        args.gateway_workers,
                        args.gateway_shards,
                    )?);
                    dirs.push(dir);
                }
                let pids: Vec<u32> = fleet.iter().map(|g| g.pid).collect();
                let pid = pids[0];
                // Idle baseline: after start-up, before any call.
                std::thread::sleep(Duration::from_secs(1));
                let idle_rss_kib = sum_status_kib(&pids, "VmRSS")?;
                let idle_fd_targets = fd_targets(pid)?;
                nofile = open_file_limits(pid);
                let addresses: Vec<String> = fleet.iter().map(|g| g.address.clone()).collect();
                eprintln!(
                    "{label}, {}: {n} calls (gateway pids {pids:?} at {})…",
                    backend.name(),
                    addresses.join(", ")
                );
                let level = Level {
                    n,
                    duration: args.duration,
                    address: addresses[0].clone(),
                    pid,
                    fleet: addresses
                        .iter()
                        .cloned()
                        .zip(pids.iter().copied())
                        .collect(),
                    clk_tck,
                    nonce,
                    perf: args
                        .perf
                        .then(|| perf_dir.join(format!("perf-{label}-{n}.data"))),
                    client_threads: args.client_threads,
                    soak: args.soak,
                    backend,
                    webhooks: args.webhooks,
                    outage: args.pg_outage && backend == Backend::Postgres,
                    db_name: db.as_ref().map(|d| d.0.clone()),
                };
                let cluster = if backend == Backend::Postgres {
                    cluster.as_mut()
                } else {
                    None
                };
                let mut row = client.block_on(run_level(&level, cluster))?;
                row.gateway = format!("{label} {}", backend.name());
                row.idle_rss_kib = idle_rss_kib;
                row.hwm_kib = sum_status_kib(&pids, "VmHWM").unwrap_or(0);
                row.idle_fds = idle_fd_targets.len();
                if args.soak {
                    // After the calls: every session closed, every socket and record handle
                    // released.
                    client.block_on(wait_idle(&format!("http://{}", level.address)))?;
                    std::thread::sleep(Duration::from_secs(2));
                    row.after = Some(Sample::of(pid, row.wall)?);
                    let mut idle = idle_fd_targets.clone();
                    for target in fd_targets(pid)? {
                        match idle.iter().position(|t| *t == target) {
                            Some(i) => {
                                idle.swap_remove(i);
                            }
                            None => row.new_fds.push(target),
                        }
                    }
                }
                eprintln!("  {}", row.summary());
                for gateway in &fleet {
                    warnings.extend(gateway.warnings());
                }
                drop(fleet);
                for dir in dirs {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                rows.push(row);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&pinned);
    print_report(&args, &rows, started, clk_tck, &nofile);
    if args.webhooks || args.records.contains(&Backend::Postgres) {
        print_records(&args, &rows);
    }
    if args.soak {
        for row in &rows {
            print_soak(row);
        }
    }
    if !warnings.is_empty() {
        println!(
            "\nGateway warnings and errors ({} lines; first ones):",
            warnings.len()
        );
        for w in warnings.iter().take(5) {
            println!("    {w}");
        }
    }
    Ok(())
}

/// Everything one row needs.
struct Level {
    n: usize,
    duration: Duration,
    address: String,
    pid: u32,
    clk_tck: u64,
    nonce: u64,
    perf: Option<PathBuf>,
    /// Threads the calls are spread over, round-robin.
    client_threads: usize,
    /// Sample the gateway every `SOAK_SAMPLE`.
    soak: bool,
    /// Every gateway of the row (address, pid); `address` and `pid` are the first. Call `i` is
    /// carried by gateway `i % len`.
    fleet: Vec<(String, u32)>,
    backend: Backend,
    /// Voice webhook and status callbacks per call (`records`).
    webhooks: bool,
    /// Stop the PostgreSQL server for the middle third of the media phase.
    outage: bool,
    /// The row's PostgreSQL database.
    db_name: Option<String>,
}

/// `--pg-outage`: the server was down from `.0` to `.1` into the media phase; round-trip (p99,
/// max) of the frames sent while it was down, and of the others.
type Outage = (
    Duration,
    Duration,
    (Duration, Duration),
    (Duration, Duration),
);

/// The records side of a row.
#[derive(Default)]
struct RecordsRow {
    /// The PostgreSQL writers' figures (`None` on SQLite, which has no such metrics).
    figures: Option<records::Figures>,
    /// Transactions committed in the row's database (`pg_stat_database.xact_commit`: the
    /// writers' batches, and also every read — the callback outbox's polls, heartbeats, this
    /// bench's own queries).
    commits: Option<u64>,
    /// Calls in the row's database, and of them those with their end written.
    calls: Option<(u64, u64)>,
    /// Status changes recorded in the row's database (the `status_history` entries).
    statuses: Option<u64>,
    /// Webhook requests that failed.
    webhook_errors: Vec<String>,
    /// `--pg-outage`: the outage and the round trips during it and outside it.
    outage: Option<Outage>,
}

/// How often a soak samples the gateway, and the span its round-trip percentiles group by.
const SOAK_SAMPLE: Duration = Duration::from_secs(60);

/// One reading of the gateway process during a soak.
struct Sample {
    /// Into the media phase.
    at: Duration,
    rss_kib: u64,
    /// Open file descriptors (`/proc/PID/fd` entries).
    fds: usize,
    threads: u64,
}

impl Sample {
    fn of(pid: u32, at: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            at,
            rss_kib: proc_status_kib(pid, "VmRSS")?,
            fds: open_fds(pid)?,
            threads: proc_status_kib(pid, "Threads")?,
        })
    }
}

/// One row of the report.
struct Row {
    /// Which gateway served it.
    gateway: String,
    n: usize,
    opened: usize,
    completed: usize,
    sent: u64,
    received: u64,
    corrupt: u64,
    marks: u64,
    client_late: u64,
    client_max_lag: Duration,
    late: u64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    open_time: Duration,
    gateway_cpu: Duration,
    client_cpu: Duration,
    /// CPU time of everything else on the machine (other processes, the kernel's own threads)
    /// during the media phase: how noisy the row's neighbours were.
    others_cpu: Duration,
    wall: Duration,
    peak_rss_kib: u64,
    idle_rss_kib: u64,
    hwm_kib: u64,
    errors: Vec<String>,
    /// Open descriptors of the idle gateway before the first call.
    idle_fds: usize,
    /// Soak samples, one per `SOAK_SAMPLE` of the media phase.
    samples: Vec<Sample>,
    /// Soak: (minute, frames echoed, round-trip p99, max) of the frames sent in each minute.
    minutes: Vec<(usize, usize, Duration, Duration)>,
    /// Soak: the gateway once every call has ended.
    after: Option<Sample>,
    /// Soak: descriptors open after the calls that were not open when idle (their targets).
    new_fds: Vec<String>,
    records: RecordsRow,
}

impl Row {
    fn valid(&self) -> bool {
        self.client_late == 0
    }

    fn passes(&self) -> bool {
        self.valid()
            && self.opened == self.n
            && self.completed == self.n
            && self.received == self.sent
            && self.corrupt == 0
            && self.late == 0
            && self.p99 < P99_LIMIT
    }

    fn verdict(&self) -> String {
        if !self.valid() {
            return format!(
                "invalid: client late ×{} (max {:.0} ms)",
                self.client_late,
                ms(self.client_max_lag)
            );
        }
        let mut why = Vec::new();
        if self.completed < self.n {
            why.push(format!("{} calls not completed", self.n - self.completed));
        }
        if self.received < self.sent {
            why.push(format!("{} echoes lost", self.sent - self.received));
        }
        if self.corrupt > 0 {
            why.push(format!("{} corrupt", self.corrupt));
        }
        if self.late > 0 {
            why.push(format!("{} late", self.late));
        }
        if self.p99 >= P99_LIMIT {
            why.push("p99 ≥ 5 ms".into());
        }
        if why.is_empty() {
            "pass".into()
        } else {
            format!("fail: {}", why.join(", "))
        }
    }

    /// Gateway CPU ms per call-second of media.
    fn cpu_per_call_s(&self) -> f64 {
        ms(self.gateway_cpu) / (self.n as f64 * self.wall.as_secs_f64())
    }

    fn summary(&self) -> String {
        format!(
            "{}/{} completed, {} of {} echoed, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, gateway {:.0} % core, client {:.0} % core, others {:.0} % core: {}",
            self.completed,
            self.n,
            self.received,
            self.sent,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            pct(self.gateway_cpu, self.wall),
            pct(self.client_cpu, self.wall),
            pct(self.others_cpu, self.wall),
            self.verdict()
        )
    }
}

async fn run_level(level: &Level, mut cluster: Option<&mut Cluster>) -> anyhow::Result<Row> {
    for (address, _) in &level.fleet {
        wait_idle(&format!("http://{address}")).await?;
    }
    let pids: Vec<u32> = level.fleet.iter().map(|g| g.1).collect();
    // Every call to a gateway opens the same URL with no parameters: one signature serves them
    // all.
    let urls: Vec<(String, String)> = level
        .fleet
        .iter()
        .map(|(address, _)| {
            let url = format!("ws://{address}/twilio/media-stream");
            let sig = signature::compute(AUTH_TOKEN, &url, &[], Algorithm::HmacSha1);
            (url, sig)
        })
        .collect();
    let mut probe = (level.backend == Backend::Postgres)
        .then(|| records::Probe::new(level.fleet.iter().map(|g| g.0.clone()).collect()));
    if let Some(probe) = &mut probe {
        probe.read().await?;
    }
    let db = cluster.as_deref().zip(level.db_name.as_deref());
    let commits0 = db.map(|(c, name)| xact_commit(c, name)).transpose()?;
    let mut rec = RecordsRow::default();
    // A call's webhooks go to the gateway after the one carrying its stream, as a load balancer
    // in front of the fleet may send them.
    let webhook_calls: Vec<(String, String)> = (0..level.n)
        .map(|i| {
            (
                call_sid(level, i),
                level.fleet[(i + 1) % level.fleet.len()].0.clone(),
            )
        })
        .collect();
    let ready = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(OnceLock::<Instant>::new());
    let tone = Arc::new(tone());
    let frames = (level.duration.as_millis() / FRAME.as_millis()) as usize;
    let opening = Instant::now();
    if level.webhooks {
        rec.webhook_errors = records::voice_webhooks(AUTH_TOKEN, webhook_calls.clone()).await;
    }
    let threads = level.client_threads.clamp(1, level.n);
    let mut shards: Vec<Vec<CallPlan>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..level.n {
        let g = i % level.fleet.len();
        shards[i % threads].push(CallPlan {
            index: i,
            n: level.n,
            frames,
            address: level.fleet[g].0.clone(),
            url: urls[g].0.clone(),
            signature: urls[g].1.clone(),
            call_sid: call_sid(level, i),
            stream_sid: format!("MZ{:016x}{:08x}{:08x}", level.nonce, level.n, i),
            tone: tone.clone(),
        });
    }
    let mut tasks = Vec::with_capacity(threads);
    for (i, plans) in shards.into_iter().enumerate() {
        let (ready, start) = (ready.clone(), start.clone());
        tasks.push(
            std::thread::Builder::new()
                .name(format!("client-{i}"))
                .spawn(move || client::run_shard(plans, &ready, &start))?,
        );
    }
    // Peak memory covers opening as well as the media phase.
    let mut peak_rss_kib = sum_status_kib(&pids, "VmRSS")?;
    while ready.load(Ordering::Acquire) < level.n {
        if opening.elapsed() > OPEN_TIMEOUT {
            bail!("{} calls took more than {OPEN_TIMEOUT:?} to open", level.n);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        peak_rss_kib = peak_rss_kib.max(sum_status_kib(&pids, "VmRSS").unwrap_or(0));
        if let Some(probe) = &mut probe {
            probe.tick().await?;
        }
    }
    let open_time = opening.elapsed();
    tokio::time::sleep(SETTLE).await;
    let t0 = Instant::now() + Duration::from_millis(100);
    let _ = start.set(t0);
    tokio::time::sleep_until(t0.into()).await;
    let perf = match &level.perf {
        Some(out) => Some(start_perf(level.pid, out, level.duration)?),
        None => None,
    };
    let statuses = level.webhooks.then(|| {
        tokio::spawn(records::status_callbacks(
            AUTH_TOKEN,
            webhook_calls,
            t0,
            level.duration,
        ))
    });
    let (gw0, cl0, all0) = (
        sum_cpu_ticks(&pids)?,
        self_cpu_ticks()?,
        machine_busy_ticks()?,
    );
    let started = Instant::now();
    let end = t0 + level.duration;
    let mut samples = Vec::new();
    if level.soak {
        samples.push(Sample::of(level.pid, Duration::ZERO)?);
    }
    let mut next_sample = started + SOAK_SAMPLE;
    // `--pg-outage`: the server is down for the middle third of the media phase.
    let (down_at, up_at) = (t0 + level.duration / 3, t0 + level.duration * 2 / 3);
    let mut down = None;
    while Instant::now() < end {
        tokio::time::sleep(RSS_SAMPLE.min(end.saturating_duration_since(Instant::now()))).await;
        peak_rss_kib = peak_rss_kib.max(sum_status_kib(&pids, "VmRSS").unwrap_or(0));
        if let Some(probe) = &mut probe {
            probe.tick().await?;
        }
        if level.outage
            && let Some(cluster) = cluster.as_deref_mut()
        {
            let now = Instant::now();
            if down.is_none() && now >= down_at {
                cluster.stop().context("stopping PostgreSQL")?;
                down = Some((now - t0, Duration::ZERO));
            } else if let Some((from, Duration::ZERO)) = down
                && now >= up_at
            {
                cluster.start_again().context("starting PostgreSQL again")?;
                down = Some((from, Instant::now() - t0));
            }
        }
        if level.soak && Instant::now() >= next_sample {
            samples.push(Sample::of(level.pid, started.elapsed())?);
            next_sample += SOAK_SAMPLE;
        }
    }
    if level.soak {
        // The last stretch of the media phase, so every minute's round trips have a row.
        samples.push(Sample::of(level.pid, started.elapsed())?);
    }
    let (gw1, cl1, all1) = (
        sum_cpu_ticks(&pids)?,
        self_cpu_ticks()?,
        machine_busy_ticks()?,
    );
    let wall = started.elapsed();
    let mut logs = Vec::with_capacity(level.n);
    // The client threads end shortly after their last call's `stop` (the gateway closes at once).
    let joined = tokio::task::spawn_blocking(move || {
        tasks
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<Vec<CallLog>>>>()
    })
    .await
    .context("joining the client threads")??;
    logs.extend(joined.into_iter().flatten());
    if let Some(mut perf) = perf {
        let _ = perf.wait();
    }
    if let Some(statuses) = statuses {
        rec.webhook_errors
            .extend(statuses.await.context("the status callbacks' task")?);
    }
    if let Some(probe) = &mut probe {
        // Every write of the row in, the held ones among them.
        probe.settle(Duration::from_secs(60)).await?;
        rec.figures = Some(probe.figures());
    }
    if let (Some(c), Some(name)) = (cluster.as_deref(), level.db_name.as_deref()) {
        // The server's statistics reach `pg_stat_database` within a second or so.
        tokio::time::sleep(Duration::from_secs(2)).await;
        rec.commits = commits0
            .zip(Some(xact_commit(c, name)?))
            .map(|(a, b)| b.saturating_sub(a));
        let counts = c.psql(
            name,
            "SELECT count(*), count(ended_at_ms), \
             coalesce(sum(jsonb_array_length(status_history::jsonb)), 0) FROM calls",
        )?;
        let v: Vec<u64> = counts
            .trim()
            .split('|')
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        rec.calls = Some((
            v.first().copied().unwrap_or(0),
            v.get(1).copied().unwrap_or(0),
        ));
        rec.statuses = v.get(2).copied();
    }
    let tick = |t: u64| Duration::from_millis(t * 1000 / level.clk_tck);
    let mut rtt: Vec<u32> = logs.iter().flat_map(|l| l.rtt_us.iter().copied()).collect();
    rtt.sort_unstable();
    let at = |p: f64| -> Duration {
        rtt.get(((rtt.len().saturating_sub(1)) as f64 * p).round() as usize)
            .map_or(Duration::ZERO, |us| Duration::from_micros(u64::from(*us)))
    };
    let per_minute = (SOAK_SAMPLE.as_millis() / FRAME.as_millis()) as u32;
    let mut minutes: Vec<Vec<u32>> = Vec::new();
    if level.soak {
        for log in &logs {
            for (frame, us) in log.rtt_frame.iter().zip(&log.rtt_us) {
                let m = (frame / per_minute) as usize;
                if minutes.len() <= m {
                    minutes.resize_with(m + 1, Vec::new);
                }
                minutes[m].push(*us);
            }
        }
    }
    let minutes = minutes
        .into_iter()
        .enumerate()
        .map(|(m, mut us)| {
            us.sort_unstable();
            let p99 = us
                .get(((us.len().saturating_sub(1)) as f64 * 0.99).round() as usize)
                .copied()
                .unwrap_or(0);
            let max = us.last().copied().unwrap_or(0);
            (
                m,
                us.len(),
                Duration::from_micros(u64::from(p99)),
                Duration::from_micros(u64::from(max)),
            )
        })
        .collect();
    if let Some((from, to)) = down {
        let (lo, hi) = (
            (from.as_millis() / FRAME.as_millis()) as u32,
            (to.as_millis() / FRAME.as_millis()) as u32,
        );
        let (mut inside, mut outside): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
        for log in &logs {
            for (frame, us) in log.rtt_frame.iter().zip(&log.rtt_us) {
                if (lo..hi).contains(frame) {
                    inside.push(*us);
                } else {
                    outside.push(*us);
                }
            }
        }
        rec.outage = Some((from, to, p99_max(inside), p99_max(outside)));
    }
    let mut errors: Vec<String> = logs.iter().filter_map(|l| l.error.clone()).collect();
    errors.dedup();
    Ok(Row {
        gateway: String::new(),
        n: level.n,
        opened: logs.iter().filter(|l| l.opened).count(),
        completed: logs.iter().filter(|l| l.completed).count(),
        sent: logs.iter().map(|l| l.sent).sum(),
        received: logs.iter().map(|l| l.received).sum(),
        corrupt: logs.iter().map(|l| l.corrupt).sum(),
        marks: logs.iter().map(|l| l.marks).sum(),
        client_late: logs.iter().map(|l| l.late_sends).sum(),
        client_max_lag: logs.iter().map(|l| l.max_lag).max().unwrap_or_default(),
        late: rtt
            .iter()
            .filter(|us| u128::from(**us) > LATE.as_micros())
            .count() as u64,
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
        open_time,
        gateway_cpu: tick(gw1 - gw0),
        client_cpu: tick(cl1 - cl0),
        others_cpu: tick((all1 - all0).saturating_sub((gw1 - gw0) + (cl1 - cl0))),
        wall,
        peak_rss_kib,
        idle_rss_kib: 0,
        hwm_kib: 0,
        errors,
        idle_fds: 0,
        samples,
        minutes,
        after: None,
        new_fds: Vec::new(),
        records: rec,
    })
}

/// Call `i`'s sid (unique to the run, the row and the call).
fn call_sid(level: &Level, i: usize) -> String {
    format!("CA{:016x}{:08x}{:08x}", level.nonce, level.n, i)
}

/// The (p99, max) of round trips in µs.
fn p99_max(mut us: Vec<u32>) -> (Duration, Duration) {
    us.sort_unstable();
    let at = |p: f64| {
        us.get(((us.len().saturating_sub(1)) as f64 * p).round() as usize)
            .map_or(Duration::ZERO, |v| Duration::from_micros(u64::from(*v)))
    };
    (at(0.99), at(1.0))
}

/// Transactions committed so far in database `name`.
fn xact_commit(cluster: &Cluster, name: &str) -> anyhow::Result<u64> {
    let out = cluster.psql(
        name,
        &format!("SELECT xact_commit FROM pg_stat_database WHERE datname = '{name}'"),
    )?;
    out.trim()
        .parse()
        .with_context(|| format!("xact_commit: {out:?}"))
}

/// The echo path decodes μ-law to PCM16 and encodes it back: every code a frame uses must
/// survive that unchanged, or echoes could not be matched.
fn check_round_trip() {
    let tone = tone();
    for code in tone.iter().copied().chain(0xE0..=0xEF) {
        assert_eq!(
            mulaw::encode(mulaw::decode(code)),
            code,
            "μ-law code {code:#04x} does not survive decode → encode"
        );
    }
    let mut frame = tone;
    tag(1234, 567, &mut frame);
    assert_eq!(untag(&frame), Some((1234, 567)));
}

/// `perf record -g` of the gateway for most of the media phase.
fn start_perf(pid: u32, out: &Path, duration: Duration) -> anyhow::Result<Child> {
    let secs = duration.as_secs().saturating_sub(2).max(1);
    Command::new("perf")
        .args(["record", "-g", "-F", "999", "-o"])
        .arg(out)
        .args(["-p", &pid.to_string(), "--", "sleep", &secs.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record")
}

/// The soft open-file limits of the gateway and this client.
fn open_file_limits(pid: u32) -> String {
    let soft = |path: String| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
            })
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "gateway {}, client {}",
        soft(format!("/proc/{pid}/limits")),
        soft("/proc/self/limits".into())
    )
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(fd_targets(pid)?.len())
}

/// What each open descriptor of `pid` points at (`/proc/PID/fd/N`'s link: a path, `socket:[…]`,
/// `anon_inode:[eventpoll]`), with socket and pipe inode numbers dropped so that sets compare.
fn fd_targets(pid: u32) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("reading /proc/{pid}/fd"))?
    {
        let Ok(entry) = entry else { continue };
        let target = std::fs::read_link(entry.path())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "?".into());
        out.push(target.split(":[").next().unwrap_or_default().to_string());
    }
    out.sort();
    Ok(out)
}

/// The soak report of one row: per-minute samples and percentiles, then the verdicts.
fn print_soak(r: &Row) {
    println!(
        "\n# Soak: {} calls ({}), {:.0} s of media\n",
        r.n,
        r.gateway,
        r.wall.as_secs_f64()
    );
    println!("| minute | RSS | open fds | threads | frames echoed | RTT p99 | max |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| idle | {:.1} MiB | {} | | | | |",
        r.idle_rss_kib as f64 / 1024.0,
        r.idle_fds
    );
    for s in &r.samples {
        let m = (s.at.as_secs_f64() / SOAK_SAMPLE.as_secs_f64()).round() as usize;
        let (frames, p99, max) = r.minutes.iter().find(|(i, ..)| *i + 1 == m).map_or(
            (String::new(), String::new(), String::new()),
            |(_, n, p, x)| {
                (
                    n.to_string(),
                    format!("{:.2} ms", ms(*p)),
                    format!("{:.1} ms", ms(*x)),
                )
            },
        );
        println!(
            "| {m} | {:.1} MiB | {} | {} | {frames} | {p99} | {max} |",
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.threads
        );
    }
    if let Some(a) = &r.after {
        println!(
            "| after | {:.1} MiB | {} | {} | | | |",
            a.rss_kib as f64 / 1024.0,
            a.fds,
            a.threads
        );
    }
    // Warm-up: the first minute (the allocator and the calls' buffers reach their working size).
    let warm = r.samples.iter().find(|s| s.at >= SOAK_SAMPLE);
    let last = r.samples.last();
    if let (Some(warm), Some(last)) = (warm, last) {
        let growth = 100.0 * (last.rss_kib as f64 - warm.rss_kib as f64) / warm.rss_kib as f64;
        println!(
            "\nRSS growth after warm-up (minute 1 → last sample): {growth:+.2} % ({}: < 5 %)",
            if growth < 5.0 { "flat" } else { "GROWING" }
        );
    }
    if let Some(a) = &r.after {
        println!(
            "Open descriptors after the calls: {} against {} idle ({})",
            a.fds,
            r.idle_fds,
            if a.fds <= r.idle_fds {
                "back to baseline"
            } else {
                "LEAKED"
            }
        );
        if !r.new_fds.is_empty() {
            println!("Opened since idle and still open: {}", r.new_fds.join(", "));
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(cpu: Duration, wall: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9)
}

fn print_report(args: &Args, rows: &[Row], started: SystemTime, clk_tck: u64, nofile: &str) {
    let Some(base) = rows.first() else { return };
    let rss_per_call =
        |r: &Row| (r.peak_rss_kib.saturating_sub(r.idle_rss_kib)) as f64 / r.n as f64;
    let since_epoch = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let calls: Vec<String> = args.calls.iter().map(usize::to_string).collect();
    println!(
        "\n# Capacity: echo (WASM, immediate), {} s of media per call, 20 ms frames\n",
        args.duration.as_secs()
    );
    let workers = args.gateway_workers.map_or_else(
        || "its default (one per core)".to_string(),
        |n| n.to_string(),
    );
    println!(
        "Started at {since_epoch} (Unix s); N = {}; CLK_TCK {clk_tck}; open files: {nofile}; \
         gateway worker threads: {workers}; gateway shards: {}; client threads: {}. Each row \
         is a fresh gateway process. Ratios (×) are against the first row ({} calls, {}).\n",
        calls.join(", "),
        args.gateway_shards
            .map_or_else(|| "none (one runtime)".to_string(), |n| n.to_string()),
        args.client_threads,
        base.n,
        base.gateway
    );
    println!(
        "| gateway | calls | completed | frames sent | echoed | marks / echo | client late | late > 20 ms | RTT p50 | p99 | max | gateway CPU (% core) | CPU ms / call-s | × | µs / frame | idle RSS | peak RSS | RSS / call | × | client CPU (% core) | others' CPU (% core) | open | verdict |"
    );
    println!(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {} | {} | {:.2} ms | {:.2} ms | {:.1} ms | {:.0} | {:.3} | {:.2} | {:.1} | {:.1} MiB | {:.1} MiB | {:.1} KiB | {:.2} | {:.0} | {:.0} | {:.1} s | {} |",
            r.gateway,
            r.n,
            r.completed,
            r.sent,
            r.received,
            r.marks as f64 / r.received.max(1) as f64,
            r.client_late,
            r.late,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            pct(r.gateway_cpu, r.wall),
            r.cpu_per_call_s(),
            r.cpu_per_call_s() / base.cpu_per_call_s().max(1e-9),
            // Per echoed frame: one media in, one media out (plus the clock's marks).
            r.gateway_cpu.as_secs_f64() * 1e6 / r.received.max(1) as f64,
            r.idle_rss_kib as f64 / 1024.0,
            r.peak_rss_kib as f64 / 1024.0,
            rss_per_call(r),
            rss_per_call(r) / rss_per_call(base).max(1e-9),
            pct(r.client_cpu, r.wall),
            pct(r.others_cpu, r.wall),
            r.open_time.as_secs_f64(),
            r.verdict()
        );
    }
    for r in rows.iter().filter(|r| !r.errors.is_empty()) {
        println!(
            "\n{} at {} calls: {} call errors, e.g. {}",
            r.gateway,
            r.n,
            r.errors.len(),
            r.errors[0]
        );
    }
    println!();
    let mut labels: Vec<&str> = rows.iter().map(|r| r.gateway.as_str()).collect();
    labels.dedup();
    labels.sort_unstable();
    labels.dedup();
    for label in labels {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.gateway == label).collect();
        let capacity = mine.iter().filter(|r| r.passes()).map(|r| r.n).max();
        // Unknown past the capacity only when the next N up could not be judged.
        let invalid_above = mine
            .iter()
            .filter(|r| capacity.is_none_or(|c| r.n > c))
            .min_by_key(|r| r.n)
            .is_some_and(|r| !r.valid());
        let caveat = if invalid_above {
            " or more (the next N up is invalid: the client was overloaded)"
        } else {
            ""
        };
        match capacity.and_then(|c| mine.iter().find(|r| r.n == c)) {
            Some(r) => println!(
                "Capacity of {label}: {} concurrent calls{caveat}, p99 {:.2} ms; there the gateway used {:.0} % of a core, {:.3} CPU-ms per call-second, {:.1} KiB RSS per call.",
                r.n,
                ms(r.p99),
                pct(r.gateway_cpu, r.wall),
                r.cpu_per_call_s(),
                rss_per_call(r)
            ),
            None => println!(
                "Capacity of {label}: no N met the criterion (every call completed, every frame echoed, none late, p99 < 5 ms){caveat}."
            ),
        }
    }
}

/// The call-records table: per row, what the records database took and whether the audio
/// noticed; ratios against the first row of the same N (the first backend of `--records`).
fn print_records(args: &Args, rows: &[Row]) {
    println!(
        "\n# Call records: {} gateway process(es) per row, calls split between them; {}\n",
        args.fleet,
        if args.webhooks {
            "per call a voice webhook (to the other gateway), the stream, 3 status callbacks over the media phase and the end: 6 writes"
        } else {
            "per call the stream's start and end: 2 writes"
        }
    );
    println!(
        "| gateway | calls | RTT p99 | × | max | late > 20 ms | CPU ms / call-s | × | writes | busy | writes/s mean | peak (1 s) | most held | lost | transactions (all) | calls recorded (ended) | statuses | webhook errors |"
    );
    println!(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let base = rows.iter().find(|b| b.n == r.n).unwrap_or(r);
        let rec = &r.records;
        let f = rec.figures.clone();
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "—".into());
        println!(
            "| {} | {} | {:.2} ms | {:.2} | {:.1} ms | {} | {:.3} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.gateway,
            r.n,
            ms(r.p99),
            ms(r.p99) / ms(base.p99).max(1e-9),
            ms(r.max),
            r.late,
            r.cpu_per_call_s(),
            r.cpu_per_call_s() / base.cpu_per_call_s().max(1e-9),
            or_dash(f.as_ref().map(|f| format!("{:.0}", f.writes))),
            or_dash(f.as_ref().map(|f| format!("{:.1} s", f.busy.as_secs_f64()))),
            or_dash(f.as_ref().map(|f| format!("{:.0}", f.mean_per_s()))),
            or_dash(f.as_ref().map(|f| format!("{:.0}", f.peak_per_s))),
            or_dash(f.as_ref().map(|f| format!("{:.0}", f.max_held))),
            or_dash(f.as_ref().map(|f| format!("{:.0}", f.lost))),
            or_dash(rec.commits.map(|c| c.to_string())),
            or_dash(rec.calls.map(|(c, e)| format!("{c} ({e})"))),
            or_dash(rec.statuses.map(|s| s.to_string())),
            rec.webhook_errors.len(),
        );
    }
    for r in rows {
        if let Some(e) = r.records.webhook_errors.first() {
            println!("\n{} at {} calls: webhook error, e.g. {e}", r.gateway, r.n);
        }
        if let Some((from, to, (p99_in, max_in), (p99_out, max_out))) = r.records.outage {
            println!(
                "\n{} at {} calls: PostgreSQL down from {:.1} s to {:.1} s of the media phase. \
                 Frames sent while it was down: RTT p99 {:.2} ms, max {:.1} ms; the others: \
                 p99 {:.2} ms, max {:.1} ms (× {:.2}).",
                r.gateway,
                r.n,
                from.as_secs_f64(),
                to.as_secs_f64(),
                ms(p99_in),
                ms(max_in),
                ms(p99_out),
                ms(max_out),
                ms(p99_in) / ms(p99_out).max(1e-9)
            );
        }
    }
}
