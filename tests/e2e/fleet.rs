//! A fleet on PostgreSQL end to end: real `switchboard serve` processes (the binary, built
//! once) sharing one throwaway PostgreSQL server ([`Cluster`]). A call whose webhook lands on
//! one instance and whose stream lands on the other; an outbound call's task stored by the
//! instance that placed it and taken by the one its stream reaches; the operator API's burst
//! spent once across the fleet; a killed instance's live call marked `interrupted` by the
//! survivor, exactly once; and a call that rides out a database outage, its record written when
//! the database is back.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use switchboard::simulate::{self, Options};
use switchboard::testing::Cluster;
use switchboard_tests::fake_openai_http::{FakeHttpOptions, FakeOpenAiHttp};
use switchboard_tests::fake_twilio::FakeTwilio;
use switchboard_tests::{beckett, phone, workspace_root, write_config};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// The operator API's bearer token on every instance.
const OPERATOR: &str = "fleet-operator-token";
/// The Twilio account of the outbound test.
const ACCOUNT: &str = "AC22222222222222222222222222222222";
/// Its auth token: requests to the gateways are signed with it.
const TWILIO_TOKEN: &str = "fleet-twilio-auth-token";
/// Heartbeat of every instance (ms): short, so a dead instance is found in a test's time.
const HEARTBEAT_MS: u64 = 150;
/// Grace period of every instance (ms): several missed heartbeats.
const GRACE_MS: u64 = 1_200;
/// How long a gateway process may take to load its plugins and open its records (a debug build
/// compiling a WASM component, on a loaded 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a record may take to show what a test waits for: the writer commits asynchronously,
/// and after a database outage retries with backoff up to 5 s (`RETRY_MAX`).
const RECORD_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the caller waits for its tone to come back (normally tens of milliseconds).
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);
/// Quiet (nothing loud heard) before a round trip's tone is sent, so earlier echoes have played.
const QUIET_BEFORE_TONE: Duration = Duration::from_millis(300);
/// Loudest μ-law sample (as PCM16) still counted as silence.
const LOUD: i32 = 1_000;

/// The `[records]`, `[api]` and `[server]` part every instance shares; `extra_server` goes into
/// `[server]` (e.g. a `public_url`).
fn fleet_sections(
    url: &str,
    instance: &str,
    rate_per_minute: u32,
    burst: u32,
    extra_server: &str,
) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{extra_server}

[api]
tokens = ["{OPERATOR}"]
rate_per_minute = {rate_per_minute}
burst = {burst}

[records]
url = "{url}"
instance = "{instance}"
heartbeat_ms = {HEARTBEAT_MS}
grace_ms = {GRACE_MS}
"#
    )
}

/// An instance whose only agent echoes every frame at once (a loopback), unsigned requests.
fn echo_config(url: &str, instance: &str, rate_per_minute: u32, burst: u32, extra: &str) -> String {
    format!(
        r#"{fleet}
[twilio]
validate_signatures = false

[plugins.echo]
path = "{{plugins}}/echo.wasm"

[[agents]]
name = "echo"
realtime = {{ plugin = "echo", settings = {{ mode = "immediate" }} }}

[routing]
default = "echo"
"#,
        fleet = fleet_sections(url, instance, rate_per_minute, burst, extra),
    )
}

/// Builds the `switchboard` binary once per test process, with this test binary's profile and
/// into its target directory (`<target>/<profile>/deps/e2e-…` is where this one runs from), and
/// returns its path.
fn gateway_binary() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .ok_or("the test binary is not under <target>/<profile>/deps")?;
            let target_dir = profile_dir
                .parent()
                .ok_or("the test binary is not under <target>/<profile>/deps")?;
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") => "dev".to_string(),
                Some(other) => other.to_string(),
                None => return Err("the profile directory has no name".into()),
            };
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .current_dir(workspace_root())
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "switchboard",
                    "--bin",
                    "switchboard",
                ])
                .args(["--profile", &profile])
                .arg("--target-dir")
                .arg(target_dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running cargo build: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cargo build -p switchboard failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(profile_dir.join("switchboard"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A `switchboard serve` process on a loopback port, its log (JSON lines, stdout and stderr) in
/// a file beside its agents.toml. Dropping it kills it.
struct GatewayProcess {
    /// Its `[records] instance`.
    name: String,
    /// `http://127.0.0.1:PORT`.
    url: String,
    child: Child,
    log: PathBuf,
}

impl GatewayProcess {
    /// Writes `body` as its agents.toml (see [`write_config`]), starts the binary on it, and
    /// returns once it serves (its records open, `/healthz` answering).
    async fn start(name: &str, body: String) -> anyhow::Result<Self> {
        let (binary, config) = tokio::task::spawn_blocking({
            move || -> anyhow::Result<(PathBuf, PathBuf)> {
                Ok((gateway_binary()?, write_config(&body)?))
            }
        })
        .await??;
        let log = config.with_file_name("gateway.log");
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&binary)
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,wasmtime=warn,cranelift=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("running {}", binary.display()))?;
        let mut gateway = GatewayProcess {
            name: name.to_string(),
            url: String::new(),
            child,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        // The address it bound (`127.0.0.1:0`), from its "listening" line.
        loop {
            if let Some(address) = gateway.listening_address() {
                gateway.url = format!("http://{address}");
                break;
            }
            gateway.check_starting(deadline)?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // It logs the address before opening its records; it serves once they are open.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        loop {
            if let Ok(response) = client.get(format!("{}/healthz", gateway.url)).send().await
                && response.status().is_success()
            {
                return Ok(gateway);
            }
            gateway.check_starting(deadline)?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An error if the process exited or the deadline passed.
    fn check_starting(&mut self, deadline: Instant) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "gateway {} exited while starting ({status}):\n{}",
                self.name,
                self.log_tail()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "gateway {} did not serve within {START_TIMEOUT:?}:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// The `address` of the "switchboard listening" line, once logged.
    fn listening_address(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines().find_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            let fields = &v["fields"];
            fields["message"]
                .as_str()?
                .starts_with("switchboard listening")
                .then(|| fields["address"].as_str().map(str::to_string))?
        })
    }

    /// The last lines of its log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// SIGKILL, as a crash or an OOM kill would end it: no drain, no last records.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A started cluster with a fresh database `name`, and its URL.
async fn database(name: &str) -> anyhow::Result<(Cluster, String)> {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let cluster = Cluster::start()?;
        let url = cluster.database(&name)?;
        Ok((cluster, url))
    })
    .await?
}

/// `psql` in the database `db`, trimmed.
fn psql(cluster: &Cluster, db: &str, sql: &str) -> anyhow::Result<String> {
    Ok(cluster.psql(db, sql)?.trim().to_string())
}

/// An operator API answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    json: Value,
    retry_after: Option<String>,
}

/// `METHOD path` on `gateway` with the operator's token (and a JSON body).
async fn api(
    gateway: &GatewayProcess,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Answer> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let url = format!("{}{path}", gateway.url);
    let mut request = match method {
        "POST" => client.post(url),
        _ => client.get(url),
    }
    .bearer_auth(OPERATOR);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await?;
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer {
        status,
        json,
        retry_after,
    })
}

/// Polls `GET /calls/{sid}` on `gateway` until the record satisfies `done`, for up to
/// [`RECORD_TIMEOUT`]; returns it, or fails with the last answer and the gateways' logs.
async fn record_when(
    gateway: &GatewayProcess,
    sid: &str,
    logs: &[&GatewayProcess],
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + RECORD_TIMEOUT;
    loop {
        let last = api(gateway, "GET", &format!("/calls/{sid}"), None).await;
        if let Ok(answer) = &last
            && answer.status == 200
            && done(&answer.json)
        {
            return Ok(answer.json.clone());
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = logs.iter().map(|g| g.log_tail()).collect();
            bail!(
                "the record of {sid} on {} never got there; last answer {last:?}\n{}",
                gateway.name,
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A caller on a Media Stream driven step by step, so that a test can kill an instance or stop
/// the database between steps. The agent is the immediate echo: what the caller sends comes
/// straight back.
struct LiveCall {
    ws: Socket,
    call_sid: String,
    seq: u64,
    chunk: u64,
}

impl LiveCall {
    /// Opens the stream of `call_sid` on `gateway` (as Twilio does after `<Connect><Stream>`).
    async fn open(gateway: &GatewayProcess, call_sid: &str) -> anyhow::Result<Self> {
        let url = format!(
            "{}/twilio/media-stream",
            gateway.url.replace("http://", "ws://")
        );
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let mut call = LiveCall {
            ws,
            call_sid: call_sid.to_string(),
            seq: 0,
            chunk: 0,
        };
        call.send(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            .await?;
        call.send(
            json!({"event": "start", "streamSid": stream_sid(call_sid), "start": {
            "accountSid": ACCOUNT, "streamSid": stream_sid(call_sid), "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": {"From": "+15005550001", "To": "+15005550006"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}),
        )
        .await?;
        Ok(call)
    }

    async fn send(&mut self, mut message: Value) -> anyhow::Result<()> {
        self.seq += 1;
        message["sequenceNumber"] = json!(self.seq.to_string());
        self.ws
            .send(Message::Text(message.to_string().into()))
            .await?;
        Ok(())
    }

    async fn media(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        self.chunk += 1;
        let message = json!({"event": "media", "streamSid": stream_sid(&self.call_sid),
            "media": {"track": "inbound", "chunk": self.chunk.to_string(),
                "timestamp": (self.chunk * 20).to_string(), "payload": BASE64.encode(frame)}});
        self.send(message).await
    }

    /// Speaks at real time (silence until nothing loud has come back for a moment, then 200 ms
    /// of tone, then silence) and returns how long the tone took to come back.
    async fn round_trip(&mut self) -> anyhow::Result<Duration> {
        let tone = phone::speech(200);
        let silence = vec![0xFF; 160];
        let deadline = Instant::now() + ECHO_TIMEOUT;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut quiet_since = Instant::now();
        let mut tone_sent: Option<Instant> = None;
        let mut tone_frames = tone.iter();
        loop {
            if Instant::now() > deadline {
                bail!("the caller's tone did not come back within {ECHO_TIMEOUT:?}");
            }
            tokio::select! {
                _ = tick.tick() => {
                    if tone_sent.is_none() && quiet_since.elapsed() >= QUIET_BEFORE_TONE {
                        tone_sent = Some(Instant::now());
                    }
                    let frame = match tone_sent {
                        Some(_) => tone_frames.next().unwrap_or(&silence),
                        None => &silence,
                    };
                    let frame = frame.clone();
                    self.media(&frame).await?;
                }
                message = self.ws.next() => {
                    let text = match message {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | None => bail!("the gateway closed the stream"),
                        Some(Err(e)) => bail!("the stream failed: {e}"),
                        Some(Ok(_)) => continue,
                    };
                    let v: Value = serde_json::from_str(text.as_str())?;
                    if v["event"] != "media" {
                        continue;
                    }
                    let payload = BASE64.decode(v["media"]["payload"].as_str().unwrap_or_default())?;
                    if is_loud(&payload) {
                        match tone_sent {
                            Some(at) => return Ok(at.elapsed()),
                            None => quiet_since = Instant::now(),
                        }
                    }
                }
            }
        }
    }

    /// Twilio's `stop` (the caller hung up), then waits for the gateway to close the socket.
    async fn hang_up(mut self) -> anyhow::Result<()> {
        let stop = json!({"event": "stop", "streamSid": stream_sid(&self.call_sid),
            "stop": {"accountSid": ACCOUNT, "callSid": self.call_sid}});
        self.send(stop).await?;
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await
        .context("the gateway did not close the stream after stop")
    }
}

fn stream_sid(call_sid: &str) -> String {
    format!("MZ{}", call_sid.trim_start_matches("CA"))
}

/// Whether a μ-law frame holds anything louder than [`LOUD`].
fn is_loud(frame: &[u8]) -> bool {
    frame
        .iter()
        .any(|&b| i32::from(switchboard::audio::mulaw::decode(b)).abs() > LOUD)
}

/// Webhook on A, Media Stream on B (A's `public_url` is where the fleet is reached, and that
/// load balancer sent the stream to B): the call completes, and its record — agent, outcome,
/// frames, the instance that carried the stream — is the same read through either instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_webhook_and_stream_land_on_different_instances_is_one_record()
-> anyhow::Result<()> {
    let (_cluster, url) = database("fleet_split").await?;
    let b = GatewayProcess::start("gw-b", echo_config(&url, "gw-b", 6000, 1000, "")).await?;
    let public_url = format!("public_url = \"{}\"", b.url);
    let a =
        GatewayProcess::start("gw-a", echo_config(&url, "gw-a", 6000, 1000, &public_url)).await?;

    let audio: Vec<i16> = beckett()?.into_iter().take(3 * 8000).collect();
    let mut opts = Options::new(&a.url, audio);
    opts.idle_hangup = Duration::from_millis(800);
    let summary = simulate::run(opts).await?;
    assert_eq!(summary.rejected, None, "twiml: {}", summary.twiml);
    let stream_host = b.url.trim_start_matches("http://");
    assert!(
        summary
            .twiml
            .contains(&format!("ws://{stream_host}/twilio/media-stream")),
        "A's TwiML sends the stream to B: {}",
        summary.twiml
    );
    assert!(summary.frames_received > 0, "the caller heard nothing back");
    let sid = summary.call_sid.clone();

    let on_a = record_when(&a, &sid, &[&a, &b], |r| r["ended_at_ms"].is_i64()).await?;
    let on_b = api(&b, "GET", &format!("/calls/{sid}"), None).await?;
    assert_eq!(on_b.status, 200, "{:?}", on_b.json);
    assert_eq!(on_a, on_b.json, "one record, whichever instance is asked");
    assert_eq!(on_a["agent"], "echo", "{on_a}");
    assert_eq!(on_a["outcome"], "completed", "{on_a}");
    assert_eq!(on_a["instance"], "gw-b", "{on_a}");
    assert_eq!(on_a["from"], "+15005550001", "{on_a}");
    assert_eq!(
        on_a["frames_in"].as_u64(),
        Some(summary.frames_sent),
        "{on_a}"
    );
    assert!(on_a["frames_out"].as_u64() > Some(0), "{on_a}");
    // And the list on either instance holds it.
    for gateway in [&a, &b] {
        let list = api(gateway, "GET", "/calls", None).await?;
        assert_eq!(list.status, 200, "{:?}", list.json);
        let sids: Vec<&str> = list.json["calls"]
            .as_array()
            .context("calls")?
            .iter()
            .filter_map(|c| c["call_sid"].as_str())
            .collect();
        assert_eq!(sids, [sid.as_str()], "on {}", gateway.name);
    }
    Ok(())
}

/// An instance with the outbound agent of `e2e::outbound` (fixed STT, the OpenAI-compatible LLM
/// against `llm`, a tone TTS), whose instructions the call's task fills in; Twilio's REST API is
/// `twilio`, and requests to the gateway are signed.
fn outbound_config(url: &str, instance: &str, twilio: &FakeTwilio, llm: &FakeOpenAiHttp) -> String {
    format!(
        r#"{fleet}
[twilio]
account_sid = "{ACCOUNT}"
auth_token = "{TWILIO_TOKEN}"
api_base_url = "{twilio_base}"
caller_id = "+15005550006"

[plugins.stt]
path = "{{plugins}}/fixed_stt.wasm"
[plugins.llm]
path = "{{plugins}}/openai_llm.wasm"
[plugins.tts]
path = "{{plugins}}/tone_tts.wasm"

[[agents]]
name = "reminder"

[agents.pipeline]
instructions = "You are calling for Dr. Lee's office. {{task.prompt}} Facts: {{task.context}}"
endpointing_ms = 400
stt = {{ plugin = "stt", settings = {{ text = "Who is this?" }} }}
llm = {{ plugin = "llm", settings = {{ base_url = "{llm_base}", model = "test-model" }}, secrets = {{ api_key = "sk-test" }}, allowed_hosts = ["{llm_host}"] }}
tts = {{ plugin = "tts", settings = {{ ms_per_char = 5 }} }}

[routing]
default = "reminder"
"#,
        fleet = fleet_sections(url, instance, 6000, 1000, ""),
        twilio_base = twilio.base_url(),
        llm_base = llm.base_url,
        llm_host = llm.host_port,
    )
}

/// `POST /calls` with a task on A; the callee answers and Twilio's webhook and stream land on
/// B: B takes the task A stored in the database, and the agent's language model on B is
/// instructed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_task_placed_on_one_instance_reaches_the_call_on_another() -> anyhow::Result<()>
{
    let (cluster, url) = database("fleet_task").await?;
    let twilio = FakeTwilio::start(ACCOUNT, TWILIO_TOKEN).await?;
    let llm = FakeOpenAiHttp::start(FakeHttpOptions {
        delay: Duration::from_millis(1),
        ..FakeHttpOptions::default()
    })
    .await?;
    let (a, b) = tokio::try_join!(
        GatewayProcess::start("gw-a", outbound_config(&url, "gw-a", &twilio, &llm)),
        GatewayProcess::start("gw-b", outbound_config(&url, "gw-b", &twilio, &llm)),
    )?;

    let task = json!({
        "type": "reminder",
        "prompt": "Remind Ana of her dentist appointment tomorrow at 3 pm.",
        "context": {"patient": "Ana", "time": "15:00"},
    });
    let placed = api(
        &a,
        "POST",
        "/calls",
        Some(json!({"to": "+15551230002", "agent": "reminder", "task": task})),
    )
    .await?;
    assert_eq!(placed.status, 201, "{}", placed.json);
    let sid = placed.json["call_sid"]
        .as_str()
        .context("call_sid")?
        .to_string();
    let created = twilio.next_created().await?;
    assert_eq!(created.sid, sid);
    let request = twilio
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/Calls.json"))
        .context("Twilio was not asked to create the call")?;
    let on_a = request.get("Url").context("Url")?.to_string();
    assert!(
        on_a.starts_with(&format!("{}/twilio/voice?", a.url)),
        "{on_a}"
    );
    // The task waits in the database, not in A's memory.
    assert_eq!(
        psql(&cluster, "fleet_task", "SELECT count(*) FROM tasks")?,
        "1"
    );

    // Twilio's webhook (and so the stream) reaches B.
    let on_b = on_a.replacen(&a.url, &b.url, 1);
    let mut opts = Options::new(&b.url, beckett()?.into_iter().take(2 * 8000).collect());
    opts.voice_url = Some(on_b);
    opts.call_sid = Some(sid.clone());
    opts.account_sid = Some(ACCOUNT.to_string());
    opts.direction = "outbound-api".into();
    opts.auth_token = Some(TWILIO_TOKEN.into());
    opts.from = "+15005550006".into();
    opts.to = "+15551230002".into();
    opts.idle_hangup = Duration::from_millis(1500);
    let summary = simulate::run(opts).await?;
    assert_eq!(summary.rejected, None, "{}", summary.twiml);

    let record = record_when(&a, &sid, &[&a, &b], |r| r["ended_at_ms"].is_i64()).await?;
    let chats: Vec<Value> = llm
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .filter_map(|r| r.json)
        .collect();
    assert!(
        !chats.is_empty(),
        "the agent's LLM was never asked\n{}",
        b.log_tail()
    );
    assert_eq!(
        chats[0]["messages"][0]["content"].as_str(),
        Some(
            r#"You are calling for Dr. Lee's office. Remind Ana of her dentist appointment tomorrow at 3 pm. Facts: {"patient":"Ana","time":"15:00"}"#
        ),
        "{}",
        chats[0]
    );
    assert_eq!(record["instance"], "gw-b", "{record}");
    assert_eq!(record["agent"], "reminder", "{record}");
    assert_eq!(record["direction"], "outbound-api", "{record}");
    assert_eq!(record["task"]["prompt"], task["prompt"], "{record}");
    assert_eq!(
        psql(&cluster, "fleet_task", "SELECT count(*) FROM tasks")?,
        "0",
        "B took the task"
    );
    Ok(())
}

/// One token with a burst of 3 at one request a minute: requests alternating between A and B
/// spend one bucket — exactly three succeed, and every later one is refused with 429 and
/// `Retry-After`, by both instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_api_rate_limit_is_spent_once_across_the_fleet() -> anyhow::Result<()> {
    let (_cluster, url) = database("fleet_rate").await?;
    let (a, b) = tokio::try_join!(
        GatewayProcess::start("gw-a", echo_config(&url, "gw-a", 1, 3, "")),
        GatewayProcess::start("gw-b", echo_config(&url, "gw-b", 1, 3, "")),
    )?;
    let mut answers = Vec::new();
    for i in 0..8 {
        let gateway = if i % 2 == 0 { &a } else { &b };
        let answer = api(gateway, "GET", "/calls", None).await?;
        answers.push((gateway.name.clone(), answer));
    }
    let statuses: Vec<(&str, u16)> = answers
        .iter()
        .map(|(name, answer)| (name.as_str(), answer.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("gw-a", 200),
            ("gw-b", 200),
            ("gw-a", 200),
            ("gw-b", 429),
            ("gw-a", 429),
            ("gw-b", 429),
            ("gw-a", 429),
            ("gw-b", 429),
        ],
        "{answers:#?}"
    );
    for (name, answer) in answers.iter().filter(|(_, a)| a.status == 429) {
        let retry_after: u64 = answer
            .retry_after
            .as_deref()
            .with_context(|| format!("no Retry-After from {name}"))?
            .parse()?;
        // One a minute: the next request fits within a minute, not at once.
        assert!((1..=60).contains(&retry_after), "{name}: {retry_after}");
        assert_eq!(
            answer.json["code"], "rate_limited",
            "{name}: {}",
            answer.json
        );
    }
    Ok(())
}

/// A SIGKILLed instance's live call is marked `interrupted` by the survivor once the grace
/// period has passed — naming both instances, exactly once — while the survivor's own live call
/// goes on untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_s_live_call_is_marked_interrupted_by_the_survivor_once()
-> anyhow::Result<()> {
    let (cluster, url) = database("fleet_reap").await?;
    let (mut a, b) = tokio::try_join!(
        GatewayProcess::start("gw-a", echo_config(&url, "gw-a", 6000, 1000, "")),
        GatewayProcess::start("gw-b", echo_config(&url, "gw-b", 6000, 1000, "")),
    )?;
    let (sid_a, sid_b) = ("CAfleetreapona", "CAfleetreaponb");
    let mut on_a = LiveCall::open(&a, sid_a).await?;
    let mut on_b = LiveCall::open(&b, sid_b).await?;
    on_a.round_trip().await?;
    on_b.round_trip().await?;
    for (sid, instance) in [(sid_a, "gw-a"), (sid_b, "gw-b")] {
        record_when(&b, sid, &[&a, &b], |r| {
            r["outcome"] == "in-progress" && r["instance"] == instance
        })
        .await?;
    }

    let killed = Instant::now();
    a.kill();
    drop(on_a);
    let record = record_when(&b, sid_a, &[&b], |r| r["outcome"] != "in-progress").await?;
    let marked_after = killed.elapsed();
    eprintln!("gw-a's call marked interrupted {marked_after:?} after the kill");
    assert_eq!(record["outcome"], "interrupted", "{record}");
    assert_eq!(
        record["reason"],
        "gateway instance stopped heartbeating during the call (instance gw-a, marked by gw-b)",
        "{record}"
    );
    assert!(record["ended_at_ms"].is_i64(), "{record}");
    // Ended at A's last heartbeat, marked (in the database's clock) once that was a grace old.
    let (ended_at, marked_at) = (
        record["ended_at_ms"].as_i64().context("ended_at_ms")?,
        record["updated_at_ms"].as_i64().context("updated_at_ms")?,
    );
    assert!(
        marked_at - ended_at >= GRACE_MS as i64,
        "marked {} ms after A's last heartbeat: {record}",
        marked_at - ended_at
    );

    // B's own call goes on, still live.
    on_b.round_trip().await?;
    let live = api(&b, "GET", &format!("/calls/{sid_b}"), None).await?;
    assert_eq!(live.json["outcome"], "in-progress", "{}", live.json);

    // Exactly once: several grace periods later, A is reaped once, by B, and its call's record
    // is as B first marked it.
    tokio::time::sleep(Duration::from_millis(3 * GRACE_MS)).await;
    assert_eq!(
        psql(
            &cluster,
            "fleet_reap",
            "SELECT count(*) FROM instances WHERE reaped_at_ms IS NOT NULL"
        )?,
        "1"
    );
    assert_eq!(
        psql(
            &cluster,
            "fleet_reap",
            "SELECT reaped_by FROM instances WHERE id = 'gw-a'"
        )?,
        "gw-b"
    );
    let again = api(&b, "GET", &format!("/calls/{sid_a}"), None).await?;
    assert_eq!(
        again.json, record,
        "the interrupted record was written again"
    );

    let frames = on_b.chunk;
    on_b.hang_up().await?;
    let ended = record_when(&b, sid_b, &[&b], |r| r["ended_at_ms"].is_i64()).await?;
    assert_eq!(ended["outcome"], "completed", "{ended}");
    assert_eq!(ended["instance"], "gw-b", "{ended}");
    assert_eq!(ended["frames_in"].as_u64(), Some(frames), "{ended}");
    Ok(())
}

/// The database stops mid-call: the call goes on (the caller's echo still comes back), ends,
/// and its record — held by the gateway meanwhile — is written once the database is back,
/// visible from both instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_rides_out_a_database_outage_and_is_recorded_when_it_is_back() -> anyhow::Result<()>
{
    let (mut cluster, url) = database("fleet_outage").await?;
    let (a, b) = tokio::try_join!(
        GatewayProcess::start("gw-a", echo_config(&url, "gw-a", 6000, 1000, "")),
        GatewayProcess::start("gw-b", echo_config(&url, "gw-b", 6000, 1000, "")),
    )?;
    let sid = "CAfleetoutage";
    let mut call = LiveCall::open(&a, sid).await?;
    let before = call.round_trip().await?;
    record_when(&a, sid, &[&a], |r| r["outcome"] == "in-progress").await?;

    tokio::task::block_in_place(|| cluster.stop())?;
    let after = call.round_trip().await?;
    eprintln!("round trip {before:?} before the database stopped, {after:?} after");
    // Reads need the database: the operator API says so rather than answering stale.
    let during = api(&a, "GET", &format!("/calls/{sid}"), None).await?;
    assert_eq!(
        (during.status, during.json["code"].as_str()),
        (503, Some("records_unavailable")),
        "{:?}",
        during
    );
    let frames = call.chunk;
    call.hang_up().await?;
    // The end is held while the writer retries; give it a few failed attempts.
    tokio::time::sleep(Duration::from_secs(2)).await;

    tokio::task::block_in_place(|| cluster.start_again())?;
    let restarted = Instant::now();
    let record = record_when(&a, sid, &[&a, &b], |r| r["ended_at_ms"].is_i64()).await?;
    eprintln!(
        "the call's end was written {:?} after the database came back",
        restarted.elapsed()
    );
    assert_eq!(record["outcome"], "completed", "{record}");
    assert_eq!(record["instance"], "gw-a", "{record}");
    assert_eq!(record["agent"], "echo", "{record}");
    assert_eq!(record["frames_in"].as_u64(), Some(frames), "{record}");
    assert!(record["frames_out"].as_u64() > Some(0), "{record}");
    let on_b = api(&b, "GET", &format!("/calls/{sid}"), None).await?;
    assert_eq!(on_b.json, record, "the same record from the other instance");
    // The outage made neither instance look dead to the other once it was back.
    tokio::time::sleep(Duration::from_millis(3 * GRACE_MS)).await;
    assert_eq!(
        psql(
            &cluster,
            "fleet_outage",
            "SELECT count(*) FROM instances WHERE reaped_at_ms IS NOT NULL"
        )?,
        "0"
    );
    let later = api(&a, "GET", &format!("/calls/{sid}"), None).await?;
    assert_eq!(later.json, record);
    Ok(())
}
