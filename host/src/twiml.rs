//! Typed builder for TwiML, Twilio's voice markup
//! (<https://www.twilio.com/docs/voice/twiml>).
//!
//! This module owns every TwiML document the gateway sends back to Twilio's
//! voice webhooks: the `<Connect><Stream>` reply that bridges a call to a
//! plugin over Media Streams, and the short spoken replies (not configured,
//! busy, ...). It exists so that no handler ever formats XML by hand: the
//! types below only allow the nestings TwiML defines (`Gather` holds only
//! `Say`/`Play`/`Pause`, `Dial` holds a number or `Number` nouns, `Stream`
//! lives inside `Connect`/`Start`/`Stop`, ...), and all text goes through
//! one escaper.
//!
//! # Output format
//!
//! [`Response::to_xml`] produces the same bytes as Twilio's official Python
//! SDK (`twilio` 9.13.0, `VoiceResponse().to_xml()`), which serialises with
//! Python's `xml.etree.ElementTree`:
//!
//! - `<?xml version="1.0" encoding="UTF-8"?>` followed by the document, with
//!   no newlines or indentation;
//! - attributes sorted by name (byte order), camelCase names as Twilio spells
//!   them (`numDigits`, `callerId`, `statusCallback`, ...), booleans written as
//!   `true`/`false`;
//! - elements with neither text nor children written as `<Hangup />` (a space
//!   before `/>`), so an empty document is `<Response />`;
//! - in text, `&` `<` `>` become `&amp;` `&lt;` `&gt;` and quotes are left
//!   alone; in attribute values `"` also becomes `&quot;` and tab, line feed
//!   and carriage return become `&#09;`, `&#10;`, `&#13;` so that they survive
//!   attribute-value normalisation (`'` is never escaped). Tab, LF and CR in
//!   text are written as they are, like ElementTree does. Everything else,
//!   including all non-ASCII characters, is written unchanged as UTF-8.
//!
//! One deliberate difference: characters that XML 1.0 forbids outright
//! (U+0000–U+0008, U+000B, U+000C, U+000E–U+001F, U+FFFE and U+FFFF; Rust
//! strings cannot hold surrogates) are **dropped** from text and attribute
//! values. ElementTree would copy them through and produce a document that no
//! XML parser (Twilio's included) accepts; they cannot be represented in XML
//! 1.0 at all, not even as character references. An element whose text
//! consists only of such characters is therefore written as empty
//! (`<Say />`). For every other input the output is byte-identical to the SDK.

use std::collections::BTreeMap;

/// The XML declaration that starts every document, exactly as the SDK writes it.
pub const XML_DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// HTTP method Twilio uses to request an `action`, `url` or callback URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST` (Twilio's default for most attributes).
    Post,
}

impl Method {
    /// The attribute value: `GET` or `POST`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// Why a call is refused with [`Reject`]; decides the tone the caller hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// `rejected`: the caller hears a "not in service" message.
    Rejected,
    /// `busy`: the caller hears a busy signal.
    Busy,
}

impl RejectReason {
    /// The attribute value: `rejected` or `busy`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Rejected => "rejected",
            RejectReason::Busy => "busy",
        }
    }
}

/// Which kinds of caller input a [`Gather`] accepts (its `input` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatherInput {
    /// `dtmf`: key presses only (Twilio's default).
    Dtmf,
    /// `speech`: speech recognition only.
    Speech,
    /// `dtmf speech`: either, whichever comes first.
    DtmfSpeech,
}

impl GatherInput {
    /// The attribute value: `dtmf`, `speech` or `dtmf speech`.
    pub fn as_str(self) -> &'static str {
        match self {
            GatherInput::Dtmf => "dtmf",
            GatherInput::Speech => "speech",
            GatherInput::DtmfSpeech => "dtmf speech",
        }
    }
}

/// Which audio a [`Stream`] carries (its `track` attribute).
///
/// A bidirectional stream inside [`Connect`] supports only
/// [`StreamTrack::InboundTrack`]; a forked stream inside [`Start`] supports all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamTrack {
    /// `inbound_track`: the caller's audio (Twilio's default).
    InboundTrack,
    /// `outbound_track`: the audio Twilio plays to the caller.
    OutboundTrack,
    /// `both_tracks`: both directions.
    BothTracks,
}

impl StreamTrack {
    /// The attribute value: `inbound_track`, `outbound_track` or `both_tracks`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamTrack::InboundTrack => "inbound_track",
            StreamTrack::OutboundTrack => "outbound_track",
            StreamTrack::BothTracks => "both_tracks",
        }
    }
}

/// Whether and how a [`Dial`] records the bridged call (its `record` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialRecord {
    /// `do-not-record` (Twilio's default).
    DoNotRecord,
    /// `record-from-answer`: mono, from when the callee answers.
    RecordFromAnswer,
    /// `record-from-ringing`: mono, from when the callee starts ringing.
    RecordFromRinging,
    /// `record-from-answer-dual`: one channel per party, from answer.
    RecordFromAnswerDual,
    /// `record-from-ringing-dual`: one channel per party, from ringing.
    RecordFromRingingDual,
}

impl DialRecord {
    /// The attribute value, e.g. `record-from-answer`.
    pub fn as_str(self) -> &'static str {
        match self {
            DialRecord::DoNotRecord => "do-not-record",
            DialRecord::RecordFromAnswer => "record-from-answer",
            DialRecord::RecordFromRinging => "record-from-ringing",
            DialRecord::RecordFromAnswerDual => "record-from-answer-dual",
            DialRecord::RecordFromRingingDual => "record-from-ringing-dual",
        }
    }
}

/// One element of the document: the untyped form every typed verb wraps.
///
/// Attributes live in a `BTreeMap` so they come out sorted by name (as the
/// SDK sorts them) and setting one twice keeps the last value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    name: &'static str,
    attrs: BTreeMap<&'static str, String>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn new(name: &'static str) -> Self {
        Node {
            name,
            attrs: BTreeMap::new(),
            text: String::new(),
            children: Vec::new(),
        }
    }

    fn with_text(name: &'static str, text: impl Into<String>) -> Self {
        Node {
            text: text.into(),
            ..Node::new(name)
        }
    }

    fn set(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.attrs.insert(name, value.into());
        self
    }

    fn set_bool(self, name: &'static str, value: bool) -> Self {
        self.set(name, if value { "true" } else { "false" })
    }

    fn child(mut self, child: Node) -> Self {
        self.children.push(child);
        self
    }

    /// Replaces all children with `child`, for verbs that hold a single noun.
    fn only_child(mut self, child: Node) -> Self {
        self.children = vec![child];
        self
    }

    fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(self.name);
        for (name, value) in &self.attrs {
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            push_escaped_attr(out, value);
            out.push('"');
        }
        let has_text = self.text.chars().any(is_xml_char);
        if !has_text && self.children.is_empty() {
            out.push_str(" />");
            return;
        }
        out.push('>');
        push_escaped_text(out, &self.text);
        for child in &self.children {
            child.write(out);
        }
        out.push_str("</");
        out.push_str(self.name);
        out.push('>');
    }
}

/// Whether `c` may appear in an XML 1.0 document (production `Char`).
fn is_xml_char(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..
    )
}

/// Appends `text` as element content, escaped like ElementTree's
/// `_escape_cdata`; characters illegal in XML 1.0 are dropped.
fn push_escaped_text(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

/// Appends `value` as a double-quoted attribute value, escaped like
/// ElementTree's `_escape_attrib`; characters illegal in XML 1.0 are dropped.
fn push_escaped_attr(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#09;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

/// The `<Response>` root of a TwiML voice document.
///
/// Verbs are executed by Twilio in the order they are added.
/// See <https://www.twilio.com/docs/voice/twiml>.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    node: Node,
}

impl Default for Response {
    fn default() -> Self {
        Response::new()
    }
}

impl Response {
    /// An empty response (`<Response />`): Twilio hangs up after it.
    pub fn new() -> Self {
        Response {
            node: Node::new("Response"),
        }
    }

    /// Appends a `<Say>`.
    pub fn say(self, say: Say) -> Self {
        self.verb(say.node)
    }

    /// Appends a `<Play>`.
    pub fn play(self, play: Play) -> Self {
        self.verb(play.node)
    }

    /// Appends a `<Pause>`.
    pub fn pause(self, pause: Pause) -> Self {
        self.verb(pause.node)
    }

    /// Appends a `<Gather>`.
    pub fn gather(self, gather: Gather) -> Self {
        self.verb(gather.node)
    }

    /// Appends a `<Dial>`.
    pub fn dial(self, dial: Dial) -> Self {
        self.verb(dial.node)
    }

    /// Appends `<Hangup />`, which ends the call
    /// (<https://www.twilio.com/docs/voice/twiml/hangup>).
    pub fn hangup(self) -> Self {
        self.verb(Node::new("Hangup"))
    }

    /// Appends a `<Reject>`.
    pub fn reject(self, reject: Reject) -> Self {
        self.verb(reject.node)
    }

    /// Appends a `<Redirect>`.
    pub fn redirect(self, redirect: Redirect) -> Self {
        self.verb(redirect.node)
    }

    /// Appends a `<Connect>`.
    pub fn connect(self, connect: Connect) -> Self {
        self.verb(connect.node)
    }

    /// Appends a `<Start>`.
    pub fn start(self, start: Start) -> Self {
        self.verb(start.node)
    }

    /// Appends a `<Stop>`.
    pub fn stop(self, stop: Stop) -> Self {
        self.verb(stop.node)
    }

    fn verb(self, node: Node) -> Self {
        Response {
            node: self.node.child(node),
        }
    }

    /// Serialises the document: [`XML_DECLARATION`] followed by the XML on
    /// one line, byte-identical to the Python SDK's `to_xml()` (see the
    /// module docs for the rules and the one deliberate difference).
    pub fn to_xml(&self) -> String {
        let mut out = String::from(XML_DECLARATION);
        self.node.write(&mut out);
        out
    }
}

/// `<Say>`: speaks text to the caller with text-to-speech
/// (<https://www.twilio.com/docs/voice/twiml/say>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Say {
    node: Node,
}

impl Say {
    /// Speaks `text`. An empty text gives `<Say />`, as in the SDK.
    pub fn new(text: impl Into<String>) -> Self {
        Say {
            node: Node::with_text("Say", text),
        }
    }

    /// `voice`: the TTS voice, e.g. `Polly.Joanna` or `alice`.
    pub fn voice(self, voice: impl Into<String>) -> Self {
        Say {
            node: self.node.set("voice", voice),
        }
    }

    /// `language`: the language and locale, e.g. `en-US`. Written as given.
    pub fn language(self, language: impl Into<String>) -> Self {
        Say {
            node: self.node.set("language", language),
        }
    }

    /// `loop`: how many times to say the text; `0` repeats until the call ends.
    pub fn loop_count(self, count: u32) -> Self {
        Say {
            node: self.node.set("loop", count.to_string()),
        }
    }
}

/// `<Play>`: plays an audio file, or DTMF tones, to the caller
/// (<https://www.twilio.com/docs/voice/twiml/play>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Play {
    node: Node,
}

impl Play {
    /// Plays the audio file at `url` (the element's text).
    pub fn new(url: impl Into<String>) -> Self {
        Play {
            node: Node::with_text("Play", url),
        }
    }

    /// Plays only the DTMF tones `digits` (no URL): `<Play digits="…" />`.
    pub fn dtmf(digits: impl Into<String>) -> Self {
        Play::new("").digits(digits)
    }

    /// `digits`: DTMF tones to play; `w` waits half a second.
    pub fn digits(self, digits: impl Into<String>) -> Self {
        Play {
            node: self.node.set("digits", digits),
        }
    }

    /// `loop`: how many times to play; `0` repeats until the call ends.
    pub fn loop_count(self, count: u32) -> Self {
        Play {
            node: self.node.set("loop", count.to_string()),
        }
    }
}

/// `<Pause>`: silence before the next verb
/// (<https://www.twilio.com/docs/voice/twiml/pause>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    node: Node,
}

impl Default for Pause {
    fn default() -> Self {
        Pause::new()
    }
}

impl Pause {
    /// A pause of Twilio's default length (1 second): `<Pause />`.
    pub fn new() -> Self {
        Pause {
            node: Node::new("Pause"),
        }
    }

    /// `length`: how long to pause, in seconds.
    pub fn length(self, seconds: u32) -> Self {
        Pause {
            node: self.node.set("length", seconds.to_string()),
        }
    }
}

/// `<Gather>`: collects key presses and/or speech, optionally while
/// prompting with nested `<Say>`, `<Play>` and `<Pause>` (the only children it
/// may hold) (<https://www.twilio.com/docs/voice/twiml/gather>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gather {
    node: Node,
}

impl Default for Gather {
    fn default() -> Self {
        Gather::new()
    }
}

impl Gather {
    /// A gather with Twilio's defaults and no prompt: `<Gather />`.
    pub fn new() -> Self {
        Gather {
            node: Node::new("Gather"),
        }
    }

    fn set(self, name: &'static str, value: impl Into<String>) -> Self {
        Gather {
            node: self.node.set(name, value),
        }
    }

    /// `input`: which kinds of input to accept.
    pub fn input(self, input: GatherInput) -> Self {
        self.set("input", input.as_str())
    }

    /// `action`: the URL Twilio requests with the result.
    pub fn action(self, url: impl Into<String>) -> Self {
        self.set("action", url)
    }

    /// `method`: the HTTP method for `action`.
    pub fn method(self, method: Method) -> Self {
        self.set("method", method.as_str())
    }

    /// `numDigits`: stop after this many key presses.
    pub fn num_digits(self, digits: u32) -> Self {
        self.set("numDigits", digits.to_string())
    }

    /// `timeout`: seconds of silence (between key presses, or before speech)
    /// after which the gather ends.
    pub fn timeout(self, seconds: u32) -> Self {
        self.set("timeout", seconds.to_string())
    }

    /// `finishOnKey`: the key that ends input (`#` by default; an empty
    /// string disables it).
    pub fn finish_on_key(self, key: impl Into<String>) -> Self {
        self.set("finishOnKey", key)
    }

    /// `actionOnEmptyResult`: request `action` even when nothing was gathered.
    pub fn action_on_empty_result(self, enabled: bool) -> Self {
        Gather {
            node: self.node.set_bool("actionOnEmptyResult", enabled),
        }
    }

    /// Appends a nested `<Say>` prompt.
    pub fn say(self, say: Say) -> Self {
        Gather {
            node: self.node.child(say.node),
        }
    }

    /// Appends a nested `<Play>` prompt.
    pub fn play(self, play: Play) -> Self {
        Gather {
            node: self.node.child(play.node),
        }
    }

    /// Appends a nested `<Pause>`.
    pub fn pause(self, pause: Pause) -> Self {
        Gather {
            node: self.node.child(pause.node),
        }
    }
}

/// `<Dial>`: bridges the caller to another party
/// (<https://www.twilio.com/docs/voice/twiml/dial>).
///
/// It dials either a single number given as text ([`Dial::new`]) or one or
/// more [`Number`] nouns ([`Dial::numbers`]); the two forms are not mixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    node: Node,
}

impl Dial {
    /// Dials `number` written as the element's text: `<Dial>+15551234567</Dial>`.
    pub fn new(number: impl Into<String>) -> Self {
        Dial {
            node: Node::with_text("Dial", number),
        }
    }

    /// Dials the given `<Number>` nouns (Twilio rings them in parallel).
    pub fn numbers(numbers: impl IntoIterator<Item = Number>) -> Self {
        let node = numbers
            .into_iter()
            .fold(Node::new("Dial"), |node, number| node.child(number.node));
        Dial { node }
    }

    fn set(self, name: &'static str, value: impl Into<String>) -> Self {
        Dial {
            node: self.node.set(name, value),
        }
    }

    fn set_bool(self, name: &'static str, value: bool) -> Self {
        Dial {
            node: self.node.set_bool(name, value),
        }
    }

    /// `action`: the URL Twilio requests when the dialled call ends.
    pub fn action(self, url: impl Into<String>) -> Self {
        self.set("action", url)
    }

    /// `method`: the HTTP method for `action`.
    pub fn method(self, method: Method) -> Self {
        self.set("method", method.as_str())
    }

    /// `timeout`: seconds to let the callee ring before giving up.
    pub fn timeout(self, seconds: u32) -> Self {
        self.set("timeout", seconds.to_string())
    }

    /// `callerId`: the caller ID shown to the callee (E.164 number or client id).
    pub fn caller_id(self, caller_id: impl Into<String>) -> Self {
        self.set("callerId", caller_id)
    }

    /// `record`: whether and how to record the bridged call.
    pub fn record(self, record: DialRecord) -> Self {
        self.set("record", record.as_str())
    }

    /// `timeLimit`: maximum length of the bridged call, in seconds.
    pub fn time_limit(self, seconds: u32) -> Self {
        self.set("timeLimit", seconds.to_string())
    }

    /// `hangupOnStar`: let the caller end the bridged leg by pressing `*`.
    pub fn hangup_on_star(self, enabled: bool) -> Self {
        self.set_bool("hangupOnStar", enabled)
    }

    /// `answerOnBridge`: keep the caller hearing ringback until the callee answers.
    pub fn answer_on_bridge(self, enabled: bool) -> Self {
        self.set_bool("answerOnBridge", enabled)
    }
}

/// `<Number>`: a phone number to ring inside [`Dial`]
/// (<https://www.twilio.com/docs/voice/twiml/number>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Number {
    node: Node,
}

impl Number {
    /// The number to dial (the element's text), e.g. `+15551234567`.
    pub fn new(number: impl Into<String>) -> Self {
        Number {
            node: Node::with_text("Number", number),
        }
    }

    fn set(self, name: &'static str, value: impl Into<String>) -> Self {
        Number {
            node: self.node.set(name, value),
        }
    }

    /// `sendDigits`: DTMF tones to play once the callee answers; `w` waits
    /// half a second.
    pub fn send_digits(self, digits: impl Into<String>) -> Self {
        self.set("sendDigits", digits)
    }

    /// `url`: TwiML to run for the callee before the parties are bridged.
    pub fn url(self, url: impl Into<String>) -> Self {
        self.set("url", url)
    }

    /// `method`: the HTTP method for `url`.
    pub fn method(self, method: Method) -> Self {
        self.set("method", method.as_str())
    }

    /// `statusCallback`: the URL Twilio notifies of this leg's progress.
    pub fn status_callback(self, url: impl Into<String>) -> Self {
        self.set("statusCallback", url)
    }

    /// `statusCallbackMethod`: the HTTP method for `statusCallback`.
    pub fn status_callback_method(self, method: Method) -> Self {
        self.set("statusCallbackMethod", method.as_str())
    }

    /// `statusCallbackEvent`: space-separated events to report, from
    /// `initiated ringing answered completed`.
    pub fn status_callback_event(self, events: impl Into<String>) -> Self {
        self.set("statusCallbackEvent", events)
    }
}

/// `<Reject>`: refuses an incoming call without answering it, so it is not
/// billed (<https://www.twilio.com/docs/voice/twiml/reject>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    node: Node,
}

impl Default for Reject {
    fn default() -> Self {
        Reject::new()
    }
}

impl Reject {
    /// A rejection with Twilio's default reason (`rejected`): `<Reject />`.
    pub fn new() -> Self {
        Reject {
            node: Node::new("Reject"),
        }
    }

    /// `reason`: what the caller hears.
    pub fn reason(self, reason: RejectReason) -> Self {
        Reject {
            node: self.node.set("reason", reason.as_str()),
        }
    }
}

/// `<Redirect>`: continues the call with the TwiML at another URL
/// (<https://www.twilio.com/docs/voice/twiml/redirect>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    node: Node,
}

impl Redirect {
    /// Fetches the next TwiML from `url` (the element's text).
    pub fn new(url: impl Into<String>) -> Self {
        Redirect {
            node: Node::with_text("Redirect", url),
        }
    }

    /// `method`: the HTTP method for the URL.
    pub fn method(self, method: Method) -> Self {
        Redirect {
            node: self.node.set("method", method.as_str()),
        }
    }
}

/// `<Connect>`: hands the call to a bidirectional [`Stream`] for as long as
/// the stream lasts; the verbs after it run only once the stream ends
/// (<https://www.twilio.com/docs/voice/twiml/connect>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    node: Node,
}

impl Default for Connect {
    fn default() -> Self {
        Connect::new()
    }
}

impl Connect {
    /// An empty `<Connect />`; give it its stream with [`Connect::stream`].
    pub fn new() -> Self {
        Connect {
            node: Node::new("Connect"),
        }
    }

    /// `action`: the URL Twilio requests when the connected stream ends.
    pub fn action(self, url: impl Into<String>) -> Self {
        Connect {
            node: self.node.set("action", url),
        }
    }

    /// `method`: the HTTP method for `action`.
    pub fn method(self, method: Method) -> Self {
        Connect {
            node: self.node.set("method", method.as_str()),
        }
    }

    /// Sets the nested `<Stream>`. `<Connect>` holds a single noun, so this
    /// replaces any stream set before.
    pub fn stream(self, stream: Stream) -> Self {
        Connect {
            node: self.node.only_child(stream.node),
        }
    }
}

/// `<Start>`: starts a unidirectional (forked) [`Stream`] in the
/// background and goes on with the next verb at once
/// (<https://www.twilio.com/docs/voice/twiml/stream>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    node: Node,
}

impl Default for Start {
    fn default() -> Self {
        Start::new()
    }
}

impl Start {
    /// An empty `<Start />`; give it its stream with [`Start::stream`].
    pub fn new() -> Self {
        Start {
            node: Node::new("Start"),
        }
    }

    /// `action`: a URL Twilio requests once the stream has started.
    pub fn action(self, url: impl Into<String>) -> Self {
        Start {
            node: self.node.set("action", url),
        }
    }

    /// `method`: the HTTP method for `action`.
    pub fn method(self, method: Method) -> Self {
        Start {
            node: self.node.set("method", method.as_str()),
        }
    }

    /// Sets the nested `<Stream>`, replacing any stream set before.
    pub fn stream(self, stream: Stream) -> Self {
        Start {
            node: self.node.only_child(stream.node),
        }
    }
}

/// `<Stop>`: stops a stream started with [`Start`], identified by the
/// nested stream's `name` (see [`Stream::named`])
/// (<https://www.twilio.com/docs/voice/twiml/stream>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    node: Node,
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl Stop {
    /// An empty `<Stop />`; say which stream with [`Stop::stream`].
    pub fn new() -> Self {
        Stop {
            node: Node::new("Stop"),
        }
    }

    /// Sets the nested `<Stream>` to stop, replacing any stream set before.
    pub fn stream(self, stream: Stream) -> Self {
        Stop {
            node: self.node.only_child(stream.node),
        }
    }
}

/// `<Stream>`: a Media Streams WebSocket, used inside [`Connect`], [`Start`]
/// and [`Stop`]; may carry custom `<Parameter>`s that Twilio passes to the
/// WebSocket server in the `start` message
/// (<https://www.twilio.com/docs/voice/twiml/stream>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    node: Node,
}

impl Stream {
    /// A stream to the WebSocket at `url` (`wss://…`; the `url` attribute).
    pub fn new(url: impl Into<String>) -> Self {
        Stream {
            node: Node::new("Stream").set("url", url),
        }
    }

    /// A stream identified only by `name`, without a URL: what [`Stop`] needs.
    pub fn named(name: impl Into<String>) -> Self {
        Stream {
            node: Node::new("Stream").set("name", name),
        }
    }

    fn set(self, name: &'static str, value: impl Into<String>) -> Self {
        Stream {
            node: self.node.set(name, value),
        }
    }

    /// `name`: a name unique within the call, used to stop the stream later.
    pub fn name(self, name: impl Into<String>) -> Self {
        self.set("name", name)
    }

    /// `track`: which audio to stream.
    pub fn track(self, track: StreamTrack) -> Self {
        self.set("track", track.as_str())
    }

    /// `statusCallback`: the URL Twilio notifies when the stream starts,
    /// stops or fails.
    pub fn status_callback(self, url: impl Into<String>) -> Self {
        self.set("statusCallback", url)
    }

    /// `statusCallbackMethod`: the HTTP method for `statusCallback`.
    pub fn status_callback_method(self, method: Method) -> Self {
        self.set("statusCallbackMethod", method.as_str())
    }

    /// Appends a custom `<Parameter name="…" value="…" />`; parameters are
    /// written in the order they are added.
    pub fn parameter(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let parameter = Node::new("Parameter").set("name", name).set("value", value);
        Stream {
            node: self.node.child(parameter),
        }
    }
}

/// The reply the voice webhook gives to bridge a call to a plugin:
/// `<Response><Connect><Stream url="…">` with one `<Parameter>` per
/// `(name, value)` pair, in order.
pub fn connect_stream(url: &str, parameters: &[(String, String)]) -> Response {
    let stream = parameters
        .iter()
        .fold(Stream::new(url), |stream, (name, value)| {
            stream.parameter(name.as_str(), value.as_str())
        });
    Response::new().connect(Connect::new().stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::Reader;
    use quick_xml::XmlVersion;
    use quick_xml::escape::resolve_xml_entity;
    use quick_xml::events::{BytesStart, Event};

    /// The parsed form of an element, for comparing documents as trees.
    #[derive(Debug, PartialEq, Eq)]
    struct XmlTree {
        name: String,
        /// Sorted by name.
        attrs: Vec<(String, String)>,
        /// All character data directly inside the element, concatenated.
        text: String,
        children: Vec<XmlTree>,
    }

    fn tree_element(start: &BytesStart<'_>) -> XmlTree {
        let mut attrs: Vec<(String, String)> = start
            .attributes()
            .map(|attr| {
                let attr = attr.expect("well-formed attribute");
                let value = attr
                    .normalized_value(XmlVersion::Implicit1_0)
                    .expect("attribute value unescapes");
                (attr.key.as_ref().to_owned(), value.into_owned())
            })
            .collect();
        attrs.sort();
        XmlTree {
            name: start.name().as_ref().to_owned(),
            attrs,
            text: String::new(),
            children: Vec::new(),
        }
    }

    fn attach(stack: &mut [XmlTree], root: &mut Option<XmlTree>, element: XmlTree) {
        match stack.last_mut() {
            Some(parent) => parent.children.push(element),
            None => {
                assert!(root.is_none(), "more than one root element");
                *root = Some(element);
            }
        }
    }

    /// Parses a whole document with quick_xml into an [`XmlTree`].
    fn parse_tree(xml: &str) -> XmlTree {
        let mut reader = Reader::from_str(xml);
        let mut stack: Vec<XmlTree> = Vec::new();
        let mut root = None;
        loop {
            match reader.read_event().expect("well-formed XML") {
                Event::Decl(_) => {}
                Event::Start(start) => stack.push(tree_element(&start)),
                Event::Empty(start) => attach(&mut stack, &mut root, tree_element(&start)),
                Event::End(_) => {
                    let element = stack.pop().expect("end tag closes an open element");
                    attach(&mut stack, &mut root, element);
                }
                Event::Text(text) => stack
                    .last_mut()
                    .expect("text inside the root element")
                    .text
                    .push_str(&text.xml10_content()),
                Event::GeneralRef(reference) => {
                    let resolved = match reference.resolve_char_ref().expect("valid char ref") {
                        Some(c) => c.to_string(),
                        None => resolve_xml_entity(&reference)
                            .expect("predefined entity")
                            .to_owned(),
                    };
                    stack
                        .last_mut()
                        .expect("reference inside the root element")
                        .text
                        .push_str(&resolved);
                }
                Event::Eof => break,
                other => panic!("unexpected XML event {other:?}"),
            }
        }
        assert!(stack.is_empty(), "unclosed elements: {stack:?}");
        root.expect("a root element")
    }

    /// Asserts that `response` serialises to exactly `expected_body` after
    /// the declaration, and that both parse to the same tree.
    #[track_caller]
    fn assert_twiml(response: &Response, expected_body: &str) {
        let actual = response.to_xml();
        let expected = format!("{XML_DECLARATION}{expected_body}");
        assert_eq!(actual, expected);
        assert_eq!(parse_tree(&actual), parse_tree(&expected));
    }

    /// Wraps `body` in `<Response>…</Response>`.
    fn in_response(body: &str) -> String {
        format!("<Response>{body}</Response>")
    }

    /// The Rust translation of each Python example in the fixture file.
    fn fixture_translation(name: &str) -> Option<Response> {
        let response = match name {
            // r.say('Tom & Jerry say <hi> "quoted" and \'single\'')
            "say_xml_special_chars" => {
                Response::new().say(Say::new("Tom & Jerry say <hi> \"quoted\" and 'single'"))
            }
            // r.hangup()
            "hangup" => Response::new().hangup(),
            // c = r.connect(); s = c.stream(url=…); s.parameter(…); s.parameter(…)
            "connect_stream_with_parameters" => Response::new().connect(
                Connect::new().stream(
                    Stream::new("wss://example.com/twilio/media-stream")
                        .parameter("session", "a&b")
                        .parameter("greeting", "say \"hi\""),
                ),
            ),
            // r.say('Connecting you now'); r.pause(length=1); r.connect().stream(url=…)
            "full_say_pause_connect_stream" => Response::new()
                .say(Say::new("Connecting you now"))
                .pause(Pause::new().length(1))
                .connect(
                    Connect::new().stream(Stream::new("wss://example.com/twilio/media-stream")),
                ),
            _ => return None,
        };
        Some(response)
    }

    #[test]
    fn matches_every_python_sdk_fixture() {
        let fixtures: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/twilio-examples.json"))
                .expect("fixture file is JSON");
        let examples = fixtures["twiml"].as_array().expect("a \"twiml\" array");
        assert!(
            !examples.is_empty(),
            "no TwiML examples in the fixture file"
        );
        for example in examples {
            let name = example["name"].as_str().expect("example has a name");
            let expected = example["output"].as_str().expect("example has an output");
            let response = fixture_translation(name).unwrap_or_else(|| {
                panic!("TwiML example {name:?} has no Rust translation in fixture_translation")
            });
            let actual = response.to_xml();
            assert_eq!(actual, expected, "bytes differ for example {name:?}");
            assert_eq!(
                parse_tree(&actual),
                parse_tree(expected),
                "trees differ for example {name:?}"
            );
        }
    }

    #[test]
    fn empty_response() {
        assert_eq!(
            Response::new().to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response />"#
        );
        assert_eq!(Response::default(), Response::new());
    }

    #[test]
    fn say_with_all_attributes() {
        let response = Response::new().say(
            Say::new("Hello")
                .voice("Polly.Joanna")
                .language("en-US")
                .loop_count(2),
        );
        assert_twiml(
            &response,
            &in_response(r#"<Say language="en-US" loop="2" voice="Polly.Joanna">Hello</Say>"#),
        );
    }

    #[test]
    fn say_with_empty_text_is_empty_element() {
        assert_twiml(
            &Response::new().say(Say::new("").voice("alice")),
            &in_response(r#"<Say voice="alice" />"#),
        );
    }

    #[test]
    fn play_url_and_digits() {
        let response = Response::new()
            .play(
                Play::new("https://example.com/hold.mp3")
                    .loop_count(0)
                    .digits("ww1"),
            )
            .play(Play::dtmf("1234#"));
        assert_twiml(
            &response,
            &in_response(concat!(
                r#"<Play digits="ww1" loop="0">https://example.com/hold.mp3</Play>"#,
                r#"<Play digits="1234#" />"#,
            )),
        );
    }

    #[test]
    fn pause_with_and_without_length() {
        let response = Response::new()
            .pause(Pause::new())
            .pause(Pause::default().length(5));
        assert_twiml(&response, &in_response(r#"<Pause /><Pause length="5" />"#));
    }

    #[test]
    fn gather_with_all_attributes_and_nested_prompts() {
        let response = Response::new().gather(
            Gather::new()
                .input(GatherInput::DtmfSpeech)
                .action("/gather")
                .method(Method::Post)
                .num_digits(4)
                .timeout(10)
                .finish_on_key("#")
                .action_on_empty_result(true)
                .say(Say::new("Enter your PIN").voice("Polly.Joanna"))
                .play(Play::new("https://example.com/beep.mp3"))
                .pause(Pause::new().length(2)),
        );
        assert_twiml(
            &response,
            &in_response(concat!(
                r##"<Gather action="/gather" actionOnEmptyResult="true" finishOnKey="#" "##,
                r#"input="dtmf speech" method="POST" numDigits="4" timeout="10">"#,
                r#"<Say voice="Polly.Joanna">Enter your PIN</Say>"#,
                r#"<Play>https://example.com/beep.mp3</Play>"#,
                r#"<Pause length="2" />"#,
                r#"</Gather>"#,
            )),
        );
    }

    #[test]
    fn gather_enum_values_and_empty_gather() {
        let response = Response::new()
            .gather(Gather::new())
            .gather(
                Gather::new()
                    .input(GatherInput::Dtmf)
                    .finish_on_key("")
                    .method(Method::Get)
                    .action_on_empty_result(false),
            )
            .gather(Gather::default().input(GatherInput::Speech));
        assert_twiml(
            &response,
            &in_response(concat!(
                r#"<Gather />"#,
                r#"<Gather actionOnEmptyResult="false" finishOnKey="" input="dtmf" method="GET" />"#,
                r#"<Gather input="speech" />"#,
            )),
        );
    }

    #[test]
    fn dial_plain_number_with_all_attributes() {
        let response = Response::new().dial(
            Dial::new("+15551234567")
                .caller_id("+15557654321")
                .timeout(20)
                .action("/dial-done")
                .method(Method::Get)
                .record(DialRecord::RecordFromAnswer)
                .time_limit(600)
                .hangup_on_star(false)
                .answer_on_bridge(true),
        );
        assert_twiml(
            &response,
            &in_response(concat!(
                r#"<Dial action="/dial-done" answerOnBridge="true" callerId="+15557654321" "#,
                r#"hangupOnStar="false" method="GET" record="record-from-answer" "#,
                r#"timeLimit="600" timeout="20">+15551234567</Dial>"#,
            )),
        );
    }

    #[test]
    fn dial_record_values() {
        let values: Vec<&str> = [
            DialRecord::DoNotRecord,
            DialRecord::RecordFromAnswer,
            DialRecord::RecordFromRinging,
            DialRecord::RecordFromAnswerDual,
            DialRecord::RecordFromRingingDual,
        ]
        .into_iter()
        .map(DialRecord::as_str)
        .collect();
        assert_eq!(
            values,
            [
                "do-not-record",
                "record-from-answer",
                "record-from-ringing",
                "record-from-answer-dual",
                "record-from-ringing-dual",
            ]
        );
    }

    #[test]
    fn dial_nested_numbers() {
        let response = Response::new().dial(
            Dial::numbers([
                Number::new("+15551110000").send_digits("wwww1928"),
                Number::new("+15552220000")
                    .url("https://example.com/screen")
                    .method(Method::Post)
                    .status_callback("https://example.com/status")
                    .status_callback_method(Method::Post)
                    .status_callback_event("initiated ringing answered completed"),
            ])
            .caller_id("+15557654321"),
        );
        assert_twiml(
            &response,
            &in_response(concat!(
                r#"<Dial callerId="+15557654321">"#,
                r#"<Number sendDigits="wwww1928">+15551110000</Number>"#,
                r#"<Number method="POST" statusCallback="https://example.com/status" "#,
                r#"statusCallbackEvent="initiated ringing answered completed" "#,
                r#"statusCallbackMethod="POST" url="https://example.com/screen">"#,
                r#"+15552220000</Number>"#,
                r#"</Dial>"#,
            )),
        );
        assert_twiml(
            &Response::new().dial(Dial::numbers([])),
            &in_response("<Dial />"),
        );
    }

    #[test]
    fn hangup_and_reject() {
        let response = Response::new()
            .reject(Reject::new())
            .reject(Reject::new().reason(RejectReason::Busy))
            .reject(Reject::default().reason(RejectReason::Rejected))
            .hangup();
        assert_twiml(
            &response,
            &in_response(concat!(
                r#"<Reject />"#,
                r#"<Reject reason="busy" />"#,
                r#"<Reject reason="rejected" />"#,
                r#"<Hangup />"#,
            )),
        );
    }

    #[test]
    fn redirect_with_method_and_query_string() {
        let response = Response::new()
            .redirect(Redirect::new("https://example.com/next?a=1&b=2").method(Method::Post))
            .redirect(Redirect::new("/again"));
        assert_twiml(
            &response,
            &in_response(concat!(
                r#"<Redirect method="POST">https://example.com/next?a=1&amp;b=2</Redirect>"#,
                r#"<Redirect>/again</Redirect>"#,
            )),
        );
    }

    #[test]
    fn connect_stream_with_all_attributes() {
        let response = Response::new().connect(
            Connect::new()
                .action("https://example.com/after")
                .method(Method::Post)
                .stream(
                    Stream::new("wss://example.com/s")
                        .name("agent")
                        .track(StreamTrack::InboundTrack)
                        .status_callback("https://example.com/stream-status")
                        .status_callback_method(Method::Get)
                        .parameter("agent", "echo")
                        .parameter("lang", "en"),
                ),
        );
        assert_twiml(
            &response,
            &in_response(concat!(
                r#"<Connect action="https://example.com/after" method="POST">"#,
                r#"<Stream name="agent" statusCallback="https://example.com/stream-status" "#,
                r#"statusCallbackMethod="GET" track="inbound_track" url="wss://example.com/s">"#,
                r#"<Parameter name="agent" value="echo" />"#,
                r#"<Parameter name="lang" value="en" />"#,
                r#"</Stream></Connect>"#,
            )),
        );
    }

    #[test]
    fn connect_holds_one_stream_and_attributes_keep_last_value() {
        let response = Response::new().connect(
            Connect::default()
                .stream(Stream::new("wss://example.com/first"))
                .stream(Stream::new("wss://example.com/second").name("a").name("b")),
        );
        assert_twiml(
            &response,
            &in_response(
                r#"<Connect><Stream name="b" url="wss://example.com/second" /></Connect>"#,
            ),
        );
        assert_twiml(
            &Response::new().connect(Connect::new()),
            &in_response("<Connect />"),
        );
    }

    #[test]
    fn start_and_stop_stream() {
        let response = Response::new()
            .start(
                Start::new()
                    .action("https://example.com/started")
                    .method(Method::Get)
                    .stream(
                        Stream::new("wss://example.com/fork")
                            .name("fork1")
                            .track(StreamTrack::BothTracks),
                    ),
            )
            .start(
                Start::default()
                    .stream(Stream::new("wss://example.com/out").track(StreamTrack::OutboundTrack)),
            )
            .say(Say::new("This call is being transcribed."))
            .stop(Stop::new().stream(Stream::named("fork1")))
            .stop(Stop::default());
        assert_twiml(
            &response,
            &in_response(concat!(
                r#"<Start action="https://example.com/started" method="GET">"#,
                r#"<Stream name="fork1" track="both_tracks" url="wss://example.com/fork" />"#,
                r#"</Start>"#,
                r#"<Start><Stream track="outbound_track" url="wss://example.com/out" /></Start>"#,
                r#"<Say>This call is being transcribed.</Say>"#,
                r#"<Stop><Stream name="fork1" /></Stop>"#,
                r#"<Stop />"#,
            )),
        );
    }

    #[test]
    fn verbs_keep_their_order() {
        let response = Response::new()
            .say(Say::new("one"))
            .pause(Pause::new())
            .play(Play::new("two.mp3"))
            .gather(Gather::new().say(Say::new("three")))
            .redirect(Redirect::new("/four"));
        assert_twiml(
            &response,
            &in_response(concat!(
                "<Say>one</Say><Pause /><Play>two.mp3</Play>",
                "<Gather><Say>three</Say></Gather><Redirect>/four</Redirect>",
            )),
        );
    }

    #[test]
    fn escapes_special_characters_in_text() {
        let response = Response::new().say(Say::new(
            "a & b < c > d \"double\" 'single' &amp; tab\there\nnew line",
        ));
        assert_twiml(
            &response,
            &in_response(concat!(
                "<Say>a &amp; b &lt; c &gt; d \"double\" 'single' &amp;amp; ",
                "tab\there\nnew line</Say>",
            )),
        );
    }

    #[test]
    fn escapes_special_characters_in_attributes() {
        let value = "a & b < c > d \"double\" 'single' &quot; cr\rlf\ntab\t.";
        let response = Response::new().say(Say::new("x").voice(value));
        assert_twiml(
            &response,
            &in_response(concat!(
                r#"<Say voice="a &amp; b &lt; c &gt; d &quot;double&quot; 'single' "#,
                r#"&amp;quot; cr&#13;lf&#10;tab&#09;.">x</Say>"#,
            )),
        );
        // The escaping round-trips: an XML parser reads back the original value.
        let tree = parse_tree(&response.to_xml());
        assert_eq!(
            tree.children[0].attrs,
            [("voice".to_owned(), value.to_owned())]
        );
    }

    #[test]
    fn escaped_text_round_trips() {
        let text = "Tom & Jerry <b> \"q\" 'a' ]]> &lt; \t\n";
        let tree = parse_tree(&Response::new().say(Say::new(text)).to_xml());
        assert_eq!(tree.children[0].text, text);
    }

    #[test]
    fn drops_characters_illegal_in_xml() {
        let dirty = "a\u{0}b\u{1}c\u{8}d\u{b}e\u{c}f\u{e}g\u{1f}h\u{fffe}i\u{ffff}j";
        let response = Response::new()
            .say(Say::new(dirty).voice(dirty))
            .say(Say::new("\u{0}\u{7}"))
            // DEL, C1 controls and U+FFFD are legal XML 1.0 and pass through.
            .say(Say::new("\u{7f}\u{85}\u{fffd}"));
        assert_twiml(
            &response,
            &in_response(concat!(
                r#"<Say voice="abcdefghij">abcdefghij</Say>"#,
                "<Say />",
                "<Say>\u{7f}\u{85}\u{fffd}</Say>",
            )),
        );
    }

    #[test]
    fn unicode_passes_through_unchanged() {
        let text = "Grüße, 世界! Ça va? Привет 🎉";
        let response = Response::new().say(Say::new(text).voice("Polly.Vicki—ß"));
        assert_twiml(
            &response,
            &in_response(r#"<Say voice="Polly.Vicki—ß">Grüße, 世界! Ça va? Привет 🎉</Say>"#),
        );
    }

    #[test]
    fn not_configured_reply() {
        let response = Response::new()
            .say(Say::new("Sorry, this number is not configured. Goodbye."))
            .hangup();
        assert_eq!(
            response.to_xml(),
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                "<Response><Say>Sorry, this number is not configured. Goodbye.</Say>",
                "<Hangup /></Response>",
            )
        );
    }

    #[test]
    fn connect_stream_helper() {
        let parameters = [
            ("agent".to_owned(), "echo".to_owned()),
            ("caller".to_owned(), "+1 <555> & \"co\"".to_owned()),
        ];
        assert_twiml(
            &connect_stream("wss://gw.example.com/media?x=1&y=2", &parameters),
            &in_response(concat!(
                r#"<Connect><Stream url="wss://gw.example.com/media?x=1&amp;y=2">"#,
                r#"<Parameter name="agent" value="echo" />"#,
                r#"<Parameter name="caller" value="+1 &lt;555&gt; &amp; &quot;co&quot;" />"#,
                r#"</Stream></Connect>"#,
            )),
        );
        assert_twiml(
            &connect_stream("wss://gw.example.com/media", &[]),
            &in_response(r#"<Connect><Stream url="wss://gw.example.com/media" /></Connect>"#),
        );
    }

    #[test]
    fn builder_example_from_the_docs() {
        let response = Response::new()
            .say(Say::new("hi").voice("Polly.Joanna"))
            .connect(
                Connect::new()
                    .stream(Stream::new("wss://example.com/stream").parameter("agent", "echo")),
            );
        assert_twiml(
            &response,
            &in_response(concat!(
                r#"<Say voice="Polly.Joanna">hi</Say>"#,
                r#"<Connect><Stream url="wss://example.com/stream">"#,
                r#"<Parameter name="agent" value="echo" /></Stream></Connect>"#,
            )),
        );
    }

    #[test]
    fn enum_attribute_values() {
        assert_eq!(Method::Get.as_str(), "GET");
        assert_eq!(Method::Post.as_str(), "POST");
        assert_eq!(RejectReason::Rejected.as_str(), "rejected");
        assert_eq!(RejectReason::Busy.as_str(), "busy");
        assert_eq!(GatherInput::Dtmf.as_str(), "dtmf");
        assert_eq!(GatherInput::Speech.as_str(), "speech");
        assert_eq!(GatherInput::DtmfSpeech.as_str(), "dtmf speech");
        assert_eq!(StreamTrack::InboundTrack.as_str(), "inbound_track");
        assert_eq!(StreamTrack::OutboundTrack.as_str(), "outbound_track");
        assert_eq!(StreamTrack::BothTracks.as_str(), "both_tracks");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any text XML can carry (every character but the C0 controls other than tab and
            /// newline: XML 1.0 cannot hold the others, and every XML parser reads a carriage
            /// return in text as a newline — ElementTree writes it raw too), said and put in a
            /// stream parameter, parses back with an XML parser to exactly that text.
            #[test]
            fn any_text_survives_escaping(text in "[^\\x00-\\x08\\x0B-\\x1F]{0,80}") {
                let xml = Response::new().say(Say::new(text.clone())).to_xml();
                let tree = parse_tree(&xml);
                prop_assert_eq!(&tree.children[0].text, &text);
                let xml = Response::new()
                    .connect(Connect::new().stream(Stream::new("wss://h/s").parameter("p", text.as_str())))
                    .to_xml();
                let tree = parse_tree(&xml);
                let parameter = &tree.children[0].children[0].children[0];
                prop_assert!(parameter.attrs.contains(&("value".to_string(), text.clone())), "{xml}");
            }
        }
    }
}
