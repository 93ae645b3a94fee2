//! The voice webhook's request: Twilio's parameters, sent as a form body (POST) or a query
//! string (GET), and the public URL the request was made to.
//!
//! Source: <https://www.twilio.com/docs/usage/webhooks/voice-webhooks>.

/// Parameters of one webhook request, in the order they arrived: query string first, then form
/// body. Repeated keys are kept (Twilio's signature covers each value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookParams {
    /// `(name, value)` pairs, percent-decoded.
    pub pairs: Vec<(String, String)>,
    /// How many of `pairs` came from the URL's query string (they come first).
    pub query_len: usize,
}

impl WebhookParams {
    /// Parses a query string (without `?`) and an `application/x-www-form-urlencoded` body.
    pub fn parse(query: Option<&str>, body: &[u8]) -> Self {
        let mut pairs: Vec<(String, String)> = query
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let query_len = pairs.len();
        pairs.extend(form_urlencoded::parse(body).into_owned());
        Self { pairs, query_len }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Pairs from the form body: what Twilio's signature covers besides the URL.
    pub fn form(&self) -> &[(String, String)] {
        &self.pairs[self.query_len..]
    }

    /// Pairs from the URL's query string: routing hints an operator put in the Voice URL, such
    /// as `?merchantId=m-42` or `?agent=sales`.
    pub fn query(&self) -> &[(String, String)] {
        &self.pairs[..self.query_len]
    }
}

/// The base URL (`scheme://host[:port]`) Twilio used to reach this gateway: the configured
/// `public_url`, else the request's `Host` with `X-Forwarded-Proto` (default `http`).
pub fn public_base(
    configured: Option<&str>,
    host: Option<&str>,
    forwarded_proto: Option<&str>,
) -> Option<String> {
    if let Some(url) = configured {
        return Some(url.trim_end_matches('/').to_string());
    }
    let host = host?.trim();
    if host.is_empty() || host.contains(['/', ' ', '"', '<', '>']) {
        return None;
    }
    let scheme = match forwarded_proto.map(str::trim) {
        Some("https") => "https",
        _ => "http",
    };
    Some(format!("{scheme}://{host}"))
}

/// The WebSocket form of a public base URL: `https` becomes `wss`, `http` becomes `ws`.
pub fn ws_base(public_base: &str) -> String {
    if let Some(rest) = public_base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = public_base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        public_base.to_string()
    }
}

/// The Media Streams URL for a public base URL: `https` becomes `wss`, `http` becomes `ws`.
pub fn media_stream_url(public_base: &str) -> String {
    format!("{}/twilio/media-stream", ws_base(public_base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_then_form() {
        let p = WebhookParams::parse(
            Some("merchantId=m-42&agent=a%20b"),
            b"CallSid=CA1&From=%2B15551230001&To=%2B15559870002&Digits=1&Digits=2",
        );
        assert_eq!(p.query().len(), 2);
        assert_eq!(p.get("agent"), Some("a b"));
        assert_eq!(p.get("From"), Some("+15551230001"));
        assert_eq!(p.pairs.iter().filter(|(k, _)| k == "Digits").count(), 2);
    }

    #[test]
    fn public_urls() {
        assert_eq!(
            public_base(Some("https://voice.example.com/"), Some("x"), None).as_deref(),
            Some("https://voice.example.com")
        );
        assert_eq!(
            public_base(None, Some("127.0.0.1:8080"), None).as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            public_base(None, Some("abc.ngrok.app"), Some("https")).as_deref(),
            Some("https://abc.ngrok.app")
        );
        assert_eq!(public_base(None, Some("evil\"/x"), None), None);
        assert_eq!(public_base(None, None, None), None);
        assert_eq!(
            media_stream_url("https://voice.example.com"),
            "wss://voice.example.com/twilio/media-stream"
        );
        assert_eq!(
            media_stream_url("http://127.0.0.1:8080"),
            "ws://127.0.0.1:8080/twilio/media-stream"
        );
    }
}
