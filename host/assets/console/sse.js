// Server-Sent Events over fetch(): the console's live feed (GET /events).
//
// EventSource cannot send an Authorization header, so the page reads the stream with fetch()
// and parses the frames itself. SseParser follows the WHATWG HTML "event stream
// interpretation" rules (lines end in CRLF, LF or CR; `:` starts a comment; `data` lines join
// with "\n"; `id` persists across events and reconnections; an event without data is not
// dispatched). EventFeed keeps one such stream open, resuming with Last-Event-ID after a drop
// and backing off 1 s, 2 s, 4 s … 10 s while the server cannot be reached.
//
// No DOM use: Node's test runner imports this module too.

/** Incremental parser of a text/event-stream body. */
export class SseParser {
  /**
   * @param {(event: {id: string, event: string, data: string}) => void} onEvent
   *   called for each dispatched event (`event` defaults to "message").
   * @param {(text: string) => void} [onComment] called for each comment line, without the colon.
   * @param {string} [lastEventId] the last event id seen before (it persists across
   *   reconnections, as EventSource's does).
   */
  constructor(onEvent, onComment = () => {}, lastEventId = "") {
    this.onEvent = onEvent;
    this.onComment = onComment;
    /** The id of the last event (the id buffer at the last dispatch). */
    this.lastEventId = lastEventId;
    /** The last valid `retry:` value (ms), or null. */
    this.retry = null;
    this.buffer = "";
    this.idBuffer = lastEventId;
    this.data = "";
    this.eventType = "";
    this.started = false;
    this.skipLf = false;
  }

  /** Feeds decoded text (any split: mid-line, mid-CRLF, several events at once). */
  push(text) {
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.skipLf && text.length > 0) {
      // The previous piece ended with CR: an LF right after it belongs to the same line end.
      if (text[0] === "\n") text = text.slice(1);
      this.skipLf = false;
    }
    let buffer = this.buffer + text;
    let start = 0;
    const eol = /[\r\n]/g;
    let match;
    while ((match = eol.exec(buffer)) !== null) {
      const at = match.index;
      const line = buffer.slice(start, at);
      if (buffer[at] === "\r") {
        if (at + 1 === buffer.length) {
          this.skipLf = true;
        } else if (buffer[at + 1] === "\n") {
          eol.lastIndex = at + 2;
        }
      }
      start = eol.lastIndex;
      this.line(line);
    }
    this.buffer = buffer.slice(start);
  }

  /** The stream ended: an unterminated event is discarded (as the specification says). */
  end() {
    this.buffer = "";
    this.data = "";
    this.eventType = "";
    this.skipLf = false;
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line[0] === ":") {
      this.onComment(line.slice(1));
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.data += value + "\n";
        break;
      case "id":
        if (!value.includes("\0")) this.idBuffer = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // Unknown fields are ignored.
    }
  }

  dispatch() {
    this.lastEventId = this.idBuffer;
    if (this.data === "") {
      this.eventType = "";
      return;
    }
    const data = this.data.endsWith("\n") ? this.data.slice(0, -1) : this.data;
    const event = { id: this.lastEventId, event: this.eventType || "message", data };
    this.data = "";
    this.eventType = "";
    this.onEvent(event);
  }
}

/** First wait before reconnecting (ms). */
export const MIN_RETRY_MS = 1000;
/** Longest wait between reconnections (ms). */
export const MAX_RETRY_MS = 10000;
/** A stream silent this long (no event, no keep-alive comment) is presumed dead (ms). */
export const IDLE_TIMEOUT_MS = 60000;

/**
 * One long-lived SSE stream read with fetch(), reconnected after every drop.
 *
 * Status callbacks: "connecting", "live", "reconnecting" (with the wait in ms), "stopped".
 * A 401 stops the feed and calls onUnauthorized.
 */
export class EventFeed {
  /**
   * @param {object} options
   * @param {string} options.url the stream's URL, e.g. "/events".
   * @param {() => Record<string, string>} options.headers extra headers for each request
   *   (Authorization).
   * @param {(event: {id: string, event: string, data: string}) => void} options.onEvent
   * @param {(status: string, detail?: number) => void} [options.onStatus]
   * @param {() => void} [options.onUnauthorized]
   * @param {typeof fetch} [options.fetch]
   * @param {number} [options.minRetryMs] @param {number} [options.maxRetryMs]
   * @param {number} [options.idleTimeoutMs]
   */
  constructor(options) {
    this.url = options.url;
    this.headers = options.headers || (() => ({}));
    this.onEvent = options.onEvent;
    this.onStatus = options.onStatus || (() => {});
    this.onUnauthorized = options.onUnauthorized || (() => {});
    this.fetch = options.fetch || globalThis.fetch.bind(globalThis);
    this.minRetryMs = options.minRetryMs ?? MIN_RETRY_MS;
    this.maxRetryMs = options.maxRetryMs ?? MAX_RETRY_MS;
    this.idleTimeoutMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
    /** Sent as Last-Event-ID on the next connection ("" for none). */
    this.lastEventId = "";
    this.stopped = true;
    this.controller = null;
    this.wake = null;
    this.done = null;
  }

  /** Opens the stream (no-op when already running). */
  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.done = this.run();
  }

  /** Closes the stream for good; resolves once the loop has exited. */
  async stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
    if (this.wake) this.wake();
    await this.done;
  }

  async run() {
    let delay = this.minRetryMs;
    while (!this.stopped) {
      this.onStatus("connecting");
      const controller = new AbortController();
      this.controller = controller;
      let heard = false;
      let idle = null;
      const arm = () => {
        clearTimeout(idle);
        idle = setTimeout(() => controller.abort(), this.idleTimeoutMs);
      };
      try {
        const headers = { Accept: "text/event-stream", ...this.headers() };
        if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
        arm();
        const response = await this.fetch(this.url, {
          headers,
          signal: controller.signal,
          cache: "no-store",
        });
        if (response.status === 401) {
          clearTimeout(idle);
          this.stopped = true;
          this.onStatus("stopped");
          this.onUnauthorized();
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        this.onStatus("live");
        const parser = new SseParser(
          (event) => {
            this.lastEventId = parser.lastEventId;
            this.onEvent(event);
          },
          () => {},
          this.lastEventId,
        );
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          arm();
          if (value.length > 0) heard = true;
          parser.push(value);
          // An id-only block moves the resume point too.
          this.lastEventId = parser.lastEventId;
          if (this.stopped) break;
        }
        parser.end();
        if (parser.retry !== null) {
          // The server's `retry:` (ms), within reason: never a tight loop.
          this.minRetryMs = Math.min(Math.max(parser.retry, 250), this.maxRetryMs);
        }
      } catch (_error) {
        // A network error, an abort (stop() or the idle watchdog), or a non-2xx answer:
        // all end in a reconnection unless stopped.
      } finally {
        clearTimeout(idle);
      }
      if (this.stopped) break;
      if (heard) delay = this.minRetryMs;
      this.onStatus("reconnecting", delay);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
      delay = Math.min(delay * 2, this.maxRetryMs);
    }
    this.onStatus("stopped");
  }
}
