//! A task's result survives the gateway being killed: an outbound call placed with a
//! `callback_url` ends while the receiver is refusing deliveries; the gateway is SIGKILLed
//! before any delivery succeeds and started again on the same records database; the receiver,
//! now accepting, gets the call's record exactly once, with a valid Standard Webhooks signature
//! and the same `webhook-id` as the attempts before the kill, carrying the result the agent
//! recorded (`record_result`, checked against the task's `result_schema`).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{KEYS, serve, temp};
use hmac::{Hmac, KeyInit, Mac};

const ACCOUNT: &str = "AC22222222222222222222222222222222";
const CALL_SID: &str = "CA0000000000000000000000000000c0de";
/// Standard Webhooks' example secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the fake Twilio and the receiver saw.
#[derive(Default)]
struct Seen {
    /// The `Url` of the created call.
    call_url: Option<String>,
    /// Deliveries: (webhook-id, signature valid, accepted, body).
    deliveries: Vec<(String, bool, bool, serde_json::Value)>,
    /// The receiver accepts deliveries.
    accepting: bool,
}

type Shared = Arc<Mutex<Seen>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Twilio's `Calls.json`: records the call's `Url` and answers as Twilio does (201, the call
/// resource).
async fn create_call(
    State(shared): State<Shared>,
    UrlPath(_account): UrlPath<String>,
    body: String,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    lock(&shared).call_url = form.get("Url").cloned();
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({
            "sid": CALL_SID,
            "account_sid": ACCOUNT,
            "status": "queued",
            "direction": "outbound-api",
            "to": form.get("To"),
            "from": form.get("From"),
        })),
    )
}

/// The operator's receiver: checks the signature from the specification, and answers 500
/// until told to accept.
async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let id = header("webhook-id");
    let key = BASE64
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap_or_default();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{}.{body}", header("webhook-timestamp")).as_bytes());
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    let valid = header("webhook-signature")
        .split(' ')
        .any(|s| s == expected);
    let mut seen = lock(&shared);
    let accepted = valid && seen.accepting;
    let body = serde_json::from_str(&body).unwrap_or_default();
    seen.deliveries.push((id, valid, accepted, body));
    if accepted {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// Waits up to `timeout` for `ready` to hold.
fn wait_for(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_task_result_is_delivered_once_after_the_gateway_is_killed() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let shared: Shared = Arc::default();
    let services = axum::Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Calls.json",
            post(create_call),
        )
        .route("/hook", post(receive))
        .with_state(shared.clone());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))))
        .expect("bind");
    let services_addr = listener.local_addr().expect("addr");
    runtime.spawn(async move {
        let _ = axum::serve(listener, services).await;
    });

    let echo = common::echo_wasm();
    let dir = temp("callbacks");
    let _ = std::fs::remove_file(dir.join("calls.db"));
    let config = dir.join("agents.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[twilio]
account_sid = "{ACCOUNT}"
auth_token = "${{TWILIO_AUTH_TOKEN}}"
api_base_url = "http://{services_addr}"
caller_id = "+15005550006"

[api]
tokens = ["${{SWITCHBOARD_API_TOKEN}}"]
callback_secret = "{SECRET}"

[records]
path = "calls.db"

[plugins.echo]
path = "{}"

[[agents]]
name = "echo"
tools = ["record_result"]
realtime = {{ plugin = "echo", settings = {{ mode = "immediate", result = {{ attending = true }} }} }}

[routing]
default = "echo"
"#,
            echo.display()
        ),
    )
    .expect("write config");

    let (server, address) = serve(&config);
    let placed = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("http://{address}/calls"))
            .bearer_auth(KEYS[1].1)
            .header("content-type", "application/json")
            .body(
                serde_json::json!({
                    "to": "+15551230002",
                    "agent": "echo",
                    "callback_url": format!("http://{services_addr}/hook"),
                    "task": {"prompt": "Confirm the appointment.", "result_schema":
                        {"type": "object", "required": ["attending"],
                         "properties": {"attending": {"type": "boolean"}}}},
                })
                .to_string(),
            )
            .send()
            .await
            .expect("POST /calls")
            .status()
    });
    assert_eq!(placed.as_u16(), 201);
    let call_url = lock(&shared).call_url.clone().expect("the call's Url");

    // The callee answers: Twilio fetches the call's Url and streams for a second.
    let mut opts = switchboard::simulate::Options::new(format!("http://{address}"), vec![0; 8000]);
    opts.voice_url = Some(call_url);
    opts.call_sid = Some(CALL_SID.into());
    opts.account_sid = Some(ACCOUNT.into());
    opts.direction = "outbound-api".into();
    opts.auth_token = Some(KEYS[0].1.into());
    opts.api_token = Some(KEYS[1].1.into());
    opts.idle_hangup = Duration::from_millis(300);
    runtime
        .block_on(switchboard::simulate::run(opts))
        .expect("the call runs");

    // The receiver refuses; once it has refused a delivery, the gateway dies without warning.
    wait_for(Duration::from_secs(20), "a first delivery", || {
        !lock(&shared).deliveries.is_empty()
    });
    let pid = server.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    drop(server);
    let refused = lock(&shared).deliveries.len();

    // Started again on the same database, with the receiver accepting now.
    lock(&shared).accepting = true;
    let (_server, _address) = serve(&config);
    wait_for(Duration::from_secs(30), "an accepted delivery", || {
        lock(&shared).deliveries.iter().any(|d| d.2)
    });
    // And nothing after it.
    std::thread::sleep(Duration::from_secs(2));
    let seen = lock(&shared);
    let accepted: Vec<_> = seen.deliveries.iter().filter(|d| d.2).collect();
    assert_eq!(accepted.len(), 1, "{:?}", seen.deliveries);
    assert_eq!(seen.deliveries.len(), refused + 1, "{:?}", seen.deliveries);
    let id = format!("msg_{CALL_SID}");
    assert!(
        seen.deliveries.iter().all(|d| d.0 == id && d.1),
        "every attempt has the one id and a valid signature: {:?}",
        seen.deliveries
    );
    let body = &accepted[0].3;
    assert_eq!(body["type"], "call.ended", "{body}");
    assert_eq!(body["data"]["call_sid"], CALL_SID, "{body}");
    assert_eq!(body["data"]["agent"], "echo", "{body}");
    assert_eq!(
        body["data"]["result"],
        serde_json::json!({"attending": true}),
        "{body}"
    );
}
