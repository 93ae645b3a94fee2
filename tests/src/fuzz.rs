//! Fuzz targets: one function per input the gateway takes from outside, each taking arbitrary
//! bytes and panicking only when the gateway broke a rule (a panic inside the gateway, a stuck
//! call, an answer a peer could not read).
//!
//! The same functions run two ways:
//! - coverage-guided, under libFuzzer: `tests/fuzz/` is a `cargo fuzz` project whose targets each
//!   call one of these (`cargo fuzz run --fuzz-dir tests/fuzz <target>`; see its README);
//! - in the normal test suite, at a small count ([`smoke`]): each target's seeds, then seeded
//!   random mutations of them, so CI runs every target on every change.
//!
//! | target | input | rule |
//! |---|---|---|
//! | [`media_stream`] | one WebSocket text message | parsed or refused; a parsed `media` payload decodes or errs |
//! | [`webhook`] | query, form body, signature and `Host` of a request to `/twilio/voice` or `/twilio/status` | never a 5xx; a voice answer is TwiML an XML parser reads; an unsigned request is refused |
//! | [`agents_toml`] | agents.toml text | loads, or every error names the file |
//! | [`twiml`] | text said and passed as a stream parameter | an XML parser reads back exactly that text |
//! | [`codec`] | audio bytes and rates | G.711 round trip exact; resampler and frame converters keep their length rules |
//! | [`plugin_boundary`] | a script of plugin outputs, played through a whole call | the call ends, every message to Twilio is well formed, and a failure is the plugin's |

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use switchboard::audio::convert::{FromPlugin, PLAY_RATES, ToPlugin};
use switchboard::audio::mulaw;
use switchboard::audio::resample::Resampler;
use switchboard::call::{CallContext, EndReason};
use switchboard::config::{self, Source};
use switchboard::plugin::wasm::{Allocator, WasmEngine};
use switchboard::plugin::{AudioEncoding, AudioFormat, Plugins};
use switchboard::server::{self, AppState};
use switchboard::twilio::media_stream::{self, Inbound};
use switchboard::twilio::signature::{self, Algorithm};
use switchboard::twiml::{Connect, Response, Say, Stream};
use tower::ServiceExt as _;

use crate::memory_socket::{self, media_payload, start, stop};

/// A fuzz target: arbitrary bytes in, a panic when the gateway broke the target's rule.
pub type Target = fn(&[u8]);

/// Every target, by name (the names of `tests/fuzz/fuzz_targets/*.rs`).
pub const TARGETS: [(&str, Target); 6] = [
    ("media_stream", media_stream),
    ("webhook", webhook),
    ("agents_toml", agents_toml),
    ("twiml", twiml),
    ("codec", codec),
    ("plugin_boundary", plugin_boundary),
];

/// The shipped agents.toml, the seed of [`agents_toml`].
pub const SHIPPED_AGENTS: &str = include_str!("../../agents.toml");

/// Seeds for `target`: real inputs to start mutating from.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let text = |s: &str| s.as_bytes().to_vec();
    match target {
        "media_stream" => vec![
            text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#),
            text(
                r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"merchantId":"m-42"}},"streamSid":"MZ1"}"#,
            ),
            text(
                r#"{"event":"media","sequenceNumber":"3","streamSid":"MZ1","media":{"track":"inbound","chunk":"2","timestamp":"40","payload":"/////w=="}}"#,
            ),
            text(r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ1","mark":{"name":"m1"}}"#),
            text(
                r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}"#,
            ),
            text(
                r#"{"event":"stop","sequenceNumber":"6","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#,
            ),
        ],
        "webhook" => vec![
            webhook_input(
                0,
                "",
                "CallSid=CA1&From=%2B15551230000&To=%2B15005550006&AccountSid=AC1&Direction=inbound",
                "",
            ),
            webhook_input(3, "merchantId=m-42", "CallSid=CA2&To=%2B15005550006", ""),
            webhook_input(
                4,
                "",
                "CallSid=CA3&CallStatus=completed&CallDuration=12",
                "",
            ),
            webhook_input(1, "CallSid=CA4&agent=nobody", "", ""),
        ],
        "agents_toml" => vec![text(SHIPPED_AGENTS)],
        "twiml" => vec![
            text("Hello & <welcome> \"caller\" 'x' \t\n ünïcödé ☎"),
            Vec::new(),
        ],
        "codec" => vec![(0u8..=255).collect(), vec![1, 7, 0xFF, 0x7F, 0, 0x80]],
        "plugin_boundary" => vec![
            // play μ-law, mark, play PCM16 at 16 kHz, clear, transcript, hang up.
            vec![
                0, 30, 0, 3, 2, b'm', b'1', 1, 0x80, 0x3E, 40, 2, 4, 5, b'h', b'e', b'l', b'l',
                b'o', 7,
            ],
            // odd rates and lengths, a long mark, a transfer.
            vec![1, 0x41, 0x1F, 7, 0, 9, 3, 3, 255, 6, 3, b'+', b'1', b'5'],
            // big audio.
            vec![0, 255, 0, 1, 0xC0, 0x5D, 255],
        ],
        _ => Vec::new(),
    }
}

/// Writes `target`'s [`seeds`] into `cargo fuzz`'s default corpus directory
/// (`tests/fuzz/corpus/<target>/seed-N`) when they are not there yet, so a first run starts from
/// real inputs. Called by each libFuzzer target's `init`.
pub fn write_seeds(target: &str) {
    let dir = crate::workspace_root()
        .join("tests/fuzz/corpus")
        .join(target);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    for (i, seed) in seeds(target).iter().enumerate() {
        let path = dir.join(format!("seed-{i}"));
        if !path.exists() {
            let _ = std::fs::write(path, seed);
        }
    }
}

/// Splits fuzz bytes into `N` parts at NUL bytes (missing parts are empty; the last part takes
/// the rest, NULs and all).
fn parts<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&[][..]; N];
    let mut rest = data;
    for (i, part) in out.iter_mut().enumerate() {
        if i + 1 == N {
            *part = rest;
            break;
        }
        match rest.iter().position(|b| *b == 0) {
            Some(at) => {
                *part = &rest[..at];
                rest = &rest[at + 1..];
            }
            None => {
                *part = rest;
                rest = &[];
            }
        }
    }
    out
}

/// The WASM engine the targets load plugins with (pooled, as the gateway runs them).
fn engine() -> WasmEngine {
    WasmEngine::with_allocator(Allocator::Pooling { sessions: 8 }).expect("a WASM engine")
}

/// A current-thread runtime for the async targets, one per thread.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a tokio runtime");
    }
    RUNTIME.with(|rt| rt.block_on(f))
}

/// One WebSocket text message from Twilio (or anyone who reached the stream URL): parsed or
/// refused with an error, never a panic; a parsed `media` payload decodes or errs, and a
/// decoded payload is what its base64 says.
pub fn media_stream(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = media_stream::event_name(&text);
    if let Ok(Inbound::Media { media, .. }) = media_stream::parse(&text) {
        let mut out = Vec::new();
        if media.decode_payload(&mut out).is_ok() {
            assert!(out.len() <= text.len(), "a payload longer than its message");
        }
    }
}

/// The webhook target's agents.toml: signatures checked, in-memory records, a public URL, two
/// agents (by number and by `merchantId`) and a default.
const WEBHOOK_CONFIG: &str = r#"
[server]
public_url = "https://gw.example.com"

[twilio]
auth_token = "fuzz-token"

[records]
path = ""

[plugins.echo]
path = "{plugins}/echo.wasm"

[[agents]]
name = "front-desk"
numbers = ["+15005550006"]
realtime = { plugin = "echo" }

[[agents]]
name = "merchant"
match = { merchantId = "m-42" }
realtime = { plugin = "echo" }

[routing]
default = "front-desk"
"#;

/// The token [`WEBHOOK_CONFIG`] checks signatures with.
const WEBHOOK_TOKEN: &str = "fuzz-token";

/// Builds a [`webhook`] input: `mode` (see there), query, form body, signature header.
fn webhook_input(mode: u8, query: &str, body: &str, signature: &str) -> Vec<u8> {
    let mut out = vec![mode, 0];
    for part in [query, body] {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out.extend_from_slice(signature.as_bytes());
    out
}

/// A call context of `body` (an agents.toml template for [`crate::write_config`]), its plugins
/// loaded, for a target to reuse across inputs.
fn load_context(body: &str) -> CallContext {
    block_on(async {
        let path = crate::write_config(body).expect("writing the config");
        let config = config::from_file(&path).expect("the target's config loads");
        let plugins = Plugins::load(&engine(), &config)
            .await
            .expect("its plugins load");
        CallContext::new(Arc::new(config), plugins).expect("a call context")
    })
}

fn gateway_app() -> &'static axum::Router {
    static APP: OnceLock<axum::Router> = OnceLock::new();
    APP.get_or_init(|| server::app(AppState::new(load_context(WEBHOOK_CONFIG))))
}

/// One request to the gateway's webhooks, through the real axum app (signature check, form
/// parsing, routing, records, TwiML). Input: `mode`, NUL, query, NUL, form body, NUL,
/// signature. `mode % 5`: 0 POST /twilio/voice, 1 GET /twilio/voice (query only), 2 POST
/// /twilio/status, each with the input's signature header; 3 and 4 as 0 and 2 but signed
/// correctly, so the input reaches routing and records.
///
/// Rules: no 5xx; a voice answer with 200 is TwiML an XML parser reads to its end; a request
/// whose signature is not Twilio's is refused with 403.
pub fn webhook(data: &[u8]) {
    let [mode, query, body, sig] = parts::<4>(data);
    let mode = mode.first().copied().unwrap_or(0) % 5;
    let (method, path) = match mode {
        0 | 3 => ("POST", "/twilio/voice"),
        1 => ("GET", "/twilio/voice"),
        _ => ("POST", "/twilio/status"),
    };
    // The query string as a browser would send it: arbitrary bytes, percent-encoded per pair.
    let query: String = {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for pair in query.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let mut kv = pair.splitn(2, |b| *b == b'=');
            let k = String::from_utf8_lossy(kv.next().unwrap_or_default());
            let v = String::from_utf8_lossy(kv.next().unwrap_or_default());
            s.append_pair(&k, &v);
        }
        s.finish()
    };
    let uri = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let body = if method == "GET" { &[][..] } else { body };
    let signed = mode >= 3;
    let header = if signed {
        let url = format!("https://gw.example.com{uri}");
        let form: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        signature::compute(WEBHOOK_TOKEN, &url, &form, Algorithm::HmacSha1)
    } else {
        String::from_utf8_lossy(sig).into_owned()
    };
    let mut request = Request::builder()
        .method(method)
        .uri(&uri)
        .header("host", "gw.example.com")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Ok(value) = axum::http::HeaderValue::from_str(&header) {
        request = request.header("x-twilio-signature", value);
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return;
    };
    let app = gateway_app().clone();
    let (status, text) = block_on(async move {
        let response = app
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("the answer's body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    });
    assert!(
        !status.is_server_error(),
        "{method} {uri}: {status}: {text}"
    );
    if !signed && !header.is_empty() {
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{method} {uri} with a forged signature"
        );
    }
    if status == StatusCode::OK && path == "/twilio/voice" {
        let mut reader = quick_xml::Reader::from_str(&text);
        let mut elements = 0;
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(quick_xml::events::Event::Start(_) | quick_xml::events::Event::Empty(_)) => {
                    elements += 1
                }
                Ok(_) => {}
                Err(e) => panic!("{method} {uri}: TwiML an XML parser refuses ({e}): {text}"),
            }
        }
        assert!(elements > 1 && text.contains("<Response>"), "{text}");
    }
}

/// agents.toml text (lossy UTF-8): it loads, or it is refused with errors that each name the
/// file — never a panic. Plugin paths are not opened (`from_source` validates the text).
pub fn agents_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let source = Source::new("agents.toml", text.into_owned());
    if let Err(errors) = config::from_source(&source, &|name| (name == "FUZZ").then(String::new)) {
        assert!(!errors.errors().is_empty(), "refused with no error");
        for error in errors.iter() {
            let shown = error.to_string();
            assert!(
                shown.contains("agents.toml"),
                "an error that names no file: {shown}"
            );
        }
    }
}

/// Text for TwiML (lossy UTF-8 less carriage returns, which an XML parser reads back as
/// newlines): said, and passed as a `<Stream>` `<Parameter>`'s value, it parses back to that
/// text less the characters XML 1.0 cannot carry (the C0 controls but tab and newline, U+FFFE,
/// U+FFFF), which the writer drops.
pub fn twiml(data: &[u8]) {
    let input: String = String::from_utf8_lossy(data)
        .chars()
        .filter(|c| *c != '\r')
        .collect();
    let text: String = input
        .chars()
        .filter(|c| !matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}'))
        .collect();
    let xml = Response::new()
        .say(Say::new(input.clone()))
        .connect(
            Connect::new()
                .stream(Stream::new("wss://gw.example.com/s").parameter("p", input.as_str())),
        )
        .to_xml();
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut said, mut value, mut in_say) = (String::new(), None, false);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(e)) => in_say = e.name().as_ref() == "Say",
            Ok(quick_xml::events::Event::End(_)) => in_say = false,
            Ok(quick_xml::events::Event::Text(t)) if in_say => {
                said.push_str(&t.xml10_content());
            }
            Ok(quick_xml::events::Event::GeneralRef(r)) if in_say => {
                match r.resolve_char_ref().expect("a valid character reference") {
                    Some(c) => said.push(c),
                    None => said.push_str(
                        quick_xml::escape::resolve_xml_entity(&r)
                            .unwrap_or_else(|| panic!("an unknown entity in {xml}")),
                    ),
                }
            }
            Ok(quick_xml::events::Event::Empty(e)) if e.name().as_ref() == "Parameter" => {
                for attr in e.attributes() {
                    let attr = attr.expect("a well-formed attribute");
                    if attr.key.as_ref() == "value" {
                        value = Some(
                            attr.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .expect("an attribute value that unescapes")
                                .into_owned(),
                        );
                    }
                }
            }
            Ok(_) => {}
            Err(e) => panic!("TwiML an XML parser refuses ({e}): {xml}"),
        }
    }
    assert_eq!(said, text, "said text changed by escaping: {xml}");
    assert_eq!(
        value.as_deref(),
        Some(text.as_str()),
        "parameter changed: {xml}"
    );
}

/// Rates the codec target picks from (by byte): the standard ones, and odd ones the resampler
/// must also survive.
const FUZZ_RATES: [u32; 14] = [
    8000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 1000, 8001, 96_000,
    192_000, 7999,
];

/// Audio: G.711 μ-law decode → encode is exact on every byte but 0x7F (negative zero, which
/// encodes as 0xFF); the resampler, fed the bytes as PCM16 in chunks of arbitrary length at a
/// rate pair the input picks, gives no more than the rate ratio allows; caller audio converts to
/// the plugin's format in the right length; plugin audio of any format comes out as whole
/// 160-byte μ-law frames or a clear error.
pub fn codec(data: &[u8]) {
    for &b in data {
        let back = mulaw::encode(mulaw::decode(b));
        assert!(
            back == b || (b == 0x7F && back == 0xFF),
            "μ-law {b:#04x} → {back:#04x}"
        );
    }
    let [head, audio] = parts::<2>(data);
    let pick =
        |i: usize| FUZZ_RATES[usize::from(head.get(i).copied().unwrap_or(0)) % FUZZ_RATES.len()];
    let (from, to) = (pick(0), pick(1));
    let chunk = usize::from(head.get(2).copied().unwrap_or(160)).max(1);
    let pcm: Vec<i16> = audio
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    if let Ok(mut r) = Resampler::new(from, to) {
        let mut out = Vec::new();
        for piece in pcm.chunks(chunk) {
            r.process(piece, &mut out)
                .expect("a resampler takes any length");
        }
        r.flush(&mut out).expect("flush");
        // Output follows input at the rate ratio; the flush adds at most the filter's delay and
        // one processing block.
        let expected = pcm.len() as u64 * u64::from(to) / u64::from(from);
        let slack = 2 * r.delay_samples() as u64 + u64::from(to) / 10 + 2;
        assert!(
            (out.len() as u64) <= expected + slack,
            "{from} → {to} Hz: {} samples in, {} out",
            pcm.len(),
            out.len()
        );
    }
    // Caller audio (μ-law, one frame) into the plugin's format.
    let format = AudioFormat {
        encoding: if head.get(3).is_some_and(|b| b & 1 == 1) {
            AudioEncoding::Mulaw
        } else {
            AudioEncoding::Pcm16
        },
        sample_rate: to,
    };
    if let Ok(mut to_plugin) = ToPlugin::new(format) {
        let mut out = Vec::new();
        for frame in audio.chunks(160) {
            to_plugin
                .convert(frame, &mut out)
                .expect("caller audio converts");
            if format.encoding == AudioEncoding::Pcm16 {
                assert_eq!(out.len() % 2, 0, "PCM16 of odd length");
            } else {
                assert_eq!(out.len(), frame.len());
            }
        }
    }
    // Plugin audio of any format: whole frames out, or an error.
    let mut from_plugin = FromPlugin::new();
    let play = AudioFormat {
        encoding: format.encoding,
        sample_rate: from,
    };
    let accepted = match from_plugin.push(play, audio) {
        Ok(()) => true,
        Err(_) => {
            assert!(from != 8000, "8 kHz audio refused");
            false
        }
    };
    if accepted && play.encoding == AudioEncoding::Pcm16 {
        assert!(
            PLAY_RATES.contains(&from),
            "played at a rate outside PLAY_RATES: {from}"
        );
    }
    let mut frames = 0usize;
    while let Some(frame) = from_plugin.next_frame() {
        assert_eq!(frame.len(), 160);
        frames += 1;
    }
    if let Some(last) = from_plugin.flush() {
        assert_eq!(last.len(), 160);
        frames += 1;
    }
    if accepted && play.encoding == AudioEncoding::Mulaw {
        assert_eq!(
            frames,
            audio.len().div_ceil(160),
            "μ-law frames lost or made up"
        );
    }
}

/// The plugin-boundary target's agents.toml: the fuzzer fixture plugin as the only agent.
const BOUNDARY_CONFIG: &str = r#"
[plugins.fuzzer]
path = "{plugins}/fuzzer.wasm"

[[agents]]
name = "fuzzed"
realtime = { plugin = "fuzzer" }

[routing]
default = "fuzzed"
"#;

fn boundary_context() -> &'static CallContext {
    static CTX: OnceLock<CallContext> = OnceLock::new();
    CTX.get_or_init(|| load_context(BOUNDARY_CONFIG))
}

/// How long (paused tokio time) a fuzzed call may take to end after `stop`.
const BOUNDARY_END: Duration = Duration::from_secs(30);

/// A whole call through the call loop (in-memory socket, paused time) with the fuzzer fixture
/// plugin, whose outputs are scripted by the input: each 160-byte piece of the input is one
/// caller frame, which the plugin reads as a script of outputs (see
/// `tests/plugins/fuzzer`). The peer echoes every mark the gateway sends, as Twilio does, then
/// sends `stop`.
///
/// Rules: the call ends within [`BOUNDARY_END`]; every message the gateway sends is JSON of a
/// known event for this stream, every `media` payload one 160-byte frame; the call ends by
/// `stop`, the plugin's hang-up or transfer, or a plugin failure blamed on the plugin's output
/// (never on the host).
pub fn plugin_boundary(data: &[u8]) {
    const SID: &str = "MZfuzz";
    let ctx = boundary_context().clone();
    // Each input is a call of its own: the failures of earlier inputs must not open the plugin's
    // circuit breaker for this one.
    if let Some(breaker) = ctx.plugins.breaker("fuzzer") {
        breaker.record_success();
    }
    let (reason, sent) = block_on(async move {
        let (socket, mut peer) = memory_socket::pair();
        let task = tokio::spawn(switchboard::call::run(socket, ctx));
        let mut sent = Vec::new();
        let _ = peer.send(start(SID, serde_json::json!({}))).await;
        for (i, piece) in data.chunks(160).enumerate() {
            let mut frame = piece.to_vec();
            frame.resize(160, 8); // op 8: nothing.
            if peer
                .send(media_payload(SID, i as u64 + 1, &frame))
                .await
                .is_err()
            {
                break;
            }
            // Let the gateway answer, then echo its marks.
            tokio::time::sleep(Duration::from_millis(20)).await;
            while let Some(msg) = peer.try_next() {
                if msg["event"] == "mark" {
                    let name = msg["mark"]["name"].as_str().unwrap_or_default().to_string();
                    let _ = peer.send(memory_socket::mark(SID, &name)).await;
                }
                sent.push(msg);
            }
        }
        let _ = peer.send(stop(SID)).await;
        let ended = tokio::time::timeout(BOUNDARY_END, task).await;
        while let Some(msg) = peer.try_next() {
            sent.push(msg);
        }
        let (reason, _stats) = ended
            .expect("the call ended after stop")
            .expect("the call task did not panic");
        (reason, sent)
    });
    for msg in &sent {
        let event = msg["event"].as_str().unwrap_or_default();
        if msg["close"] == true {
            continue;
        }
        assert!(
            matches!(event, "media" | "mark" | "clear"),
            "an unknown message to Twilio: {msg}"
        );
        assert_eq!(msg["streamSid"], SID, "{msg}");
        if event == "media" {
            let payload = BASE64
                .decode(msg["media"]["payload"].as_str().unwrap_or_default())
                .expect("base64 payload");
            assert_eq!(payload.len(), 160, "a media frame that is not 20 ms");
        }
    }
    match &reason {
        EndReason::Stop | EndReason::HungUp | EndReason::Transferred(_) => {}
        EndReason::PluginFailed(failure) => {
            let kind = failure.error.kind();
            assert!(
                matches!(kind, "output" | "plugin" | "contract"),
                "a failure the plugin did not cause: {failure:?}"
            );
        }
        other => panic!("the call ended by {other:?}"),
    }
}

/// Runs target `name` over its seeds and `count` seeded random mutations of them (bytes
/// changed, inserted, removed, cut, random tails), as CI does at a small count. Returns the
/// inputs run.
///
/// # Panics
/// `name` is not in [`TARGETS`], or the target broke its rule (the panic says how).
pub fn smoke(name: &str, count: usize, seed: u64) -> usize {
    use rand::{Rng as _, SeedableRng as _};
    let (_, target) = TARGETS
        .into_iter()
        .find(|(n, _)| *n == name)
        .expect("a target of TARGETS");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let seeds = seeds(name);
    for s in &seeds {
        target(s);
    }
    for _ in 0..count {
        let mut input = seeds
            .get(rng.random_range(0..seeds.len().max(1)))
            .cloned()
            .unwrap_or_default();
        for _ in 0..rng.random_range(1..8) {
            match rng.random_range(0..5) {
                0 if !input.is_empty() => {
                    let at = rng.random_range(0..input.len());
                    input[at] = rng.random();
                }
                1 => {
                    let at = rng.random_range(0..=input.len());
                    input.insert(at, rng.random());
                }
                2 if !input.is_empty() => {
                    let at = rng.random_range(0..input.len());
                    input.remove(at);
                }
                3 if !input.is_empty() => {
                    let at = rng.random_range(0..input.len());
                    input.truncate(at);
                }
                _ => {
                    let len = rng.random_range(0..64);
                    input.extend((0..len).map(|_| rng.random::<u8>()));
                }
            }
        }
        target(&input);
    }
    seeds.len() + count
}
