//! Throwaway PostgreSQL servers for tests: [`Cluster::start`] runs `initdb` into a fresh directory
//! under `/tmp` and starts `postgres` on a free loopback port; dropping the [`Cluster`] stops the
//! server and removes the directory.
//!
//! - **Binaries.** Taken from `$SWITCHBOARD_PG_BIN` when set, else from the highest
//!   `/usr/lib/postgresql/<version>/bin` (Debian's layout), else from `pg_config --bindir`.
//!   `scripts/setup` installs them. Only the binaries are used: never a system cluster or service.
//! - **Root.** `initdb`, `postgres` and `pg_ctl` refuse to run as root, so when this process's
//!   effective uid is 0 every PostgreSQL program runs as `nobody`, which owns the directory.
//! - **Speed over durability.** `--no-sync`, `fsync=off`, `full_page_writes=off`: a crash of the
//!   machine may lose the cluster, which is thrown away anyway. A fast shutdown
//!   ([`Cluster::stop`]) loses nothing.
//! - **Never left running.** The server's output goes to `postgres.log` in the directory (never
//!   to this process's stdout or stderr, which an orphaned server would hold open). `Drop` stops
//!   the server. A test process killed outright (SIGKILL) cannot, and leaves it running; the
//!   directory name (`switchboard-pg-<pid>-<n>`) says whose it was.
//!
//! Authentication is `trust` for the superuser `postgres`, on 127.0.0.1 and on the unix socket
//! in the cluster's directory.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Environment variable naming the directory of the PostgreSQL binaries (`initdb`, `postgres`,
/// `pg_ctl`, `createdb`, `psql`), overriding the search.
pub const PG_BIN_ENV: &str = "SWITCHBOARD_PG_BIN";

/// Where Debian's `postgresql-<version>` packages put their binaries: `<this>/<version>/bin`.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

/// The superuser `initdb` creates, the user in every URL.
const SUPERUSER: &str = "postgres";

/// How long a started server may take to accept connections. A fresh cluster is ready in well
/// under a second; recovery after an unclean stop, on a loaded 2-core CI machine, in a few. Past
/// this, something is wrong and the log says what.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Cluster::stop`] waits for a fast shutdown (which rolls back open transactions and
/// writes a checkpoint: with `fsync=off`, milliseconds) before it kills the server.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `Drop` waits for a fast shutdown before it kills the server: a dropped cluster's
/// data no longer matters, a hung test does.
const DROP_GRACE: Duration = Duration::from_secs(5);

/// How often a wait for the server (ready, or exited) looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Connect timeout of each readiness probe: loopback answers at once or not at all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Ports tried by [`Cluster::start`]. A free port is found by binding port 0 and closing it, so
/// another process may take it before `postgres` binds it; a second free port is then tried.
const PORT_ATTEMPTS: u32 = 3;

/// Seconds a client program (`createdb`, `psql`) waits to connect (`PGCONNECT_TIMEOUT`): the
/// server is local and already accepting connections, so this bounds only a wedged one.
const CLIENT_CONNECT_TIMEOUT_S: &str = "10";

/// Lines of the server log quoted in an error.
const LOG_TAIL_LINES: usize = 30;

/// The unprivileged user PostgreSQL runs as when this process is root.
const UNPRIVILEGED_USER: &str = "nobody";

/// Debian's uid and gid of `nobody`/`nogroup`, used when `/etc/passwd` does not say.
const NOBODY_ID: u32 = 65_534;

/// Characters escaped in the database name of a URL: all but RFC 3986 unreserved ones.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a throwaway PostgreSQL server could not be started, used or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No directory with PostgreSQL's server binaries was found; the places looked at are listed.
    #[error("PostgreSQL server binaries not found (looked in {0}); run scripts/setup")]
    NotInstalled(String),
    /// A file-system or process operation failed; `context` says which, on what.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and on which path or program.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A PostgreSQL program failed, or the server exited on its own.
    #[error("`{program}` failed ({status}):\n{stderr}")]
    Command {
        /// The program and its main arguments.
        program: String,
        /// How it ended (exit status or signal).
        status: String,
        /// Its standard error, or for the server the tail of its log.
        stderr: String,
    },
    /// The server did not start or stop in time.
    #[error("PostgreSQL server on port {port} did not {what} within {after:?}; log tail:\n{log}")]
    Timeout {
        /// What it did not do: `"accept connections"` or `"stop"`.
        what: &'static str,
        /// Its port.
        port: u16,
        /// How long it was given.
        after: Duration,
        /// The tail of its log.
        log: String,
    },
}

impl ClusterError {
    /// An [`ClusterError::Io`] with its context, for `map_err`.
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
        let context = context.into();
        move |source| ClusterError::Io { context, source }
    }
}

/// A user id and group id that PostgreSQL's programs run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct User {
    uid: u32,
    gid: u32,
}

/// A throwaway PostgreSQL server: its own data directory under `/tmp`, listening on
/// `127.0.0.1:`[`port`](Cluster::port) with `trust` authentication for the superuser
/// `postgres`. Dropping it stops the server and removes the directory.
#[derive(Debug)]
pub struct Cluster {
    /// The directory of `initdb`, `postgres`, `pg_ctl`, `createdb` and `psql`.
    bin: PathBuf,
    /// The cluster's own directory: the data directory `data/`, the server log, the unix socket.
    dir: PathBuf,
    /// The TCP port on 127.0.0.1, the same across [`Cluster::start_again`].
    port: u16,
    /// Whom PostgreSQL's programs run as; `None`: this process's user.
    run_as: Option<User>,
    /// The postmaster while it runs.
    server: Option<Child>,
}

impl Cluster {
    /// Creates a cluster in a fresh directory under `/tmp` (`initdb` with `trust` authentication,
    /// superuser `postgres`, `--no-sync`, UTF-8, locale C), starts `postgres` on a free port of
    /// 127.0.0.1 with `fsync=off` and its unix socket in that directory, and returns once the
    /// server accepts connections.
    ///
    /// # Errors
    ///
    /// [`ClusterError::NotInstalled`] without PostgreSQL's server binaries;
    /// [`ClusterError::Io`] when the directory cannot be made or a program cannot be run;
    /// [`ClusterError::Command`] when `initdb` fails or the server exits while starting;
    /// [`ClusterError::Timeout`] when the server does not accept connections within 30 s.
    /// Whatever was made is removed and whatever was started is stopped.
    pub fn start() -> Result<Cluster, ClusterError> {
        let bin = find_bin_dir(std::env::var_os(PG_BIN_ENV))?;
        let (dir, run_as) = make_cluster_dir()?;
        // From here on, dropping `cluster` cleans up.
        let mut cluster = Cluster {
            bin,
            dir,
            port: 0,
            run_as,
            server: None,
        };
        cluster.initdb()?;
        let mut attempt = 1;
        loop {
            cluster.port = free_port()?;
            let log_start = cluster.log_len();
            match cluster.run_server() {
                Ok(()) => return Ok(cluster),
                Err(ClusterError::Command { .. })
                    if attempt < PORT_ATTEMPTS
                        && cluster
                            .log_since(log_start)
                            .contains("Address already in use") =>
                {
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Creates the database `name` and returns its URL,
    /// `postgres://postgres@127.0.0.1:<port>/<name>` (the name percent-encoded).
    ///
    /// # Errors
    ///
    /// [`ClusterError::Command`] when `createdb` fails: the database exists, the name is not
    /// valid, or the server is stopped. [`ClusterError::Io`] when `createdb` cannot be run.
    pub fn database(&self, name: &str) -> Result<String, ClusterError> {
        let mut createdb = self.client("createdb");
        createdb.arg("--").arg(name);
        run(createdb, &format!("createdb {name}"))?;
        Ok(self.url(name))
    }

    /// Runs `sql` in the database `name` with `psql` (no `.psqlrc`, stop at the first error) and
    /// returns what it printed: unaligned rows, one a line, columns separated by `|`, no headers.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Command`] when a statement fails or the database cannot be reached;
    /// [`ClusterError::Io`] when `psql` cannot be run.
    pub fn psql(&self, name: &str, sql: &str) -> Result<String, ClusterError> {
        let mut psql = self.command("psql");
        psql.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(format!("--dbname={}", self.url(name)))
            .arg("-c")
            .arg(sql);
        run(psql, &format!("psql {name}"))
    }

    /// The server's TCP port on 127.0.0.1, the same after [`Cluster::start_again`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server with a fast shutdown (SIGINT to the postmaster: open transactions roll
    /// back, committed data is kept) and waits for it to exit. The data directory stays, for
    /// [`Cluster::start_again`]. Stopping a stopped cluster does nothing.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Timeout`] when the server does not exit within 30 s (it is then killed);
    /// [`ClusterError::Command`] or [`ClusterError::Io`] when it cannot be signalled (it is then
    /// killed). In every case the server is no longer running.
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        let stopped =
            self.interrupt(&server)
                .and_then(|()| match wait_exit(&mut server, STOP_TIMEOUT) {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(ClusterError::Timeout {
                        what: "stop",
                        port: self.port,
                        after: STOP_TIMEOUT,
                        log: self.log_tail(),
                    }),
                    Err(source) => Err(ClusterError::Io {
                        context: "waiting for the PostgreSQL server to exit".to_owned(),
                        source,
                    }),
                });
        if stopped.is_err() {
            kill(&mut server);
        }
        stopped
    }

    /// Starts the server again on the same data directory and port, after [`Cluster::stop`], and
    /// returns once it accepts connections. Does nothing while the server runs.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Command`] when the server exits while starting (for example because
    /// another process took the port meanwhile); [`ClusterError::Timeout`] when it does not
    /// accept connections within 30 s; [`ClusterError::Io`] when it cannot be run.
    pub fn start_again(&mut self) -> Result<(), ClusterError> {
        if self.server.is_some() {
            return Ok(());
        }
        self.run_server()
    }

    /// Makes the server take TCP connections over TLS only: a fresh test CA (`openssl`, valid two
    /// days) signs a certificate for `127.0.0.1` and `localhost`, `ssl = on`, `pg_hba.conf`
    /// turns its `host` lines into `hostssl`, and the server restarts. Returns the CA's PEM file,
    /// for a client's `sslrootcert`.
    ///
    /// # Errors
    ///
    /// [`ClusterError::NotInstalled`] without `openssl`; [`ClusterError::Io`] or
    /// [`ClusterError::Command`] when a step fails.
    pub fn require_tls(&mut self) -> Result<PathBuf, ClusterError> {
        let tls = self.dir.join("tls");
        fs::create_dir_all(&tls)
            .map_err(ClusterError::io(format!("creating {}", tls.display())))?;
        let found = Command::new("openssl")
            .arg("version")
            .stdin(Stdio::null())
            .output();
        if found.is_err() {
            return Err(ClusterError::NotInstalled(
                "openssl not found (Debian: apt-get install openssl); run scripts/setup".into(),
            ));
        }
        let openssl = |args: &[&str]| -> Result<(), ClusterError> {
            let mut command = Command::new("openssl");
            command.current_dir(&tls).args(args).stdin(Stdio::null());
            run(command, "openssl").map(drop)
        };
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &key,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
                &["-subj", "/CN=switchboard test CA"],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        )?;
        openssl(
            &[
                &["req"][..],
                &key,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        )?;
        let ext = tls.join("server.ext");
        fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(ClusterError::io(format!("writing {}", ext.display())))?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ])?;
        let data = self.data_dir();
        for file in ["server.crt", "server.key"] {
            let to = data.join(file);
            let step = || -> io::Result<()> {
                fs::copy(tls.join(file), &to)?;
                fs::set_permissions(&to, fs::Permissions::from_mode(0o600))?;
                if let Some(user) = self.run_as {
                    chown(&to, Some(user.uid), Some(user.gid))?;
                }
                Ok(())
            };
            step().map_err(ClusterError::io(format!("installing {}", to.display())))?;
        }
        let edit = |name: &str, change: &dyn Fn(String) -> String| -> Result<(), ClusterError> {
            let path = data.join(name);
            let text = fs::read_to_string(&path)
                .map_err(ClusterError::io(format!("reading {}", path.display())))?;
            fs::write(&path, change(text))
                .map_err(ClusterError::io(format!("writing {}", path.display())))
        };
        edit("postgresql.conf", &|text| {
            text + "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
        })?;
        edit("pg_hba.conf", &|text| {
            text.lines()
                .map(|line| match line.strip_prefix("host ") {
                    Some(rest) => format!("hostssl {rest}\n"),
                    None => format!("{line}\n"),
                })
                .collect()
        })?;
        self.stop()?;
        self.start_again()?;
        Ok(tls.join("ca.pem"))
    }

    /// `initdb` into `data/`.
    fn initdb(&self) -> Result<(), ClusterError> {
        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", SUPERUSER, "--auth=trust", "--no-sync"])
            .args(["-E", "UTF8", "--locale=C"]);
        run(initdb, "initdb").map(drop)
    }

    /// Starts `postgres` on `self.port` and waits until it accepts connections; kills it if it
    /// does not.
    fn run_server(&mut self) -> Result<(), ClusterError> {
        let log_path = self.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(ClusterError::io(format!("opening {}", log_path.display())))?;
        let log_too = log
            .try_clone()
            .map_err(ClusterError::io(format!("opening {}", log_path.display())))?;
        let mut postgres = self.command("postgres");
        postgres
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "synchronous_commit=off"])
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_too));
        let mut server = postgres.spawn().map_err(ClusterError::io(format!(
            "running {}",
            self.bin.join("postgres").display()
        )))?;
        match self.wait_ready(&mut server) {
            Ok(()) => {
                self.server = Some(server);
                Ok(())
            }
            Err(error) => {
                kill(&mut server);
                Err(error)
            }
        }
    }

    /// Waits until `server` accepts connections: its `postmaster.pid` says `ready` (PostgreSQL
    /// 10 and later) and a TCP connection to its port succeeds.
    fn wait_ready(&self, server: &mut Child) -> Result<(), ClusterError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            let exited = server
                .try_wait()
                .map_err(ClusterError::io("checking on the PostgreSQL server"))?;
            if let Some(status) = exited {
                return Err(ClusterError::Command {
                    program: format!("postgres -p {}", self.port),
                    status: status.to_string(),
                    stderr: self.log_tail(),
                });
            }
            let pid = server.id();
            if self.pid_file_says_ready(pid)
                && TcpStream::connect_timeout(&address, PROBE_TIMEOUT).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout {
                    what: "accept connections",
                    port: self.port,
                    after: START_TIMEOUT,
                    log: self.log_tail(),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether `data/postmaster.pid` belongs to the postmaster `pid` and its status line (the
    /// 8th) is `ready`.
    fn pid_file_says_ready(&self, pid: u32) -> bool {
        let Ok(text) = fs::read_to_string(self.data_dir().join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = text.lines().collect();
        lines.first().map(|line| line.trim()) == Some(pid.to_string().as_str())
            && lines.get(7).map(|line| line.trim()) == Some("ready")
    }

    /// Sends SIGINT (fast shutdown) to the postmaster with `pg_ctl kill`, as the user it runs as.
    fn interrupt(&self, server: &Child) -> Result<(), ClusterError> {
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl.args(["kill", "INT"]).arg(server.id().to_string());
        run(pg_ctl, "pg_ctl kill INT").map(drop)
    }

    /// A PostgreSQL program of the bin directory, run as `run_as` in the cluster's directory, with
    /// stdin closed and none of this process's `PG*` variables.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.current_dir(&self.dir).stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                command.env_remove(key);
            }
        }
        // No `.psqlrc`, `.pgpass` or the like from a home directory (nor a warning that `nobody`
        // cannot read root's).
        command
            .env("HOME", &self.dir)
            .env("PGCONNECT_TIMEOUT", CLIENT_CONNECT_TIMEOUT_S);
        if let Some(user) = self.run_as {
            command.uid(user.uid).gid(user.gid);
        }
        command
    }

    /// A client program connecting over TCP as the superuser.
    fn client(&self, program: &str) -> Command {
        let mut command = self.command(program);
        command
            .args(["-h", "127.0.0.1", "-U", SUPERUSER, "-p"])
            .arg(self.port.to_string());
        command
    }

    /// The URL of the database `name`.
    fn url(&self, name: &str) -> String {
        database_url(self.port, name)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The server log's length in bytes (0 before there is one).
    fn log_len(&self) -> u64 {
        fs::metadata(self.log_path()).map_or(0, |meta| meta.len())
    }

    /// The server log from byte `start` on.
    fn log_since(&self, start: u64) -> String {
        let log = fs::read(self.log_path()).unwrap_or_default();
        let start = usize::try_from(start).unwrap_or(usize::MAX).min(log.len());
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    /// The last [`LOG_TAIL_LINES`] lines of the server log.
    fn log_tail(&self) -> String {
        match fs::read(self.log_path()) {
            Ok(log) => tail(&String::from_utf8_lossy(&log), LOG_TAIL_LINES),
            Err(error) => format!("(no server log: {error})"),
        }
    }
}

impl Drop for Cluster {
    /// Stops the server (fast shutdown, killed after 5 s) and removes the cluster's directory.
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let exited = self.interrupt(&server).is_ok()
                && matches!(wait_exit(&mut server, DROP_GRACE), Ok(Some(_)));
            if !exited {
                kill(&mut server);
            }
        }
        // Best effort: nothing to report to from a drop.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `postgres://postgres@127.0.0.1:<port>/<name>`, the name percent-encoded.
fn database_url(port: u16, name: &str) -> String {
    format!(
        "postgres://{SUPERUSER}@127.0.0.1:{port}/{}",
        utf8_percent_encode(name, PATH_SEGMENT)
    )
}

/// The directory of PostgreSQL's server binaries: `from_env` (the value of
/// [`PG_BIN_ENV`]) when set, else the highest `/usr/lib/postgresql/<version>/bin` with a
/// `postgres`, else `pg_config --bindir`.
fn find_bin_dir(from_env: Option<OsString>) -> Result<PathBuf, ClusterError> {
    if let Some(dir) = from_env.filter(|dir| !dir.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.join("postgres").is_file() {
            return Ok(dir);
        }
        return Err(ClusterError::NotInstalled(format!(
            "{PG_BIN_ENV}={}",
            dir.display()
        )));
    }
    if let Some(dir) = highest_debian_bin_dir(Path::new(DEBIAN_PG_ROOT)) {
        return Ok(dir);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|dir| dir.join("postgres").is_file()) {
        return Ok(dir);
    }
    Err(ClusterError::NotInstalled(format!(
        "{DEBIAN_PG_ROOT}/*/bin, `pg_config --bindir`"
    )))
}

/// The `<root>/<version>/bin` with a `postgres` whose version is highest (`16` over `9.6`).
fn highest_debian_bin_dir(root: &Path) -> Option<PathBuf> {
    fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: Vec<u32> = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// Makes `/tmp/switchboard-pg-<pid>-<n>`, mode 0700. When this process is root, the directory
/// is given to `nobody`, who will run PostgreSQL (`/tmp` lets it through); returns that user.
fn make_cluster_dir() -> Result<(PathBuf, Option<User>), ClusterError> {
    let pid = std::process::id();
    let mut n = 0u32;
    let dir = loop {
        let dir = PathBuf::from(format!("/tmp/switchboard-pg-{pid}-{n}"));
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => break dir,
            // Another cluster of this process, or a leftover of an earlier process with this pid.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(error) => {
                return Err(ClusterError::io(format!("creating {}", dir.display()))(
                    error,
                ));
            }
        }
    };
    let context = format!("setting up {}", dir.display());
    let set_up = || -> io::Result<Option<User>> {
        // Created with this process's effective uid: it says whether we are root.
        let metadata = fs::metadata(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        if metadata.uid() != 0 {
            return Ok(None);
        }
        let user = unprivileged_user();
        chown(&dir, Some(user.uid), Some(user.gid))?;
        Ok(Some(user))
    };
    match set_up() {
        Ok(user) => Ok((dir, user)),
        Err(source) => {
            let _ = fs::remove_dir_all(&dir);
            Err(ClusterError::Io { context, source })
        }
    }
}

/// `nobody`'s uid and gid from `/etc/passwd`, else Debian's 65534.
fn unprivileged_user() -> User {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.first() != Some(&UNPRIVILEGED_USER) {
                return None;
            }
            Some(User {
                uid: fields.get(2)?.parse().ok()?,
                gid: fields.get(3)?.parse().ok()?,
            })
        })
        .unwrap_or(User {
            uid: NOBODY_ID,
            gid: NOBODY_ID,
        })
}

/// A port of 127.0.0.1 free a moment ago.
fn free_port() -> Result<u16, ClusterError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(ClusterError::io("finding a free port on 127.0.0.1"))
}

/// Runs `command` to completion and returns its stdout; `what` names it in errors.
fn run(mut command: Command, what: &str) -> Result<String, ClusterError> {
    let output = command.output().map_err(ClusterError::io(format!(
        "running {}",
        command.get_program().to_string_lossy()
    )))?;
    if !output.status.success() {
        let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if stderr.trim().is_empty() {
            stderr = String::from_utf8_lossy(&output.stdout).into_owned();
        }
        return Err(ClusterError::Command {
            program: what.to_owned(),
            status: output.status.to_string(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Waits up to `timeout` for `child` to exit; `None` if it has not.
fn wait_exit(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// SIGKILLs `child` and reaps it. Its server processes notice the postmaster's death and exit.
fn kill(child: &mut Child) {
    // Both fail only when it has already exited and been reaped.
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether something accepts TCP connections on `127.0.0.1:port`.
    fn accepts(port: u16) -> bool {
        TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            PROBE_TIMEOUT,
        )
        .is_ok()
    }

    #[test]
    fn a_cluster_serves_databases_stops_and_starts_again_with_its_data() {
        let started = Instant::now();
        let mut cluster = Cluster::start().expect("start");
        eprintln!("Cluster::start took {:?}", started.elapsed());
        let port = cluster.port();
        assert!(accepts(port));

        let calls = cluster.database("calls").expect("createdb calls");
        assert_eq!(calls, format!("postgres://postgres@127.0.0.1:{port}/calls"));
        let other = cluster.database("calls-2").expect("createdb calls-2");
        assert_eq!(
            other,
            format!("postgres://postgres@127.0.0.1:{port}/calls-2")
        );
        assert!(matches!(
            cluster.database("calls"),
            Err(ClusterError::Command { ref stderr, .. }) if stderr.contains("already exists")
        ));
        // `psql` connects by URL: both URLs work.
        assert_eq!(
            cluster
                .psql("calls", "SELECT current_database()")
                .expect("psql"),
            "calls\n"
        );
        assert_eq!(
            cluster
                .psql("calls-2", "SELECT current_database(), current_user")
                .expect("psql"),
            "calls-2|postgres\n"
        );
        cluster
            .psql(
                "calls",
                "CREATE TABLE t (sid text); INSERT INTO t VALUES ('CA1')",
            )
            .expect("write");

        cluster.stop().expect("stop");
        assert!(!accepts(port));
        cluster.stop().expect("a second stop does nothing");
        assert!(matches!(
            cluster.psql("calls", "SELECT 1"),
            Err(ClusterError::Command { .. })
        ));

        let restarted = Instant::now();
        cluster.start_again().expect("start again");
        eprintln!("Cluster::start_again took {:?}", restarted.elapsed());
        assert_eq!(cluster.port(), port);
        assert!(accepts(port));
        assert_eq!(
            cluster.psql("calls", "SELECT sid FROM t").expect("read"),
            "CA1\n"
        );
        cluster
            .start_again()
            .expect("starting a running cluster does nothing");
    }

    #[test]
    fn dropping_a_cluster_stops_its_server_and_removes_its_directory() {
        let cluster = Cluster::start().expect("start");
        let (port, dir) = (cluster.port(), cluster.dir.clone());
        assert!(dir.join("data").join("PG_VERSION").is_file());
        drop(cluster);
        assert!(!accepts(port));
        assert!(!dir.exists());
    }

    #[test]
    fn a_stopped_cluster_is_removed_when_dropped() {
        let mut cluster = Cluster::start().expect("start");
        cluster.stop().expect("stop");
        let dir = cluster.dir.clone();
        drop(cluster);
        assert!(!dir.exists());
    }

    #[test]
    fn a_bin_dir_without_postgres_says_to_run_setup() {
        let error = find_bin_dir(Some("/nonexistent/pg/bin".into())).expect_err("no binaries");
        assert!(matches!(error, ClusterError::NotInstalled(_)));
        assert_eq!(
            error.to_string(),
            "PostgreSQL server binaries not found (looked in \
             SWITCHBOARD_PG_BIN=/nonexistent/pg/bin); run scripts/setup"
        );
    }

    #[test]
    fn the_highest_version_wins() {
        let root = std::env::temp_dir().join(format!("switchboard-pg-bins-{}", std::process::id()));
        for version in ["9.6", "15", "16", "17"] {
            fs::create_dir_all(root.join(version).join("bin")).expect("mkdir");
        }
        for version in ["9.6", "15", "16"] {
            fs::write(root.join(version).join("bin").join("postgres"), "").expect("write");
        }
        fs::create_dir_all(root.join("not-a-version").join("bin")).expect("mkdir");
        fs::write(root.join("not-a-version/bin/postgres"), "").expect("write");
        // 17 has no `postgres` (a client-only package).
        assert_eq!(
            highest_debian_bin_dir(&root),
            Some(root.join("16").join("bin"))
        );
        fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn database_names_are_percent_encoded() {
        assert_eq!(
            database_url(5432, "calls_2-b.x"),
            "postgres://postgres@127.0.0.1:5432/calls_2-b.x"
        );
        assert_eq!(
            database_url(5432, "a b/c?"),
            "postgres://postgres@127.0.0.1:5432/a%20b%2Fc%3F"
        );
    }

    #[test]
    fn a_log_tail_is_its_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
