//! Agents' tools at the call level, against real MCP servers (rmcp's server side on loopback):
//! a call never waits for an MCP server. With one slow to start (5 s), one down and one dying
//! mid-call, the greeting's time to first audio is what it is without any (measured against an
//! agent without tools in the same run), tools that arrive late reach the live session, the
//! tools of a server that dies leave it, and the call completes.

use std::time::Duration;

use switchboard::call::{CallContext, CallStats, EndReason, Side};
use switchboard_tests::mcp_server::{self, Behaviour};
use switchboard_tests::memory_socket::{self, Peer, media, start, stop};
use switchboard_tests::write_config;
use tokio::task::JoinHandle;

const SID: &str = "MZ1";

fn config(slow: &str, down: &str, dying: &str) -> String {
    format!(
        r#"
[plugins.stt]
path = "{{plugins}}/fixed_stt.wasm"
[plugins.llm]
path = "{{plugins}}/scripted.wasm"
[plugins.tts]
path = "{{plugins}}/tone_tts.wasm"
[plugins.misbehave]
path = "{{plugins}}/misbehave.wasm"

[mcp.slow]
url = "{slow}"
allow = ["book_slot"]
[mcp.down]
url = "{down}"
[mcp.dying]
url = "{dying}"
allow = ["order_status"]

[[agents]]
name = "plain"
greeting = "Thank you for calling the front desk."
[agents.pipeline]
stt = {{ plugin = "stt", settings = {{ text = "hello" }} }}
llm = {{ plugin = "llm", settings = {{ intents = [], fallback = "Sorry." }} }}
tts = {{ plugin = "tts", settings = {{ ms_per_char = 5 }} }}

[[agents]]
name = "tooled"
match = {{ agent = "tooled" }}
greeting = "Thank you for calling the front desk."
tools = ["slow.*", "down.*", "dying.*"]
[agents.pipeline]
stt = {{ plugin = "stt", settings = {{ text = "hello" }} }}
llm = {{ plugin = "llm", settings = {{ intents = [], fallback = "Sorry." }} }}
tts = {{ plugin = "tts", settings = {{ ms_per_char = 5 }} }}

[[agents]]
name = "watcher"
match = {{ agent = "watcher" }}
tools = ["slow.*", "down.*", "dying.*"]
realtime = {{ plugin = "misbehave", settings = {{ behaviour = "toolcall" }} }}

[routing]
default = "plain"
"#
    )
}

async fn context(body: &str) -> anyhow::Result<CallContext> {
    let ctx = switchboard_tests::call_context(body).await?;
    // As `serve` does: the MCP connections start, in the background.
    ctx.tools.start_mcp(&ctx.config);
    Ok(ctx)
}

fn call(ctx: &CallContext) -> (JoinHandle<(EndReason, CallStats)>, Peer) {
    let (socket, peer) = memory_socket::pair();
    (
        tokio::spawn(switchboard::call::run(socket, ctx.clone())),
        peer,
    )
}

/// One call to `agent` until its first audio; returns its time to first audio.
async fn greeting_ttfa(ctx: &CallContext, agent: &str) -> anyhow::Result<Duration> {
    let (task, mut peer) = call(ctx);
    peer.send(start(SID, serde_json::json!({ "agent": agent })))
        .await?;
    peer.until("media", SID).await.expect("the greeting plays");
    peer.send(stop(SID)).await?;
    let (reason, stats) = task.await?;
    assert_eq!(reason, EndReason::Stop, "{agent}");
    Ok(stats.first_audio.expect("time to first audio"))
}

/// Sends the next caller frame.
async fn frame(peer: &mut Peer, seq: &mut u64) -> anyhow::Result<()> {
    *seq += 1;
    peer.send(media(SID, *seq, 0x7f)).await
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_never_waits_for_an_mcp_server() -> anyhow::Result<()> {
    let slow = mcp_server::start_http(Behaviour {
        slow_start: Duration::from_secs(5),
    })
    .await;
    let mut dying = mcp_server::start_http(Behaviour::default()).await;
    let down = {
        // A port nothing listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}/mcp", l.local_addr()?)
    };
    let ctx = context(&config(&slow.url, &down, &dying.url)).await?;
    let pool = ctx.tools.mcp.get().cloned().expect("MCP started");

    // The greeting, with and without MCP tools, alternately, while `slow` is still starting.
    let mut plain = Vec::new();
    let mut tooled = Vec::new();
    for _ in 0..3 {
        plain.push(greeting_ttfa(&ctx, "plain").await?);
        tooled.push(greeting_ttfa(&ctx, "tooled").await?);
    }
    let (plain, tooled) = (median(plain), median(tooled));
    println!("greeting time to first audio: no tools {plain:?}, three MCP servers {tooled:?}");
    assert!(
        tooled < plain + Duration::from_millis(500),
        "MCP servers delayed the greeting: {tooled:?} against {plain:?}"
    );

    // A realtime call that lives through the servers coming and going: it sees each tool list.
    let mut dying_tools = pool.tools("dying").expect("dying is configured");
    let (task, mut peer) = call(&ctx);
    peer.send(start(SID, serde_json::json!({ "agent": "watcher" })))
        .await?;
    let mut seq = 1;
    frame(&mut peer, &mut seq).await?;
    // `dying` lists its tool; then it dies, and its tool leaves the session.
    tokio::time::timeout(
        Duration::from_secs(60),
        dying_tools.wait_for(|t| !t.is_empty()),
    )
    .await??;
    frame(&mut peer, &mut seq).await?;
    dying.kill();
    tokio::time::timeout(
        Duration::from_secs(60),
        dying_tools.wait_for(|t| t.is_empty()),
    )
    .await??;
    // `slow` comes up after its 5 s; its tool reaches the live session.
    let mut slow_tools = pool.tools("slow").expect("slow is configured");
    tokio::time::timeout(
        Duration::from_secs(60),
        slow_tools.wait_for(|t| !t.is_empty()),
    )
    .await??;
    // The call goes on: its audio still echoes.
    frame(&mut peer, &mut seq).await?;
    peer.until("media", SID).await.expect("the call goes on");
    tokio::time::sleep(Duration::from_millis(200)).await;
    peer.send(stop(SID)).await?;
    let (reason, stats) = task.await?;
    assert_eq!(reason, EndReason::Stop);
    let lists: Vec<&str> = stats
        .transcript
        .iter()
        .filter(|t| t.side == Side::Agent)
        .map(|t| t.text.as_str())
        .collect();
    // `dying`'s tool was offered, then left; `slow`'s arrived (in whichever order the two
    // changes came, which a loaded machine decides).
    assert!(
        lists.iter().any(|l| l.contains("order_status")),
        "{lists:?}"
    );
    assert_eq!(lists.last(), Some(&"tools: book_slot"), "{lists:?}");
    Ok(())
}

/// An order API on loopback: `GET /orders/{n}` answers `{"order": n, "status": "shipped"}`.
async fn order_api() -> anyhow::Result<String> {
    use axum::extract::Path;
    let app = axum::Router::new()
        .route(
            "/orders/{n}",
            axum::routing::get(|Path(n): Path<String>| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                axum::Json(serde_json::json!({"order": n, "status": "shipped"}))
            }),
        )
        .route(
            "/broken",
            axum::routing::any(|| async {
                (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "database down",
                )
            }),
        )
        .route(
            "/slow",
            axum::routing::any(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

/// The `[tools]`, `[mcp]` and grant every model-driven test uses: an HTTP tool and an MCP tool.
fn tool_config(orders: &str, mcp: &str) -> String {
    format!(
        r#"
[tools.order_status]
description = "The status of an order, by its number"
method = "GET"
url = "{orders}/orders/{{order}}"
parameters = {{ type = "object", required = ["order"], properties = {{ order = {{ type = "string" }} }} }}

[tools.broken]
description = "Always fails"
url = "{orders}/broken"

[tools.slow]
description = "Too slow"
url = "{orders}/slow"
timeout_ms = 300

[mcp.calendar]
url = "{mcp}"
allow = ["book_slot"]
"#
    )
}

/// Waits until the gateway's MCP pool lists `server`'s tools.
async fn mcp_ready(gw: &switchboard_tests::Gateway, server: &str) -> anyhow::Result<()> {
    let pool = gw.state.context().tools.mcp.get().cloned();
    let mut tools = pool
        .and_then(|p| p.tools(server))
        .ok_or_else(|| anyhow::anyhow!("no MCP server {server}"))?;
    tokio::time::timeout(Duration::from_secs(60), tools.wait_for(|t| !t.is_empty())).await??;
    Ok(())
}

/// Checks a finished call's transcript: both tools ran, with their latency, and the agent's
/// answer was built from both results.
fn assert_both_tools_answered(stats: &CallStats) {
    let tools: Vec<_> = stats
        .transcript
        .iter()
        .filter_map(|t| t.tool.as_ref())
        .filter(|t| t.ok)
        .collect();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{:?}", stats.transcript);
    assert!(
        names.contains(&"order_status") && names.contains(&"book_slot"),
        "{names:?}"
    );
    assert!(tools.iter().all(|t| t.ok), "{tools:?}");
    let order = tools
        .iter()
        .find(|t| t.name == "order_status")
        .expect("order");
    assert!(
        order.latency_ms >= 50,
        "the API answers after 50 ms: {order:?}"
    );
    let answer: String = stats
        .transcript
        .iter()
        .filter(|t| t.side == Side::Agent)
        .map(|t| t.text.clone())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(answer.contains("shipped"), "{answer}");
    assert!(answer.contains("Tuesday"), "{answer}");
}

/// A realtime agent (the OpenAI Realtime plugin against the fake, which streams parallel
/// function calls as the real API does) calls an HTTP tool and an MCP tool: the session
/// declares them, each result goes back as a `function_call_output` and the model's answer is
/// built from them; the MCP server got the call's metadata. On the next turn an invalid
/// argument, a timeout and a 500 each reach the model as an error result, and the call goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realtime_agent_calls_an_http_tool_and_an_mcp_tool() -> anyhow::Result<()> {
    use switchboard_tests::fake_openai::{FakeOpenAi, FakeOptions, FunctionCall};
    use switchboard_tests::phone::{self, silence, speech};
    let orders = order_api().await?;
    let calendar = mcp_server::start_http(Behaviour::default()).await;
    let fake = FakeOpenAi::start(
        FakeOptions {
            reply_ms: 600,
            ..FakeOptions::default()
        }
        .call_on_turn(
            1,
            [
                FunctionCall::new("order_status", r#"{"order":"1042"}"#),
                FunctionCall::new("book_slot", r#"{"day":"Tuesday"}"#),
            ],
        )
        .call_on_turn(
            2,
            [
                FunctionCall::new("order_status", r#"{"order":1042}"#),
                FunctionCall::new("slow", "{}"),
                FunctionCall::new("broken", "{}"),
            ],
        ),
    )
    .await?;
    let config = format!(
        r#"
[plugins.openai]
path = "{{plugins}}/openai_realtime.wasm"
{tools}
[[agents]]
name = "assistant"
tools = ["order_status", "calendar.*", "broken", "slow"]
realtime = {{ plugin = "openai", settings = {{ base_url = "{url}", instructions = "Be brief." }}, secrets = {{ api_key = "sk-test" }}, allowed_hosts = ["127.0.0.1"] }}

[routing]
default = "assistant"
"#,
        tools = tool_config(&orders, &calendar.url),
        url = fake.url,
    );
    let gw = switchboard_tests::Gateway::start(&write_config(&config)?).await?;
    mcp_ready(&gw, "calendar").await?;
    let mut events = gw.state.subscribe();
    let mut script = silence(500);
    script.extend(speech(600));
    script.extend(silence(3000));
    script.extend(speech(600));
    script.extend(silence(2000));
    // The call lasts as long as the script.
    phone::call(
        &gw.url,
        serde_json::json!({}),
        script,
        Duration::from_millis(6700),
    )
    .await?;
    let end = tokio::time::timeout(Duration::from_secs(20), events.recv()).await??;
    assert_eq!(end.reason, EndReason::Stop, "the call went on to its end");

    assert_eq!(
        fake.declared_tools(),
        ["order_status", "book_slot", "broken", "slow"]
    );
    let all = fake.function_call_outputs();
    assert_eq!(
        all.len(),
        5,
        "{all:?}\ncalls: {:?}\nerrors: {:?}\ntranscript: {:?}",
        fake.function_calls(),
        fake.errors(),
        end.stats.transcript
    );
    // Turn 2: an invalid argument, a timeout and a 500 each reach the model as an error.
    let errors: Vec<&str> = all[2..].iter().map(|o| o.output.as_str()).collect();
    assert!(
        errors.iter().all(|o| o.starts_with(r#"{"error":"#)),
        "{errors:?}"
    );
    let joined = errors.join(" ");
    assert!(joined.contains("invalid arguments: /order"), "{joined}");
    assert!(joined.contains("timed out after 0.3 s"), "{joined}");
    assert!(joined.contains("HTTP 500: database down"), "{joined}");
    let outputs = &all[..2];
    assert!(
        outputs.iter().any(|o| o.output.contains("shipped")),
        "{outputs:?}"
    );
    assert!(
        outputs.iter().any(|o| o.output.contains("Tuesday")),
        "{outputs:?}"
    );
    assert!(fake.errors().is_empty(), "{:?}", fake.errors());
    assert_both_tools_answered(&end.stats);
    let calls = calendar.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].meta["switchboard/callSid"],
        end.stats.call_sid.clone().unwrap_or_default().as_str()
    );
    assert_eq!(calls[0].meta["switchboard/agent"], "assistant");
    // Counted by tool and outcome, with a latency histogram (a process-wide recorder: other
    // tests' calls may add to it, never take away).
    let metrics = reqwest::get(format!("{}/metrics", gw.url))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(r#"switchboard_tool_calls_total{tool="broken",outcome="error"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"switchboard_tool_calls_total{tool="book_slot",outcome="ok"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"switchboard_tool_call_duration_seconds_bucket{tool="order_status""#),
        "{metrics}"
    );
    Ok(())
}

/// A pipeline agent (the openai-llm stage against the fake Chat Completions server, which
/// streams two parallel tool calls in fragments as the real API does) calls an HTTP tool and
/// an MCP tool: the request offers both, the follow-up history carries the assistant's calls
/// and one tool message per result, and the answer the caller hears is built from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_agent_calls_an_http_tool_and_an_mcp_tool() -> anyhow::Result<()> {
    use switchboard_tests::fake_openai_http::{FakeHttpOptions, FakeOpenAiHttp, ToolScript};
    use switchboard_tests::phone::{self, silence, speech};
    let orders = order_api().await?;
    let calendar = mcp_server::start_http(Behaviour::default()).await;
    let script = ToolScript::call("order_status", serde_json::json!({"order": "1042"}))
        .and_call("book_slot", serde_json::json!({"day": "Tuesday"}))
        .when_user_says("order");
    let llm = FakeOpenAiHttp::start(FakeHttpOptions {
        tool_script: Some(script),
        ..FakeHttpOptions::default()
    })
    .await?;
    let config = format!(
        r#"
[plugins.stt]
path = "{{plugins}}/fixed_stt.wasm"
[plugins.llm]
path = "{{plugins}}/openai_llm.wasm"
[plugins.tts]
path = "{{plugins}}/tone_tts.wasm"
{tools}
[[agents]]
name = "desk"
tools = ["order_status", "calendar.*"]
[agents.pipeline]
instructions = "You are the front desk."
endpointing_ms = 400
stt = {{ plugin = "stt", settings = {{ text = "Where is my order? And book me for Tuesday." }} }}
llm = {{ plugin = "llm", settings = {{ base_url = "{base}", model = "test-model" }}, secrets = {{ api_key = "sk-test" }}, allowed_hosts = ["{host}"] }}
tts = {{ plugin = "tts", settings = {{ ms_per_char = 5 }} }}

[routing]
default = "desk"
"#,
        tools = tool_config(&orders, &calendar.url),
        base = llm.base_url,
        host = llm.host_port,
    );
    let gw = switchboard_tests::Gateway::start(&write_config(&config)?).await?;
    mcp_ready(&gw, "calendar").await?;
    let mut events = gw.state.subscribe();
    let mut script = silence(300);
    script.extend(speech(600));
    script.extend(silence(5000));
    phone::call(
        &gw.url,
        serde_json::json!({}),
        script,
        Duration::from_millis(5900),
    )
    .await?;
    let end = tokio::time::timeout(Duration::from_secs(20), events.recv()).await??;
    assert_eq!(end.reason, EndReason::Stop);

    let requests = llm.requests();
    assert!(requests.len() >= 2, "{} requests", requests.len());
    assert_eq!(requests[0].tool_names(), ["order_status", "book_slot"]);
    assert_eq!(
        requests[1].roles(),
        ["system", "user", "assistant", "tool", "tool"]
    );
    assert_both_tools_answered(&end.stats);
    assert_eq!(calendar.calls().len(), 1);
    Ok(())
}
