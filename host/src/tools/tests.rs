//! The per-call toolbox against real HTTP on loopback and real agents.toml text: what each
//! kind of tool call comes to, and every way one fails reaching the model as an error result.

use super::*;
use crate::config::test_support::build_ok;

/// A tool backend on loopback: `/orders/{n}` answers JSON, `/broken` a 500, `/slow` after 3 s,
/// `/big` 100 KiB, `/echo` the request's query, headers and body.
async fn backend() -> String {
    use axum::routing::{any, get};
    let app = axum::Router::new()
        .route(
            "/orders/{n}",
            get(
                |axum::extract::Path(n): axum::extract::Path<String>| async move {
                    axum::Json(serde_json::json!({"order": n, "status": "shipped"}))
                },
            ),
        )
        .route(
            "/broken",
            any(|| async {
                (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "database down",
                )
            }),
        )
        .route(
            "/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route("/big", any(|| async { "x".repeat(100 * 1024) }))
        .route(
            "/echo",
            any(
                |headers: axum::http::HeaderMap,
                 axum::extract::RawQuery(q): axum::extract::RawQuery,
                 body: String| async move {
                    axum::Json(serde_json::json!({
                        "query": q,
                        "auth": headers.get("authorization").and_then(|v| v.to_str().ok()),
                        "body": body,
                    }))
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn config_with(base: &str) -> crate::config::Config {
    let text = format!(
        r#"
[plugins.echo]
path = "echo.wasm"

[tools.order_status]
description = "Order status"
method = "GET"
url = "{base}/orders/{{order}}"
parameters = {{ type = "object", required = ["order"], properties = {{ order = {{ type = "string", pattern = "^[0-9]+$" }} }} }}

[tools.echo_get]
description = "Echo"
method = "GET"
url = "{base}/echo"
headers = {{ Authorization = "Bearer s3cret" }}

[tools.echo_post]
description = "Echo"
url = "{base}/echo"

[tools.broken]
description = "Always fails"
url = "{base}/broken"

[tools.slow]
description = "Too slow"
url = "{base}/slow"
timeout_ms = 300

[tools.big]
description = "Too big"
url = "{base}/big"
max_response_bytes = 1024

[[agents]]
name = "desk"
realtime = {{ plugin = "echo" }}
tools = ["order_status", "echo_get", "echo_post", "broken", "slow", "big", "end_call", "transfer_call", "record_result"]
transfer_to = ["+14155550100", "+1212*"]
result_schema = {{ type = "object", required = ["attending"], properties = {{ attending = {{ type = "boolean" }} }} }}
"#
    );
    build_ok(&text).1
}

fn toolbox(config: &crate::config::Config) -> Toolbox {
    Toolbox::new(
        &config.agents[0].tools,
        None,
        CallMeta {
            call_sid: "CA1".into(),
            from: "+15005550101".into(),
            ..CallMeta::default()
        },
        reqwest::Client::new(),
        None,
    )
}

fn call(name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: format!("call_{name}"),
        name: name.into(),
        arguments: arguments.into(),
    }
}

/// Dispatches `call` and waits for its outcome, however it comes.
async fn run(tools: &mut Toolbox, call: ToolCall) -> ToolOutcome {
    match tools.dispatch(call) {
        Dispatch::Running => match tools.next_event().await {
            ToolEvent::Finished(f) => f.outcome,
            ToolEvent::Changed(_) => panic!("no MCP here"),
        },
        Dispatch::Done(f) | Dispatch::EndCall(f) => f.outcome,
        Dispatch::Transfer { finished, .. } | Dispatch::Record { finished, .. } => finished.outcome,
    }
}

fn error(outcome: ToolOutcome) -> String {
    match outcome {
        ToolOutcome::Error(e) => e,
        ToolOutcome::Output(o) => panic!("expected an error, got {o}"),
    }
}

#[tokio::test]
async fn an_http_tool_fills_its_url_and_returns_the_json() {
    let config = config_with(&backend().await);
    let mut tools = toolbox(&config);
    let names: Vec<String> = tools.tools().into_iter().map(|t| t.name).collect();
    assert_eq!(names[0], "order_status");
    assert!(names.contains(&"record_result".to_string()));
    let out = run(&mut tools, call("order_status", r#"{"order":"1042"}"#)).await;
    assert_eq!(
        out,
        ToolOutcome::Output(r#"{"order":"1042","status":"shipped"}"#.into())
    );
}

#[tokio::test]
async fn arguments_go_into_the_query_or_the_body_with_the_headers() {
    let config = config_with(&backend().await);
    let mut tools = toolbox(&config);
    let ToolOutcome::Output(got) =
        run(&mut tools, call("echo_get", r#"{"day":"Tue sday","n":2}"#)).await
    else {
        panic!("echo failed")
    };
    let got: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got["query"], "day=Tue+sday&n=2");
    assert_eq!(got["auth"], "Bearer s3cret");
    let ToolOutcome::Output(got) = run(&mut tools, call("echo_post", r#"{"day":"Tuesday"}"#)).await
    else {
        panic!("echo failed")
    };
    let got: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got["body"], r#"{"day":"Tuesday"}"#);
}

#[tokio::test]
async fn invalid_arguments_a_timeout_a_500_and_a_huge_body_are_error_results() {
    let config = config_with(&backend().await);
    let mut tools = toolbox(&config);
    let e = error(run(&mut tools, call("order_status", r#"{"order":42}"#)).await);
    assert!(e.starts_with("invalid arguments: /order"), "{e}");
    let e = error(run(&mut tools, call("order_status", r#"{"order":"#)).await);
    assert!(e.contains("not JSON"), "{e}");
    let e = error(run(&mut tools, call("order_status", r#"{"order":"abc"}"#)).await);
    assert!(e.contains("/order"), "{e}");
    let e = error(run(&mut tools, call("slow", "{}")).await);
    assert!(e.contains("timed out"), "{e}");
    let e = error(run(&mut tools, call("broken", "{}")).await);
    assert!(e.contains("HTTP 500: database down"), "{e}");
    let e = error(run(&mut tools, call("big", "{}")).await);
    assert!(e.contains("larger than 1024 bytes"), "{e}");
    let e = error(run(&mut tools, call("delete_everything", "{}")).await);
    assert!(e.contains("no tool named"), "{e}");
}

#[tokio::test]
async fn an_unreachable_backend_is_an_error_result() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let config = config_with(&base);
    let mut tools = toolbox(&config);
    let e = error(run(&mut tools, call("order_status", r#"{"order":"1"}"#)).await);
    assert!(e.contains("could not be reached"), "{e}");
}

#[tokio::test]
async fn transfers_go_only_to_allowed_numbers() {
    let config = config_with("http://127.0.0.1:9");
    let mut tools = toolbox(&config);
    match tools.dispatch(call("transfer_call", r#"{"number":"+14155550199"}"#)) {
        Dispatch::Done(f) => assert!(error(f.outcome).contains("not allowed")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match tools.dispatch(call("transfer_call", r#"{"number":"+12125550199"}"#)) {
        Dispatch::Transfer { number, .. } => assert_eq!(number, "+12125550199"),
        other => panic!("expected a transfer, got {other:?}"),
    }
    assert!(matches!(
        tools.dispatch(call("end_call", "{}")),
        Dispatch::EndCall(_)
    ));
}

#[tokio::test]
async fn results_are_checked_against_the_schema_the_task_brings() {
    let config = config_with("http://127.0.0.1:9");
    let mut tools = toolbox(&config);
    // The agent's schema.
    match tools.dispatch(call("record_result", r#"{"attending":"yes"}"#)) {
        Dispatch::Done(f) => assert!(error(f.outcome).contains("invalid result")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match tools.dispatch(call("record_result", r#"{"attending":true}"#)) {
        Dispatch::Record { value, .. } => assert_eq!(value, serde_json::json!({"attending": true})),
        other => panic!("expected a record, got {other:?}"),
    }
    // A task's own schema replaces it; a non-object schema is offered wrapped.
    let task_schema = Schema::compile(serde_json::json!({"type": "integer"}), false).unwrap();
    let mut tools = Toolbox::new(
        &config.agents[0].tools,
        None,
        CallMeta::default(),
        reqwest::Client::new(),
        Some(Arc::new(task_schema)),
    );
    let record = tools
        .tools()
        .into_iter()
        .find(|t| t.name == "record_result")
        .unwrap();
    assert!(
        record.parameters.contains(r#""result":{"type":"integer"}"#),
        "{}",
        record.parameters
    );
    match tools.dispatch(call("record_result", r#"{"result":4}"#)) {
        Dispatch::Record { value, .. } => assert_eq!(value, serde_json::json!(4)),
        other => panic!("expected a record, got {other:?}"),
    }
}

#[test]
fn transcript_entries_are_truncated() {
    let finished = Finished {
        call: call("order_status", &"x".repeat(1000)),
        outcome: ToolOutcome::Output("{}".into()),
        latency: Duration::from_millis(212),
    };
    let trace = observe(&finished);
    assert_eq!(trace.arguments.chars().count(), TRANSCRIPT_TEXT_CHARS + 1);
    assert!(trace.line().ends_with("→ {} (212 ms)"), "{}", trace.line());
}

#[tokio::test]
async fn a_lookup_tool_finds_a_row_by_its_key_or_the_callers_number() {
    let csv = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/demo-customers.csv");
    let text = format!(
        r#"
[plugins.echo]
path = "echo.wasm"

[lookups.orders]
path = "{csv}"
key = "order"
[lookups.customers]
path = "{csv}"

[tools.order_status]
description = "Order status"
lookup = "orders"
columns = ["order", "order_status"]

[tools.me]
description = "The caller"
lookup = "customers"

[[agents]]
name = "desk"
realtime = {{ plugin = "echo" }}
tools = ["order_status", "me"]
"#
    );
    let config = build_ok(&text).1;
    let mut tools = toolbox(&config);
    let ToolOutcome::Output(found) =
        run(&mut tools, call("order_status", r#"{"order":"1043"}"#)).await
    else {
        panic!("lookup failed")
    };
    let found: Value = serde_json::from_str(&found).unwrap();
    assert_eq!(found["found"], true);
    assert_eq!(found["order_status"], "ready for pickup at the counter");
    assert!(
        found.get("phone").is_none() && found.get("name").is_none(),
        "{found}"
    );
    // No key given: the caller's number.
    let ToolOutcome::Output(me) = run(&mut tools, call("me", "{}")).await else {
        panic!("lookup failed")
    };
    assert!(me.contains("Ada Lovelace"), "{me}");
    let ToolOutcome::Output(missing) =
        run(&mut tools, call("order_status", r#"{"order":"9"}"#)).await
    else {
        panic!("lookup failed")
    };
    assert_eq!(missing, r#"{"found":false,"order":"9"}"#);
}
