//! Twilio account features end to end, against the fake Twilio REST API
//! (`switchboard_tests::fake_twilio`): outbound calls through `POST /calls` (bearer token, rate
//! limit, validation, Twilio's errors), the task reaching the agent's language model for that
//! call only, status callbacks and call records, a plugin's hang-up and transfer carried out
//! through the REST API, and the operator's hang-up.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use switchboard::call::EndReason;
use switchboard::simulate::{self, Options};
use switchboard_tests::callback_receiver::CallbackReceiver;
use switchboard_tests::fake_openai_http::{FakeHttpOptions, FakeOpenAiHttp};
use switchboard_tests::fake_twilio::FakeTwilio;
use switchboard_tests::{Gateway, beckett, write_config};

const ACCOUNT: &str = "AC11111111111111111111111111111111";
const TOKEN: &str = "twilio-auth-token";
const OPERATOR: &str = "operator-token";
const OTHER_OPERATOR: &str = "second-operator-token";
/// Signs callbacks (Standard Webhooks' example secret).
const CALLBACK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(twilio_base: &str, twilio_token: &str, llm: &FakeOpenAiHttp, burst: u32) -> String {
    format!(
        r#"
[twilio]
account_sid = "{ACCOUNT}"
auth_token = "{twilio_token}"
api_base_url = "{twilio_base}"
caller_id = "+15005550006"

[api]
tokens = ["{OPERATOR}", "{OTHER_OPERATOR}"]
rate_per_minute = 1
burst = {burst}
callback_secret = "{CALLBACK_SECRET}"

[plugins.stt]
path = "{{plugins}}/fixed_stt.wasm"
[plugins.llm]
path = "{{plugins}}/openai_llm.wasm"
[plugins.tts]
path = "{{plugins}}/tone_tts.wasm"
[plugins.misbehave]
path = "{{plugins}}/misbehave.wasm"

[[agents]]
name = "reminder"

[agents.pipeline]
instructions = "You are calling for Dr. Lee's office. {{task.prompt}} Facts: {{task.context}}"
endpointing_ms = 400
stt = {{ plugin = "stt", settings = {{ text = "Who is this?" }} }}
llm = {{ plugin = "llm", settings = {{ base_url = "{llm_base}", model = "test-model" }}, secrets = {{ api_key = "sk-test" }}, allowed_hosts = ["{llm_host}"] }}
tts = {{ plugin = "tts", settings = {{ ms_per_char = 5 }} }}

[[agents]]
name = "hanger"
numbers = ["+15005550111"]
realtime = {{ plugin = "misbehave", settings = {{ behaviour = "hangup" }} }}

# Disabled: its LLM's key is empty (an unset `${{VAR:-}}`).
[[agents]]
name = "keyless"
[agents.pipeline]
stt = {{ plugin = "stt" }}
llm = {{ plugin = "llm", settings = {{ base_url = "{llm_base}" }}, secrets = {{ api_key = "" }}, allowed_hosts = ["{llm_host}"] }}
tts = {{ plugin = "tts" }}

[[agents]]
name = "transferer"
realtime = {{ plugin = "misbehave", settings = {{ behaviour = "transfer" }} }}

# DTMF 2: a transfer it may not make; 3: a result; 4: an allowed transfer; 5: end the call.
[[agents]]
name = "controller"
tools = ["transfer_call", "end_call", "record_result"]
transfer_to = ["+15005550123"]
realtime = {{ plugin = "misbehave", settings = {{ behaviour = "toolcall", calls = [
    {{ name = "transfer_call", arguments = {{ number = "+19995550000" }} }},
    {{ name = "record_result", arguments = {{ attending = true, note = "Tuesday works" }} }},
    {{ name = "transfer_call", arguments = {{ number = "+15005550123" }} }},
    {{ name = "end_call", arguments = {{ reason = "done" }} }},
] }} }}

[routing]
default = "hanger"
"#,
        llm_base = llm.base_url,
        llm_host = llm.host_port,
    )
}

struct Setup {
    twilio: FakeTwilio,
    llm: FakeOpenAiHttp,
    gateway: Gateway,
}

async fn setup(gateway_token: &str, burst: u32) -> anyhow::Result<Setup> {
    let twilio = FakeTwilio::start(ACCOUNT, TOKEN).await?;
    let llm = FakeOpenAiHttp::start(FakeHttpOptions {
        delay: Duration::from_millis(1),
        ..FakeHttpOptions::default()
    })
    .await?;
    let path = write_config(&config(twilio.base_url(), gateway_token, &llm, burst))?;
    let gateway = Gateway::start(&path).await?;
    Ok(Setup {
        twilio,
        llm,
        gateway,
    })
}

struct Answer {
    status: u16,
    json: Value,
    retry_after: Option<String>,
}

async fn api(
    gateway: &Gateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<Answer> {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", gateway.url);
    let mut request = match method {
        "POST" => client.post(url),
        _ => client.get(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
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

/// `GET path` with the operator's token.
async fn get(gateway: &Gateway, path: &str) -> anyhow::Result<Answer> {
    api(gateway, "GET", path, Some(OPERATOR), None).await
}

/// `POST /calls` with the operator's token.
async fn place(gateway: &Gateway, body: Value) -> anyhow::Result<Answer> {
    api(gateway, "POST", "/calls", Some(OPERATOR), Some(body)).await
}

/// Twilio's status callback for `sid`, signed with the account's token.
async fn status_callback(
    gateway: &Gateway,
    sid: &str,
    status: &str,
    duration: Option<&str>,
) -> anyhow::Result<u16> {
    let mut form = vec![
        ("AccountSid", ACCOUNT.to_string()),
        ("CallSid", sid.to_string()),
        ("CallStatus", status.to_string()),
        ("Direction", "outbound-api".to_string()),
    ];
    if let Some(d) = duration {
        form.push(("CallDuration", d.to_string()));
    }
    let url = format!("{}/twilio/status", gateway.url);
    let mut sorted = form.clone();
    sorted.sort();
    let string: String = sorted.iter().fold(url.clone(), |mut s, (k, v)| {
        s.push_str(k);
        s.push_str(v);
        s
    });
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(TOKEN.as_bytes())?;
    mac.update(string.as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    Ok(reqwest::Client::new()
        .post(url)
        .header("X-Twilio-Signature", signature)
        .form(&form)
        .send()
        .await?
        .status()
        .as_u16())
}

/// Plays Twilio's part once the callee answers an outbound call: the webhook at the call's
/// `Url`, then the Media Stream, both signed, with `audio` as what the callee says.
fn answer(url: &str, sid: &str, gateway: &Gateway, audio: Vec<i16>) -> Options {
    let mut opts = Options::new(&gateway.url, audio);
    opts.voice_url = Some(url.to_string());
    opts.call_sid = Some(sid.to_string());
    opts.account_sid = Some(ACCOUNT.to_string());
    opts.direction = "outbound-api".into();
    opts.auth_token = Some(TOKEN.into());
    opts.api_token = Some(OPERATOR.into());
    opts.from = "+15005550006".into();
    opts.to = "+15551230002".into();
    opts.idle_hangup = Duration::from_millis(1500);
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call_with_a_task_reaches_the_agent_and_is_recorded() -> anyhow::Result<()> {
    let s = setup(TOKEN, 20).await?;
    let mut ended = s.gateway.state.subscribe();
    let task = json!({
        "type": "reminder",
        "prompt": "Remind Ana of her dentist appointment tomorrow at 3 pm.",
        "context": {"patient": "Ana", "time": "15:00"},
    });
    let placed = place(
        &s.gateway,
        json!({"to": "+15551230002", "agent": "reminder", "task": task}),
    )
    .await?;
    assert_eq!(placed.status, 201, "{}", placed.json);
    let sid = placed.json["call_sid"]
        .as_str()
        .expect("call_sid")
        .to_string();
    assert_eq!(placed.json["status"], "queued");
    assert_eq!(
        placed.json["from"], "+15005550006",
        "caller_id is the default From"
    );

    // What Twilio received: a form-encoded create with basic auth and a status callback.
    let created = s.twilio.next_created().await?;
    assert_eq!(created.sid, sid);
    let request = s
        .twilio
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/Calls.json"))
        .expect("create request");
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT}/Calls.json")
    );
    assert_eq!(request.auth_user.as_deref(), Some(ACCOUNT));
    assert_eq!(request.get("To"), Some("+15551230002"));
    assert_eq!(request.get("From"), Some("+15005550006"));
    let url = request.get("Url").expect("Url").to_string();
    assert!(
        url.starts_with(&format!(
            "{}/twilio/voice?agent=reminder&task=",
            s.gateway.url
        )),
        "{url}"
    );
    assert_eq!(
        request.get("StatusCallback"),
        Some(format!("{}/twilio/status", s.gateway.url).as_str())
    );
    assert_eq!(
        request.all("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );
    // The record exists before anyone answers.
    let record = get(&s.gateway, &format!("/calls/{sid}")).await?;
    assert_eq!(record.status, 200, "{}", record.json);
    assert_eq!(record.json["direction"], "outbound-api");
    assert_eq!(record.json["task"]["prompt"], task["prompt"]);

    assert_eq!(
        status_callback(&s.gateway, &sid, "initiated", None).await?,
        204
    );
    assert_eq!(
        status_callback(&s.gateway, &sid, "ringing", None).await?,
        204
    );
    assert_eq!(
        status_callback(&s.gateway, &sid, "in-progress", None).await?,
        204
    );

    // The callee answers and says something; the agent's language model gets the task.
    let audio: Vec<i16> = beckett()?.into_iter().take(2 * 8000).collect();
    let summary = simulate::run(answer(&url, &sid, &s.gateway, audio)).await?;
    assert_eq!(summary.rejected, None, "{}", summary.twiml);
    let end = tokio::time::timeout(Duration::from_secs(10), ended.recv()).await??;
    assert_eq!(end.stats.call_sid.as_deref(), Some(sid.as_str()));
    assert_eq!(end.stats.agent.as_deref(), Some("reminder"));
    let chats: Vec<Value> = s
        .llm
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .filter_map(|r| r.json)
        .collect();
    assert!(!chats.is_empty(), "the agent's LLM was never asked");
    let system = chats[0]["messages"][0]["content"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        system,
        r#"You are calling for Dr. Lee's office. Remind Ana of her dentist appointment tomorrow at 3 pm. Facts: {"patient":"Ana","time":"15:00"}"#
    );

    assert_eq!(
        status_callback(&s.gateway, &sid, "completed", Some("17")).await?,
        204
    );
    let record = get(&s.gateway, &format!("/calls/{sid}")).await?;
    let r = &record.json;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["duration_s"], 17);
    assert_eq!(r["agent"], "reminder");
    assert_eq!(r["outcome"], "completed");
    assert!(r["answered_at_ms"].is_i64(), "{r}");
    assert!(r["ended_at_ms"].is_i64(), "{r}");
    let history: Vec<&str> = r["status_history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    for status in ["queued", "initiated", "ringing", "in-progress", "completed"] {
        assert!(
            history.contains(&status),
            "{status} missing from {history:?}"
        );
    }
    assert!(
        r["transcript"]
            .as_array()
            .expect("transcript")
            .iter()
            .any(|t| t["side"] == "caller" && t["text"] == "Who is this?"),
        "{r}"
    );

    // The list, filtered.
    let list = get(&s.gateway, "/calls?agent=reminder&limit=5").await?;
    assert_eq!(list.status, 200);
    let calls = list.json["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["call_sid"], sid.as_str());
    let none = get(&s.gateway, "/calls?agent=hanger").await?;
    assert_eq!(none.json["calls"].as_array().map(Vec::len), Some(0));
    let bad = get(&s.gateway, "/calls?limit=lots").await?;
    assert_eq!(bad.status, 400);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call_errors_are_clear_json() -> anyhow::Result<()> {
    let s = setup(TOKEN, 20).await?;
    let call = |body: Value| place(&s.gateway, body);

    // Refused by the gateway, before Twilio is asked.
    let r = call(json!({"to": "555-0100", "agent": "reminder"})).await?;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (400, Some("invalid_number")),
        "{}",
        r.json
    );
    let r = call(json!({"to": "+15551230002", "agent": "nobody"})).await?;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (400, Some("unknown_agent"))
    );
    let r = call(json!({"to": "+15551230002", "agent": "keyless"})).await?;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (409, Some("agent_disabled")),
        "{}",
        r.json
    );
    let r =
        call(json!({"to": "+15551230002", "agent": "reminder", "task": {"prompt": ""}})).await?;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (400, Some("invalid_task"))
    );
    let r = call(json!({"to": "+15551230002"})).await?;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (400, Some("bad_request"))
    );
    assert!(s.twilio.requests().is_empty(), "Twilio was asked anyway");

    // Refused by Twilio: its error code comes through.
    let r = call(json!({"to": "+1234567", "agent": "reminder"})).await?;
    assert_eq!(r.status, 400, "{}", r.json);
    assert_eq!(r.json["code"], "twilio_21211");
    assert_eq!(r.json["twilio_code"], 21211);
    assert!(
        r.json["error"]
            .as_str()
            .unwrap_or_default()
            .contains("+1234567"),
        "{}",
        r.json
    );

    s.twilio
        .fail_next(500, 20500, "An internal server error has occurred");
    let r = call(json!({"to": "+15551230002", "agent": "reminder"})).await?;
    assert_eq!(r.status, 502, "{}", r.json);
    assert_eq!(r.json["code"], "twilio_20500");
    assert_eq!(r.json["twilio_status"], 500);

    // A gateway whose Twilio credentials are wrong.
    let wrong = setup("not-the-token", 20).await?;
    let r = place(
        &wrong.gateway,
        json!({"to": "+15551230002", "agent": "reminder"}),
    )
    .await?;
    assert_eq!(r.status, 502, "{}", r.json);
    assert_eq!(r.json["code"], "twilio_20003");
    assert!(wrong.twilio.calls().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_api_needs_a_bearer_token_and_is_rate_limited() -> anyhow::Result<()> {
    let s = setup(TOKEN, 3).await?;
    for (token, what) in [(None, "missing"), (Some("wrong-token"), "wrong")] {
        for (method, path) in [
            ("GET", "/calls"),
            ("GET", "/calls/CA00000000000000000000000000000000"),
            ("POST", "/calls"),
            ("POST", "/calls/CA00000000000000000000000000000000/hangup"),
        ] {
            let r = api(&s.gateway, method, path, token, Some(json!({}))).await?;
            assert_eq!(r.status, 401, "{what} token on {method} {path}: {}", r.json);
            assert_eq!(r.json["code"], "unauthorized");
        }
    }
    assert!(s.twilio.requests().is_empty());

    // A burst of 3, then the bucket refills at 1 a minute: the 4th request is refused with a
    // Retry-After, and another token's bucket is untouched.
    for i in 0..3 {
        let r = get(&s.gateway, "/calls").await?;
        assert_eq!(r.status, 200, "request {i}: {}", r.json);
    }
    let r = get(&s.gateway, "/calls").await?;
    assert_eq!(r.status, 429, "{}", r.json);
    assert_eq!(r.json["code"], "rate_limited");
    let retry: u64 = r.retry_after.expect("Retry-After").parse()?;
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let r = place(
        &s.gateway,
        json!({"to": "+15551230002", "agent": "reminder"}),
    )
    .await?;
    assert_eq!(r.status, 429, "a limited token placed a call");
    let r = api(&s.gateway, "GET", "/calls", Some(OTHER_OPERATOR), None).await?;
    assert_eq!(r.status, 200);
    Ok(())
}

/// Places a call through the API and answers it: the plugin acts on DTMF `1`.
async fn place_and_answer(s: &Setup, agent: &str) -> anyhow::Result<(String, simulate::Summary)> {
    place_and_press(s, json!({"to": "+15551230002", "agent": agent}), &["1"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_hang_up_and_transfer_go_through_the_rest_api() -> anyhow::Result<()> {
    let s = setup(TOKEN, 20).await?;
    let mut ended = s.gateway.state.subscribe();

    let (sid, summary) = place_and_answer(&s, "hanger").await?;
    assert!(summary.closed_by_gateway, "the agent hung up");
    let updated = s.twilio.next_update().await?;
    assert_eq!(updated.sid, sid);
    assert_eq!(updated.status, "completed");
    assert_eq!(
        updated.updates.last().map(Vec::as_slice),
        Some([("Status".to_string(), "completed".to_string())].as_slice())
    );
    let end = tokio::time::timeout(Duration::from_secs(5), ended.recv()).await??;
    assert_eq!(end.reason, EndReason::HungUp);

    let (sid, summary) = place_and_answer(&s, "transferer").await?;
    assert!(summary.closed_by_gateway);
    let updated = s.twilio.next_update().await?;
    assert_eq!(updated.sid, sid);
    assert_eq!(
        updated.twiml.as_deref(),
        Some(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial>+15005550123</Dial></Response>"#
        )
    );
    let end = tokio::time::timeout(Duration::from_secs(5), ended.recv()).await??;
    assert_eq!(end.reason, EndReason::Transferred("+15005550123".into()));
    let record = get(&s.gateway, &format!("/calls/{sid}")).await?;
    assert_eq!(record.json["outcome"], "transferred", "{}", record.json);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_hangs_up_a_call() -> anyhow::Result<()> {
    let s = setup(TOKEN, 20).await?;
    let placed = place(&s.gateway, json!({"to": "+15551230002", "agent": "hanger"})).await?;
    let sid = placed.json["call_sid"].as_str().expect("sid").to_string();
    let r = api(
        &s.gateway,
        "POST",
        &format!("/calls/{sid}/hangup"),
        Some(OPERATOR),
        None,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "completed");
    let call = s.twilio.call(&sid).expect("call");
    assert_eq!(call.status, "completed");
    assert_eq!(
        call.updates,
        vec![vec![("Status".to_string(), "completed".to_string())]]
    );
    // A call Twilio does not know, and a sid that is not one.
    let r = api(
        &s.gateway,
        "POST",
        "/calls/CA0123456789abcdef0123456789abcdef/hangup",
        Some(OPERATOR),
        None,
    )
    .await?;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (404, Some("twilio_20404")),
        "{}",
        r.json
    );
    let r = api(
        &s.gateway,
        "POST",
        "/calls/CA1/hangup",
        Some(OPERATOR),
        None,
    )
    .await?;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (400, Some("invalid_sid"))
    );
    Ok(())
}

/// An outbound call placed with a `callback_url`: when it ends, its record reaches the
/// receiver signed by the Standard Webhooks scheme, through two refused deliveries (retried
/// with backoff), exactly once accepted, with the same `webhook-id` on every attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_result_reaches_the_callback_once_signed() -> anyhow::Result<()> {
    let s = setup(TOKEN, 20).await?;
    let receiver = CallbackReceiver::start(CALLBACK_SECRET, 2).await?;
    let r = place(
        &s.gateway,
        json!({"to": "+15551230002", "agent": "hanger", "callback_url": "ftp://example.com/x"}),
    )
    .await?;
    assert_eq!(r.status, 400, "{}", r.json);
    assert_eq!(r.json["code"], "invalid_callback_url", "{}", r.json);

    let placed = place(
        &s.gateway,
        json!({"to": "+15551230002", "agent": "hanger", "callback_url": receiver.url}),
    )
    .await?;
    anyhow::ensure!(placed.status == 201, "{}", placed.json);
    let created = s.twilio.next_created().await?;
    let url = created.url.clone().expect("Url");
    let mut opts = answer(&url, &created.sid, &s.gateway, vec![0; 8000 * 3]);
    opts.dtmf = vec![(Duration::from_millis(400), "1".into())];
    simulate::run(opts).await?;

    let delivery = receiver.accepted(Duration::from_secs(30)).await?;
    assert_eq!(delivery.id, format!("msg_{}", created.sid));
    assert_eq!(delivery.body["type"], "call.ended", "{}", delivery.body);
    let data = &delivery.body["data"];
    assert_eq!(data["call_sid"], created.sid.as_str(), "{data}");
    assert_eq!(data["outcome"], "hung-up", "{data}");
    assert_eq!(data["agent"], "hanger", "{data}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    assert!(
        (now - delivery.timestamp).abs() < 300,
        "{}",
        delivery.timestamp
    );

    // Nothing more comes: the accepted message is not sent again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = receiver.deliveries();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(
        all.iter().all(|d| d.signature_valid && d.id == delivery.id),
        "{all:?}"
    );
    assert_eq!(all.iter().filter(|d| d.accepted).count(), 1);
    Ok(())
}

/// Places a call for `agent` with `body`'s extra fields, answers it and presses `digits`
/// (400 ms apart, from 400 ms).
async fn place_and_press(
    s: &Setup,
    body: Value,
    digits: &[&str],
) -> anyhow::Result<(String, simulate::Summary)> {
    let placed = place(&s.gateway, body).await?;
    anyhow::ensure!(placed.status == 201, "{}", placed.json);
    let created = s.twilio.next_created().await?;
    let url = created.url.clone().expect("Url");
    let mut opts = answer(&url, &created.sid, &s.gateway, vec![0; 8000 * 3]);
    opts.dtmf = digits
        .iter()
        .enumerate()
        .map(|(i, d)| {
            (
                Duration::from_millis(400 * (i as u64 + 1)),
                (*d).to_string(),
            )
        })
        .collect();
    let summary = simulate::run(opts).await?;
    Ok((created.sid, summary))
}

/// The call-control tools through a real plugin and the fake Twilio REST API: a transfer to a
/// number the agent does not allow is an error result and the call goes on; `record_result`
/// checks the task's schema and stores the result, which the record and the signed callback
/// carry; an allowed transfer goes through Twilio. Every tool call is in the transcript with
/// its latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_control_tools_transfer_only_where_allowed_and_record_the_result() -> anyhow::Result<()>
{
    let s = setup(TOKEN, 20).await?;
    let receiver = CallbackReceiver::start(CALLBACK_SECRET, 0).await?;
    let mut ended = s.gateway.state.subscribe();
    // A task schema the result must meet (a wrong one is refused up front).
    let bad = place(
        &s.gateway,
        json!({"to": "+15551230002", "agent": "controller",
               "task": {"prompt": "Confirm", "result_schema": {"type": "nonsense"}}}),
    )
    .await?;
    assert_eq!(bad.status, 400, "{}", bad.json);
    let schema = json!({"type": "object", "required": ["attending"],
                        "properties": {"attending": {"type": "boolean"}, "note": {"type": "string"}}});
    let (sid, summary) = place_and_press(
        &s,
        json!({"to": "+15551230002", "agent": "controller", "callback_url": receiver.url,
               "task": {"prompt": "Confirm the appointment.", "result_schema": schema}}),
        &["2", "3", "4"],
    )
    .await?;
    assert!(summary.closed_by_gateway, "the agent transferred the call");
    let updated = s.twilio.next_update().await?;
    assert_eq!(updated.sid, sid);
    assert_eq!(
        updated.twiml.as_deref(),
        Some(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial>+15005550123</Dial></Response>"#
        )
    );
    let end = tokio::time::timeout(Duration::from_secs(5), ended.recv()).await??;
    assert_eq!(end.reason, EndReason::Transferred("+15005550123".into()));

    let record = get(&s.gateway, &format!("/calls/{sid}")).await?;
    let json = &record.json;
    assert_eq!(
        json["result"],
        json!({"attending": true, "note": "Tuesday works"}),
        "{json}"
    );
    let turns = json["transcript"].as_array().expect("transcript");
    let said: Vec<&str> = turns.iter().filter_map(|t| t["text"].as_str()).collect();
    assert_eq!(
        said[0], "tools: transfer_call,end_call,record_result",
        "{said:?}"
    );
    let tools: Vec<&Value> = turns.iter().filter(|t| t["side"] == "tool").collect();
    assert_eq!(tools.len(), 3, "{json}");
    assert_eq!(tools[0]["tool"]["name"], "transfer_call");
    assert_eq!(tools[0]["tool"]["ok"], false);
    assert!(
        tools[0]["tool"]["result"]
            .as_str()
            .is_some_and(|r| r.contains("not allowed")),
        "{}",
        tools[0]
    );
    assert_eq!(tools[1]["tool"]["name"], "record_result");
    assert_eq!(tools[1]["tool"]["ok"], true);
    assert!(
        tools.iter().all(|t| t["tool"]["latency_ms"].is_u64()),
        "{json}"
    );
    // The model heard the refusal (the plugin says each result).
    assert!(
        said.iter()
            .any(|t| t.starts_with("call_2: error transfers to \"+19995550000\" are not allowed")),
        "{said:?}"
    );

    let delivery = receiver.accepted(Duration::from_secs(30)).await?;
    assert!(delivery.signature_valid);
    assert_eq!(
        delivery.body["data"]["result"]["attending"], true,
        "{}",
        delivery.body
    );
    Ok(())
}

/// `end_call` hangs up through Twilio once the queued audio has played.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_call_hangs_up_after_the_audio() -> anyhow::Result<()> {
    let s = setup(TOKEN, 20).await?;
    let mut ended = s.gateway.state.subscribe();
    let (sid, summary) = place_and_press(
        &s,
        json!({"to": "+15551230002", "agent": "controller"}),
        &["5"],
    )
    .await?;
    assert!(summary.closed_by_gateway, "the agent ended the call");
    let updated = s.twilio.next_update().await?;
    assert_eq!(
        (updated.sid.as_str(), updated.status.as_str()),
        (sid.as_str(), "completed")
    );
    let end = tokio::time::timeout(Duration::from_secs(5), ended.recv()).await??;
    assert_eq!(end.reason, EndReason::HungUp);
    Ok(())
}
