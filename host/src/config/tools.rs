//! Tools in agents.toml: `[tools.NAME]` (an HTTP endpoint, or a lookup file), `[mcp.NAME]`
//! (an MCP server) and what each agent is granted (`tools = [...]`, `transfer_to`,
//! `tool_filler_ms`, `filler`, `result_schema`). Raw shapes and their validation; the host
//! runs the tools in [`crate::tools`].
//!
//! ```toml
//! [tools.order_status]
//! description = "The status of an order, by order number"
//! method = "GET"
//! url = "https://shop.example.com/api/orders/{order}"
//! headers = { Authorization = "Bearer ${SHOP_TOKEN}" }
//! parameters = { type = "object", required = ["order"], properties = { order = { type = "string" } } }
//!
//! [tools.find_customer]
//! description = "The caller's customer record"
//! lookup = "customers"
//! columns = ["name", "order", "order_status"]   # what the model is shown; all when absent
//!
//! [mcp.calendar]
//! url = "https://calendar.example.com/mcp"       # or command = "calendar-mcp", args = [...]
//! allow = ["book_slot", "free_slots"]
//!
//! [[agents]]
//! tools = ["order_status", "find_customer", "calendar.*", "transfer_call", "end_call"]
//! transfer_to = ["+14155550100", "+1415555*"]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::ConfigErrorKind;
use super::lookup::Lookup;
use super::span::KeyPath;
use super::validate::{Validator, known_list};
use super::{Secret, is_e164};
use crate::tools::mcp::{McpServerConfig, McpTransport};
use crate::tools::schema::Schema;

/// Per-tool timeout when `timeout_ms` is absent (HTTP tools and MCP calls).
pub const DEFAULT_TOOL_TIMEOUT_MS: u64 = 5_000;
/// Accepted `timeout_ms`.
pub const TOOL_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=60_000;
/// Largest HTTP tool response read when `max_response_bytes` is absent (bytes).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024;
/// Accepted `max_response_bytes`.
pub const MAX_RESPONSE_RANGE: std::ops::RangeInclusive<u64> = 256..=(4 * 1024 * 1024);
/// How long a tool may run before a pipeline agent says its filler phrase, when
/// `tool_filler_ms` is absent.
pub const DEFAULT_TOOL_FILLER_MS: u64 = 1_500;
/// The filler phrase when `filler` is absent.
pub const DEFAULT_FILLER: &str = "One moment, please.";

/// Names of the host's call-control tools, granted by listing them in `tools`.
pub const BUILTIN_TOOLS: [&str; 3] = ["end_call", "transfer_call", "record_result"];

/// One `[tools.NAME]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTool {
    /// `description`: what the tool does, for the model.
    pub description: Spanned<String>,
    /// `parameters`: JSON Schema of the arguments (an object schema); none for a tool without
    /// arguments.
    #[serde(default)]
    pub parameters: Option<Spanned<toml::Table>>,
    /// `url`: an HTTP tool's URL template (`{arg}` placeholders, percent-encoded).
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// `method`: `GET`, `POST` (default), `PUT`, `PATCH` or `DELETE`.
    #[serde(default)]
    pub method: Option<Spanned<String>>,
    /// `headers`: sent with every request; values may hold `${VAR}` secrets.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, Spanned<String>>>,
    /// `timeout_ms`: the whole request, connect to last byte.
    #[serde(default)]
    pub timeout_ms: Option<Spanned<i64>>,
    /// `max_response_bytes`: a longer response is an error result.
    #[serde(default)]
    pub max_response_bytes: Option<Spanned<i64>>,
    /// `lookup`: a `[lookups.NAME]` to search instead of an HTTP endpoint.
    #[serde(default)]
    pub lookup: Option<Spanned<String>>,
    /// `columns`: a lookup tool's columns the model is shown; all when absent.
    #[serde(default)]
    pub columns: Option<Spanned<Vec<String>>>,
}

/// One `[mcp.NAME]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcp {
    /// `url`: a Streamable HTTP endpoint.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// `command`: a program speaking MCP on stdin/stdout (relative to the config's folder
    /// when it contains a `/`).
    #[serde(default)]
    pub command: Option<Spanned<String>>,
    /// `args` of `command`.
    #[serde(default)]
    pub args: Option<Vec<Spanned<String>>>,
    /// `env`: extra environment variables of `command`.
    #[serde(default)]
    pub env: Option<BTreeMap<String, Spanned<String>>>,
    /// `headers` of every HTTP request; values may hold `${VAR}` secrets.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, Spanned<String>>>,
    /// `allow`: the tools agents may be granted; all the server lists when absent.
    #[serde(default)]
    pub allow: Option<Vec<Spanned<String>>>,
    /// `timeout_ms` of one `tools/call`.
    #[serde(default)]
    pub timeout_ms: Option<Spanned<i64>>,
}

/// A tool defined in `[tools.NAME]`.
#[derive(Debug, PartialEq)]
pub struct ToolDef {
    /// The name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// Its arguments' schema.
    pub parameters: Schema,
    /// What runs it.
    pub kind: ToolKind,
}

/// What runs a [`ToolDef`].
#[derive(Debug, PartialEq)]
pub enum ToolKind {
    /// An HTTP request.
    Http(HttpTool),
    /// A row of a lookup file, by its key column (the argument named after it; the caller's
    /// number when absent).
    Lookup {
        /// The `[lookups.NAME]` name.
        name: String,
        /// The loaded file.
        lookup: Arc<Lookup>,
        /// The columns the model is shown; `None`: all.
        columns: Option<Vec<String>>,
    },
}

/// An HTTP tool's request.
#[derive(Debug, PartialEq)]
pub struct HttpTool {
    /// The method.
    pub method: reqwest::Method,
    /// The URL template: `{name}` takes the argument `name`, percent-encoded.
    pub url: String,
    /// Headers, values secret.
    pub headers: Vec<(String, Secret)>,
    /// The whole request's timeout.
    pub timeout: Duration,
    /// Largest response body read (bytes).
    pub max_response_bytes: usize,
}

/// One entry of an agent's `tools`.
#[derive(Debug, Clone, PartialEq)]
pub enum Grant {
    /// A `[tools.NAME]` tool.
    Defined(Arc<ToolDef>),
    /// `end_call`: end the call once what is queued has played.
    EndCall,
    /// `transfer_call`: transfer to a number `transfer_to` allows.
    TransferCall,
    /// `record_result`: store the task's result (checked against its `result_schema`).
    RecordResult,
    /// `SERVER.*` (every tool the server allows) or `SERVER.TOOL`.
    Mcp {
        /// The `[mcp.NAME]` name.
        server: String,
        /// One tool, or all.
        tool: Option<String>,
    },
}

/// What an agent may do beyond talking.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentTools {
    /// Its grants, in file order (the order the model sees the tools in).
    pub grants: Vec<Grant>,
    /// Numbers (E.164) or prefixes ending in `*` that `transfer_call` may dial.
    pub transfer_to: Vec<String>,
    /// A pipeline agent says `filler` when a tool has run this long.
    pub filler_after: Duration,
    /// The filler phrase.
    pub filler: String,
    /// The schema `record_result` checks against, unless the task brings its own.
    pub result_schema: Option<Arc<Schema>>,
}

impl Default for AgentTools {
    fn default() -> Self {
        Self {
            grants: Vec::new(),
            transfer_to: Vec::new(),
            filler_after: Duration::from_millis(DEFAULT_TOOL_FILLER_MS),
            filler: DEFAULT_FILLER.into(),
            result_schema: None,
        }
    }
}

impl AgentTools {
    /// Whether `transfer_call` may dial `number` (E.164): it equals an entry, or starts with
    /// the digits of an entry ending in `*`.
    pub fn may_transfer_to(&self, number: &str) -> bool {
        is_e164(number)
            && self.transfer_to.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => number.len() > prefix.len() && number.starts_with(prefix),
                None => p == number,
            })
    }
}

/// An agent's tool keys as written, taken out of its raw table for [`Validator::agent_tools`].
#[derive(Debug, Default)]
pub struct RawAgentTools {
    /// `tools`: names of `[tools]`, built-ins, `SERVER.*` / `SERVER.TOOL`.
    pub tools: Option<Vec<Spanned<String>>>,
    /// `transfer_to`: numbers and `+prefix*` patterns.
    pub transfer_to: Option<Vec<Spanned<String>>>,
    /// `tool_filler_ms`.
    pub tool_filler_ms: Option<Spanned<i64>>,
    /// `filler`.
    pub filler: Option<Spanned<String>>,
    /// `result_schema`: JSON Schema of `record_result`'s argument.
    pub result_schema: Option<Spanned<toml::Table>>,
}

/// Whether `name` is one OpenAI's APIs accept for a function: `[A-Za-z0-9_-]{1,64}`.
pub fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Validator<'_> {
    /// Validates every `[tools.NAME]`.
    pub(super) fn tools(
        &mut self,
        raw: BTreeMap<String, Spanned<RawTool>>,
        path: &KeyPath,
        lookups: &BTreeMap<String, Arc<Lookup>>,
    ) -> BTreeMap<String, Arc<ToolDef>> {
        let mut tools = BTreeMap::new();
        for (name, tool) in raw {
            let path = path.key(&name);
            let span = tool.span();
            if !is_tool_name(&name) || BUILTIN_TOOLS.contains(&name.as_str()) {
                self.err(
                    Some(span.clone()),
                    &path,
                    ConfigErrorKind::Tool(format!(
                        "tool name {name:?} must be 1–64 of A–Z a–z 0–9 _ - and not a built-in ({})",
                        BUILTIN_TOOLS.join(", ")
                    )),
                );
                continue;
            }
            let tool = tool.into_inner();
            let parameters = self.schema(tool.parameters, &path.key("parameters"), true);
            let kind = match (tool.url, tool.lookup) {
                (Some(url), None) => self
                    .http_tool(
                        url,
                        tool.method,
                        tool.headers,
                        tool.timeout_ms,
                        tool.max_response_bytes,
                        &path,
                    )
                    .map(ToolKind::Http),
                (None, Some(lookup)) => {
                    let l_span = lookup.span();
                    let l_name = lookup.into_inner();
                    match lookups.get(&l_name) {
                        Some(l) => {
                            let columns = tool.columns.map(|c| {
                                let span = c.span();
                                let columns = c.into_inner();
                                for column in &columns {
                                    if !l.columns.contains(column) {
                                        self.err(
                                            Some(span.clone()),
                                            &path.key("columns"),
                                            ConfigErrorKind::UnknownCallerColumn {
                                                column: column.clone(),
                                                lookup: l_name.clone(),
                                                columns: l.columns.join(", "),
                                            },
                                        );
                                    }
                                }
                                columns
                            });
                            Some(ToolKind::Lookup {
                                name: l_name,
                                lookup: l.clone(),
                                columns,
                            })
                        }
                        None => {
                            let known = known_list(
                                lookups.keys().map(String::as_str),
                                "no [lookups] are defined",
                            );
                            self.err(
                                Some(l_span),
                                &path.key("lookup"),
                                ConfigErrorKind::UnknownLookup {
                                    name: l_name,
                                    known,
                                },
                            );
                            None
                        }
                    }
                }
                _ => {
                    self.err(
                        Some(span),
                        &path,
                        ConfigErrorKind::Tool(
                            "a tool needs `url` (an HTTP tool) or `lookup` (a lookup file), not both"
                                .into(),
                        ),
                    );
                    None
                }
            };
            let parameters = match (parameters, &kind) {
                (Some(p), _) => p,
                // A lookup tool's one optional argument is its key column.
                (None, Some(ToolKind::Lookup { lookup, .. })) => match Schema::compile(
                    serde_json::json!({"type": "object", "properties": {
                        lookup.key.clone(): {"type": "string", "description":
                            format!("The {} to look up; the caller's phone number when omitted", lookup.key)}}}),
                    true,
                ) {
                    Ok(s) => s,
                    Err(_) => continue,
                },
                (None, _) => match Schema::compile(
                    serde_json::json!({"type": "object", "properties": {}}),
                    true,
                ) {
                    Ok(s) => s,
                    Err(_) => continue,
                },
            };
            if let Some(kind) = kind {
                tools.insert(
                    name.clone(),
                    Arc::new(ToolDef {
                        name,
                        description: tool.description.into_inner(),
                        parameters,
                        kind,
                    }),
                );
            }
        }
        tools
    }

    /// A JSON Schema table, compiled; `None` (with an error when it was written) otherwise.
    fn schema(
        &mut self,
        raw: Option<Spanned<toml::Table>>,
        path: &KeyPath,
        object: bool,
    ) -> Option<Schema> {
        let raw = raw?;
        let span = raw.span();
        let json = self.json(toml::Value::Table(raw.into_inner()), path);
        match Schema::compile(json, object) {
            Ok(s) => Some(s),
            Err(reason) => {
                self.err(Some(span), path, ConfigErrorKind::Tool(reason));
                None
            }
        }
    }

    fn timeout(&mut self, raw: Option<Spanned<i64>>, path: &KeyPath) -> Duration {
        Duration::from_millis(
            self.in_range(raw, TOOL_TIMEOUT_RANGE_MS, path)
                .unwrap_or(DEFAULT_TOOL_TIMEOUT_MS),
        )
    }

    fn http_tool(
        &mut self,
        url: Spanned<String>,
        method: Option<Spanned<String>>,
        headers: Option<BTreeMap<String, Spanned<String>>>,
        timeout_ms: Option<Spanned<i64>>,
        max_response_bytes: Option<Spanned<i64>>,
        path: &KeyPath,
    ) -> Option<HttpTool> {
        let url_span = url.span();
        let url = url.into_inner();
        let mut ok = true;
        // The template must be a URL once its placeholders are filled.
        let probe = fill_probe(&url);
        match url::Url::parse(&probe) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                self.err(
                    Some(url_span),
                    &path.key("url"),
                    ConfigErrorKind::Tool(format!("{url:?} is not an http(s) URL template")),
                );
                ok = false;
            }
        }
        let method = match method {
            None => reqwest::Method::POST,
            Some(m) => {
                let span = m.span();
                match m.get_ref().to_ascii_uppercase().as_str() {
                    "GET" => reqwest::Method::GET,
                    "POST" => reqwest::Method::POST,
                    "PUT" => reqwest::Method::PUT,
                    "PATCH" => reqwest::Method::PATCH,
                    "DELETE" => reqwest::Method::DELETE,
                    _ => {
                        self.err(
                            Some(span),
                            &path.key("method"),
                            ConfigErrorKind::Tool(format!(
                                "method {:?} is not one of GET, POST, PUT, PATCH, DELETE",
                                m.get_ref()
                            )),
                        );
                        ok = false;
                        reqwest::Method::POST
                    }
                }
            }
        };
        let headers = self.headers(headers, &path.key("headers"), &mut ok);
        let timeout = self.timeout(timeout_ms, &path.key("timeout_ms"));
        let max_response_bytes = self
            .in_range(
                max_response_bytes,
                MAX_RESPONSE_RANGE,
                &path.key("max_response_bytes"),
            )
            .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        ok.then(|| HttpTool {
            method,
            url,
            headers: headers
                .into_iter()
                .map(|(k, v)| (k, Secret::new(v)))
                .collect(),
            timeout,
            max_response_bytes: usize::try_from(max_response_bytes).unwrap_or(usize::MAX),
        })
    }

    fn headers(
        &mut self,
        raw: Option<BTreeMap<String, Spanned<String>>>,
        path: &KeyPath,
        ok: &mut bool,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, value) in raw.unwrap_or_default() {
            let span = value.span();
            let value = value.into_inner();
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(&value).is_err()
            {
                // The value is not echoed: it may be a secret.
                self.err(
                    Some(span),
                    &path.key(&name),
                    ConfigErrorKind::Tool(format!("header {name:?} is not a valid HTTP header")),
                );
                *ok = false;
                continue;
            }
            out.push((name, value));
        }
        out
    }

    /// Validates every `[mcp.NAME]`.
    pub(super) fn mcp(
        &mut self,
        raw: BTreeMap<String, Spanned<RawMcp>>,
        path: &KeyPath,
    ) -> Vec<McpServerConfig> {
        let mut servers = Vec::new();
        for (name, server) in raw {
            let path = path.key(&name);
            let span = server.span();
            let server = server.into_inner();
            let mut ok = true;
            if name.is_empty() || name.contains('.') {
                self.err(
                    Some(span.clone()),
                    &path,
                    ConfigErrorKind::Tool(format!("MCP server name {name:?} must not contain '.'")),
                );
                ok = false;
            }
            let headers = self.headers(server.headers, &path.key("headers"), &mut ok);
            let transport = match (server.url, server.command) {
                (Some(url), None) => {
                    let u_span = url.span();
                    let url = url.into_inner();
                    match url::Url::parse(&url) {
                        Ok(u) if matches!(u.scheme(), "http" | "https") => {
                            Some(McpTransport::Http { url })
                        }
                        _ => {
                            self.err(
                                Some(u_span),
                                &path.key("url"),
                                ConfigErrorKind::Tool(format!("{url:?} is not an http(s) URL")),
                            );
                            None
                        }
                    }
                }
                (None, Some(command)) => {
                    let command = command.into_inner();
                    let command = if command.contains('/') {
                        super::validate::resolve_plugin_path(self.source_path(), &command)
                            .to_string_lossy()
                            .into_owned()
                    } else {
                        command
                    };
                    Some(McpTransport::Stdio {
                        command,
                        args: server
                            .args
                            .unwrap_or_default()
                            .into_iter()
                            .map(Spanned::into_inner)
                            .collect(),
                        env: server
                            .env
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_inner()))
                            .collect(),
                    })
                }
                _ => {
                    self.err(
                        Some(span),
                        &path,
                        ConfigErrorKind::Tool(
                            "an MCP server needs `url` (Streamable HTTP) or `command` (stdio), not both"
                                .into(),
                        ),
                    );
                    None
                }
            };
            let allow = server.allow.map(|names| {
                names
                    .into_iter()
                    .map(Spanned::into_inner)
                    .collect::<Vec<_>>()
            });
            let call_timeout = self.timeout(server.timeout_ms, &path.key("timeout_ms"));
            if let (Some(transport), true) = (transport, ok) {
                servers.push(McpServerConfig {
                    name,
                    transport,
                    allow,
                    headers,
                    call_timeout,
                });
            }
        }
        servers
    }

    /// Validates an agent's tool keys against the defined tools and MCP servers.
    pub(super) fn agent_tools(
        &mut self,
        raw: RawAgentTools,
        path: &KeyPath,
        tools: &BTreeMap<String, Arc<ToolDef>>,
        declared_tools: &BTreeSet<String>,
        mcp: &BTreeSet<String>,
    ) -> AgentTools {
        let mut out = AgentTools::default();
        let mut seen = BTreeSet::new();
        for (i, entry) in raw.tools.unwrap_or_default().into_iter().enumerate() {
            let span = entry.span();
            let name = entry.into_inner();
            let entry_path = path.key("tools").index(i);
            if !seen.insert(name.clone()) {
                self.err(
                    Some(span),
                    &entry_path,
                    ConfigErrorKind::Tool(format!("{name:?} is granted twice")),
                );
                continue;
            }
            let grant = match name.as_str() {
                "end_call" => Some(Grant::EndCall),
                "transfer_call" => Some(Grant::TransferCall),
                "record_result" => Some(Grant::RecordResult),
                _ => match name.split_once('.') {
                    Some((server, tool)) if mcp.contains(server) => Some(Grant::Mcp {
                        server: server.to_string(),
                        tool: (tool != "*").then(|| tool.to_string()),
                    }),
                    _ => tools.get(&name).cloned().map(Grant::Defined),
                },
            };
            match grant {
                Some(g) => out.grants.push(g),
                // A tool that failed validation is reported at its definition.
                None if declared_tools.contains(&name) => {}
                None => {
                    let known = known_list(
                        BUILTIN_TOOLS
                            .iter()
                            .copied()
                            .chain(declared_tools.iter().map(String::as_str))
                            .chain(mcp.iter().map(|s| s.as_str())),
                        "none",
                    );
                    self.err(
                        Some(span),
                        &entry_path,
                        ConfigErrorKind::UnknownTool {
                            name,
                            known: format!(
                                "{known}; an MCP server's tools as SERVER.* or SERVER.TOOL"
                            ),
                        },
                    );
                }
            }
        }
        for (i, pattern) in raw.transfer_to.unwrap_or_default().into_iter().enumerate() {
            let span = pattern.span();
            let pattern = pattern.into_inner();
            let digits = pattern.strip_suffix('*').unwrap_or(&pattern);
            let valid = if pattern.ends_with('*') {
                digits.starts_with('+')
                    && digits.len() >= 2
                    && digits[1..].bytes().all(|b| b.is_ascii_digit())
            } else {
                is_e164(&pattern)
            };
            if valid {
                out.transfer_to.push(pattern);
            } else {
                self.err(
                    Some(span),
                    &path.key("transfer_to").index(i),
                    ConfigErrorKind::Tool(format!(
                        "{pattern:?} is neither an E.164 number nor a prefix like \"+1415555*\""
                    )),
                );
            }
        }
        if out.grants.iter().any(|g| matches!(g, Grant::TransferCall)) && out.transfer_to.is_empty()
        {
            let span = self.locate(&path.key("tools"));
            self.err(
                span,
                &path.key("tools"),
                ConfigErrorKind::Tool(
                    "`transfer_call` is granted but `transfer_to` lists no numbers".into(),
                ),
            );
        }
        if let Some(ms) = self.in_range(raw.tool_filler_ms, 0..=60_000, &path.key("tool_filler_ms"))
        {
            out.filler_after = Duration::from_millis(ms);
        }
        if let Some(filler) = raw.filler {
            out.filler = filler.into_inner();
        }
        out.result_schema = self
            .schema(raw.result_schema, &path.key("result_schema"), false)
            .map(Arc::new);
        out
    }
}

/// `template` with every `{name}` replaced by a harmless value, to check it is a URL.
fn fill_probe(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                out.push('x');
                rest = &rest[start + end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_follow_openai() {
        assert!(is_tool_name("order_status"));
        assert!(is_tool_name("a-b_9"));
        assert!(!is_tool_name(""));
        assert!(!is_tool_name("crm.find"));
        assert!(!is_tool_name(&"x".repeat(65)));
    }

    #[test]
    fn transfer_patterns() {
        let tools = AgentTools {
            transfer_to: vec!["+14155550100".into(), "+1212*".into()],
            ..AgentTools::default()
        };
        assert!(tools.may_transfer_to("+14155550100"));
        assert!(tools.may_transfer_to("+12125550199"));
        assert!(!tools.may_transfer_to("+14155550101"));
        assert!(!tools.may_transfer_to("+1212"));
        assert!(!tools.may_transfer_to("12125550199"));
    }

    #[test]
    fn url_templates_are_probed_with_placeholders_filled() {
        assert_eq!(fill_probe("https://x/{a}/b?c={d}"), "https://x/x/b?c=x");
        assert_eq!(fill_probe("https://x/{a"), "https://x/{a");
    }
}
