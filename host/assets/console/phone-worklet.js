// AudioWorkletProcessor of the browser phone ("switchboard-phone").
//
// Input: the microphone. While capture is on, its samples become 160-byte μ-law frames
// (capture.js) posted to the page as {type: "frame", bytes}.
// Output: the agent's audio. The page posts {type: "media", bytes} (μ-law from the gateway),
// {type: "mark", name} and {type: "clear"}; the processor plays them through PlaybackQueue
// (playback.js) and posts back {type: "played", bytes} (μ-law actually rendered) and
// {type: "mark", name, cleared} (a mark reached, or dropped by a clear), in that order.
// {type: "capture", on} starts/stops the microphone path. {type: "stop"} ends the processor
// now; {type: "drain", maxMs} once the queued audio has played (at most maxMs from now). Either
// way the last played bytes are reported, then {type: "stopped"}.
//
// Loaded with audioWorklet.addModule("/console/assets/phone-worklet.js"); its imports resolve
// next to it.

import { Framer } from "./capture.js";
import { PlaybackQueue } from "./playback.js";

class PhoneProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    // `sampleRate` is the AudioWorkletGlobalScope's: the AudioContext's rate.
    this.framer = new Framer(sampleRate, (bytes) => {
      this.port.postMessage({ type: "frame", bytes }, [bytes.buffer]);
    });
    this.playback = new PlaybackQueue(sampleRate, {
      played: (bytes) => this.port.postMessage({ type: "played", bytes }, [bytes.buffer]),
      mark: (name, cleared) => this.port.postMessage({ type: "mark", name, cleared }),
    });
    this.capturing = false;
    this.running = true;
    this.drainUntil = null; // currentTime (s) by which a drain ends regardless
    this.mono = null;
    this.port.onmessage = (message) => this.receive(message.data);
  }

  receive(data) {
    switch (data && data.type) {
      case "media":
        this.playback.enqueue(data.bytes);
        break;
      case "mark":
        this.playback.mark(data.name);
        break;
      case "clear":
        this.playback.clear();
        break;
      case "capture":
        this.capturing = Boolean(data.on);
        this.framer.reset();
        break;
      case "stop":
        this.finish();
        break;
      case "drain":
        this.drainUntil = currentTime + (Number(data.maxMs) || 0) / 1000;
        break;
      default:
        break;
    }
  }

  process(inputs, outputs) {
    if (!this.running) return false;
    const input = inputs[0];
    if (this.capturing && input && input.length > 0) {
      let samples = input[0];
      if (input.length > 1) {
        // Mix every channel down to mono.
        if (!this.mono || this.mono.length !== samples.length) {
          this.mono = new Float32Array(samples.length);
        }
        this.mono.fill(0);
        for (const channel of input) {
          for (let i = 0; i < channel.length; i++) this.mono[i] += channel[i] / input.length;
        }
        samples = this.mono;
      }
      this.framer.push(samples);
    }
    const output = outputs[0];
    if (output && output.length > 0) {
      this.playback.render(output[0]);
      for (let c = 1; c < output.length; c++) output[c].set(output[0]);
    }
    if (
      this.running &&
      this.drainUntil !== null &&
      (this.playback.pending === 0 || currentTime >= this.drainUntil)
    ) {
      this.finish();
    }
    return this.running;
  }

  /** Reports what was played and stops processing. */
  finish() {
    if (!this.running) return;
    this.playback.flush();
    this.running = false;
    this.port.postMessage({ type: "stopped" });
  }
}

registerProcessor("switchboard-phone", PhoneProcessor);
