//! The web console: its page and static files ([`assets`]), the overview it shows
//! (`GET /console/api/overview`), and the browser phone ([`phone`]) that calls an agent over a
//! Media Streams socket without Twilio.
//!
//! | route | does |
//! |---|---|
//! | `GET /console` | the page (no auth: it holds no data; it asks for a token) |
//! | `GET /console/assets/{file}` | its CSS, JS and audio worklet, embedded in the binary |
//! | `GET /console/api/overview` | version, instance, uptime, live calls, agents and their plugins' breakers |
//! | `POST /console/phone` | `{"agent": NAME}` → a one-use ticket for a browser call to that agent |
//! | `GET /console/phone/ws?ticket=…` | the browser call's Media Streams WebSocket |
//!
//! The JSON routes take the operator API's bearer tokens (`[api] tokens`). With none configured,
//! the gateway makes one at start ([`Console::new`]) and logs the console's address with it
//! (`console: http://ADDR/console#token=…`, [`Console::announce`]), as Jupyter does: whoever
//! can read the gateway's log can use the console and the operator API.

pub mod assets;
pub mod phone;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::AppState;
use super::api::ApiGuard;
use crate::config::{AgentMode, ApiConfig, Config, Secret};
use crate::plugin::breaker::BreakerState;

/// Random bytes in a generated console token (64 hex digits): as hard to guess as the SHA-256
/// digest the guard compares it by.
pub const GENERATED_TOKEN_BYTES: usize = 32;

/// The console's routes, for [`super::app`] to merge.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(assets::index))
        .route("/console/", get(assets::index))
        .route("/console/assets/{file}", get(assets::asset))
        .route("/console/api/overview", get(overview))
        .route("/console/phone", post(phone::place))
        .route("/console/phone/ws", get(phone::socket))
}

/// What the console keeps for the gateway's life (shared by every shard, kept across reloads):
/// the generated token, the browser phone's tickets, and the figures the overview shows.
#[derive(Debug)]
pub struct Console {
    /// The token made when `[api] tokens` was empty at start (or became empty on a reload);
    /// accepted, while no tokens are configured, as one of them.
    generated: OnceLock<Secret>,
    /// The address the gateway listens on, once [`Console::announce`]d.
    address: OnceLock<SocketAddr>,
    /// The browser phone's outstanding tickets.
    pub tickets: phone::Tickets,
    /// When the gateway started (the overview's `uptime_s`).
    started: Instant,
    /// This gateway's name (`[records] instance`, else `<hostname>-<pid>-<random>`).
    instance: String,
    /// Calls ended by this process since it started, by outcome ([`crate::call::EndReason::outcome`]).
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
}

impl Console {
    /// The console of a gateway starting with `config`: a token is generated when
    /// `[api] tokens` is empty.
    pub fn new(config: &Config) -> Self {
        let console = Self {
            generated: OnceLock::new(),
            address: OnceLock::new(),
            tickets: phone::Tickets::default(),
            started: Instant::now(),
            instance: crate::records::instance_name(config.records.instance.as_deref()),
            outcomes: Mutex::default(),
        };
        if config.api.tokens.is_empty() {
            console.generated_or_new();
        }
        console
    }

    /// The generated token, made now if it was not yet; logged with the console's address
    /// when that is known already (a reload that removed the last configured token).
    fn generated_or_new(&self) -> &Secret {
        let mut made = false;
        let token = self.generated.get_or_init(|| {
            made = true;
            Secret::new(random_hex(GENERATED_TOKEN_BYTES))
        });
        if made && let Some(address) = self.address.get() {
            tracing::info!("console: {}", console_url(*address, Some(token)));
        }
        token
    }

    /// The token generated for the console, if one was: accepted while no `[api] tokens` are
    /// configured.
    pub fn generated_token(&self) -> Option<&str> {
        self.generated.get().map(Secret::expose)
    }

    /// The operator API's guard for `api`: its tokens, and the generated one when it has none.
    pub fn guard(&self, api: &ApiConfig) -> ApiGuard {
        let guard = ApiGuard::new(api);
        if api.tokens.is_empty() {
            guard.with_token(self.generated_or_new().expose())
        } else {
            guard
        }
    }

    /// Logs the console's address at INFO, once the gateway's listener is bound to `address`:
    /// `console: http://ADDR/console#token=TOKEN` with the generated token while `config` has no
    /// `[api] tokens`, else `console: http://ADDR/console`. An unspecified address (`0.0.0.0`,
    /// `::`) is shown as loopback, which a browser on the same machine can open.
    pub fn announce(&self, address: SocketAddr, config: &Config) {
        let _ = self.address.set(address);
        let token = config
            .api
            .tokens
            .is_empty()
            .then(|| self.generated_or_new());
        tracing::info!("console: {}", console_url(address, token));
    }

    /// Counts a call that ended with `outcome`.
    pub fn call_ended(&self, outcome: &'static str) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        *outcomes.entry(outcome).or_default() += 1;
    }

    /// Calls ended since start, by outcome.
    pub fn outcomes(&self) -> BTreeMap<&'static str, u64> {
        self.outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// `http://ADDR/console`, with `#token=…` when `token` is given; an unspecified IP is shown as
/// loopback.
fn console_url(address: SocketAddr, token: Option<&Secret>) -> String {
    let mut shown = address;
    if shown.ip().is_unspecified() {
        shown.set_ip(match shown.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    match token {
        Some(token) => format!("http://{shown}/console#token={}", token.expose()),
        None => format!("http://{shown}/console"),
    }
}

/// `bytes` random bytes as lowercase hex digits.
pub(crate) fn random_hex(bytes: usize) -> String {
    use std::fmt::Write as _;
    (0..bytes).fold(String::with_capacity(bytes * 2), |mut hex, _| {
        let _ = write!(hex, "{:02x}", rand::random::<u8>());
        hex
    })
}

/// `GET /console/api/overview` (bearer token; not counted against its rate limit: the console
/// reads it every few seconds). 200:
///
/// ```json
/// {"version": "0.1.0", "instance": "host-123-ab12", "uptime_s": 12, "active_calls": 1,
///  "draining": false, "calls_total": {"completed": 3, "disconnected": 1},
///  "agents": [{"name": "front-desk", "mode": "pipeline", "disabled": false,
///    "numbers": ["+15005550006"], "default": true, "fallback": null,
///    "plugins": [{"name": "whisper", "kind": "native", "stage": "stt",
///                 "breaker": "closed", "failed_calls": 0}]}]}
/// ```
///
/// `uptime_s`: whole seconds since the gateway started. `calls_total`: calls this process ended
/// since it started, by outcome (as in the call records). `default`: the agent of
/// `[routing] default` (it takes the calls nothing else routes). `mode`: `pipeline` or `realtime`.
/// `stage`: `stt`, `llm`, `tts` or `realtime`. `kind`: `wasm`, `native`, or `null` for a plugin
/// not loaded. `breaker`: the plugin's circuit breaker ([`BreakerState`]): `closed`, `open`
/// (calls kept away) or `half-open` (the next call tries it). `failed_calls`: calls ended by
/// the plugin's failure since start.
async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refused) = state.api.load_full().authenticate(&headers) {
        return refused;
    }
    axum::Json(overview_json(&state)).into_response()
}

/// The body of [`overview`].
fn overview_json(state: &AppState) -> Value {
    let ctx = state.context();
    let agents: Vec<Value> = ctx
        .config
        .agents
        .iter()
        .map(|agent| {
            let plugins: Vec<Value> = agent
                .plugin_uses()
                .into_iter()
                .map(|(stage, used)| {
                    let breaker = ctx.plugins.breaker(&used.plugin);
                    json!({
                        "name": used.plugin,
                        "kind": ctx.plugins.get(&used.plugin).map(|p| p.kind()),
                        "stage": stage,
                        "breaker": breaker.map_or(BreakerState::Closed, |b| b.state()).as_str(),
                        "failed_calls": breaker.map_or(0, |b| b.failures()),
                    })
                })
                .collect();
            json!({
                "name": agent.name,
                "mode": match agent.mode {
                    AgentMode::Realtime(_) => "realtime",
                    AgentMode::Pipeline(_) => "pipeline",
                },
                "disabled": agent.is_disabled(),
                "numbers": agent.numbers,
                "default": ctx.config.default_agent.as_deref() == Some(agent.name.as_str()),
                "fallback": agent.fallback,
                "plugins": plugins,
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "instance": state.console.instance,
        "uptime_s": state.console.started.elapsed().as_secs(),
        "active_calls": state.active_calls(),
        "draining": state.is_draining(),
        "calls_total": state.console.outcomes(),
        "agents": agents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console() -> Console {
        Console {
            generated: OnceLock::new(),
            address: OnceLock::new(),
            tickets: phone::Tickets::default(),
            started: Instant::now(),
            instance: "test".into(),
            outcomes: Mutex::default(),
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn the_generated_token_is_accepted_only_while_no_tokens_are_configured() {
        let console = console();
        let none = ApiConfig::default();
        let configured = ApiConfig {
            tokens: vec![Secret::new("configured".into())],
            ..ApiConfig::default()
        };
        // Configured tokens: nothing is generated.
        let guard = console.guard(&configured);
        assert!(console.generated_token().is_none());
        assert!(guard.authenticate(&bearer("configured")).is_ok());
        // None: one is made, and every later guard (a reload) keeps it.
        let guard = console.guard(&none);
        let token = console.generated_token().expect("generated").to_string();
        assert_eq!(token.len(), 2 * GENERATED_TOKEN_BYTES);
        assert!(guard.authenticate(&bearer(&token)).is_ok());
        assert!(guard.authenticate(&bearer("configured")).is_err());
        assert!(guard.authenticate(&bearer("")).is_err());
        assert!(guard.authenticate(&HeaderMap::new()).is_err());
        let reloaded = console.guard(&none);
        assert_eq!(console.generated_token(), Some(token.as_str()));
        assert!(reloaded.authenticate(&bearer(&token)).is_ok());
        // Tokens configured again: the generated one is refused.
        let guard = console.guard(&configured);
        assert!(guard.authenticate(&bearer(&token)).is_err());
        assert!(guard.authenticate(&bearer("configured")).is_ok());
    }

    #[test]
    fn outcomes_are_counted() {
        let console = console();
        console.call_ended("completed");
        console.call_ended("completed");
        console.call_ended("failed");
        assert_eq!(
            console.outcomes().into_iter().collect::<Vec<_>>(),
            [("completed", 2), ("failed", 1)]
        );
    }

    #[test]
    fn console_urls_show_loopback_for_an_unspecified_address() {
        let token = Secret::new("abc".into());
        assert_eq!(
            console_url("0.0.0.0:8080".parse().unwrap(), Some(&token)),
            "http://127.0.0.1:8080/console#token=abc"
        );
        assert_eq!(
            console_url("[::]:8080".parse().unwrap(), None),
            "http://[::1]:8080/console"
        );
        assert_eq!(
            console_url("10.0.0.2:80".parse().unwrap(), None),
            "http://10.0.0.2:80/console"
        );
    }

    #[test]
    fn random_hex_is_hex_of_the_length_asked_and_differs() {
        let (a, b) = (random_hex(32), random_hex(32));
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }
}
