//! The PostgreSQL backend of the call records (`[records] url = "postgres://…"`): one database
//! shared by a fleet of gateways, serving the same commands as the SQLite writer thread.
//!
//! - **Off the audio path.** Calls hand their writes to a bounded queue ([`super::RECORDS_QUEUE`])
//!   and never wait on the database; one writer task per gateway commits them in batches of up
//!   to [`BATCH`] per transaction, in the order sent.
//! - **Outages.** When the server cannot be reached, writes are *held* in memory (at most
//!   [`HELD_WRITES`]), their senders are answered at once, and the writer retries with backoff
//!   ([`RETRY_MIN`]…[`RETRY_MAX`]); when the server is back they are written, in order. A write
//!   that finds the hold full, that the database refuses (a constraint, a bug), or that is still
//!   held when the gateway stops after [`FLUSH_WAIT`], is logged and counted in
//!   `switchboard_records_lost_writes_total`, never dropped silently. Reads (the operator API,
//!   a call's task) fail with [`RecordsError::Unavailable`] during an outage.
//! - **Schema.** [`MIGRATIONS`] are applied at start under an advisory lock (two gateways
//!   starting at once apply each one once) and counted in `switchboard_schema`; a database from
//!   a newer build is refused untouched.
//! - **Liveness** ([`Fleet`]). Each instance upserts its row in `instances` every heartbeat, in
//!   the database's clock. An instance whose heartbeat is older than the grace period is dead:
//!   the first survivor to see it marks it reaped and its live calls `interrupted`, in one
//!   transaction whose row lock makes a second survivor find it already reaped (exactly once).
//!   A survivor only judges others once its own heartbeats have run for a grace period, so an
//!   outage of the database never makes the whole fleet look dead to the first to reconnect.
//! - **TLS** when the URL asks for it (`sslmode=require`, `verify-ca`, `verify-full` or
//!   `prefer`), through rustls: the server's chain is verified against the system's roots, or
//!   the CAs in `sslrootcert=FILE`, and its name against the URL's host; otherwise plain TCP
//!   or a Unix socket.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::mpsc;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

use super::postgres_queries::{self as q, Write};
use super::{
    Command, OUTCOME_IN_PROGRESS, OUTCOME_INTERRUPTED, RECORDS_QUEUE, RecordsError, Recovery, Reply,
};
use crate::metrics;

/// Most writes held in memory while the database is unreachable; beyond it new writes are lost
/// (logged and counted). A call makes about four, so this rides out an outage of several
/// minutes at a few calls a second.
pub const HELD_WRITES: usize = 10_000;
/// Most writes committed in one transaction.
pub const BATCH: usize = 256;
/// How long [`super::Records::flush`] (and the writer's last flush at shutdown) keeps retrying
/// held writes.
pub const FLUSH_WAIT: Duration = Duration::from_secs(10);
/// First wait before retrying held writes; doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest wait between retries of held writes.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// Bound on connecting, and on any one database operation.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on opening one connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections per gateway: the writer, the heartbeat, and a spare.
pub const POOL_SIZE: usize = 3;
/// The advisory lock key under which migrations run.
const MIGRATION_LOCK: i64 = 0x5357_4944_4241_5244; // "SWIDBARD"

/// The time in the database's clock, unix epoch milliseconds: heartbeats and their judgement
/// use one clock for the whole fleet.
const DB_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// The PostgreSQL schema, one migration per entry, applied in order; `switchboard_schema` holds
/// a row per applied version. As with the SQLite [`super::MIGRATIONS`]: append, never edit.
///
/// Migration 1 is the SQLite schema at its version 5 (calls, callbacks, tasks, rate buckets)
/// plus `instances` (fleet liveness) and an index of live calls by instance.
pub const MIGRATIONS: &[&str] = &["
    CREATE TABLE calls (
        call_sid           TEXT PRIMARY KEY,
        direction          TEXT,
        from_addr          TEXT,
        to_addr            TEXT,
        agent              TEXT,
        plugin             TEXT,
        stream_sid         TEXT,
        status             TEXT,
        outcome            TEXT,
        reason             TEXT,
        failure_kind       TEXT,
        task               TEXT,
        result             TEXT,
        callback_url       TEXT,
        instance           TEXT,
        created_at_ms      BIGINT NOT NULL,
        started_at_ms      BIGINT,
        answered_at_ms     BIGINT,
        ended_at_ms        BIGINT,
        status_ended_at_ms BIGINT,
        duration_s         BIGINT,
        frames_in          BIGINT,
        frames_out         BIGINT,
        first_audio_ms     BIGINT,
        transcript         TEXT NOT NULL DEFAULT '[]',
        turn_latency       TEXT NOT NULL DEFAULT '[]',
        status_history     TEXT NOT NULL DEFAULT '[]',
        updated_at_ms      BIGINT NOT NULL
    );
    CREATE INDEX calls_by_created ON calls (created_at_ms DESC, call_sid DESC);
    CREATE INDEX calls_by_agent ON calls (agent, created_at_ms DESC, call_sid DESC);
    CREATE INDEX calls_live_by_instance ON calls (instance) WHERE outcome = 'in-progress';
    CREATE TABLE callbacks (
        id              TEXT PRIMARY KEY,
        call_sid        TEXT NOT NULL,
        url             TEXT NOT NULL,
        body            TEXT NOT NULL,
        created_at_ms   BIGINT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms BIGINT NOT NULL,
        delivered_at_ms BIGINT,
        failed_at_ms    BIGINT,
        last_error      TEXT
    );
    CREATE INDEX callbacks_due ON callbacks (next_attempt_ms)
        WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL;
    CREATE TABLE tasks (
        id            TEXT PRIMARY KEY,
        task          TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL
    );
    CREATE INDEX tasks_by_created ON tasks (created_at_ms);
    CREATE TABLE rate_buckets (
        key    TEXT PRIMARY KEY,
        tat_us BIGINT NOT NULL
    );
    CREATE TABLE instances (
        id              TEXT PRIMARY KEY,
        started_at_ms   BIGINT NOT NULL,
        heartbeat_at_ms BIGINT NOT NULL,
        reaped_at_ms    BIGINT,
        reaped_by       TEXT
    );
"];

/// This gateway's place in a fleet sharing one PostgreSQL database (`[records]` `instance`,
/// `heartbeat_ms`, `grace_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// This instance's name, stamped on the calls it carries; unique in the fleet.
    pub instance: String,
    /// How often this instance heartbeats.
    pub heartbeat: Duration,
    /// How long an instance may go without a heartbeat before it is dead.
    pub grace: Duration,
}

/// Connects, migrates, queues callbacks left unqueued, registers this instance and starts the
/// writer task.
pub(super) async fn open(
    url: &str,
    fleet: Fleet,
) -> Result<(mpsc::Sender<Command>, Recovery), RecordsError> {
    let pool = pool(url)?;
    let mut client = connect(&pool).await?;
    let schema_version = migrate(&mut client).await?;
    {
        let tx = client.transaction().await?;
        q::sweep_callbacks(&tx).await?;
        tx.commit().await?;
    }
    drop(client);
    let mut server = Server {
        pool,
        fleet,
        held: VecDeque::new(),
        retry_at: None,
        backoff: RETRY_MIN,
        outage_since: None,
        healthy_since: None,
        told_reaped: false,
    };
    server.heartbeat().await;
    tracing::info!(
        instance = %server.fleet.instance,
        schema_version,
        "call records open on PostgreSQL"
    );
    let (commands, receiver) = mpsc::channel(RECORDS_QUEUE);
    tokio::spawn(server.run(receiver));
    Ok((
        commands,
        Recovery {
            interrupted: 0,
            schema_version,
        },
    ))
}

/// What the URL asks of TLS, beyond what the driver's own URL parser takes.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsAsk {
    /// `sslmode` is `prefer`, `require`, `verify-ca` or `verify-full`.
    on: bool,
    /// `sslrootcert`: PEM file of the certificate authorities to trust instead of the system's
    /// (a cloud provider's database CA bundle, say).
    root_cert: Option<std::path::PathBuf>,
}

/// Splits libpq's TLS parameters off `url`: `sslrootcert` is taken out, and `verify-ca` and
/// `verify-full` become `require` (which this gateway always verifies: the chain against the
/// trusted roots, and the server's name against the URL's host). The rest is left to
/// `tokio-postgres`, which knows only `disable`, `prefer` and `require`.
fn split_tls(url: &str) -> Result<(String, TlsAsk), RecordsError> {
    // The parse error never contains the URL (nor its password).
    let mut parsed =
        url::Url::parse(url).map_err(|e| RecordsError::BadUrl(format!("not a URL: {e}")))?;
    let mut ask = TlsAsk::default();
    let mut kept: Vec<(String, String)> = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match (key.as_ref(), value.as_ref()) {
            ("sslrootcert", path) => ask.root_cert = Some(path.into()),
            ("sslmode", mode @ ("verify-ca" | "verify-full" | "require" | "prefer")) => {
                ask.on = true;
                let mode = if mode == "prefer" {
                    "prefer"
                } else {
                    "require"
                };
                kept.push(("sslmode".into(), mode.into()));
            }
            (key, value) => kept.push((key.into(), value.into())),
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(&kept);
    }
    Ok((parsed.into(), ask))
}

/// Checks that `url` is a PostgreSQL URL this backend can use (libpq's TLS parameters
/// included), without connecting.
///
/// # Errors
/// [`RecordsError::BadUrl`], whose message never contains the URL.
pub fn check_url(url: &str) -> Result<(), RecordsError> {
    let (url, _) = split_tls(url)?;
    url.parse::<tokio_postgres::Config>()
        .map(|_| ())
        .map_err(|e| RecordsError::BadUrl(e.to_string()))
}

/// The connection pool for `url`; TLS only when the URL asks for it (see [`split_tls`]).
fn pool(url: &str) -> Result<Pool, RecordsError> {
    let (url, ask) = split_tls(url)?;
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| RecordsError::BadUrl(e.to_string()))?;
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .application_name("switchboard");
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = if ask.on {
        Manager::from_config(config, tls(ask.root_cert.as_deref())?, manager_config)
    } else {
        config.ssl_mode(SslMode::Disable);
        Manager::from_config(config, NoTls, manager_config)
    };
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(OPERATION_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| RecordsError::BadUrl(e.to_string()))
}

/// rustls trusting `root_cert`'s certificates (PEM), else the system's roots, and verifying the
/// server's name.
fn tls(
    root_cert: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, RecordsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let bad = |e: &dyn std::fmt::Display| {
                RecordsError::BadUrl(format!("sslrootcert {}: {e}", path.display()))
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A certificate the store cannot parse is skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(RecordsError::BadUrl(
            "sslmode asks for TLS but there are no root certificates to trust (system roots, or \
             sslrootcert=FILE)"
                .into(),
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RecordsError::BadUrl(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A connection from the pool, within [`OPERATION_TIMEOUT`].
async fn connect(pool: &Pool) -> Result<Object, RecordsError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, pool.get()).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => {
            // The pool's error says "db error"; the server's own words are in its sources.
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            Err(RecordsError::Unavailable(message))
        }
        Err(_) => Err(RecordsError::Unavailable(
            "timed out connecting to PostgreSQL".into(),
        )),
    }
}

/// Bounds `operation` by [`OPERATION_TIMEOUT`].
async fn timed<T>(
    operation: impl Future<Output = Result<T, RecordsError>>,
) -> Result<T, RecordsError> {
    tokio::time::timeout(OPERATION_TIMEOUT, operation)
        .await
        .unwrap_or_else(|_| {
            Err(RecordsError::Unavailable(
                "a PostgreSQL operation timed out".into(),
            ))
        })
}

/// Applies pending [`MIGRATIONS`] in one transaction under an advisory lock. Returns the
/// schema version.
async fn migrate(client: &mut Client) -> Result<u32, RecordsError> {
    let known = u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX);
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS switchboard_schema (
             version       INTEGER PRIMARY KEY,
             applied_at_ms BIGINT NOT NULL)",
    )
    .await?;
    let found: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM switchboard_schema",
            &[],
        )
        .await?
        .get(0);
    let found = u32::try_from(found).unwrap_or(u32::MAX);
    if found > known {
        // Rolled back on drop: nothing touched.
        return Err(RecordsError::NewerSchema { found, known });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO switchboard_schema (version, applied_at_ms) VALUES ($1, $2)",
            &[&version, &super::now_ms()],
        )
        .await?;
        tracing::info!(version, "applied call records migration (PostgreSQL)");
    }
    tx.commit().await?;
    Ok(known)
}

/// Whether a failed operation may succeed if tried again: the server could not be reached or
/// went away, is starting or stopping, is out of resources, or a transaction lost a race.
fn retryable(error: &RecordsError) -> bool {
    match error {
        RecordsError::Unavailable(_) => true,
        RecordsError::Postgres(e) => match e.code() {
            None => true,
            Some(code) => {
                let code = code.code();
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || code == "40001"
                    || code == "40P01"
            }
        },
        _ => false,
    }
}

/// A write waiting to be committed, and who waits for it (until it is answered `Ok` as held).
struct Held {
    write: Write,
    reply: Option<Reply<()>>,
}

/// The writer task's state.
struct Server {
    pool: Pool,
    fleet: Fleet,
    held: VecDeque<Held>,
    /// While the database is unreachable: when to try the held writes again.
    retry_at: Option<tokio::time::Instant>,
    backoff: Duration,
    outage_since: Option<Instant>,
    /// Since when this instance's heartbeats have succeeded without a break.
    healthy_since: Option<Instant>,
    told_reaped: bool,
}

impl Server {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut beat = tokio::time::interval(self.fleet.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retry_at = self.retry_at;
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.serve(command, &mut commands).await,
                    None => break,
                },
                () = async {
                    if let Some(at) = retry_at {
                        tokio::time::sleep_until(at).await;
                    }
                }, if retry_at.is_some() => {
                    self.retry_at = None;
                    self.write_held().await;
                }
                _ = beat.tick() => self.heartbeat().await,
            }
        }
        if !self.flush_until(Instant::now() + FLUSH_WAIT).await {
            let lost = self.held.len();
            tracing::error!(
                lost,
                "call records: the gateway stops with writes PostgreSQL never took; they are lost"
            );
            ::metrics::counter!(metrics::RECORDS_LOST, "reason" => "shutdown")
                .increment(lost as u64);
        }
        tracing::debug!("call records writer (PostgreSQL) stopped");
    }

    /// Serves `first` and, while they are writes, up to [`BATCH`] more already queued, then
    /// commits them together before serving a read.
    async fn serve(&mut self, first: Command, commands: &mut mpsc::Receiver<Command>) {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(command) = next.take() {
            match into_write(command) {
                Ok((write, reply)) => {
                    self.hold(write, reply);
                    taken += 1;
                    if taken < BATCH {
                        next = commands.try_recv().ok();
                    }
                }
                Err(other) => {
                    self.write_held().await;
                    self.answer(other).await;
                    return;
                }
            }
        }
        self.write_held().await;
    }

    fn hold(&mut self, write: Write, reply: Reply<()>) {
        if self.held.len() >= HELD_WRITES {
            tracing::error!(
                subject = write.subject(),
                held = self.held.len(),
                "call records: PostgreSQL is unreachable and the hold is full; write lost"
            );
            ::metrics::counter!(metrics::RECORDS_LOST, "reason" => "full").increment(1);
            let _ = reply.send(Err(RecordsError::Unavailable(format!(
                "PostgreSQL is unreachable and {HELD_WRITES} writes are already held"
            ))));
            return;
        }
        self.held.push_back(Held {
            write,
            reply: Some(reply),
        });
    }

    /// Commits held writes, [`BATCH`] per transaction, unless waiting out an outage's backoff.
    async fn write_held(&mut self) {
        if self.retry_at.is_some() {
            self.answer_held();
            return;
        }
        while !self.held.is_empty() {
            let n = self.held.len().min(BATCH);
            match self.commit(n).await {
                Ok(()) => {
                    for held in self.held.drain(..n) {
                        if let Some(reply) = held.reply {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    ::metrics::counter!(metrics::RECORDS_WRITES).increment(n as u64);
                }
                Err(error) if retryable(&error) => {
                    self.outage(&error);
                    return;
                }
                Err(error) => {
                    // Some write in the batch is refused: find it, one write per transaction.
                    tracing::warn!(%error, "call records batch refused; writing one by one");
                    if !self.commit_one_by_one(n).await {
                        return;
                    }
                }
            }
        }
        ::metrics::gauge!(metrics::RECORDS_HELD).set(0.0);
        if let Some(since) = self.outage_since.take() {
            tracing::info!(
                outage_ms = since.elapsed().as_millis() as u64,
                "call records: PostgreSQL is back; held writes are written"
            );
        }
        self.backoff = RETRY_MIN;
    }

    /// Commits the first `n` held writes in one transaction.
    async fn commit(&self, n: usize) -> Result<(), RecordsError> {
        timed(async {
            let mut client = connect(&self.pool).await?;
            let tx = client.transaction().await?;
            for held in self.held.iter().take(n) {
                held.write.apply(&tx, &self.fleet.instance).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Commits the first `n` held writes one per transaction, answering each; a refused write
    /// is logged, counted and answered with its error. `false` when the database became
    /// unreachable on the way (the rest stay held).
    async fn commit_one_by_one(&mut self, n: usize) -> bool {
        for _ in 0..n {
            match self.commit(1).await {
                Err(error) if retryable(&error) => {
                    self.outage(&error);
                    return false;
                }
                result => {
                    let Some(held) = self.held.pop_front() else {
                        return true;
                    };
                    if let Err(error) = &result {
                        tracing::error!(subject = held.write.subject(), %error, "call record write refused by PostgreSQL; lost");
                        ::metrics::counter!(metrics::RECORDS_LOST, "reason" => "refused")
                            .increment(1);
                    } else {
                        ::metrics::counter!(metrics::RECORDS_WRITES).increment(1);
                    }
                    if let Some(reply) = held.reply {
                        let _ = reply.send(result);
                    }
                }
            }
        }
        true
    }

    /// The database is unreachable: answer the held writes' senders (their writes are held),
    /// and retry after the backoff.
    fn outage(&mut self, error: &RecordsError) {
        if self.outage_since.is_none() {
            self.outage_since = Some(Instant::now());
            tracing::warn!(%error, held = self.held.len(), "call records: PostgreSQL is unreachable; holding writes and retrying");
        }
        ::metrics::counter!(metrics::RECORDS_RETRIES).increment(1);
        self.answer_held();
        self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
    }

    /// Answers `Ok` to every sender still waiting on a held write: it is held, and will be
    /// written (or counted lost).
    fn answer_held(&mut self) {
        for held in &mut self.held {
            if let Some(reply) = held.reply.take() {
                let _ = reply.send(Ok(()));
            }
        }
        ::metrics::gauge!(metrics::RECORDS_HELD).set(self.held.len() as f64);
    }

    /// Retries held writes until none is left (`true`) or `deadline` passes (`false`).
    async fn flush_until(&mut self, deadline: Instant) -> bool {
        loop {
            self.retry_at = None;
            self.write_held().await;
            if self.held.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(RETRY_MIN).await;
        }
    }

    /// Serves a command that is not a write.
    async fn answer(&mut self, command: Command) {
        let pool = &self.pool;
        match command {
            Command::Get(call_sid, reply) => {
                let result = timed(async { q::get(&*connect(pool).await?, &call_sid).await }).await;
                let _ = reply.send(result);
            }
            Command::List(filter, reply) => {
                let result = timed(async { q::list(&*connect(pool).await?, &filter).await }).await;
                let _ = reply.send(result);
            }
            Command::DueCallbacks(limit, reply) => {
                let result =
                    timed(async { q::due_callbacks(&*connect(pool).await?, limit).await }).await;
                let _ = reply.send(result);
            }
            Command::PutTask(task, reply) => {
                let result = timed(async {
                    let mut client = connect(pool).await?;
                    q::put_task(&mut client, &task).await
                })
                .await;
                let _ = reply.send(result);
            }
            Command::TakeTask(id, reply) => {
                let result = timed(async { q::take_task(&*connect(pool).await?, &id).await }).await;
                let _ = reply.send(result);
            }
            Command::RateTake(request, reply) => {
                let result =
                    timed(async { q::rate_take(&*connect(pool).await?, &request).await }).await;
                let _ = reply.send(result);
            }
            Command::Flush(reply) => {
                let result = if self.flush_until(Instant::now() + FLUSH_WAIT).await {
                    Ok(())
                } else {
                    Err(RecordsError::Unavailable(format!(
                        "{} call-record writes are still held: PostgreSQL is unreachable",
                        self.held.len()
                    )))
                };
                let _ = reply.send(result);
            }
            // Writes never reach here (see `serve`).
            write => {
                if let Ok((write, reply)) = into_write(write) {
                    self.hold(write, reply);
                    self.write_held().await;
                }
            }
        }
    }

    /// Upserts this instance's heartbeat; then, once healthy for a grace period, marks dead
    /// instances' live calls `interrupted`.
    async fn heartbeat(&mut self) {
        let me = self.fleet.instance.clone();
        let beat = timed(async {
            let client = connect(&self.pool).await?;
            let row = client
                .query_one(
                    &format!(
                        "INSERT INTO instances (id, started_at_ms, heartbeat_at_ms)
                         VALUES ($1, {DB_NOW_MS}, {DB_NOW_MS})
                         ON CONFLICT (id) DO UPDATE SET heartbeat_at_ms = {DB_NOW_MS}
                         RETURNING reaped_by"
                    ),
                    &[&me],
                )
                .await?;
            Ok(row.get::<_, Option<String>>(0))
        })
        .await;
        match beat {
            Ok(reaped_by) => {
                let since = *self.healthy_since.get_or_insert_with(Instant::now);
                if let (Some(by), false) = (&reaped_by, self.told_reaped) {
                    self.told_reaped = true;
                    tracing::error!(instance = %me, reaped_by = %by, "this instance missed its heartbeats for longer than the grace period; another instance marked its live calls interrupted (their end records will still be written)");
                }
                if since.elapsed() >= self.fleet.grace
                    && let Err(error) = self.reap().await
                {
                    tracing::warn!(%error, "fleet: could not check for dead instances");
                }
            }
            Err(error) => {
                if self.healthy_since.take().is_some() {
                    tracing::warn!(%error, "fleet: heartbeat failed");
                }
            }
        }
    }

    /// Marks instances silent for longer than the grace period reaped, and their live calls
    /// `interrupted` (ended at the instance's last heartbeat), in one transaction.
    async fn reap(&self) -> Result<(), RecordsError> {
        let me = &self.fleet.instance;
        let grace_ms = i64::try_from(self.fleet.grace.as_millis()).unwrap_or(i64::MAX);
        let (dead, calls) = timed(async {
            let mut client = connect(&self.pool).await?;
            let tx = client.transaction().await?;
            let dead: Vec<String> = tx
                .query(
                    &format!(
                        "UPDATE instances SET reaped_at_ms = {DB_NOW_MS}, reaped_by = $1
                         WHERE id <> $1 AND reaped_at_ms IS NULL
                           AND heartbeat_at_ms < {DB_NOW_MS} - $2
                         RETURNING id"
                    ),
                    &[me, &grace_ms],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            if dead.is_empty() {
                return Ok((dead, Vec::new()));
            }
            let calls: Vec<String> = tx
                .query(
                    "UPDATE calls SET outcome = $2,
                         reason = $3 || ' (instance ' || calls.instance || ', marked by ' || $4 || ')',
                         ended_at_ms = i.heartbeat_at_ms,
                         updated_at_ms = i.reaped_at_ms
                     FROM instances i
                     WHERE i.id = calls.instance AND calls.instance = ANY($1)
                       AND calls.outcome = $5
                     RETURNING calls.call_sid",
                    &[
                        &dead,
                        &OUTCOME_INTERRUPTED,
                        &FLEET_INTERRUPTED_REASON,
                        me,
                        &OUTCOME_IN_PROGRESS,
                    ],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            for call_sid in &calls {
                q::enqueue_callback(&tx, call_sid).await?;
            }
            tx.commit().await?;
            Ok((dead, calls))
        })
        .await?;
        if !dead.is_empty() {
            tracing::warn!(
                instances = ?dead,
                calls = calls.len(),
                "fleet: instances stopped heartbeating; their live calls are marked interrupted"
            );
            ::metrics::counter!(metrics::FLEET_INTERRUPTED).increment(calls.len() as u64);
        }
        Ok(())
    }
}

/// The reason given to the live calls of an instance found dead (the instance's name and the
/// survivor's follow it).
pub const FLEET_INTERRUPTED_REASON: &str = "gateway instance stopped heartbeating during the call";

/// `Ok` for a command that writes (with its reply), else the command back.
#[allow(clippy::result_large_err)] // the command is moved back, not copied
fn into_write(command: Command) -> Result<(Write, Reply<()>), Command> {
    match command {
        Command::Created(call, reply) => Ok((Write::Created(call), reply)),
        Command::Started(started, reply) => Ok((Write::Started(started), reply)),
        Command::Ended(ended, reply) => Ok((Write::Ended(ended), reply)),
        Command::Status(update, reply) => Ok((Write::Status(update), reply)),
        Command::CallbackAttempted(id, attempt, reply) => {
            Ok((Write::CallbackAttempted(id, attempt), reply))
        }
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_parameters_are_split_off_the_url() {
        let (url, ask) =
            split_tls("postgres://u:p@db:5432/calls?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x")
                .expect("split");
        assert_eq!(
            url,
            "postgres://u:p@db:5432/calls?sslmode=require&application_name=x"
        );
        assert!(ask.on);
        assert_eq!(
            ask.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        let (url, ask) = split_tls("postgres://db/calls").expect("split");
        assert_eq!(
            (url.as_str(), ask),
            ("postgres://db/calls", TlsAsk::default())
        );
        let (_, ask) = split_tls("postgres://db/calls?sslmode=disable").expect("split");
        assert!(!ask.on);
        match split_tls("postgres://u:hunter2@[bad/calls") {
            Err(e) => assert!(!e.to_string().contains("hunter2"), "{e}"),
            Ok(_) => panic!("a malformed URL is refused"),
        }
    }
}
