//! Switchboard's Twilio REST client (`switchboard::twilio::rest`) against a fake of Twilio's API
//! on loopback ([`FakeTwilio`]): what goes on the wire (path, Basic auth, form with repeated
//! keys) and how each of Twilio's answers comes back (call resources, error codes, transport
//! failures).

use switchboard::twilio::rest::{
    CallTarget, CreateCall, RestClient, RestError, UpdateCall, is_sid,
};
use switchboard_tests::fake_twilio::FakeTwilio;

const ACCOUNT: &str = "ACaaaaaaaabbbbbbbbccccccccdddddddd";
const TOKEN: &str = "fake-auth-token-0123456789abcdef";
const TO: &str = "+14155550100";
const FROM: &str = "+14155550199";
const DIAL: &str = "<Response><Dial>+14155550142</Dial></Response>";

async fn setup() -> anyhow::Result<(FakeTwilio, RestClient)> {
    let fake = FakeTwilio::start(ACCOUNT, TOKEN).await?;
    let client = RestClient::new(fake.base_url(), ACCOUNT, TOKEN)?;
    Ok((fake, client))
}

fn to_url(url: &str) -> CreateCall {
    CreateCall::new(
        TO,
        FROM,
        CallTarget::Url {
            url: url.into(),
            method: None,
        },
    )
}

/// Creates a call with inline TwiML and returns its SID.
async fn created(client: &RestClient) -> anyhow::Result<String> {
    let call = CreateCall::new(TO, FROM, CallTarget::Twiml("<Response/>".into()));
    Ok(client.create_call(&call).await?.sid)
}

fn api(e: &RestError) -> (u16, i64) {
    (
        e.http_status().unwrap_or_default(),
        e.twilio_code().unwrap_or_default(),
    )
}

#[tokio::test]
async fn create_call_posts_the_form_with_basic_auth_and_returns_the_queued_call()
-> anyhow::Result<()> {
    let (fake, client) = setup().await?;
    let mut call = to_url("https://gw.example/voice?agent=sales");
    call.status_callback = Some("https://gw.example/status".into());
    call.status_callback_events = ["initiated", "ringing", "answered", "completed"]
        .map(String::from)
        .to_vec();
    call.status_callback_method = Some("POST".into());
    call.timeout_s = Some(20);

    let resource = client.create_call(&call).await?;
    assert!(is_sid("CA", &resource.sid), "{}", resource.sid);
    assert_eq!(resource.status.as_deref(), Some("queued"));
    assert_eq!(resource.direction.as_deref(), Some("outbound-api"));
    assert_eq!(resource.account_sid.as_deref(), Some(ACCOUNT));
    assert_eq!(
        (resource.to.as_deref(), resource.from.as_deref()),
        (Some(TO), Some(FROM))
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/2010-04-01/Accounts/{ACCOUNT}/Calls.json"));
    assert_eq!(r.auth_user.as_deref(), Some(ACCOUNT));
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.accept.as_deref(), Some("application/json"));
    assert!(
        r.user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("switchboard/")),
        "{:?}",
        r.user_agent
    );
    let form: Vec<(&str, &str)> = r
        .form
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        form,
        [
            ("To", TO),
            ("From", FROM),
            ("Url", "https://gw.example/voice?agent=sales"),
            ("StatusCallback", "https://gw.example/status"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
            ("StatusCallbackMethod", "POST"),
            ("Timeout", "20"),
        ]
    );

    let seen = fake.next_created().await?;
    assert_eq!(seen.sid, resource.sid);
    assert_eq!(
        seen.url.as_deref(),
        Some("https://gw.example/voice?agent=sales")
    );
    assert_eq!(fake.calls(), [seen]);
    Ok(())
}

#[tokio::test]
async fn create_call_with_inline_twiml() -> anyhow::Result<()> {
    let (fake, client) = setup().await?;
    let twiml =
        r#"<Response><Connect><Stream url="wss://gw.example/stream"/></Connect></Response>"#;
    let call = CreateCall::new(TO, FROM, CallTarget::Twiml(twiml.into()));
    let resource = client.create_call(&call).await?;

    let r = &fake.requests()[0];
    assert_eq!(r.get("Twiml"), Some(twiml));
    assert_eq!(r.get("Url"), None);
    assert_eq!(r.all("StatusCallbackEvent"), Vec::<&str>::new());
    let stored = fake.call(&resource.sid).expect("the fake kept the call");
    assert_eq!(stored.twiml.as_deref(), Some(twiml));
    assert_eq!(stored.status, "queued");
    Ok(())
}

#[tokio::test]
async fn invalid_to_is_twilio_error_21211() -> anyhow::Result<()> {
    let (fake, client) = setup().await?;
    let e = client
        .create_call(&CreateCall::new(
            "555-0100",
            FROM,
            CallTarget::Twiml("<Response/>".into()),
        ))
        .await
        .unwrap_err();
    let RestError::Api {
        status,
        code,
        message,
        more_info,
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!((*status, *code), (400, 21211));
    assert!(message.contains("555-0100"), "{message}");
    assert_eq!(
        more_info.as_deref(),
        Some("https://www.twilio.com/docs/errors/21211")
    );
    assert!(fake.calls().is_empty());
    Ok(())
}

#[tokio::test]
async fn wrong_credentials_are_twilio_error_20003() -> anyhow::Result<()> {
    let (fake, _) = setup().await?;
    let wrong_token = RestClient::new(fake.base_url(), ACCOUNT, "not-the-token")?;
    let e = wrong_token
        .create_call(&to_url("https://gw.example/voice"))
        .await
        .unwrap_err();
    assert_eq!(api(&e), (401, 20003), "{e:?}");
    assert!(!e.to_string().contains("not-the-token"), "{e}");

    // The right token, for another account than the one it belongs to.
    let other = RestClient::new(fake.base_url(), "AC0123456789abcdef0123456789abcdef", TOKEN)?;
    let e = other
        .create_call(&to_url("https://gw.example/voice"))
        .await
        .unwrap_err();
    assert_eq!(api(&e), (401, 20003), "{e:?}");

    let users: Vec<_> = fake
        .requests()
        .into_iter()
        .map(|r| r.auth_user.unwrap_or_default())
        .collect();
    assert_eq!(users, [ACCOUNT, "AC0123456789abcdef0123456789abcdef"]);
    assert!(fake.calls().is_empty());
    Ok(())
}

#[tokio::test]
async fn injected_twilio_errors_map_through() -> anyhow::Result<()> {
    let (fake, client) = setup().await?;
    fake.fail_next(503, 20503, "Service Unavailable");
    fake.fail_next(429, 20429, "Too Many Requests");

    let e = client
        .create_call(&to_url("https://x/v"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RestError::Api { status: 503, code: 20503, message, .. } if message == "Service Unavailable"),
        "{e:?}"
    );
    let sid = "CA0123456789abcdef0123456789abcdef";
    let e = client
        .update_call(sid, &UpdateCall::Complete)
        .await
        .unwrap_err();
    assert_eq!(api(&e), (429, 20429), "{e:?}");

    // Each injection fails one request only.
    client.create_call(&to_url("https://x/v")).await?;
    assert_eq!(fake.requests().len(), 3);
    assert_eq!(fake.calls().len(), 1);
    Ok(())
}

#[tokio::test]
async fn update_complete_hangs_up() -> anyhow::Result<()> {
    let (fake, client) = setup().await?;
    let sid = created(&client).await?;
    fake.set_status(&sid, "in-progress");

    let updated = client.update_call(&sid, &UpdateCall::Complete).await?;
    assert_eq!(updated.sid, sid);
    assert_eq!(updated.status.as_deref(), Some("completed"));

    let r = fake.requests().pop().expect("a request");
    assert_eq!(
        r.path,
        format!("/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}.json")
    );
    assert_eq!(r.form, [("Status".to_string(), "completed".to_string())]);
    assert_eq!(r.auth_user.as_deref(), Some(ACCOUNT));
    let seen = fake.next_update().await?;
    assert_eq!(
        (seen.sid.as_str(), seen.status.as_str()),
        (sid.as_str(), "completed")
    );
    Ok(())
}

#[tokio::test]
async fn cancel_ends_only_a_call_not_yet_answered() -> anyhow::Result<()> {
    let (fake, client) = setup().await?;
    let queued = created(&client).await?;
    let answered = created(&client).await?;
    fake.set_status(&answered, "in-progress");

    let canceled = client.update_call(&queued, &UpdateCall::Cancel).await?;
    assert_eq!(canceled.status.as_deref(), Some("canceled"));
    let untouched = client.update_call(&answered, &UpdateCall::Cancel).await?;
    assert_eq!(untouched.status.as_deref(), Some("in-progress"));
    assert_eq!(fake.requests()[2].get("Status"), Some("canceled"));
    Ok(())
}

#[tokio::test]
async fn update_twiml_redirects_a_live_call_to_a_dial() -> anyhow::Result<()> {
    let (fake, client) = setup().await?;
    let sid = created(&client).await?;
    fake.set_status(&sid, "in-progress");

    let updated = client
        .update_call(&sid, &UpdateCall::Twiml(DIAL.into()))
        .await?;
    assert_eq!(updated.status.as_deref(), Some("in-progress"));
    assert_eq!(fake.requests()[1].get("Twiml"), Some(DIAL));
    let seen = fake.next_update().await?;
    assert_eq!(seen.twiml.as_deref(), Some(DIAL));
    assert_eq!(fake.call(&sid).and_then(|c| c.twiml), Some(DIAL.into()));

    // Once the call has ended there is nothing to redirect.
    client.update_call(&sid, &UpdateCall::Complete).await?;
    let e = client
        .update_call(&sid, &UpdateCall::Url("https://gw.example/transfer".into()))
        .await
        .unwrap_err();
    assert_eq!(api(&e), (400, 21220), "{e:?}");
    Ok(())
}

#[tokio::test]
async fn update_of_an_unknown_call_is_twilio_error_20404() -> anyhow::Result<()> {
    let (fake, client) = setup().await?;
    let e = client
        .update_call("CAffffffffffffffffffffffffffffffff", &UpdateCall::Complete)
        .await
        .unwrap_err();
    assert_eq!(api(&e), (404, 20404), "{e:?}");
    assert_eq!(fake.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn unreachable_twilio_is_a_transport_error() -> anyhow::Result<()> {
    // A port that was just free: nothing listens there any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    drop(listener);
    let client = RestClient::new(&base, ACCOUNT, TOKEN)?;
    let e = client
        .create_call(&to_url("https://x/v"))
        .await
        .unwrap_err();
    assert!(matches!(e, RestError::Transport(_)), "{e:?}");
    assert_eq!((e.twilio_code(), e.http_status()), (None, None));
    assert!(!e.to_string().contains(TOKEN), "{e}");
    Ok(())
}

#[tokio::test]
async fn malformed_call_sid_is_rejected_before_any_request() -> anyhow::Result<()> {
    let (fake, client) = setup().await?;
    for sid in [
        "CA123",
        "",
        "ACaaaaaaaabbbbbbbbccccccccdddddddd",
        "CA0123456789abcdef0123456789abcdef/../../Calls",
        "CA0123456789abcdef0123456789abcdeZ",
    ] {
        let e = client
            .update_call(sid, &UpdateCall::Complete)
            .await
            .unwrap_err();
        assert!(matches!(e, RestError::InvalidSid(_)), "{sid}: {e:?}");
    }
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    Ok(())
}

/// The fake refuses what Twilio refuses, even from a client other than Switchboard's.
#[tokio::test]
async fn fake_refuses_unknown_routes_missing_auth_and_non_form_bodies() -> anyhow::Result<()> {
    let (fake, _) = setup().await?;
    let http = reqwest::Client::new();
    let calls = format!(
        "{}/2010-04-01/Accounts/{ACCOUNT}/Calls.json",
        fake.base_url()
    );
    let code = |body: &[u8]| -> anyhow::Result<i64> {
        let v: serde_json::Value = serde_json::from_slice(body)?;
        v["code"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("no code in {v}"))
    };

    let r = http
        .post(format!(
            "{}/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
            fake.base_url()
        ))
        .basic_auth(ACCOUNT, Some(TOKEN))
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    assert_eq!(code(&r.bytes().await?)?, 20404);

    let r = http
        .post(&calls)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("To=%2B14155550100&From=%2B14155550199&Url=https%3A%2F%2Fx")
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    assert_eq!(code(&r.bytes().await?)?, 20003);

    let r = http
        .post(&calls)
        .basic_auth(ACCOUNT, Some(TOKEN))
        .header("content-type", "application/json")
        .body(r#"{"To":"+14155550100"}"#)
        .send()
        .await?;
    assert_eq!(r.status(), 400);

    let r = http
        .post(&calls)
        .basic_auth(ACCOUNT, Some(TOKEN))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("To=%2B14155550100&From=%2B14155550199")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert_eq!(code(&r.bytes().await?)?, 21205);
    assert!(fake.calls().is_empty());
    Ok(())
}
