declare module 'switchboard:plugin/types@0.2.0' {
  /**
   * How audio samples are encoded.
   * # Variants
   * 
   * ## `"pcm16"`
   * 
   * Signed 16-bit little-endian PCM, mono.
   * ## `"mulaw"`
   * 
   * ITU-T G.711 μ-law, one byte per sample, mono.
   */
  export type AudioEncoding = 'pcm16' | 'mulaw';
  /**
   * An encoding at a sample rate.
   */
  export interface AudioFormat {
    encoding: AudioEncoding,
    /**
     * Samples per second (Hz), e.g. 8000, 16000, 24000.
     */
    sampleRate: number,
  }
  /**
   * A run of audio. `data` holds whole samples in `format`; any duration is allowed on output
   * (the host re-frames to 20 ms for Twilio). Caller audio arrives as 20 ms frames.
   */
  export interface AudioFrame {
    format: AudioFormat,
    data: Uint8Array,
    /**
     * Milliseconds since the stream started (Twilio's `media.timestamp`); 0 on output.
     */
    timestampMs: bigint,
  }
  /**
   * Who is calling whom, as the host learned it from Twilio.
   */
  export interface CallInfo {
    /**
     * Twilio's `CallSid` (`CA…`).
     */
    callSid: string,
    /**
     * Twilio's `streamSid` (`MZ…`).
     */
    streamSid: string,
    /**
     * Caller number, E.164 when Twilio knows it.
     */
    from: string,
    /**
     * Called number, E.164.
     */
    to: string,
    /**
     * `inbound`, `outbound-api` or `outbound-dial`.
     */
    direction: string,
    /**
     * Name of the agent in agents.toml that this call was routed to.
     */
    agent: string,
    /**
     * The stream's `customParameters`, in the order Twilio sent them. An outbound call
     * placed with a task (`POST /calls`) adds `task.prompt`, `task.type` and `task.context`.
     */
    parameters: Array<[string, string]>,
  }
  /**
   * Everything a session needs to start.
   */
  export interface SessionConfig {
    call: CallInfo,
    /**
     * The agent's plugin settings (plugin defaults overlaid by the agent's), as a JSON object.
     */
    settings: string,
    /**
     * The agent's greeting, if it has one; the plugin speaks it its own way or ignores it.
     */
    greeting?: string,
    /**
     * Format of the caller audio this session will receive (what `describe` asked for).
     */
    inputFormat: AudioFormat,
  }
  /**
   * Why a plugin refused or failed.
   */
  export type PluginError = PluginErrorInvalidConfig | PluginErrorUnauthorized | PluginErrorUpstream | PluginErrorRateLimited | PluginErrorUnsupported | PluginErrorInternal;
  /**
   * The settings are wrong; the message says which key and why.
   */
  export interface PluginErrorInvalidConfig {
    tag: 'invalid-config',
    val: string,
  }
  /**
   * A credential was missing or refused.
   */
  export interface PluginErrorUnauthorized {
    tag: 'unauthorized',
    val: string,
  }
  /**
   * An upstream service failed.
   */
  export interface PluginErrorUpstream {
    tag: 'upstream',
    val: string,
  }
  /**
   * An upstream service asked to slow down; optional retry-after in seconds.
   */
  export interface PluginErrorRateLimited {
    tag: 'rate-limited',
    val: number | undefined,
  }
  /**
   * The plugin cannot do what was asked.
   */
  export interface PluginErrorUnsupported {
    tag: 'unsupported',
    val: string,
  }
  /**
   * A bug in the plugin.
   */
  export interface PluginErrorInternal {
    tag: 'internal',
    val: string,
  }
  /**
   * Severity of a log line.
   * # Variants
   * 
   * ## `"trace"`
   * 
   * ## `"debug"`
   * 
   * ## `"info"`
   * 
   * ## `"warn"`
   * 
   * ## `"error"`
   */
  export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /**
   * A socket, request or timer the host opened for the session; unique within the session.
   */
  export type IoHandle = number;
  /**
   * An HTTP or WebSocket-handshake header.
   */
  export interface Header {
    name: string,
    value: string,
  }
  /**
   * One WebSocket message.
   */
  export type Payload = PayloadText | PayloadBinary;
  export interface PayloadText {
    tag: 'text',
    val: string,
  }
  export interface PayloadBinary {
    tag: 'binary',
    val: Uint8Array,
  }
  /**
   * An HTTP request the host sends on the plugin's behalf. The response streams back as
   * `http-head`, `http-chunk`… and `http-done` (or `failed`), so SSE works.
   */
  export interface HttpRequest {
    /**
     * `GET`, `POST`, …
     */
    method: string,
    /**
     * `https://…` (or `http://…`); the host must be in the agent's `allowed_hosts`.
     */
    url: string,
    headers: Array<Header>,
    body: Uint8Array,
  }
  /**
   * Why the host refused an I/O call at once.
   */
  export type IoError = IoErrorDenied | IoErrorLimit | IoErrorInvalid;
  /**
   * The URL's host is not in the agent's `allowed_hosts`.
   */
  export interface IoErrorDenied {
    tag: 'denied',
    val: string,
  }
  /**
   * A per-session cap (sockets, requests, timers) was reached.
   */
  export interface IoErrorLimit {
    tag: 'limit',
    val: string,
  }
  /**
   * Malformed: a bad URL, an unknown or closed handle.
   */
  export interface IoErrorInvalid {
    tag: 'invalid',
    val: string,
  }
  /**
   * A message that arrived on a WebSocket.
   */
  export interface WsMessage {
    socket: IoHandle,
    message: Payload,
  }
  /**
   * A WebSocket closed (by the peer, or after `ws-close`).
   */
  export interface WsClosed {
    socket: IoHandle,
    /**
     * RFC 6455 close code (1006 when the connection dropped without one).
     */
    code: number,
    reason: string,
  }
  /**
   * The status line and headers of an HTTP response.
   */
  export interface HttpHead {
    request: IoHandle,
    status: number,
    headers: Array<Header>,
  }
  /**
   * Part of an HTTP response body, as it arrived.
   */
  export interface HttpChunk {
    request: IoHandle,
    data: Uint8Array,
  }
  /**
   * An I/O operation failed after it started (connect refused, TLS, reset…).
   */
  export interface IoFailed {
    target: IoHandle,
    error: string,
  }
  /**
   * The completion of something the plugin asked the host to do.
   */
  export type IoEvent = IoEventWsOpened | IoEventWsMessage | IoEventWsClosed | IoEventHttpHead | IoEventHttpChunk | IoEventHttpDone | IoEventFailed | IoEventTimer;
  /**
   * A `ws-connect` succeeded.
   */
  export interface IoEventWsOpened {
    tag: 'ws-opened',
    val: IoHandle,
  }
  export interface IoEventWsMessage {
    tag: 'ws-message',
    val: WsMessage,
  }
  export interface IoEventWsClosed {
    tag: 'ws-closed',
    val: WsClosed,
  }
  export interface IoEventHttpHead {
    tag: 'http-head',
    val: HttpHead,
  }
  export interface IoEventHttpChunk {
    tag: 'http-chunk',
    val: HttpChunk,
  }
  /**
   * The response body is complete.
   */
  export interface IoEventHttpDone {
    tag: 'http-done',
    val: IoHandle,
  }
  export interface IoEventFailed {
    tag: 'failed',
    val: IoFailed,
  }
  /**
   * A timer set with `set-timer` fired.
   */
  export interface IoEventTimer {
    tag: 'timer',
    val: IoHandle,
  }
  /**
   * What a plugin is and what it wants.
   */
  export interface PluginInfo {
    /**
     * Short machine name, e.g. `echo`.
     */
    name: string,
    /**
     * The plugin's own version (semver).
     */
    version: string,
    /**
     * One line for operators.
     */
    description: string,
    /**
     * The caller audio format the plugin wants; the host converts from 8 kHz μ-law.
     */
    inputFormat: AudioFormat,
  }
}
