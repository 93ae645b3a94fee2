//! A real headless Chromium for the console's tests, driven over WebDriver ([`fantoccini`]) by a
//! `chromedriver` this module starts on a free loopback port.
//!
//! Both come from the distribution's packages (Debian: `chromium`, `chromium-driver`, installed
//! by `scripts/setup`); `SWITCHBOARD_CHROMIUM` and `SWITCHBOARD_CHROMEDRIVER` point elsewhere.
//! A missing browser is an error that says to run `scripts/setup`, never a skipped test.
//!
//! Each [`Browser`] is its own chromedriver with its own Chromium and a fresh profile directory,
//! started with the flags this network needs (no background traffic to outside hosts, which are
//! refused here) and, for the browser phone, a fake microphone that plays a WAV file, in a loop
//! or once (`--use-file-for-fake-audio-capture`), granted to `getUserMedia` without a prompt. Dropping it
//! ends the WebDriver session (Chromium quits), then kills the chromedriver's process group and
//! removes the profile.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Where Debian's `chromium` package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package puts the driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The page's viewport (CSS pixels) once started, and so the screenshots' size.
pub const WINDOW: (u32, u32) = (1280, 800);

/// How a [`Browser`] is started.
#[derive(Debug, Clone, Default)]
pub struct BrowserOptions {
    /// A WAV file the fake microphone plays (from the page's `getUserMedia` on); `None` leaves
    /// Chromium's default fake device (a beep). Chromium resamples it to the device's rate: mono 16-bit PCM at 16 kHz
    /// (tests/fixtures/speech/beckett.wav) plays as it is; so does [`recording`]'s 8 kHz.
    pub fake_audio: Option<PathBuf>,
    /// Plays `fake_audio` once, then silence (Chromium's `%noloop`), instead of in a loop.
    pub play_once: bool,
}

/// A headless Chromium under a chromedriver of its own.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    session: Option<String>,
    driver: Driver,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("driver", &self.driver.addr)
            .field("session", &self.session)
            .field("dir", &self.driver.dir)
            .finish_non_exhaustive()
    }
}

/// A running chromedriver, killed with its process group on drop.
struct Driver {
    child: Child,
    addr: SocketAddr,
    /// Holds the profile (`profile/`) and chromedriver's log (`chromedriver.log`).
    dir: PathBuf,
}

/// The browser binary: `SWITCHBOARD_CHROMIUM`, else [`CHROMIUM`].
fn chromium() -> PathBuf {
    std::env::var_os("SWITCHBOARD_CHROMIUM").map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from)
}

/// The driver binary: `SWITCHBOARD_CHROMEDRIVER`, else [`CHROMEDRIVER`].
fn chromedriver() -> PathBuf {
    std::env::var_os("SWITCHBOARD_CHROMEDRIVER")
        .map_or_else(|| PathBuf::from(CHROMEDRIVER), PathBuf::from)
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session in a new headless
    /// Chromium with a fresh profile.
    ///
    /// # Errors
    /// Chromium or chromedriver is missing (the message says to run `scripts/setup`), the driver
    /// did not answer within 20 s, or the session could not be created (the driver's log is
    /// quoted).
    pub async fn start(options: &BrowserOptions) -> anyhow::Result<Self> {
        let (browser, driver) = (chromium(), chromedriver());
        for (path, package) in [(&browser, "chromium"), (&driver, "chromium-driver")] {
            if !path.is_file() {
                bail!(
                    "{} is missing: run scripts/setup, which installs Debian's chromium and \
                     chromium-driver (or set SWITCHBOARD_CHROMIUM / SWITCHBOARD_CHROMEDRIVER; \
                     package: {package})",
                    path.display()
                );
            }
        }
        if let Some(wav) = &options.fake_audio
            && !wav.is_file()
        {
            bail!(
                "the fake microphone's file {} does not exist",
                wav.display()
            );
        }
        // A free port: bound, read and released, then given to chromedriver (which refuses a
        // taken one, and then this start is tried again on another).
        let mut last_error = None;
        for _ in 0..3 {
            let dir = crate::temp_dir()?.join("browser");
            let profile = dir.join("profile");
            std::fs::create_dir_all(&profile)?;
            let log = dir.join("chromedriver.log");
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut command = Command::new(&driver);
            command
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // Its own process group, so that Chromium and its helpers can be ended with it.
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            let child = command
                .spawn()
                .with_context(|| format!("starting {}", driver.display()))?;
            let mut driver = Driver { child, addr, dir };
            match driver.connect(&browser, &profile, options).await {
                Ok(client) => {
                    let session = client.session_id().await?;
                    let browser = Self {
                        client,
                        session,
                        driver,
                    };
                    // Headless Chromium counts a window frame in --window-size: the page
                    // itself gets WINDOW.
                    browser.set_viewport(WINDOW.0, WINDOW.1).await?;
                    return Ok(browser);
                }
                Err(e) => {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
                    last_error =
                        Some(e.context(format!("chromedriver's log, last lines first:\n{tail}")));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("chromedriver did not start")))
    }
}

impl Driver {
    /// Waits for the driver to answer, then opens the session.
    async fn connect(
        &mut self,
        browser: &Path,
        profile: &Path,
        options: &BrowserOptions,
    ) -> anyhow::Result<Client> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("chromedriver exited at start ({status})");
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not listen on {} within 20 s", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut args = vec![
            // As root (CI, these machines) Chromium needs --no-sandbox; headless needs no GPU.
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            // No traffic to outside hosts (refused here, and slow to fail).
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            // The browser phone: a microphone without a prompt, and audio that plays without
            // a click having happened first.
            "--use-fake-ui-for-media-stream".into(),
            "--use-fake-device-for-media-stream".into(),
            "--autoplay-policy=no-user-gesture-required".into(),
        ];
        if let Some(wav) = &options.fake_audio {
            args.push(format!(
                "--use-file-for-fake-audio-capture={}",
                wav.display()
            ));
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": browser, "args": args }),
        );
        // The page's `console.*` lines, for diagnostics (`Browser::console_log`).
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&format!("http://{}", self.addr)),
        )
        .await
        .context("opening a WebDriver session took over 60 s")??;
        Ok(client)
    }
}

impl Browser {
    /// Loads `url` and waits for the page's load event.
    ///
    /// # Errors
    /// WebDriver refused (e.g. the address is unreachable).
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("loading {url}"))
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page and returns what
    /// it returns, as JSON. A returned promise is awaited.
    ///
    /// # Errors
    /// The script threw or the WebDriver request failed.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.client
            .execute(script, args)
            .await
            .with_context(|| format!("running in the page: {script}"))
    }

    /// Polls `script` (as [`Browser::eval`]) every 100 ms until it returns something other than
    /// `null`, `false`, `""` or `0`, and returns that value.
    ///
    /// # Errors
    /// `timeout` passed first (the error names `what` and the last value), or the script threw.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.eval(script, vec![]).await?;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return Ok(value);
            }
            if Instant::now() > deadline {
                bail!("waited {timeout:?} for {what}; the page says {value}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element `selector` matches (CSS), waiting up to `timeout` for it to exist.
    ///
    /// # Errors
    /// It did not appear in time.
    pub async fn find(
        &self,
        selector: &str,
        timeout: Duration,
    ) -> anyhow::Result<fantoccini::elements::Element> {
        self.client
            .wait()
            .at_most(timeout)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(selector))
            .await
            .with_context(|| format!("waiting {timeout:?} for {selector}"))
    }

    /// Resizes the window so that the page's viewport is `width` × `height` CSS pixels.
    ///
    /// # Errors
    /// WebDriver refused.
    pub async fn set_viewport(&self, width: u32, height: u32) -> anyhow::Result<()> {
        let sizes = self
            .eval(
                "return [outerWidth - innerWidth, outerHeight - innerHeight];",
                vec![],
            )
            .await?;
        let frame = |i: usize| sizes[i].as_u64().and_then(|v| u32::try_from(v).ok());
        let (dw, dh) = (frame(0).unwrap_or(0), frame(1).unwrap_or(0));
        self.client
            .set_window_size(width + dw, height + dh)
            .await
            .context("resizing the window")
    }

    /// A PNG of the element `selector` matches (as much of it as the viewport shows), written
    /// to `path` (its directory is created).
    ///
    /// # Errors
    /// No such element, WebDriver refused, or the file could not be written.
    pub async fn screenshot_element(&self, selector: &str, path: &Path) -> anyhow::Result<()> {
        let png = self
            .client
            .find(Locator::Css(selector))
            .await
            .with_context(|| format!("finding {selector}"))?
            .screenshot()
            .await?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// A PNG of the window, written to `path` (its directory is created).
    ///
    /// # Errors
    /// WebDriver refused, or the file could not be written.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = self.client.screenshot().await?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// The page's console lines since the last call (level and message), for a failing test's
    /// output.
    ///
    /// # Errors
    /// The driver refused the (Chromium-specific) log request.
    pub async fn console_log(&self) -> anyhow::Result<Vec<String>> {
        let Some(session) = &self.session else {
            return Ok(Vec::new());
        };
        let body = post_json(
            self.driver.addr,
            &format!("/session/{session}/se/log"),
            &json!({"type": "browser"}),
        )?;
        let value: Value = serde_json::from_str(&body).context("the driver's log reply")?;
        Ok(value["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or("?"),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (Chromium quits) without the async runtime, which may be gone.
        if let Some(session) = self.session.take() {
            let _ = request(
                self.driver.addr,
                "DELETE",
                &format!("/session/{session}"),
                None,
            );
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver and anything of its group still running (by its own process id).
        let pid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "browser: chromedriver's log and profile kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// POSTs `body` as JSON to the driver and returns the reply's body.
fn post_json(addr: SocketAddr, path: &str, body: &Value) -> anyhow::Result<String> {
    request(addr, "POST", path, Some(&body.to_string()))
}

/// A blocking HTTP/1.1 request to the driver on loopback (for `Drop`, and for the commands
/// fantoccini does not wrap).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // The reply's head, then as many body bytes as it says (the driver may keep the
    // connection open whatever the request asked).
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            bail!("the driver closed the connection before its reply's head");
        }
        reply.extend_from_slice(&buf[..n]);
        if let Some(i) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&reply[..head_end]).to_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    while length.is_none_or(|len| reply.len() - head_end < len) {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&reply[head_end..]).into_owned())
}

/// A part of a fake microphone's [`recording`].
#[derive(Debug, Clone, Copy)]
pub enum Sound<'a> {
    /// Digital silence this long.
    Silence(Duration),
    /// A WAV file (any rate and channels; read as `switchboard simulate` reads it, at 8 kHz).
    Wav(&'a Path),
}

/// `parts` end to end as one WAV file (mono 16-bit PCM, 8 kHz) in a fresh temporary directory,
/// for [`BrowserOptions::fake_audio`].
///
/// # Errors
/// A part could not be read, or the file could not be written.
pub fn recording(parts: &[Sound<'_>]) -> anyhow::Result<PathBuf> {
    const RATE: u32 = 8000;
    let mut samples: Vec<i16> = Vec::new();
    for part in parts {
        match part {
            Sound::Silence(d) => {
                let n = d.as_millis() as usize * RATE as usize / 1000;
                samples.resize(samples.len() + n, 0);
            }
            Sound::Wav(path) => samples.extend(
                switchboard::simulate::read_wav(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            ),
        }
    }
    let path = crate::temp_dir()?.join("microphone.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&path, spec)
        .with_context(|| format!("creating {}", path.display()))?;
    for s in samples {
        writer.write_sample(s)?;
    }
    writer.finalize()?;
    Ok(path)
}

/// Decodes base64 of G.711 μ-law bytes (the browser phone's test hooks) to PCM16 samples.
///
/// # Errors
/// Not base64.
pub fn decode_mulaw_base64(text: &str) -> anyhow::Result<Vec<i16>> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .context("the page's μ-law is not base64")?;
    Ok(bytes
        .iter()
        .map(|b| switchboard::audio::mulaw::decode(*b))
        .collect())
}

/// Root mean square of `samples` (PCM16 units); 0 for none.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|s| f64::from(*s).powi(2)).sum();
    (sum / samples.len() as f64).sqrt()
}
