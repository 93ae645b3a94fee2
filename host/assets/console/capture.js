// The browser phone's microphone path: Web Audio samples → 8 kHz → μ-law → 20 ms frames.
//
// Media Streams carry 160 μ-law bytes (20 ms at 8 kHz) per `media` message. When the
// AudioContext runs at 8000 Hz (Chrome resamples the microphone itself) samples are encoded one
// for one; at any other rate they are low-pass filtered (windowed sinc below 3.6 kHz) and
// decimated first. Pure logic, no Web Audio: phone-worklet.js drives it; Node's tests too.

import { encodeFloat } from "./mulaw.js";

/** Media Streams audio rate (Hz). */
export const STREAM_RATE = 8000;

/** Samples (= μ-law bytes) per frame: 20 ms at 8 kHz, as Twilio sends. */
export const FRAME_SAMPLES = 160;

/** Low-pass cutoff before decimation (Hz): under the 4 kHz Nyquist of 8 kHz audio. */
const CUTOFF_HZ = 3600;

/** Filter length per unit of decimation ratio (taps ≈ 16 × ratio, odd). */
const TAPS_PER_RATIO = 16;

/** Decimates audio from `inputRate` to 8 kHz through a windowed-sinc low-pass filter. */
export class Downsampler {
  constructor(inputRate) {
    this.ratio = inputRate / STREAM_RATE;
    const taps = (Math.ceil(this.ratio * TAPS_PER_RATIO) | 1) >>> 0;
    const fc = CUTOFF_HZ / inputRate; // cycles per input sample
    const middle = (taps - 1) / 2;
    this.kernel = new Float32Array(taps);
    let sum = 0;
    for (let i = 0; i < taps; i++) {
      const t = i - middle;
      const sinc = t === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * t) / (Math.PI * t);
      // Blackman window.
      const w =
        0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps - 1)) +
        0.08 * Math.cos((4 * Math.PI * i) / (taps - 1));
      this.kernel[i] = sinc * w;
      sum += this.kernel[i];
    }
    for (let i = 0; i < taps; i++) this.kernel[i] /= sum; // unity gain at DC
    this.history = new Float32Array(taps);
    this.at = 0; // next write position in history (ring)
    this.until = 1; // input samples until the next output (fractional): the first emits
  }

  /** Feeds input samples; calls emit(sample) for each 8 kHz output sample. */
  push(samples, emit) {
    const { kernel, history } = this;
    const taps = kernel.length;
    for (let n = 0; n < samples.length; n++) {
      history[this.at] = samples[n];
      this.at = this.at + 1 === taps ? 0 : this.at + 1;
      this.until -= 1;
      if (this.until <= 0) {
        this.until += this.ratio;
        // Convolve: history oldest → newest is at, at+1, …, at-1.
        let acc = 0;
        let j = this.at;
        for (let k = 0; k < taps; k++) {
          acc += kernel[k] * history[j];
          j = j + 1 === taps ? 0 : j + 1;
        }
        emit(acc);
      }
    }
  }
}

/** Collects microphone samples into 160-byte μ-law frames. */
export class Framer {
  /**
   * @param {number} inputRate the rate of the samples given to push() (Hz).
   * @param {(frame: Uint8Array) => void} onFrame called with each full frame (a fresh array
   *   the callee may keep or transfer).
   */
  constructor(inputRate, onFrame) {
    this.onFrame = onFrame;
    this.downsampler = inputRate === STREAM_RATE ? null : new Downsampler(inputRate);
    this.frame = new Uint8Array(FRAME_SAMPLES);
    this.length = 0;
    this.add = (x) => {
      this.frame[this.length++] = encodeFloat(x);
      if (this.length === FRAME_SAMPLES) {
        const full = this.frame;
        this.frame = new Uint8Array(FRAME_SAMPLES);
        this.length = 0;
        this.onFrame(full);
      }
    };
  }

  /** Feeds one block of mono samples (Float32Array, -1..1). */
  push(samples) {
    if (this.downsampler) {
      this.downsampler.push(samples, this.add);
    } else {
      for (let i = 0; i < samples.length; i++) this.add(samples[i]);
    }
  }

  /** Drops a partial frame (e.g. when capture pauses). */
  reset() {
    this.length = 0;
  }
}
