//! Routing through the real webhook and stream: by called number, by a `merchantId` hint, by
//! default, the "not configured" answer, and an agent an empty secret disables.

use switchboard::simulate::{self, Options};
use switchboard_tests::{Gateway, write_config};

const TENANTS: &str = r#"
[plugins.echo]
path = "{plugins}/echo.wasm"

[[agents]]
name = "front-desk"
numbers = ["+14155550100"]
realtime = { plugin = "echo", settings = { mode = "immediate" } }

[[agents]]
name = "merchant-42"
match = { merchantId = "m-42" }
realtime = { plugin = "echo", settings = { mode = "immediate" } }

[[agents]]
name = "fallback"
realtime = { plugin = "echo", settings = { mode = "immediate" } }

[routing]
default = "fallback"
"#;

/// A short call (0.2 s of audio) that hangs up as soon as the audio is done.
fn call(url: &str) -> Options {
    let mut o = Options::new(url, vec![1000; 1600]);
    o.idle_hangup = std::time::Duration::from_millis(200);
    o
}

fn agent_of(summary: &simulate::Summary) -> Option<&str> {
    summary
        .parameters
        .iter()
        .find(|(k, _)| k == "agent")
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_routes_by_number_merchant_and_default() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(TENANTS)?).await?;

    let mut by_number = call(&gw.url);
    by_number.to = "+14155550100".into();
    let s = simulate::run(by_number).await?;
    assert_eq!(agent_of(&s), Some("front-desk"), "{}", s.twiml);
    // The caller data travels with the stream.
    assert!(s.parameters.contains(&("To".into(), "+14155550100".into())));
    assert!(
        s.parameters
            .contains(&("CallSid".into(), s.call_sid.clone()))
    );
    assert!(s.frames_received > 0, "the routed agent answered");

    let mut by_merchant = call(&gw.url);
    by_merchant.to = "+14155550100".into(); // the merchant hint wins over the number
    by_merchant.params = vec![("merchantId".into(), "m-42".into())];
    let s = simulate::run(by_merchant).await?;
    assert_eq!(agent_of(&s), Some("merchant-42"), "{}", s.twiml);
    assert!(s.parameters.contains(&("merchantId".into(), "m-42".into())));

    let s = simulate::run(call(&gw.url)).await?;
    assert_eq!(agent_of(&s), Some("fallback"));

    let mut explicit = call(&gw.url);
    explicit.params = vec![("agent".into(), "front-desk".into())];
    let s = simulate::run(explicit).await?;
    assert_eq!(agent_of(&s), Some("front-desk"));
    Ok(())
}

/// An operator's own TwiML may open the stream with only `merchantId`: the gateway routes again
/// at `start`, so the stream does not depend on which instance answered the webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_routes_again_at_start() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(TENANTS)?).await?;
    let mut ended = gw.state.subscribe();
    let mut o = call(&gw.url);
    o.stream_only = true;
    o.params = vec![("merchantId".into(), "m-42".into())];
    let s = simulate::run(o).await?;
    assert!(s.frames_received > 0);
    let e = ended.recv().await?;
    assert_eq!(e.reason, switchboard::call::EndReason::Stop);
    assert_eq!(e.stats.agent.as_deref(), Some("merchant-42"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_number_without_default_is_not_configured() -> anyhow::Result<()> {
    let no_default = TENANTS.replace("[routing]\ndefault = \"fallback\"\n", "");
    let gw = Gateway::start(&write_config(&no_default)?).await?;
    let s = simulate::run(call(&gw.url)).await?;
    assert_eq!(
        s.rejected.as_deref(),
        Some(switchboard::server::NOT_CONFIGURED_MESSAGE),
        "{}",
        s.twiml
    );
    assert!(s.twiml.ends_with("<Hangup /></Response>"), "{}", s.twiml);
    assert_eq!(s.frames_sent, 0);
    Ok(())
}

/// An agent whose secret comes out empty (`${VAR:-}`, the variable unset) is disabled: without a
/// fallback, the webhook refuses its number as it refuses an unroutable call, and a stream that
/// names it hears the apology; with one, its calls go to the fallback agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_agent_s_calls_go_to_its_fallback_or_hear_an_apology() -> anyhow::Result<()> {
    let disabled = r#"
[[agents]]
name = "assistant"
numbers = ["+15005550100"]
realtime = { plugin = "echo", secrets = { api_key = "${SWITCHBOARD_TEST_NEVER_SET:-}" } }
"#;
    let gw = Gateway::start(&write_config(&format!("{TENANTS}{disabled}"))?).await?;
    let mut ended = gw.state.subscribe();
    let mut by_number = call(&gw.url);
    by_number.to = "+15005550100".into();
    let s = simulate::run(by_number).await?;
    assert_eq!(
        s.rejected.as_deref(),
        Some(switchboard::server::NOT_CONFIGURED_MESSAGE),
        "{}",
        s.twiml
    );

    let mut named = call(&gw.url);
    named.stream_only = true;
    named.params = vec![("agent".into(), "assistant".into())];
    let s = simulate::run(named).await?;
    assert!(
        s.marks
            .iter()
            .any(|(name, _)| name == switchboard_tests::apology::APOLOGY_MARK),
        "{:?}",
        s.marks
    );
    let e = ended.recv().await?;
    assert!(
        matches!(&e.reason, switchboard::call::EndReason::NotRouted(why) if why.contains("\"assistant\" is disabled")),
        "{:?}",
        e.reason
    );

    let with_fallback = disabled.replace("numbers =", "fallback = \"front-desk\"\nnumbers =");
    let gw = Gateway::start(&write_config(&format!("{TENANTS}{with_fallback}"))?).await?;
    let mut by_number = call(&gw.url);
    by_number.to = "+15005550100".into();
    let s = simulate::run(by_number).await?;
    assert_eq!(agent_of(&s), Some("front-desk"), "{}", s.twiml);
    assert!(s.frames_received > 0, "the fallback agent answered");
    Ok(())
}

/// The webhook answers `text/xml` for GET too (Twilio's "HTTP GET" webhook option).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answers_get_with_query_parameters() -> anyhow::Result<()> {
    let gw = Gateway::start(&write_config(TENANTS)?).await?;
    let r = reqwest::get(format!(
        "{}/twilio/voice?CallSid=CA1&From=%2B15551230001&To=%2B14155550100",
        gw.url
    ))
    .await?;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()?
            .starts_with("text/xml")
    );
    let body = r.text().await?;
    let host = gw.url.trim_start_matches("http://");
    assert!(
        body.contains(&format!("<Stream url=\"ws://{host}/twilio/media-stream\">")),
        "{body}"
    );
    assert!(
        body.contains("<Parameter name=\"agent\" value=\"front-desk\" />"),
        "{body}"
    );
    Ok(())
}
