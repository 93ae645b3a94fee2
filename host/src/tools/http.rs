//! HTTP tools: one request per call, built from the tool's `[tools.NAME]` template and the
//! model's (already schema-checked) arguments.
//!
//! - `{name}` in the URL takes the argument `name`, percent-encoded as a path segment or query
//!   value (RFC 3986 unreserved characters kept); a missing one is an error result.
//! - The arguments the URL did not use go into the query string (`GET`, `DELETE`) or the JSON
//!   body (`POST`, `PUT`, `PATCH`).
//! - The response must be 2xx and at most `max_response_bytes`; a JSON body is the output as
//!   it is, any other text becomes a JSON string. Anything else (a timeout, a refused
//!   connection, a 500, a body too large) is an error result naming the cause, for the model.

use futures_util::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::config::tools::HttpTool;
use crate::plugin::tools::ToolOutcome;

/// Characters escaped in a filled placeholder: all but RFC 3986 unreserved ones.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Longest excerpt of an error response's body put in the error result (characters).
const ERROR_BODY_CHARS: usize = 200;

/// Runs one call of `tool` with `arguments`.
pub async fn run(
    client: &reqwest::Client,
    tool: &HttpTool,
    mut arguments: Map<String, Value>,
) -> ToolOutcome {
    let url = match fill_url(&tool.url, &mut arguments) {
        Ok(u) => u,
        Err(e) => return ToolOutcome::Error(e),
    };
    let with_body = matches!(
        tool.method,
        reqwest::Method::POST | reqwest::Method::PUT | reqwest::Method::PATCH
    );
    let mut url = match url::Url::parse(&url) {
        Ok(u) => u,
        Err(e) => {
            return ToolOutcome::Error(format!("invalid arguments: the URL does not parse ({e})"));
        }
    };
    if !with_body && !arguments.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in &arguments {
            pairs.append_pair(k, &plain(v));
        }
    }
    let mut request = client
        .request(tool.method.clone(), url)
        .timeout(tool.timeout)
        .header(reqwest::header::ACCEPT, "application/json");
    for (name, value) in &tool.headers {
        request = request.header(name.as_str(), value.expose());
    }
    if with_body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(Value::Object(arguments).to_string());
    }
    let secs = tool.timeout.as_secs_f64();
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return ToolOutcome::Error(format!("the tool timed out after {secs:.1} s"));
        }
        Err(e) => {
            return ToolOutcome::Error(format!(
                "the tool's server could not be reached ({})",
                cause(&e)
            ));
        }
    };
    let status = response.status();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                if body.len() + bytes.len() > tool.max_response_bytes {
                    return ToolOutcome::Error(format!(
                        "the tool's response is larger than {} bytes",
                        tool.max_response_bytes
                    ));
                }
                body.extend_from_slice(&bytes);
            }
            Err(e) if e.is_timeout() => {
                return ToolOutcome::Error(format!("the tool timed out after {secs:.1} s"));
            }
            Err(e) => {
                return ToolOutcome::Error(format!(
                    "the tool's response broke off ({})",
                    cause(&e)
                ));
            }
        }
    }
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        return ToolOutcome::Error(format!(
            "the tool's server answered HTTP {}: {}",
            status.as_u16(),
            super::truncate(text.trim(), ERROR_BODY_CHARS)
        ));
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(json) => ToolOutcome::Output(json.to_string()),
        Err(_) => ToolOutcome::Output(Value::String(text.into_owned()).to_string()),
    }
}

/// The innermost error's words, without the URL (which may hold an argument).
fn cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    if e.is_connect() {
        format!("connection failed: {source}")
    } else {
        source.to_string()
    }
}

/// A JSON value as plain text: a string unquoted, anything else as JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `template` with each `{name}` replaced by the argument `name`, percent-encoded; used
/// arguments are removed from `arguments`.
///
/// # Errors
/// A placeholder names an argument the call did not give.
pub fn fill_url(template: &str, arguments: &mut Map<String, Value>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut used = Vec::new();
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &rest[start + 1..start + len];
        match arguments.get(name) {
            Some(value) if !value.is_null() => {
                out.extend(utf8_percent_encode(&plain(value), COMPONENT));
                used.push(name.to_string());
            }
            _ => return Err(format!("invalid arguments: {name:?} is required")),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    for name in used {
        arguments.remove(&name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn placeholders_are_filled_encoded_and_consumed() {
        let mut a = args(json!({"order": "10 42/x", "n": 3, "keep": true}));
        let url = fill_url("https://x.test/orders/{order}?n={n}", &mut a);
        assert_eq!(url.as_deref(), Ok("https://x.test/orders/10%2042%2Fx?n=3"));
        assert_eq!(a, args(json!({"keep": true})));
    }

    #[test]
    fn a_missing_placeholder_is_an_error_for_the_model() {
        let mut a = args(json!({}));
        let err = fill_url("https://x.test/orders/{order}", &mut a).unwrap_err();
        assert!(err.contains("\"order\" is required"), "{err}");
    }
}
