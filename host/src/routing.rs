//! Call routing: decides which configured agent answers an incoming call.
//!
//! Owns the precedence rules so every entry point (TwiML webhook, Media Streams `start`
//! message) routes the same way:
//!
//! 1. an explicit `agent` parameter — an unknown name is an error, never a silent
//!    fallback, because a caller that names an agent wants that agent;
//! 2. the agent whose `match` table is fully contained in the call's customParameters
//!    (most pairs wins; ties go to the agent defined first in the file);
//! 3. the called number (`To`), compared exactly after trimming whitespace;
//! 4. `routing.default`;
//! 5. otherwise [`RouteError::NotConfigured`].
//!
//! An agent an empty secret disables ([`Agent::is_disabled`]) takes no calls: a call any rule
//! gives it goes to its `fallback` agent when that one is enabled ([`RouteReason::Fallback`]),
//! and is otherwise refused ([`RouteError::Disabled`]) as an unroutable call is.
//!
//! Lookups use tables precomputed on [`Config`] during validation, so routing costs
//! O(number of parameters), independent of how many agents or numbers are configured.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::config::{Agent, Config};

/// What is known about a call when it is routed.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// The explicit `agent` parameter, if the call carried one. Surrounding whitespace
    /// is ignored; any other value (including an empty one) must name an agent.
    pub agent: Option<&'a str>,
    /// The called number (Twilio's `To`), E.164, if known.
    pub to: Option<&'a str>,
    /// The call's customParameters, as name/value pairs. If a name repeats, its first
    /// value is used.
    pub params: &'a [(String, String)],
}

/// Why a call went to the agent it went to (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteReason {
    /// The call named the agent with an explicit `agent` parameter.
    AgentParameter,
    /// The call's customParameters matched the agent's `match` table.
    CustomParameters,
    /// The called number is one of the agent's `numbers`.
    CalledNumber,
    /// Nothing else matched; the agent is `routing.default`.
    Default,
    /// The agent a rule chose is disabled (an empty secret); this is its `fallback`.
    Fallback,
}

impl RouteReason {
    /// A stable kebab-case name: `agent-parameter`, `custom-parameters`,
    /// `called-number`, `default` or `fallback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentParameter => "agent-parameter",
            Self::CustomParameters => "custom-parameters",
            Self::CalledNumber => "called-number",
            Self::Default => "default",
            Self::Fallback => "fallback",
        }
    }
}

impl fmt::Display for RouteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The routing decision: an agent of the config, and why.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    /// The agent that answers the call.
    pub agent: &'a Agent,
    /// Which rule chose it.
    pub reason: RouteReason,
}

/// Why a call could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The explicit `agent` parameter names no configured agent (the name, trimmed).
    #[error("unknown agent {0:?} requested by the call's agent parameter")]
    UnknownAgent(String),
    /// No rule matched and there is no `routing.default`.
    #[error("no agent matches this call and no [routing] default is configured")]
    NotConfigured,
    /// The agent chosen is disabled (a secret granted to its plugins is empty) and has no
    /// enabled `fallback` agent (its name).
    #[error(
        "agent {0:?} is disabled (a secret it grants is empty) and has no enabled fallback agent"
    )]
    Disabled(String),
}

/// Picks the agent for a call; see the module docs for the precedence.
///
/// # Errors
///
/// [`RouteError::UnknownAgent`] when `req.agent` names no agent (even if a default
/// exists); [`RouteError::NotConfigured`] when nothing matches and there is no default;
/// [`RouteError::Disabled`] when the agent chosen is disabled and has no enabled fallback.
pub fn route<'a>(config: &'a Config, req: &RouteRequest<'_>) -> Result<Route<'a>, RouteError> {
    let route = enabled(config, decide(config, req)?)?;
    tracing::debug!(agent = %route.agent.name, reason = %route.reason, "routed call");
    Ok(route)
}

fn decide<'a>(config: &'a Config, req: &RouteRequest<'_>) -> Result<Route<'a>, RouteError> {
    if let Some(name) = req.agent {
        let name = name.trim();
        return config
            .agent(name)
            .map(|agent| Route {
                agent,
                reason: RouteReason::AgentParameter,
            })
            .ok_or_else(|| RouteError::UnknownAgent(name.to_owned()));
    }
    if let Some(agent) = match_params(config, req.params) {
        return Ok(Route {
            agent,
            reason: RouteReason::CustomParameters,
        });
    }
    if let Some(agent) = req
        .to
        .and_then(|to| config.routes.by_number.get(to.trim()))
        .and_then(|&i| config.agents.get(i))
    {
        return Ok(Route {
            agent,
            reason: RouteReason::CalledNumber,
        });
    }
    config
        .default_agent()
        .map(|agent| Route {
            agent,
            reason: RouteReason::Default,
        })
        .ok_or(RouteError::NotConfigured)
}

/// `route` itself, or, when its agent is disabled, the route to that agent's fallback.
fn enabled<'a>(config: &'a Config, route: Route<'a>) -> Result<Route<'a>, RouteError> {
    if !route.agent.is_disabled() {
        return Ok(route);
    }
    match config.fallback_for(route.agent) {
        Some(agent) => {
            tracing::warn!(disabled = %route.agent.name, fallback = %agent.name, "agent disabled by an empty secret; the call goes to its fallback agent");
            Ok(Route {
                agent,
                reason: RouteReason::Fallback,
            })
        }
        None => Err(RouteError::Disabled(route.agent.name.clone())),
    }
}

/// The agent whose whole `match` table appears in `params`, preferring the largest
/// table, then the earliest agent. Counts, per agent, how many of its pairs the call
/// has (via the pair index), so the cost is O(params), not O(agents).
fn match_params<'a>(config: &'a Config, params: &[(String, String)]) -> Option<&'a Agent> {
    if config.routes.by_pair.is_empty() || params.is_empty() {
        return None;
    }
    let mut seen_keys: HashSet<&str> = HashSet::with_capacity(params.len());
    // Agent index -> how many of its match pairs the call has.
    let mut hits: HashMap<usize, usize> = HashMap::new();
    for (key, value) in params {
        // A repeated key counts once, with its first value.
        if !seen_keys.insert(key.as_str()) {
            continue;
        }
        let Some(agents) = config
            .routes
            .by_pair
            .get(key.as_str())
            .and_then(|values| values.get(value.as_str()))
        else {
            continue;
        };
        for &i in agents {
            *hits.entry(i).or_default() += 1;
        }
    }
    hits.into_iter()
        .filter_map(|(i, count)| {
            let agent = config.agents.get(i)?;
            (count == agent.match_params.len()).then_some((i, count, agent))
        })
        // Most pairs first; among equals, the lowest index (earliest in the file).
        .max_by(|(ia, ca, _), (ib, cb, _)| ca.cmp(cb).then(ib.cmp(ia)))
        .map(|(_, _, agent)| agent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{TempDir, build_ok};

    /// Agents, in file order:
    /// - `main`: numbers +14155550100, +14155550101
    /// - `merchant`: merchantId=m-42
    /// - `merchant-es`: merchantId=m-42, lang=es
    /// - `by-a`: a=1; `by-b`: b=2 (equal-sized tables, for ties)
    /// - `fallback`: the default
    const AGENTS: &str = r#"
[plugins.echo]
path = "echo.wasm"

[[agents]]
name = "main"
numbers = ["+14155550100", "+14155550101"]
realtime = { plugin = "echo" }

[[agents]]
name = "merchant"
match = { merchantId = "m-42" }
realtime = { plugin = "echo" }

[[agents]]
name = "merchant-es"
match = { merchantId = "m-42", lang = "es" }
realtime = { plugin = "echo" }

[[agents]]
name = "by-b"
match = { b = "2" }
realtime = { plugin = "echo" }

[[agents]]
name = "by-a"
match = { a = "1" }
realtime = { plugin = "echo" }

[[agents]]
name = "fallback"
realtime = { plugin = "echo" }
"#;

    fn config(with_default: bool) -> (TempDir, Config) {
        let mut text = AGENTS.to_owned();
        if with_default {
            text.push_str("\n[routing]\ndefault = \"fallback\"\n");
        }
        build_ok(&text)
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Routes and returns (agent name, reason), panicking on error.
    fn pick(
        config: &Config,
        agent: Option<&str>,
        to: Option<&str>,
        pairs: &[(&str, &str)],
    ) -> (String, RouteReason) {
        let params = params(pairs);
        let req = RouteRequest {
            agent,
            to,
            params: &params,
        };
        match route(config, &req) {
            Ok(r) => (r.agent.name.clone(), r.reason),
            Err(e) => panic!("routing failed: {e}"),
        }
    }

    fn fail(
        config: &Config,
        agent: Option<&str>,
        to: Option<&str>,
        pairs: &[(&str, &str)],
    ) -> RouteError {
        let params = params(pairs);
        let req = RouteRequest {
            agent,
            to,
            params: &params,
        };
        match route(config, &req) {
            Ok(r) => panic!(
                "expected an error, routed to {} ({})",
                r.agent.name, r.reason
            ),
            Err(e) => e,
        }
    }

    fn named(name: &str, reason: RouteReason) -> (String, RouteReason) {
        (name.to_owned(), reason)
    }

    #[test]
    fn agent_parameter_beats_everything() {
        let (_dir, c) = config(true);
        assert_eq!(
            pick(
                &c,
                Some("by-a"),
                Some("+14155550100"),
                &[("merchantId", "m-42")]
            ),
            named("by-a", RouteReason::AgentParameter)
        );
        assert_eq!(
            pick(&c, Some(" main \n"), None, &[]),
            named("main", RouteReason::AgentParameter)
        );
    }

    #[test]
    fn unknown_agent_parameter_is_an_error_not_a_fallback() {
        let (_dir, c) = config(true);
        let e = fail(
            &c,
            Some("nobody"),
            Some("+14155550100"),
            &[("merchantId", "m-42")],
        );
        assert_eq!(e, RouteError::UnknownAgent("nobody".into()));
        assert_eq!(
            fail(&c, Some("  "), None, &[]),
            RouteError::UnknownAgent(String::new())
        );
        assert!(e.to_string().contains("\"nobody\""), "{e}");
    }

    #[test]
    fn custom_parameters_beat_called_number() {
        let (_dir, c) = config(true);
        assert_eq!(
            pick(
                &c,
                None,
                Some("+14155550100"),
                &[("merchantId", "m-42"), ("unrelated", "x")]
            ),
            named("merchant", RouteReason::CustomParameters)
        );
    }

    #[test]
    fn most_pairs_wins() {
        let (_dir, c) = config(true);
        assert_eq!(
            pick(&c, None, None, &[("lang", "es"), ("merchantId", "m-42")]),
            named("merchant-es", RouteReason::CustomParameters)
        );
        // Only part of merchant-es's table: the smaller table matches.
        assert_eq!(
            pick(&c, None, None, &[("merchantId", "m-42"), ("lang", "en")]),
            named("merchant", RouteReason::CustomParameters)
        );
    }

    #[test]
    fn equal_sized_matches_tie_by_file_order() {
        let (_dir, c) = config(true);
        // by-b is defined before by-a, whatever the parameter order or names.
        assert_eq!(
            pick(&c, None, None, &[("a", "1"), ("b", "2")]),
            named("by-b", RouteReason::CustomParameters)
        );
        let swapped = AGENTS
            .replace("\"by-b\"", "\"tmp\"")
            .replace("\"by-a\"", "\"by-b\"")
            .replace("\"tmp\"", "\"by-a\"");
        let swapped = swapped
            .replace("b = \"2\"", "tmp")
            .replace("a = \"1\"", "b = \"2\"")
            .replace("tmp", "a = \"1\"");
        let (_dir, c) = build_ok(&swapped);
        // Now the agent with a=1 comes first.
        assert_eq!(
            c.agents[3].match_params.get("a").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            pick(&c, None, None, &[("b", "2"), ("a", "1")]),
            named(&c.agents[3].name, RouteReason::CustomParameters)
        );
    }

    #[test]
    fn partial_or_different_values_do_not_match() {
        let (_dir, c) = config(true);
        assert_eq!(
            pick(&c, None, None, &[("merchantId", "m-43"), ("lang", "es")]),
            named("fallback", RouteReason::Default)
        );
        assert_eq!(
            pick(&c, None, None, &[("merchantid", "m-42")]),
            named("fallback", RouteReason::Default)
        );
    }

    #[test]
    fn repeated_parameter_names_count_once_with_the_first_value() {
        let (_dir, c) = config(true);
        // Counting the pair twice would wrongly satisfy merchant-es's two pairs.
        assert_eq!(
            pick(
                &c,
                None,
                None,
                &[("merchantId", "m-42"), ("merchantId", "m-42")]
            ),
            named("merchant", RouteReason::CustomParameters)
        );
        assert_eq!(
            pick(
                &c,
                None,
                None,
                &[("merchantId", "other"), ("merchantId", "m-42")]
            ),
            named("fallback", RouteReason::Default)
        );
    }

    #[test]
    fn called_number_is_compared_after_trimming() {
        let (_dir, c) = config(true);
        assert_eq!(
            pick(&c, None, Some("+14155550101"), &[]),
            named("main", RouteReason::CalledNumber)
        );
        assert_eq!(
            pick(&c, None, Some("  +14155550100\t"), &[("x", "y")]),
            named("main", RouteReason::CalledNumber)
        );
        // Exact compare: no normalization of other formats.
        assert_eq!(
            pick(&c, None, Some("14155550100"), &[]),
            named("fallback", RouteReason::Default)
        );
    }

    #[test]
    fn default_when_nothing_matches() {
        let (_dir, c) = config(true);
        assert_eq!(
            pick(&c, None, None, &[]),
            named("fallback", RouteReason::Default)
        );
        assert_eq!(
            pick(&c, None, Some("+19999999999"), &[]),
            named("fallback", RouteReason::Default)
        );
    }

    #[test]
    fn not_configured_without_default() {
        let (_dir, c) = config(false);
        assert_eq!(
            fail(&c, None, Some("+19999999999"), &[("k", "v")]),
            RouteError::NotConfigured
        );
        // The other rules still work without a default.
        assert_eq!(
            pick(&c, None, Some("+14155550100"), &[]),
            named("main", RouteReason::CalledNumber)
        );
        assert_eq!(
            fail(&c, Some("fallbak"), None, &[]),
            RouteError::UnknownAgent("fallbak".into())
        );
    }

    /// `main` (number +14155550100) and `merchant` are disabled by an empty secret; `main` falls
    /// back to `by-a`, `merchant` to `merchant-es`, itself disabled.
    #[test]
    fn a_disabled_agent_s_calls_go_to_its_enabled_fallback_or_are_refused() {
        let empty = "realtime = { plugin = \"echo\", secrets = { api_key = \"${UNSET_KEY:-}\" } }";
        let text = AGENTS
            .replacen(
                "realtime = { plugin = \"echo\" }",
                &format!("fallback = \"by-a\"\n{empty}"),
                1,
            )
            .replacen(
                "realtime = { plugin = \"echo\" }",
                &format!("fallback = \"merchant-es\"\n{empty}"),
                1,
            )
            .replacen("realtime = { plugin = \"echo\" }", empty, 1);
        let (_dir, c) = build_ok(&format!("{text}\n[routing]\ndefault = \"fallback\"\n"));
        assert_eq!(
            pick(&c, None, Some("+14155550100"), &[]),
            named("by-a", RouteReason::Fallback)
        );
        // An explicit agent parameter too: the agent cannot take the call.
        assert_eq!(
            pick(&c, Some("main"), None, &[]),
            named("by-a", RouteReason::Fallback)
        );
        // The fallback is disabled as well: refused, with the agent named.
        let e = fail(&c, None, None, &[("merchantId", "m-42")]);
        assert_eq!(e, RouteError::Disabled("merchant".into()));
        assert!(e.to_string().contains("\"merchant\" is disabled"), "{e}");
        assert_eq!(
            fail(&c, Some("merchant-es"), None, &[]),
            RouteError::Disabled("merchant-es".into())
        );
        // Enabled agents route as before.
        assert_eq!(
            pick(&c, None, None, &[]),
            named("fallback", RouteReason::Default)
        );
    }

    #[test]
    fn reasons_have_stable_names() {
        let names: Vec<&str> = [
            RouteReason::AgentParameter,
            RouteReason::CustomParameters,
            RouteReason::CalledNumber,
            RouteReason::Default,
            RouteReason::Fallback,
        ]
        .iter()
        .map(|r| r.as_str())
        .collect();
        assert_eq!(
            names,
            [
                "agent-parameter",
                "custom-parameters",
                "called-number",
                "default",
                "fallback"
            ]
        );
    }
}
