//! The console's host side without a browser: the browser phone's HTTP and WebSocket contract
//! spoken by a Rust client (as the console's page speaks it), the page and its files, the
//! overview, and the token generated when no `[api] tokens` are configured. A real gateway on
//! 127.0.0.1:0, the real echo plugin.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use switchboard::call::EndReason;
use switchboard::server::CallEnded;
use switchboard_tests::{Gateway, beckett, best_ncc, render_config, write_config};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::{self, Message};

/// The operator token these gateways accept.
const TOKEN: &str = "console-phone-test-token";

/// A loopback agent (every frame straight back), an agent that routing would pick instead (the
/// default), and one disabled by an empty secret.
fn config(api: &str) -> String {
    format!(
        r#"
{api}

[plugins.echo]
path = "{{plugins}}/echo.wasm"

[[agents]]
name = "loopback"
realtime = {{ plugin = "echo", settings = {{ mode = "immediate" }} }}

[[agents]]
name = "other"
numbers = ["+15005550006"]
realtime = {{ plugin = "echo", settings = {{ mode = "utterance" }} }}

[[agents]]
name = "keyless"
realtime = {{ plugin = "echo", secrets = {{ api_key = "" }} }}

[routing]
default = "other"
"#
    )
}

/// `[api]` with [`TOKEN`] and room for every request of a test.
fn api_with_token() -> String {
    format!("[api]\ntokens = [\"{TOKEN}\"]\nburst = 100\n")
}

/// An HTTP answer: status and JSON body (`null` when not JSON).
struct Answer {
    status: u16,
    json: Value,
}

async fn post_phone(gw: &Gateway, token: Option<&str>, body: Value) -> anyhow::Result<Answer> {
    let mut request = reqwest::Client::new()
        .post(format!("{}/console/phone", gw.url))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok(Answer {
        status,
        json: response.json().await.unwrap_or(Value::Null),
    })
}

async fn get_json(gw: &Gateway, path: &str, token: Option<&str>) -> anyhow::Result<Answer> {
    let mut request = reqwest::Client::new().get(format!("{}{path}", gw.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok(Answer {
        status,
        json: response.json().await.unwrap_or(Value::Null),
    })
}

/// The WebSocket URL of a ticket's `ws_url` on `gw`.
fn ws_url(gw: &Gateway, ticket: &Value) -> String {
    format!(
        "{}{}",
        gw.url.replace("http://", "ws://"),
        ticket["ws_url"].as_str().unwrap_or_default()
    )
}

/// The HTTP status a WebSocket handshake to `url` was refused with; `None` if it upgraded.
async fn refused_with(url: &str) -> anyhow::Result<Option<u16>> {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => Ok(None),
        Err(tungstenite::Error::Http(response)) => Ok(Some(response.status().as_u16())),
        Err(e) => Err(e.into()),
    }
}

/// What the browser-side client saw.
#[derive(Debug, Default)]
struct Heard {
    /// Every μ-law byte the gateway sent, in order, decoded.
    media: Vec<i16>,
    /// Marks echoed after their audio played (or returned by a `clear`).
    marks_echoed: usize,
    /// `clear`s received.
    clears: usize,
    /// The gateway closed the socket first.
    closed_by_gateway: bool,
}

/// Speaks the Media Streams protocol as the console's page does: `connected`, `start` with
/// `call_sid`/`stream_sid` (and `customParameters` naming another agent, which must not
/// matter), one 20 ms `media` frame of `frames` per tick in real time, then silence until
/// `duration`, then `stop`. What arrives plays out one frame per tick; each `mark` is echoed once
/// the audio before it has played; a `clear` drops unplayed audio and echoes pending marks.
async fn browser_call(
    url: &str,
    call_sid: &str,
    stream_sid: &str,
    frames: Vec<Vec<u8>>,
    duration: Duration,
) -> anyhow::Result<Heard> {
    enum Queued {
        Frame,
        Mark(String),
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let text = |v: Value| Message::Text(v.to_string().into());
    ws.send(text(
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
    ))
    .await?;
    ws.send(text(
        json!({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
        "start": {"accountSid": "", "streamSid": stream_sid, "callSid": call_sid,
            "tracks": ["inbound"], "customParameters": {"agent": "other"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}),
    ))
    .await?;
    let mut heard = Heard::default();
    let mut queue = std::collections::VecDeque::new();
    let mut frames = frames.into_iter();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let (mut seq, mut chunk) = (1u64, 0u64);
    let end = Instant::now() + duration;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                seq += 1;
                if Instant::now() >= end {
                    ws.send(text(json!({"event": "stop", "sequenceNumber": seq.to_string(),
                        "streamSid": stream_sid, "stop": {"accountSid": "", "callSid": call_sid}}))).await?;
                    let _ = tokio::time::timeout(Duration::from_secs(3), async {
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    return Ok(heard);
                }
                chunk += 1;
                let frame = frames.next().unwrap_or_else(|| vec![0xFF; 160]);
                ws.send(text(json!({"event": "media", "sequenceNumber": seq.to_string(),
                    "streamSid": stream_sid, "media": {"track": "inbound", "chunk": chunk.to_string(),
                    "timestamp": (chunk * 20).to_string(), "payload": BASE64.encode(&frame)}}))).await?;
                // Play one frame, then echo the marks it reaches.
                let mut played = false;
                while let Some(item) = queue.pop_front() {
                    match item {
                        Queued::Frame if played => {
                            queue.push_front(Queued::Frame);
                            break;
                        }
                        Queued::Frame => played = true,
                        Queued::Mark(name) => {
                            seq += 1;
                            ws.send(text(json!({"event": "mark", "sequenceNumber": seq.to_string(),
                                "streamSid": stream_sid, "mark": {"name": name}}))).await?;
                            heard.marks_echoed += 1;
                        }
                    }
                }
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else {
                    heard.closed_by_gateway = true;
                    return Ok(heard);
                };
                let Message::Text(body) = msg else {
                    if let Message::Close(_) = msg {
                        heard.closed_by_gateway = true;
                        let _ = tokio::time::timeout(Duration::from_secs(3), async {
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                        return Ok(heard);
                    }
                    continue;
                };
                let v: Value = serde_json::from_str(body.as_str())?;
                match v["event"].as_str() {
                    Some("media") => {
                        let payload = BASE64.decode(v["media"]["payload"].as_str().unwrap_or_default())?;
                        heard.media.extend(payload.iter().map(|&b| switchboard::audio::mulaw::decode(b)));
                        queue.push_back(Queued::Frame);
                    }
                    Some("mark") => {
                        queue.push_back(Queued::Mark(v["mark"]["name"].as_str().unwrap_or_default().into()));
                    }
                    Some("clear") => {
                        heard.clears += 1;
                        for item in std::mem::take(&mut queue) {
                            if let Queued::Mark(name) = item {
                                seq += 1;
                                ws.send(text(json!({"event": "mark", "sequenceNumber": seq.to_string(),
                                    "streamSid": stream_sid, "mark": {"name": name}}))).await?;
                                heard.marks_echoed += 1;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

async fn ended(rx: &mut tokio::sync::broadcast::Receiver<CallEnded>) -> anyhow::Result<CallEnded> {
    Ok(tokio::time::timeout(Duration::from_secs(20), rx.recv()).await??)
}

/// The call's record once it has ended (it lands just after the socket closes).
async fn ended_record(gw: &Gateway, call_sid: &str) -> anyhow::Result<Value> {
    for _ in 0..50 {
        let r = get_json(gw, &format!("/calls/{call_sid}"), Some(TOKEN)).await?;
        if r.status == 200 && r.json["ended_at_ms"].is_i64() {
            return Ok(r.json);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no ended record for {call_sid}")
}

/// A browser call to the loopback agent: the ticket's agent answers although the `start`
/// names another; what comes back is what was said (NCC ≥ 0.99 at the best lag, within
/// 100 ms); the call is recorded as a browser call to that agent and counted in the overview.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_call_to_the_echo_agent_plays_back_what_was_said() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(&config(&api_with_token()))?).await?;
    let mut events = gw.state.subscribe();
    let r = post_phone(&gw, Some(TOKEN), json!({"agent": "loopback"})).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let ticket = r.json;
    let (call_sid, stream_sid) = (
        ticket["call_sid"].as_str().unwrap_or_default().to_string(),
        ticket["stream_sid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    assert!(
        call_sid.starts_with("CA") && call_sid.len() == 34,
        "{ticket}"
    );
    assert!(
        stream_sid.starts_with("MZ") && stream_sid.len() == 34,
        "{ticket}"
    );
    assert_eq!(
        ticket["ws_url"],
        format!(
            "/console/phone/ws?ticket={}",
            ticket["ticket"].as_str().unwrap_or_default()
        )
    );

    // Four seconds of the recording, as 20 ms μ-law frames.
    let said: Vec<i16> = beckett()?.into_iter().take(4 * 8000).collect();
    let frames: Vec<Vec<u8>> = said
        .chunks(160)
        .map(|c| {
            c.iter()
                .map(|&s| switchboard::audio::mulaw::encode(s))
                .collect()
        })
        .collect();
    let sent: Vec<i16> = frames
        .iter()
        .flatten()
        .map(|&b| switchboard::audio::mulaw::decode(b))
        .collect();
    let heard = browser_call(
        &ws_url(&gw, &ticket),
        &call_sid,
        &stream_sid,
        frames,
        Duration::from_millis(4600),
    )
    .await?;
    assert!(
        !heard.closed_by_gateway,
        "the browser hung up, not the gateway"
    );
    let start = heard
        .media
        .iter()
        .position(|s| *s != 0)
        .ok_or_else(|| anyhow::anyhow!("nothing came back: {heard:?}"))?;
    let echoed = &heard.media[start..(start + 3 * 8000).min(heard.media.len())];
    let (ncc, lag) = best_ncc(echoed, &sent, 0..start + 1)?;
    assert!(ncc >= 0.99, "NCC {ncc:.3} at lag {lag}");
    assert!(
        start - lag <= 5 * 160,
        "echoed {} samples late",
        start - lag
    );

    let end = ended(&mut events).await?;
    assert_eq!(end.reason, EndReason::Stop);
    assert_eq!(end.stats.call_sid.as_deref(), Some(call_sid.as_str()));
    assert_eq!(
        end.stats.agent.as_deref(),
        Some("loopback"),
        "the ticket's agent answered"
    );
    assert!(end.stats.frames_in >= 200, "{:?}", end.stats);
    assert_eq!(gw.state.active_calls(), 0);

    let record = ended_record(&gw, &call_sid).await?;
    assert_eq!(record["direction"], "browser", "{record}");
    assert_eq!(record["from"], "browser", "{record}");
    assert_eq!(record["to"], "loopback", "{record}");
    assert_eq!(record["agent"], "loopback", "{record}");
    assert_eq!(record["outcome"], "completed", "{record}");
    assert_eq!(
        record["status"],
        Value::Null,
        "no carrier, no Twilio status: {record}"
    );

    let overview = get_json(&gw, "/console/api/overview", Some(TOKEN)).await?;
    assert_eq!(
        overview.json["calls_total"]["completed"], 1,
        "{}",
        overview.json
    );
    Ok(())
}

/// Wrong tokens, unknown and disabled agents, and bad, used or expired tickets are refused
/// before any call starts (tickets before the WebSocket upgrade); a `start` with other sids
/// than the ticket's ends the call, recorded under the ticket's sid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_phone_refuses_wrong_tokens_tickets_and_sids() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(&config(&api_with_token()))?).await?;
    let mut events = gw.state.subscribe();
    let body = json!({"agent": "loopback"});
    for token in [None, Some("wrong"), Some("")] {
        let r = post_phone(&gw, token, body.clone()).await?;
        assert_eq!(r.status, 401, "token {token:?}: {}", r.json);
    }
    let r = post_phone(&gw, Some(TOKEN), json!({"agent": "nobody"})).await?;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (404, Some("unknown_agent"))
    );
    let r = post_phone(&gw, Some(TOKEN), json!({"agent": "keyless"})).await?;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (409, Some("agent_disabled")),
        "{}",
        r.json
    );
    let r = post_phone(&gw, Some(TOKEN), json!({"agent": "loopback", "to": "x"})).await?;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (400, Some("bad_request"))
    );

    // No ticket, a made-up one.
    let base = gw.url.replace("http://", "ws://");
    assert_eq!(
        refused_with(&format!("{base}/console/phone/ws")).await?,
        Some(401)
    );
    assert_eq!(
        refused_with(&format!(
            "{base}/console/phone/ws?ticket={}",
            "0".repeat(64)
        ))
        .await?,
        Some(401)
    );
    assert_eq!(gw.state.console().tickets.outstanding(), 0);

    // A ticket is good once; the start must carry its sids.
    let ticket = post_phone(&gw, Some(TOKEN), body.clone()).await?.json;
    let url = ws_url(&gw, &ticket);
    let call_sid = ticket["call_sid"].as_str().unwrap_or_default().to_string();
    let other = post_phone(&gw, Some(TOKEN), body.clone()).await?.json;
    let heard = browser_call(
        &url,
        other["call_sid"].as_str().unwrap_or_default(),
        other["stream_sid"].as_str().unwrap_or_default(),
        vec![vec![0x10; 160]; 50],
        Duration::from_secs(5),
    )
    .await?;
    assert!(
        heard.closed_by_gateway,
        "a start with another ticket's sids is refused"
    );
    assert!(heard.media.is_empty(), "no agent answered");
    let end = ended(&mut events).await?;
    assert!(
        matches!(end.reason, EndReason::NotRouted(_)),
        "{:?}",
        end.reason
    );
    assert_eq!(end.stats.call_sid.as_deref(), Some(call_sid.as_str()));
    let record = ended_record(&gw, &call_sid).await?;
    assert_eq!(record["outcome"], "not-routed", "{record}");
    assert_eq!(record["direction"], "browser", "{record}");
    assert_eq!(refused_with(&url).await?, Some(401), "a used ticket");
    // The other ticket is still good (once).
    let url = ws_url(&gw, &other);
    let (ws, _) = tokio_tungstenite::connect_async(&url).await?;
    drop(ws);
    assert_eq!(refused_with(&url).await?, Some(401), "a used ticket");
    let end = ended(&mut events).await?;
    assert!(
        matches!(
            end.reason,
            EndReason::SocketClosed | EndReason::SocketError(_)
        ),
        "{:?}",
        end.reason
    );
    Ok(())
}

/// The page and its files are served without a token; the overview needs one and lists the
/// agents with their plugins' kind, stage and breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_page_and_overview_are_served() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(&config(&api_with_token()))?).await?;
    let client = reqwest::Client::new();
    let page = client.get(format!("{}/console", gw.url)).send().await?;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let html = page.text().await?;
    assert!(html.contains("/console/assets/"), "{html}");
    for (file, kind) in [
        ("console.css", "text/css; charset=utf-8"),
        ("console.js", "text/javascript; charset=utf-8"),
        ("phone-worklet.js", "text/javascript; charset=utf-8"),
    ] {
        let r = client
            .get(format!("{}/console/assets/{file}", gw.url))
            .send()
            .await?;
        assert_eq!(r.status(), 200, "{file}");
        assert_eq!(r.headers()["content-type"], kind, "{file}");
        assert_eq!(r.headers()["cache-control"], "no-cache", "{file}");
    }
    for missing in ["nope.js", "package.json", "..%2FCargo.toml"] {
        let r = client
            .get(format!("{}/console/assets/{missing}", gw.url))
            .send()
            .await?;
        assert_eq!(r.status(), 404, "{missing}");
    }

    assert_eq!(
        get_json(&gw, "/console/api/overview", None).await?.status,
        401
    );
    assert_eq!(
        get_json(&gw, "/console/api/overview", Some("wrong"))
            .await?
            .status,
        401
    );
    let r = get_json(&gw, "/console/api/overview", Some(TOKEN)).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let o = r.json;
    assert_eq!(o["version"], env!("CARGO_PKG_VERSION"));
    assert!(o["instance"].as_str().is_some_and(|i| !i.is_empty()), "{o}");
    assert!(o["uptime_s"].is_u64(), "{o}");
    assert_eq!(o["active_calls"], 0);
    assert_eq!(o["draining"], false);
    assert!(o["calls_total"].is_object(), "{o}");
    let agents = o["agents"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = agents.iter().filter_map(|a| a["name"].as_str()).collect();
    assert_eq!(names, ["loopback", "other", "keyless"]);
    assert_eq!(agents[0]["mode"], "realtime");
    assert_eq!(agents[0]["disabled"], false);
    assert_eq!(agents[1]["numbers"], json!(["+15005550006"]));
    assert_eq!(agents[2]["disabled"], true);
    assert_eq!(
        agents[0]["plugins"],
        json!([{"name": "echo", "kind": "wasm", "stage": "realtime", "breaker": "closed", "failed_calls": 0}])
    );
    Ok(())
}

/// With no `[api] tokens`, the gateway makes one: the console and the operator API take it; a
/// reload that configures tokens turns it away, and one that removes them brings the same one
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_configured_tokens_a_generated_token_opens_the_console() -> anyhow::Result<()> {
    // Reloads read the file as `serve` does: unsigned test calls need this said.
    let twilio = "[twilio]\nvalidate_signatures = false\n";
    let path = write_config(&config(twilio))?;
    let gw = Gateway::start(&path).await?;
    let token = gw
        .state
        .console()
        .generated_token()
        .ok_or_else(|| anyhow::anyhow!("no token generated"))?
        .to_string();
    assert_eq!(token.len(), 64);
    assert_eq!(
        get_json(&gw, "/console/api/overview", Some(&token))
            .await?
            .status,
        200
    );
    assert_eq!(
        get_json(&gw, "/calls?limit=1", Some(&token)).await?.status,
        200
    );
    assert_eq!(
        post_phone(&gw, Some(&token), json!({"agent": "loopback"}))
            .await?
            .status,
        200
    );
    assert_eq!(
        get_json(&gw, "/console/api/overview", Some("wrong"))
            .await?
            .status,
        401
    );

    std::fs::write(
        &path,
        render_config(&config(&format!("{twilio}{}", api_with_token())))?,
    )?;
    gw.reload().await?;
    assert_eq!(
        get_json(&gw, "/console/api/overview", Some(&token))
            .await?
            .status,
        401
    );
    assert_eq!(
        get_json(&gw, "/console/api/overview", Some(TOKEN))
            .await?
            .status,
        200
    );

    std::fs::write(&path, render_config(&config(twilio))?)?;
    gw.reload().await?;
    assert_eq!(gw.state.console().generated_token(), Some(token.as_str()));
    assert_eq!(
        get_json(&gw, "/console/api/overview", Some(&token))
            .await?
            .status,
        200
    );
    assert_eq!(
        get_json(&gw, "/console/api/overview", Some(TOKEN))
            .await?
            .status,
        401
    );
    Ok(())
}

/// The console's own modules (μ-law codec byte-exact with `audio::mulaw`, SSE parser, playback
/// with marks and `clear`, capture framing, live transcript) pass their unit tests under Node
/// (`node --test`, no packages needed): run here so CI runs them.
#[test]
fn the_console_modules_pass_their_node_tests() -> anyhow::Result<()> {
    let dir = switchboard_tests::workspace_root().join("host/assets/console");
    let out = std::process::Command::new("node")
        .args(["--test", "tests/"])
        .current_dir(&dir)
        .output()
        .map_err(|e| anyhow::anyhow!("running node (Node.js 20 or later is needed): {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The runner counts what ran: a directory without tests must not pass silently.
    let passed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(passed >= 20, "only {passed} node tests ran:\n{stdout}");
    Ok(())
}
