// The browser phone's playback buffer: what the gateway sent, waiting to be heard.
//
// It behaves as Twilio's does for a <Connect><Stream> (design/TWILIO.md §1): `media` audio
// plays in order; a `mark` is queued behind the audio sent before it and reported when
// playback reaches it; `clear` drops the unplayed audio and reports every pending mark at
// once. Rendered bytes are reported too (for the page's playedMulaw() test hook), silence
// played while nothing is queued is not.
//
// Pure logic, no Web Audio: phone-worklet.js drives it from process(); Node's tests drive it
// directly.

import { DECODE_TABLE } from "./mulaw.js";

/** Sample rate of Media Streams audio (Hz). */
export const STREAM_RATE = 8000;

/** Played bytes are reported in batches of at most this many (100 ms at 8 kHz). */
export const PLAYED_BATCH = 800;

const SCALE = 1 / 32768;

export class PlaybackQueue {
  /**
   * @param {number} outputRate the rate render() fills its buffers at (Hz); 8000 plays the
   *   bytes one for one, any other rate is interpolated linearly.
   * @param {object} sink
   * @param {(bytes: Uint8Array) => void} sink.played μ-law bytes just rendered, in order.
   * @param {(name: string, cleared: boolean) => void} sink.mark a mark reached (or cleared).
   */
  constructor(outputRate, sink) {
    this.step = STREAM_RATE / outputRate;
    this.sink = sink;
    /** Queue of Uint8Array (audio) and {mark: name} items, oldest first. */
    this.items = [];
    this.head = 0; // index of the next unplayed byte in items[0] when it is audio
    this.queuedBytes = 0;
    this.played = new Uint8Array(PLAYED_BATCH);
    this.playedLength = 0;
    // Interpolation state (outputRate != 8000): the last two input samples and the position
    // between them.
    this.prev = 0;
    this.cur = 0;
    this.phase = 0;
    this.active = false;
  }

  /** Bytes of audio waiting to play. */
  get pending() {
    return this.queuedBytes;
  }

  /** Marks waiting for the audio queued before them. */
  get pendingMarks() {
    let n = 0;
    for (const item of this.items) if (!(item instanceof Uint8Array)) n++;
    return n;
  }

  /** Queues μ-law bytes (8 kHz) to play after everything queued so far. */
  enqueue(bytes) {
    if (bytes.length === 0) return;
    this.items.push(bytes);
    this.queuedBytes += bytes.length;
  }

  /** Queues a mark behind the audio queued so far; reported when that audio has played. */
  mark(name) {
    this.items.push({ mark: String(name) });
  }

  /** Drops all unplayed audio and reports every pending mark (cleared = true). Returns how
   * many marks were reported. */
  clear() {
    this.flush();
    const marks = [];
    for (const item of this.items) if (!(item instanceof Uint8Array)) marks.push(item.mark);
    this.items = [];
    this.head = 0;
    this.queuedBytes = 0;
    this.active = false;
    this.phase = 0;
    this.prev = 0;
    this.cur = 0;
    for (const name of marks) this.sink.mark(name, true);
    return marks.length;
  }

  /** Reports the bytes rendered since the last report. */
  flush() {
    if (this.playedLength === 0) return;
    this.sink.played(this.played.slice(0, this.playedLength));
    this.playedLength = 0;
  }

  /** Reports marks at the head of the queue: all the audio before them has played. */
  reachMarks() {
    while (this.items.length > 0 && !(this.items[0] instanceof Uint8Array)) {
      const { mark } = this.items.shift();
      this.flush();
      this.sink.mark(mark, false);
    }
  }

  /** The next byte to play, or -1 when nothing is queued. */
  pull() {
    this.reachMarks();
    if (this.items.length === 0) return -1;
    const chunk = this.items[0];
    const byte = chunk[this.head++];
    if (this.head >= chunk.length) {
      this.items.shift();
      this.head = 0;
    }
    this.queuedBytes--;
    this.played[this.playedLength++] = byte;
    if (this.playedLength === this.played.length) this.flush();
    this.reachMarks();
    return byte;
  }

  /** Fills `out` (Float32Array, -1..1) with the next audio; silence where nothing is queued. */
  render(out) {
    this.reachMarks();
    if (this.step === 1) {
      for (let i = 0; i < out.length; i++) {
        const byte = this.pull();
        out[i] = byte < 0 ? 0 : DECODE_TABLE[byte] * SCALE;
      }
    } else {
      this.renderResampled(out);
    }
    if (this.items.length === 0) this.flush();
  }

  /** Linear interpolation from 8 kHz to the output rate; one input sample of delay. */
  renderResampled(out) {
    for (let i = 0; i < out.length; i++) {
      if (!this.active) {
        const byte = this.pull();
        if (byte < 0) {
          out[i] = 0;
          continue;
        }
        this.active = true;
        this.prev = this.cur;
        this.cur = DECODE_TABLE[byte];
        this.phase = 0;
      }
      out[i] = (this.prev + (this.cur - this.prev) * this.phase) * SCALE;
      this.phase += this.step;
      while (this.phase >= 1) {
        this.phase -= 1;
        const byte = this.pull();
        this.prev = this.cur;
        if (byte < 0) {
          // Ran dry: fade the last sample out and wait for more.
          this.cur = 0;
          this.active = false;
          break;
        }
        this.cur = DECODE_TABLE[byte];
      }
    }
  }
}
