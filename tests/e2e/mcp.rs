//! The MCP client ([`switchboard::tools::mcp`]) against real MCP servers (rmcp's server side):
//! Streamable HTTP on 127.0.0.1:0 and a child process on stdio. Tools are listed (all pages,
//! allow-listed, invalid names skipped) and called with the call's `_meta`; a server that is
//! down, slow to start, killed and restarted, or that changes its tools, is followed live.
//!
//! Time bounds are generous (shared, noisy machines): they catch a hang, not a slow run.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use switchboard::plugin::tools::Tool;
use switchboard::tools::mcp::{
    CallMeta, META_AGENT, META_CALL_SID, META_FROM, META_TO, McpPool, McpServerConfig, McpTransport,
};
use switchboard_tests::mcp_server::{self, Behaviour, FAIL_TEXT, McpTestServer};
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest wait for something the pool does on its own (connect, reconnect, list again).
const SETTLE: Duration = Duration::from_secs(60);

/// Longest a call may take when it should fail fast (server down, timed out).
const FAST: Duration = Duration::from_secs(10);

/// The test servers' tools a model may see (`status.v2` is skipped), in listing order.
const ALL_VALID: [&str; 5] = ["order_status", "book_slot", "fail", "whoami", "sleep"];

fn http(name: &str, server: &McpTestServer, allow: Option<&[&str]>) -> McpServerConfig {
    McpServerConfig {
        name: name.into(),
        transport: McpTransport::Http {
            url: server.url.clone(),
        },
        allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
        headers: vec![("X-Api-Key".into(), "not-logged".into())],
        call_timeout: Duration::from_secs(20),
    }
}

fn stdio(name: &str, args: &[&str]) -> McpServerConfig {
    McpServerConfig {
        name: name.into(),
        transport: McpTransport::Stdio {
            command: env!("CARGO_BIN_EXE_mcp-stdio-server").into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
        },
        allow: None,
        headers: vec![],
        call_timeout: Duration::from_secs(20),
    }
}

fn meta() -> CallMeta {
    CallMeta {
        call_sid: "CA0123456789abcdef0123456789abcdef".into(),
        from: "+15551230001".into(),
        to: "+15559870002".into(),
        agent: "front-desk".into(),
    }
}

fn args(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn names(tools: &[Tool]) -> Vec<&str> {
    tools.iter().map(|t| t.name.as_str()).collect()
}

/// Waits (up to [`SETTLE`]) until the published tools satisfy `ok`.
async fn wait_tools(
    rx: &mut watch::Receiver<Arc<Vec<Tool>>>,
    what: &str,
    ok: impl Fn(&[Tool]) -> bool,
) -> Arc<Vec<Tool>> {
    let waited = match tokio::time::timeout(SETTLE, rx.wait_for(|tools| ok(tools))).await {
        Ok(Ok(tools)) => Some(Arc::clone(&tools)),
        Ok(Err(_)) => panic!("the tool channel closed while waiting for {what}"),
        Err(_) => None,
    };
    waited.unwrap_or_else(|| {
        panic!(
            "no {what} within {SETTLE:?}; tools now: {:?}",
            names(&rx.borrow())
        )
    })
}

async fn wait_up(pool: &McpPool, server: &str) -> watch::Receiver<Arc<Vec<Tool>>> {
    let mut rx = pool.tools(server).expect("a configured server");
    wait_tools(&mut rx, "tools", |t| !t.is_empty()).await;
    rx
}

/// `pool.call`, asserting it returns within `bound`.
async fn call_within(
    bound: Duration,
    pool: &McpPool,
    server: &str,
    tool: &str,
    arguments: Value,
) -> Result<String, String> {
    tokio::time::timeout(bound, pool.call(server, tool, args(arguments), &meta()))
        .await
        .unwrap_or_else(|_| panic!("{server}/{tool} did not return within {bound:?}"))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tools_are_listed_allow_listed_and_called_with_the_call_meta() {
    let server = mcp_server::start_http(Behaviour::default()).await;
    let allow = ["order_status", "fail", "whoami", "not_offered"];
    let pool = McpPool::start(vec![http("crm", &server, Some(&allow))]);
    let tools = wait_up(&pool, "crm").await.borrow().clone();
    // `whoami` is on the second page of three.
    assert_eq!(names(&tools), ["order_status", "fail", "whoami"]);
    let order = &tools[0];
    assert_eq!(order.description, "Looks up an order's delivery status.");
    assert_eq!(json(&order.parameters)["required"], json!(["order"]));

    let out = call_within(
        SETTLE,
        &pool,
        "crm",
        "order_status",
        json!({"order": "A-17"}),
    )
    .await;
    assert_eq!(
        json(&out.expect("order_status")),
        json!({"order": "A-17", "status": "shipped", "eta": "Tuesday"})
    );
    let received = server.calls();
    let call = received.last().expect("the server saw the call");
    assert_eq!(call.name, "order_status");
    assert_eq!(call.arguments, json!({"order": "A-17"}));
    let m = meta();
    assert_eq!(call.meta[META_CALL_SID], json!(m.call_sid));
    assert_eq!(call.meta[META_FROM], json!(m.from));
    assert_eq!(call.meta[META_TO], json!(m.to));
    assert_eq!(call.meta[META_AGENT], json!(m.agent));

    let failed = call_within(SETTLE, &pool, "crm", "fail", json!({})).await;
    assert_eq!(failed, Err(FAIL_TEXT.to_string()));

    let refused = call_within(FAST, &pool, "crm", "book_slot", json!({"day": "Monday"})).await;
    assert!(refused.unwrap_err().contains("not allowed"));
    assert_eq!(
        server.calls().len(),
        2,
        "a refused tool never reaches the server"
    );
    pool.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_allow_list_every_valid_tool_is_offered_and_calls_run_concurrently() {
    let server = mcp_server::start_http(Behaviour::default()).await;
    let pool = McpPool::start(vec![http("crm", &server, None)]);
    let tools = wait_up(&pool, "crm").await.borrow().clone();
    assert_eq!(names(&tools), ALL_VALID, "status.v2 is skipped");

    let calls = (0..8).map(|i| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let day = format!("day-{i}");
            let out = pool
                .call("crm", "book_slot", args(json!({"day": day})), &meta())
                .await;
            (day, out)
        })
    });
    for call in calls {
        let (day, out) = tokio::time::timeout(SETTLE, call)
            .await
            .expect("a concurrent call returns")
            .expect("the call's task");
        assert_eq!(json(&out.expect("book_slot")), json!({"booked": day}));
    }
    pool.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_server_lists_and_calls_with_the_call_meta() {
    let pool = McpPool::start(vec![stdio("local", &[])]);
    let tools = wait_up(&pool, "local").await.borrow().clone();
    assert_eq!(names(&tools), ALL_VALID);

    let out = call_within(
        SETTLE,
        &pool,
        "local",
        "order_status",
        json!({"order": "B-2"}),
    )
    .await;
    assert_eq!(
        json(&out.expect("order_status")),
        json!({"order": "B-2", "status": "shipped", "eta": "Tuesday"})
    );
    let out = call_within(SETTLE, &pool, "local", "whoami", json!({})).await;
    let seen = json(&out.expect("whoami"));
    assert_eq!(seen["meta"][META_CALL_SID], json!(meta().call_sid));
    assert_eq!(seen["meta"][META_AGENT], json!(meta().agent));
    let failed = call_within(SETTLE, &pool, "local", "fail", json!({})).await;
    assert_eq!(failed, Err(FAIL_TEXT.to_string()));
    pool.shutdown();
}

/// Whether process `pid` is gone (or a zombie: dead, not yet reaped).
fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `pid (comm) STATE …`: the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

async fn wait_gone(pid: &str) {
    let deadline = Instant::now() + SETTLE;
    while !process_gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} still runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_that_dies_is_started_again_and_killed_on_shutdown() {
    let dir = switchboard_tests::temp_dir().expect("a temp dir");
    let pid_file = dir.join("mcp.pid");
    let pid_arg = pid_file.display().to_string();
    let pool = McpPool::start(vec![stdio("local", &["--pid-file", &pid_arg])]);
    let mut rx = wait_up(&pool, "local").await;
    let first = std::fs::read_to_string(&pid_file).expect("the server wrote its pid");

    let killed = std::process::Command::new("sh")
        .args(["-c", &format!("kill -9 {first}")])
        .status()
        .expect("running kill");
    assert!(killed.success());
    wait_tools(&mut rx, "no tools after the child died", <[Tool]>::is_empty).await;
    wait_tools(&mut rx, "tools from a new child", |t| !t.is_empty()).await;
    let second = std::fs::read_to_string(&pid_file).expect("the new server wrote its pid");
    assert_ne!(first, second, "a new process");
    let out = call_within(
        SETTLE,
        &pool,
        "local",
        "book_slot",
        json!({"day": "Friday"}),
    )
    .await;
    assert_eq!(json(&out.expect("book_slot")), json!({"booked": "Friday"}));

    pool.shutdown();
    wait_gone(&second).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_offers_no_tools_and_calls_fail_fast() {
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
        listener.local_addr().expect("an address").port()
    };
    let config = McpServerConfig {
        name: "down".into(),
        transport: McpTransport::Http {
            url: format!("http://127.0.0.1:{port}/mcp"),
        },
        allow: None,
        headers: vec![],
        call_timeout: Duration::from_secs(30),
    };
    let pool = McpPool::start(vec![config]);
    let rx = pool.tools("down").expect("a configured server");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rx.borrow().is_empty());
    let started = Instant::now();
    let error = call_within(FAST, &pool, "down", "order_status", json!({"order": "x"}))
        .await
        .unwrap_err();
    assert!(error.contains("unavailable"), "{error}");
    assert!(started.elapsed() < FAST);
    pool.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_shows_its_tools_once_up_and_start_does_not_wait() {
    let server = mcp_server::start_http(Behaviour {
        slow_start: Duration::from_secs(2),
    })
    .await;
    let started = Instant::now();
    let pool = McpPool::start(vec![
        http("slow", &server, None),
        stdio("slow-stdio", &["--slow-start-ms", "2000"]),
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "start never waits"
    );
    let mut http_rx = pool.tools("slow").expect("configured");
    let mut stdio_rx = pool.tools("slow-stdio").expect("configured");
    assert!(http_rx.borrow().is_empty() && stdio_rx.borrow().is_empty());
    let error = call_within(FAST, &pool, "slow", "order_status", json!({"order": "x"}))
        .await
        .unwrap_err();
    assert!(error.contains("unavailable"), "{error}");

    wait_tools(&mut http_rx, "the slow HTTP server's tools", |t| {
        !t.is_empty()
    })
    .await;
    wait_tools(&mut stdio_rx, "the slow stdio server's tools", |t| {
        !t.is_empty()
    })
    .await;
    let out = call_within(SETTLE, &pool, "slow", "book_slot", json!({"day": "Sunday"})).await;
    assert_eq!(json(&out.expect("book_slot")), json!({"booked": "Sunday"}));
    pool.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_its_tools_and_gets_them_back_when_it_restarts() {
    let mut server = mcp_server::start_http(Behaviour::default()).await;
    let pool = McpPool::start(vec![http("crm", &server, None)]);
    let mut rx = wait_up(&pool, "crm").await;

    server.kill();
    wait_tools(&mut rx, "no tools after the kill", <[Tool]>::is_empty).await;
    let error = call_within(FAST, &pool, "crm", "order_status", json!({"order": "x"}))
        .await
        .unwrap_err();
    assert!(error.contains("unavailable"), "{error}");

    server.restart().await.expect("restarting on the same port");
    wait_tools(&mut rx, "tools after the restart", |t| {
        names(t) == ALL_VALID
    })
    .await;
    let out = call_within(
        SETTLE,
        &pool,
        "crm",
        "order_status",
        json!({"order": "C-3"}),
    )
    .await;
    assert_eq!(json(&out.expect("order_status"))["order"], "C-3");
    pool.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_dying_mid_call_ends_the_call_with_an_error() {
    let mut server = mcp_server::start_http(Behaviour::default()).await;
    let mut config = http("crm", &server, None);
    config.call_timeout = Duration::from_secs(120);
    let pool = McpPool::start(vec![config]);
    wait_up(&pool, "crm").await;

    let calling = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.call("crm", "sleep", args(json!({"ms": 100_000})), &meta())
                .await
        })
    };
    let deadline = Instant::now() + SETTLE;
    while server.calls().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the call never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    let out = tokio::time::timeout(SETTLE, calling)
        .await
        .expect("the call ends long before its 120 s timeout")
        .expect("the call's task");
    assert!(out.is_err(), "{out:?}");
    pool.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_never_outlasts_its_timeout_and_the_connection_survives() {
    let server = mcp_server::start_http(Behaviour::default()).await;
    let mut config = http("crm", &server, None);
    config.call_timeout = Duration::from_secs(1);
    let pool = McpPool::start(vec![config]);
    wait_up(&pool, "crm").await;

    let error = call_within(FAST, &pool, "crm", "sleep", json!({"ms": 30_000}))
        .await
        .unwrap_err();
    assert!(error.contains("did not answer"), "{error}");
    let out = call_within(SETTLE, &pool, "crm", "book_slot", json!({"day": "Monday"})).await;
    assert_eq!(json(&out.expect("book_slot")), json!({"booked": "Monday"}));
    pool.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_changed_adds_a_tool_live() {
    let server = mcp_server::start_http(Behaviour::default()).await;
    let pool = McpPool::start(vec![http("crm", &server, None)]);
    let mut rx = wait_up(&pool, "crm").await;

    server.add_tool("cancel_order", "Cancels an order.").await;
    let tools = wait_tools(&mut rx, "the added tool", |t| {
        names(t).contains(&"cancel_order")
    })
    .await;
    assert_eq!(tools.len(), ALL_VALID.len() + 1);
    let out = call_within(
        SETTLE,
        &pool,
        "crm",
        "cancel_order",
        json!({"order": "D-4"}),
    )
    .await;
    assert_eq!(
        json(&out.expect("cancel_order")),
        json!({"tool": "cancel_order", "arguments": {"order": "D-4"}})
    );
    pool.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigure_keeps_an_unchanged_server_and_applies_changes() {
    let server = mcp_server::start_http(Behaviour::default()).await;
    let crm = http("crm", &server, None);
    let pool = McpPool::start(vec![crm.clone()]);
    let mut rx = wait_up(&pool, "crm").await;
    rx.mark_unchanged();

    // Unchanged: the connection and its published tools stay as they are.
    pool.reconfigure(vec![crm.clone()]);
    assert!(!rx.has_changed().expect("open"));
    assert_eq!(names(&rx.borrow()), ALL_VALID);

    // Changed: the same channel carries the new allow-list's tools.
    let narrowed = http("crm", &server, Some(&["book_slot"]));
    pool.reconfigure(vec![narrowed]);
    wait_tools(&mut rx, "the narrowed tools", |t| names(t) == ["book_slot"]).await;
    let refused = call_within(FAST, &pool, "crm", "order_status", json!({"order": "x"})).await;
    assert!(refused.unwrap_err().contains("not allowed"));

    // Removed: unknown, and its channel closes.
    pool.reconfigure(vec![]);
    assert!(pool.tools("crm").is_none());
    let closed = async { while rx.changed().await.is_ok() {} };
    tokio::time::timeout(SETTLE, closed)
        .await
        .expect("the removed server's channel closes");
}
