// Server-sent events (`text/event-stream`), parsed incrementally as an HTTP body's chunks arrive,
// per the WHATWG HTML standard, §9.2.6 "Interpreting an event stream" — the JavaScript twin of
// plugins/openai-http/src/sse.rs: lines end in `\r\n`, `\n` or `\r` (a `\r\n` split across
// chunks is one line end); a line starting with `:` is a comment; `field: value` loses one space
// after the colon; `data` lines of one event are joined with `\n`; an empty line dispatches the
// event (none when it had no `data`); a leading byte-order mark is dropped; `id` and `retry` are
// ignored. Bytes are decoded as UTF-8 in streaming mode, so a character split across chunks is
// whole; a byte that is not UTF-8 is an error.
//
// As in the Rust parser, `finish()` dispatches a last event that lacks its closing blank line, so
// a server that ends with `data: [DONE]` and no blank line still ends cleanly.

/** Longest line (and longest event's data) accepted, in characters: far beyond any
 * chat-completion chunk (a few hundred bytes); a stream that sends more without a line end is
 * broken. */
export const MAX_LINE_CHARS = 1 << 20;

/** @typedef {{ event: string, data: string }} SseEvent the `event` field (`message` when none) and the joined `data` */

export class SseParser {
  constructor() {
    this.decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });
    /** The current line, not yet ended. */
    this.line = '';
    /** The last character fed was `\r`: a `\n` first in the next chunk ends nothing. */
    this.afterCr = false;
    /** @type {string[] | null} the current event's data lines (null: no `data` yet) */
    this.data = null;
    this.dataChars = 0;
    this.event = '';
  }

  /**
   * Feeds one chunk of the body; returns the events it completed. Throws `Error` when a line
   * passes `MAX_LINE_CHARS` or the bytes are not UTF-8.
   * @param {Uint8Array} bytes
   * @returns {SseEvent[]}
   */
  feed(bytes) {
    return this.text(this.decode(bytes, true));
  }

  /**
   * The body ended: returns the last events, including one without its closing blank line.
   * @returns {SseEvent[]}
   */
  finish() {
    const out = this.text(this.decode(new Uint8Array(), false));
    if (this.line !== '') {
      this.onLine(this.line, out);
      this.line = '';
    }
    this.dispatch(out);
    return out;
  }

  /** @param {Uint8Array} bytes @param {boolean} stream */
  decode(bytes, stream) {
    try {
      return this.decoder.decode(bytes, { stream });
    } catch {
      throw new Error('an event stream line is not UTF-8');
    }
  }

  /** @param {string} text @returns {SseEvent[]} */
  text(text) {
    /** @type {SseEvent[]} */
    const out = [];
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (c !== '\r' && c !== '\n') continue;
      if (c === '\n' && i === 0 && this.afterCr && this.line === '') {
        start = 1;
        this.afterCr = false;
        continue;
      }
      const line = this.line + text.slice(start, i);
      this.line = '';
      if (c === '\r' && text[i + 1] === '\n') i++;
      this.afterCr = c === '\r' && i === text.length - 1;
      start = i + 1;
      this.onLine(line, out);
    }
    if (start < text.length) {
      this.afterCr = false;
      this.line += text.slice(start);
      if (this.line.length > MAX_LINE_CHARS) throw new Error(`an event stream line passed ${MAX_LINE_CHARS} characters`);
    }
    return out;
  }

  /** @param {string} line @param {SseEvent[]} out */
  onLine(line, out) {
    if (line === '') {
      this.dispatch(out);
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') {
      this.dataChars += value.length + 1;
      if (this.dataChars > MAX_LINE_CHARS) throw new Error(`an event's data passed ${MAX_LINE_CHARS} characters`);
      (this.data ??= []).push(value);
    } else if (field === 'event') {
      this.event = value;
    }
  }

  /** @param {SseEvent[]} out */
  dispatch(out) {
    if (this.data !== null) out.push({ event: this.event || 'message', data: this.data.join('\n') });
    this.data = null;
    this.dataChars = 0;
    this.event = '';
  }
}
