//! Twilio request signatures through the running gateway: the voice webhook, the status callback
//! and the Media Streams upgrade each refuse (403) a request that Twilio did not sign with the
//! account's auth token, and accept every form Twilio's SDKs accept.
//!
//! Signatures here are computed independently of the gateway's own code: the string to sign is
//! written out by hand and HMAC'd with the `hmac`/`sha1`/`sha2` crates directly.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use switchboard::simulate::{self, Options, SimulateError};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use switchboard_tests::{Gateway, beckett, write_config};

const TOKEN: &str = "12345678901234567890123456789012";
const TENANT: &str = "AC00000000000000000000000000000002";
const TENANT_TOKEN: &str = "tenant-two-token";
const PUBLIC: &str = "https://voice.example.com";

const CONFIG: &str = r#"
[server]
public_url = "https://voice.example.com"

[twilio]
account_sid = "AC00000000000000000000000000000001"
auth_token = "12345678901234567890123456789012"

[twilio.accounts.AC00000000000000000000000000000002]
auth_token = "tenant-two-token"

[plugins.echo]
path = "{plugins}/echo.wasm"

[[agents]]
name = "echo"
realtime = { plugin = "echo", settings = { mode = "immediate" } }

[routing]
default = "echo"
"#;

fn sha1(token: &str, data: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(data.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

fn sha256(token: &str, data: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(data.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// The inbound-call form Twilio posts, in the order it sends it.
fn form(from: &str, account: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CallSid", "CAfffffffffffffffffffffffffffffff1".into()),
        ("AccountSid", account.into()),
        ("From", from.into()),
        ("To", "+15559870002".into()),
        ("CallStatus", "ringing".into()),
        ("Direction", "inbound".into()),
    ]
}

/// Its string to sign (after the URL): names sorted, each with its value, no separators.
fn form_string(from: &str, account: &str) -> String {
    format!(
        "AccountSid{account}CallSidCAfffffffffffffffffffffffffffffff1CallStatusringingDirectioninboundFrom{from}To+15559870002"
    )
}

struct Webhook {
    status: u16,
    body: String,
}

async fn post(
    gateway: &Gateway,
    path_and_query: &str,
    form: &[(&str, String)],
    headers: &[(&str, String)],
) -> anyhow::Result<Webhook> {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path_and_query}", gateway.url))
        .form(form);
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    let response = request.send().await?;
    Ok(Webhook {
        status: response.status().as_u16(),
        body: response.text().await?,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_webhook_accepts_only_twilio_signatures() -> anyhow::Result<()> {
    let gateway = Gateway::start(&write_config(CONFIG)?).await?;
    let main = "AC00000000000000000000000000000001";
    let url = format!("{PUBLIC}/twilio/voice");
    let signed = format!("{url}{}", form_string("+15551230001", main));
    let sig = |s: String| vec![("X-Twilio-Signature", s)];
    let mut refused = 0;

    // Unsigned, and signed with the wrong token: 403.
    let r = post(&gateway, "/twilio/voice", &form("+15551230001", main), &[]).await?;
    assert_eq!(r.status, 403, "{}", r.body);
    refused += 1;
    let r = post(
        &gateway,
        "/twilio/voice",
        &form("+15551230001", main),
        &sig(sha1("not-the-token", &signed)),
    )
    .await?;
    assert_eq!(r.status, 403);
    refused += 1;

    // Correctly signed: TwiML with the stream on the public URL.
    let r = post(
        &gateway,
        "/twilio/voice",
        &form("+15551230001", main),
        &sig(sha1(TOKEN, &signed)),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .contains(r#"<Stream url="wss://voice.example.com/twilio/media-stream">"#),
        "{}",
        r.body
    );

    // The `:443` form of the URL, as some proxies present it to Twilio.
    let with_port = format!(
        "{PUBLIC}:443/twilio/voice{}",
        form_string("+15551230001", main)
    );
    let r = post(
        &gateway,
        "/twilio/voice",
        &form("+15551230001", main),
        &sig(sha1(TOKEN, &with_port)),
    )
    .await?;
    assert_eq!(r.status, 200, "port form: {}", r.body);

    // A tampered parameter (the signature was made for another caller).
    let r = post(
        &gateway,
        "/twilio/voice",
        &form("+15551230009", main),
        &sig(sha1(TOKEN, &signed)),
    )
    .await?;
    assert_eq!(r.status, 403, "tampered From accepted");
    refused += 1;

    // The query string is part of the signed URL.
    let query = "/twilio/voice?merchantId=m-42&note=caf%C3%A9";
    let with_query = format!("{PUBLIC}{query}{}", form_string("+15551230001", main));
    let r = post(
        &gateway,
        query,
        &form("+15551230001", main),
        &sig(sha1(TOKEN, &with_query)),
    )
    .await?;
    assert_eq!(r.status, 200, "query: {}", r.body);
    let r = post(
        &gateway,
        "/twilio/voice?merchantId=m-43&note=caf%C3%A9",
        &form("+15551230001", main),
        &sig(sha1(TOKEN, &with_query)),
    )
    .await?;
    assert_eq!(r.status, 403, "a changed query string was accepted");
    refused += 1;

    // Repeated keys (each distinct value once, values sorted) and non-ASCII values.
    let mut repeated = form("+15551230001", main);
    repeated.push(("Digits", "5".into()));
    repeated.push(("Digits", "1".into()));
    repeated.push(("Digits", "5".into()));
    repeated.push(("CallerName", "José Müller 日本".into()));
    let string = format!(
        "{url}AccountSid{main}CallSidCAfffffffffffffffffffffffffffffff1CallStatusringingCallerNameJosé Müller 日本Digits1Digits5DirectioninboundFrom+15551230001To+15559870002"
    );
    let r = post(
        &gateway,
        "/twilio/voice",
        &repeated,
        &sig(sha1(TOKEN, &string)),
    )
    .await?;
    assert_eq!(r.status, 200, "repeated keys / unicode: {}", r.body);

    // HMAC-SHA256 when the signature settings header asks for it, and only then.
    let settings = (
        "X-Twilio-Webhooks-Signature-Settings",
        "key=k1,algorithm=HMAC_SHA256".to_string(),
    );
    let r = post(
        &gateway,
        "/twilio/voice",
        &form("+15551230001", main),
        &[
            ("X-Twilio-Signature", sha256(TOKEN, &signed)),
            settings.clone(),
        ],
    )
    .await?;
    assert_eq!(r.status, 200, "sha256: {}", r.body);
    let r = post(
        &gateway,
        "/twilio/voice",
        &form("+15551230001", main),
        &sig(sha256(TOKEN, &signed)),
    )
    .await?;
    assert_eq!(r.status, 403, "a SHA-256 signature passed as SHA-1");
    refused += 1;

    // A GET webhook: the parameters are in the signed URL.
    let get_query = "/twilio/voice?CallSid=CA1&From=%2B15551230001&To=%2B15559870002";
    let response = reqwest::Client::new()
        .get(format!("{}{get_query}", gateway.url))
        .header(
            "X-Twilio-Signature",
            sha1(TOKEN, &format!("{PUBLIC}{get_query}")),
        )
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);

    // A subaccount with its own token: its token works, the main one does not, and the stream
    // URL names the account so the upgrade can be checked with the same token.
    let tenant_signed = format!("{url}{}", form_string("+15551230001", TENANT));
    let r = post(
        &gateway,
        "/twilio/voice",
        &form("+15551230001", TENANT),
        &sig(sha1(TENANT_TOKEN, &tenant_signed)),
    )
    .await?;
    assert_eq!(r.status, 200, "tenant: {}", r.body);
    assert!(
        r.body.contains(&format!(
            r#"<Stream url="wss://voice.example.com/twilio/media-stream?AccountSid={TENANT}">"#
        )),
        "{}",
        r.body
    );
    let r = post(
        &gateway,
        "/twilio/voice",
        &form("+15551230001", TENANT),
        &sig(sha1(TOKEN, &tenant_signed)),
    )
    .await?;
    assert_eq!(r.status, 403, "the main token signed for a tenant");
    refused += 1;

    assert_eq!(gateway.state.signatures_rejected(), refused);
    Ok(())
}

/// Opens the Media Streams socket with these signature headers; the HTTP status of a refusal.
async fn upgrade(
    gateway: &Gateway,
    query: &str,
    headers: &[(&'static str, String)],
) -> anyhow::Result<Result<(), u16>> {
    let url = format!(
        "{}/twilio/media-stream{query}",
        gateway.url.replace("http://", "ws://")
    );
    let mut request = url.into_client_request()?;
    for (k, v) in headers {
        request.headers_mut().insert(*k, v.parse()?);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut ws, _)) => {
            // A short call: the echo agent answers a frame with a frame.
            let send = |v: serde_json::Value| Message::Text(v.to_string().into());
            ws.send(send(
                json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
            ))
            .await?;
            ws.send(send(json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
                "start": {"accountSid": "AC1", "streamSid": "MZ1", "callSid": "CA1", "tracks": ["inbound"],
                    "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})))
                .await?;
            let payload = BASE64.encode([0x10u8; 160]);
            ws.send(send(
                json!({"event": "media", "sequenceNumber": "2", "streamSid": "MZ1",
                "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload}}),
            ))
            .await?;
            let echoed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(t) = msg
                        && t.contains("\"media\"")
                    {
                        return true;
                    }
                }
                false
            })
            .await
            .unwrap_or(false);
            anyhow::ensure!(echoed, "no audio came back on an accepted stream");
            ws.close(None).await?;
            Ok(Ok(()))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Ok(Err(response.status().as_u16()))
        }
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_stream_upgrade_accepts_only_twilio_signatures() -> anyhow::Result<()> {
    let gateway = Gateway::start(&write_config(CONFIG)?).await?;
    let ws_url = "wss://voice.example.com/twilio/media-stream";
    let sig = |s: String| vec![("x-twilio-signature", s)];

    assert_eq!(upgrade(&gateway, "", &[]).await?, Err(403), "unsigned");
    assert_eq!(
        upgrade(&gateway, "", &sig(sha1("wrong", ws_url))).await?,
        Err(403),
        "wrong token"
    );
    // The example in twilio-examples.json, computed by Twilio's SDK.
    assert_eq!(
        sha1(TOKEN, "wss://example.com/twilio/media-stream"),
        "U3DlD75KmVmh+TLWuOZuDXcPVP0="
    );
    assert_eq!(
        upgrade(&gateway, "", &sig(sha1(TOKEN, ws_url))).await?,
        Ok(())
    );
    // The SDK's port form for a `wss` URL is `:80`.
    assert_eq!(
        upgrade(
            &gateway,
            "",
            &sig(sha1(
                TOKEN,
                "wss://voice.example.com:80/twilio/media-stream"
            ))
        )
        .await?,
        Ok(())
    );
    // SHA-256 on request.
    assert_eq!(
        upgrade(
            &gateway,
            "",
            &[
                ("x-twilio-signature", sha256(TOKEN, ws_url)),
                (
                    "x-twilio-webhooks-signature-settings",
                    "algorithm=HMAC_SHA256".into()
                ),
            ]
        )
        .await?,
        Ok(())
    );
    // A tenant's stream: signed with its token over the URL that names it.
    let query = format!("?AccountSid={TENANT}");
    let tenant_url = format!("{ws_url}{query}");
    assert_eq!(
        upgrade(&gateway, &query, &sig(sha1(TENANT_TOKEN, &tenant_url))).await?,
        Ok(())
    );
    assert_eq!(
        upgrade(&gateway, &query, &sig(sha1(TOKEN, &tenant_url))).await?,
        Err(403)
    );
    // A signature for another path does not open a stream.
    assert_eq!(
        upgrade(
            &gateway,
            "",
            &sig(sha1(TOKEN, "wss://voice.example.com/twilio/voice"))
        )
        .await?,
        Err(403)
    );
    assert_eq!(gateway.state.signatures_rejected(), 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_callback_json_body_is_covered_by_body_sha256() -> anyhow::Result<()> {
    let gateway = Gateway::start(&write_config(CONFIG)?).await?;
    let body = r#"{"CallSid":"CAfffffffffffffffffffffffffffffff1","CallStatus":"ringing"}"#;
    let hash = {
        use sha2::Digest as _;
        sha2::Sha256::digest(body.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let path = format!("/twilio/status?bodySHA256={hash}");
    let signature = sha1(TOKEN, &format!("{PUBLIC}{path}"));
    let send = |body: &'static str, signature: String| {
        reqwest::Client::new()
            .post(format!("{}{path}", gateway.url))
            .header("content-type", "application/json")
            .header("X-Twilio-Signature", signature)
            .body(body)
            .send()
    };
    assert_eq!(send(body, signature.clone()).await?.status().as_u16(), 204);
    // Same URL and signature, another body: its hash no longer matches.
    let tampered = r#"{"CallSid":"CAfffffffffffffffffffffffffffffff1","CallStatus":"completed"}"#;
    assert_eq!(send(tampered, signature).await?.status().as_u16(), 403);

    // Form callbacks are signed like the webhook.
    let form = [
        ("CallSid", "CAfffffffffffffffffffffffffffffff1"),
        ("CallStatus", "completed"),
        ("CallDuration", "12"),
    ];
    let string = format!(
        "{PUBLIC}/twilio/statusCallDuration12CallSidCAfffffffffffffffffffffffffffffff1CallStatuscompleted"
    );
    let ok = reqwest::Client::new()
        .post(format!("{}/twilio/status", gateway.url))
        .header("X-Twilio-Signature", sha1(TOKEN, &string))
        .form(&form)
        .send()
        .await?;
    assert_eq!(ok.status().as_u16(), 204);
    let unsigned = reqwest::Client::new()
        .post(format!("{}/twilio/status", gateway.url))
        .form(&form)
        .send()
        .await?;
    assert_eq!(unsigned.status().as_u16(), 403);
    Ok(())
}

/// `switchboard simulate` signs as Twilio does, so a call goes through with validation on; the
/// same call unsigned is refused at the webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_signs_its_requests() -> anyhow::Result<()> {
    // No public_url: the gateway rebuilds the URL from the Host header, as for local tries.
    let config = CONFIG.replace("public_url = \"https://voice.example.com\"", "");
    let gateway = Gateway::start(&write_config(&config)?).await?;
    let audio: Vec<i16> = beckett()?.into_iter().take(8000).collect();

    let mut opts = Options::new(&gateway.url, audio.clone());
    opts.idle_hangup = std::time::Duration::from_millis(300);
    match simulate::run(opts.clone()).await {
        Err(SimulateError::Webhook { message, .. }) => {
            assert!(message.contains("403"), "{message}")
        }
        other => panic!("an unsigned call went through: {other:?}"),
    }
    opts.auth_token = Some(TOKEN.into());
    let summary = simulate::run(opts.clone()).await?;
    assert_eq!(summary.rejected, None);
    assert!(summary.frames_received > 0, "no audio came back");

    // Straight to the stream (an operator's own TwiML), signed too.
    opts.stream_only = true;
    let summary = simulate::run(opts).await?;
    assert!(summary.frames_received > 0);
    Ok(())
}
