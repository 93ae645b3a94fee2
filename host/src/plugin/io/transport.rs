//! The network side of host I/O: the tasks [`super::IoDriver`] runs for a WebSocket or an HTTP
//! request, TLS set-up, and the resolver that keeps a tenant's plugin off private addresses.

use super::*;

/// Installs rustls' process-wide crypto provider once (aws-lc-rs), so TLS clients can be built.
fn install_crypto_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// True for an address a tenant's plugin must not reach by a host name: loopback, private
/// (RFC 1918, RFC 4193), link-local (169.254/16 — cloud metadata — and fe80::/10), carrier-grade
/// NAT (100.64/10), unspecified, broadcast; IPv4-mapped IPv6 by its IPv4 address.
pub fn is_private(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(a) => {
            let [first, second, ..] = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || (first == 100 && (64..128).contains(&second))
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_private(IpAddr::V4(v4)),
            None => {
                let head = a.segments()[0];
                a.is_loopback()
                    || a.is_unspecified()
                    || (head & 0xfe00) == 0xfc00
                    || (head & 0xffc0) == 0xfe80
            }
        },
    }
}

/// The addresses `name` resolved to that a plugin may reach: all of them for `localhost` (an
/// allowed host that names the loopback explicitly), else only public ones ([`is_private`]).
///
/// # Errors
/// Every address was private: the message names the host, never the addresses.
pub fn public_only(
    name: &str,
    addrs: impl IntoIterator<Item = std::net::SocketAddr>,
) -> Result<Vec<std::net::SocketAddr>, String> {
    let addrs: Vec<_> = addrs.into_iter().collect();
    if name.eq_ignore_ascii_case("localhost") {
        return Ok(addrs);
    }
    let public: Vec<_> = addrs.into_iter().filter(|a| !is_private(a.ip())).collect();
    if public.is_empty() {
        Err(format!(
            "{name} resolves to a private address; name the address itself in allowed_hosts \
             or set [server] allow_private_destinations = true"
        ))
    } else {
        Ok(public)
    }
}

/// reqwest's resolver for plugin requests under [`public_only`] (host names only: an IP
/// literal in a URL is never resolved, and passed the allow-list by being named).
struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public = public_only(&host, addrs)?;
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Connects the TCP stream of a WebSocket to `url`'s host under [`public_only`]: IP literals
/// as they are, names through the resolver and the filter.
async fn connect_public(url: &url::Url) -> Result<tokio::net::TcpStream, String> {
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<std::net::SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![(ip, port).into()],
        Some(url::Host::Ipv6(ip)) => vec![(ip, port).into()],
        Some(url::Host::Domain(name)) => {
            let resolved = tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| format!("cannot resolve {name}: {e}"))?;
            public_only(name, resolved)?
        }
        None => return Err("the URL has no host".into()),
    };
    let mut last = String::from("no address");
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("connect failed: {last}"))
}

pub(super) async fn websocket(
    id: u32,
    url: String,
    headers: Vec<(String, String)>,
    public_only: bool,
    mut commands: mpsc::Receiver<SocketCommand>,
    events: mpsc::Sender<IoEvent>,
) {
    install_crypto_provider();
    let failed = |error: String| IoEvent::Failed { target: id, error };
    let mut request = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => {
            let _ = events.send(failed(format!("bad WebSocket URL: {e}"))).await;
            return;
        }
    };
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()),
            tokio_tungstenite::tungstenite::http::HeaderValue::from_str(&value),
        ) else {
            let _ = events.send(failed(format!("bad header {name:?}"))).await;
            return;
        };
        request.headers_mut().append(name, value);
    }
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_UPSTREAM_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_UPSTREAM_MESSAGE_BYTES));
    // TCP_NODELAY: each caller frame is a small write that must leave at once, not wait for
    // the previous one's ACK (Nagle). The handshake follows no redirect: a 3xx fails it.
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        if public_only {
            let parsed = url::Url::parse(&url).map_err(|e| e.to_string())?;
            let stream = connect_public(&parsed).await?;
            tokio_tungstenite::client_async_tls_with_config(request, stream, Some(config), None)
                .await
                .map_err(|e| format!("connect failed: {e}"))
        } else {
            tokio_tungstenite::connect_async_with_config(request, Some(config), true)
                .await
                .map_err(|e| format!("connect failed: {e}"))
        }
    })
    .await;
    let mut ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            let _ = events.send(failed(e)).await;
            return;
        }
        Err(_) => {
            let _ = events
                .send(failed(format!(
                    "connect timed out after {} s",
                    CONNECT_TIMEOUT.as_secs()
                )))
                .await;
            return;
        }
    };
    if events.send(IoEvent::WsOpened(id)).await.is_err() {
        return;
    }
    let mut closing = false;
    loop {
        tokio::select! {
            command = commands.recv(), if !closing => {
                let result = match command {
                    Some(SocketCommand::Send(Payload::Text(t))) => ws.send(WsMessage::Text(t.into())).await,
                    Some(SocketCommand::Send(Payload::Binary(b))) => ws.send(WsMessage::Binary(b.into())).await,
                    Some(SocketCommand::Close) | None => {
                        closing = true;
                        ws.close(None).await
                    }
                };
                if let Err(e) = result {
                    let _ = events.send(IoEvent::WsClosed { socket: id, code: 1006, reason: e.to_string() }).await;
                    return;
                }
            }
            message = ws.next() => {
                let event = match message {
                    Some(Ok(WsMessage::Text(t))) => IoEvent::WsMessage { socket: id, message: Payload::Text(t.to_string()) },
                    Some(Ok(WsMessage::Binary(b))) => IoEvent::WsMessage { socket: id, message: Payload::Binary(b.to_vec()) },
                    Some(Ok(WsMessage::Close(frame))) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        let _ = events.send(IoEvent::WsClosed { socket: id, code, reason }).await;
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => IoEvent::WsClosed { socket: id, code: 1006, reason: e.to_string() },
                    None => IoEvent::WsClosed { socket: id, code: 1006, reason: "connection closed".into() },
                };
                let closed = matches!(event, IoEvent::WsClosed { .. });
                if events.send(event).await.is_err() || closed {
                    return;
                }
            }
        }
    }
}

/// The HTTP clients shared by every session (connection pools per host): one that resolves
/// names to public addresses only ([`PublicResolver`]), one that does not. Neither follows
/// redirects: the allow-list was checked against the request's URL, and a 3xx could point
/// anywhere, so it reaches the plugin as it came (its own `http-send` to the new location is
/// checked like any other).
fn http_client(public_only: bool) -> Result<&'static reqwest::Client, String> {
    static PUBLIC: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    static ANY: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    let build = || {
        install_crypto_provider();
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        let builder = if public_only {
            builder.dns_resolver(PublicResolver)
        } else {
            builder
        };
        builder.build().map_err(|e| e.to_string())
    };
    let cell = if public_only { &PUBLIC } else { &ANY };
    cell.get_or_init(build).as_ref().map_err(Clone::clone)
}

/// `e` and its sources, joined with `: ` (reqwest's own text leaves out why a request failed).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(super) async fn http(
    id: u32,
    request: HttpRequest,
    public_only: bool,
    events: mpsc::Sender<IoEvent>,
) {
    let failed = |error: String| IoEvent::Failed { target: id, error };
    let client = match http_client(public_only) {
        Ok(c) => c,
        Err(e) => {
            let _ = events.send(failed(format!("no HTTP client: {e}"))).await;
            return;
        }
    };
    let method =
        reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut builder = client.request(method, &request.url).body(request.body);
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    let response = match builder.send().await {
        Ok(r) => r,
        Err(e) => {
            let _ = events
                .send(failed(format!("request failed: {}", error_chain(&e))))
                .await;
            return;
        }
    };
    let head = IoEvent::HttpHead {
        request: id,
        status: response.status().as_u16(),
        headers: response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    if events.send(head).await.is_err() {
        return;
    }
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let event = match chunk {
            Ok(data) => IoEvent::HttpChunk {
                request: id,
                data: data.to_vec(),
            },
            Err(e) => failed(format!("response body failed: {e}")),
        };
        let failed = matches!(event, IoEvent::Failed { .. });
        if events.send(event).await.is_err() || failed {
            return;
        }
    }
    let _ = events.send(IoEvent::HttpDone(id)).await;
}
