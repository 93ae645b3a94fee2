// The browser phone: the microphone and speakers of this page as a Twilio Media Stream.
//
// Call: the page asks the gateway for a ticket (POST /console/phone {agent}), opens the
// WebSocket it names and speaks Media Streams as Twilio would (design/TWILIO.md §1):
// `connected`, `start` (the ticket's callSid/streamSid, accountSid "browser", inbound track,
// μ-law 8000 Hz mono), then a `media` message per 20 ms of microphone audio. The gateway's
// `media` is played, its `mark`s echoed once the audio before them has played, and `clear`
// drops unplayed audio and echoes the pending marks at once. Hang up sends `stop` and closes.
//
// Audio runs in an AudioWorklet (phone-worklet.js) on an AudioContext at 8000 Hz, so the
// browser resamples the microphone and the speakers itself; when a browser refuses that rate
// (or refuses to connect the microphone to it) the context runs at its own rate and the
// worklet resamples.

import { ApiError, api } from "./api.js";
import { concatBytes, fromBase64, toBase64 } from "./base64.js";

/** Where the gateway serves the worklet (embedded asset). */
export const WORKLET_URL = "/console/assets/phone-worklet.js";

/** Media Streams audio rate (Hz). */
const STREAM_RATE = 8000;

/** Milliseconds of audio per frame (160 μ-law bytes). */
const FRAME_MS = 20;

/** After the gateway hangs up, queued agent audio still plays for at most this long (ms). */
const DRAIN_MS = 10000;

/** How long teardown waits for the worklet's last report before closing the audio (ms). */
const STOP_WAIT_MS = 1000;

/** The phone's states, as #phone-status shows them. */
export const State = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  IN_CALL: "in call",
  ENDED: "ended",
});

/** A user-facing reason a call could not start or ended early. */
class PhoneError extends Error {}

export class BrowserPhone {
  /**
   * @param {object} hooks
   * @param {(state: string, message: string) => void} hooks.onState the phone's state changed;
   *   message says why (may be empty).
   */
  constructor(hooks) {
    this.onState = hooks.onState;
    this.state = State.IDLE;
    this.attempt = 0;
    this.session = null;
    this.resetCall(null);
  }

  /** Forgets the last call: sids, agent and what the test hooks report start afresh. */
  resetCall(agent) {
    this.callSid = null;
    this.streamSid = null;
    this.agent = agent;
    /** μ-law frames sent (Uint8Array each), for sentMulaw(). */
    this.sentChunks = [];
    /** μ-law bytes played (Uint8Array each), for playedMulaw(). */
    this.playedChunks = [];
    this.marksEchoed = 0;
    this.clears = 0;
  }

  /** Every μ-law byte sent in `media` messages this call, in order. */
  sentMulaw() {
    return concatBytes(this.sentChunks);
  }

  /** Every μ-law byte of the gateway's audio actually played this call, in order. */
  playedMulaw() {
    return concatBytes(this.playedChunks);
  }

  setState(state, message = "") {
    this.state = state;
    this.onState(state, message);
  }

  /** Calls `agent`. Resolves once the call is up (or has failed: state "ended" with a reason). */
  async call(agent) {
    if (this.state === State.CONNECTING || this.state === State.IN_CALL) return;
    const attempt = ++this.attempt;
    this.resetCall(agent);
    const session = {
      attempt,
      context: null,
      stream: null,
      node: null,
      socket: null,
      sequence: 0,
      chunk: 0,
      closed: false,
      stopped: null,
    };
    this.session = session;
    this.setState(State.CONNECTING, `Calling ${agent}…`);
    try {
      await this.openAudio(session);
      this.check(session);
      let ticket;
      try {
        ticket = await api("/console/phone", { method: "POST", body: { agent } });
      } catch (error) {
        if (error instanceof ApiError) {
          if (error.status === 404) throw new PhoneError(`There is no agent named “${agent}”.`);
          if (error.status === 409) throw new PhoneError(`The agent “${agent}” is disabled.`);
          throw new PhoneError(`The gateway refused the call: ${error.message}`);
        }
        throw error;
      }
      this.check(session);
      this.callSid = ticket.call_sid;
      this.streamSid = ticket.stream_sid;
      await this.openSocket(session, ticket.ws_url);
    } catch (error) {
      if (session !== this.session || session.closed) return;
      const message =
        error instanceof PhoneError
          ? error.message
          : error && error.name === "Unauthorized"
            ? "The token was refused."
            : `The call could not start: ${(error && error.message) || error}`;
      this.teardown(session, false);
      this.setState(State.ENDED, message);
    }
  }

  /** Throws when `session` was hung up (or replaced) while awaiting. */
  check(session) {
    if (session !== this.session || session.closed) throw new PhoneError("Hung up.");
  }

  async openAudio(session) {
    const AudioContextClass = globalThis.AudioContext || globalThis.webkitAudioContext;
    if (!AudioContextClass || !globalThis.AudioWorkletNode) {
      throw new PhoneError("This browser has no AudioWorklet: use a current Chrome, Edge or Firefox.");
    }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new PhoneError(
        "The microphone is only available on a secure page: open the console over https or on localhost.",
      );
    }
    // Created before the first await, while the click's user activation holds.
    let context;
    try {
      context = new AudioContextClass({ sampleRate: STREAM_RATE, latencyHint: "interactive" });
    } catch {
      context = new AudioContextClass({ latencyHint: "interactive" });
    }
    session.context = context;
    const resumed = context.resume().catch(() => {});
    try {
      session.stream = await navigator.mediaDevices.getUserMedia({
        audio: {
          echoCancellation: true,
          noiseSuppression: true,
          autoGainControl: true,
          channelCount: 1,
        },
      });
    } catch (error) {
      const name = error && error.name;
      if (name === "NotAllowedError" || name === "SecurityError") {
        throw new PhoneError("Microphone access was denied. Allow it for this page and call again.");
      }
      if (name === "NotFoundError" || name === "OverconstrainedError") {
        throw new PhoneError("No microphone was found.");
      }
      throw new PhoneError(`The microphone could not be opened: ${(error && error.message) || name}`);
    }
    this.check(session);
    await context.audioWorklet.addModule(WORKLET_URL);
    this.check(session);
    let source;
    try {
      source = context.createMediaStreamSource(session.stream);
    } catch {
      // Firefox cannot connect a microphone to a context at another rate: run at the
      // device's rate and let the worklet resample.
      await context.close().catch(() => {});
      context = new AudioContextClass({ latencyHint: "interactive" });
      session.context = context;
      await context.resume().catch(() => {});
      await context.audioWorklet.addModule(WORKLET_URL);
      this.check(session);
      source = context.createMediaStreamSource(session.stream);
    }
    const node = new AudioWorkletNode(context, "switchboard-phone", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      channelCount: 1,
      channelCountMode: "explicit",
      channelInterpretation: "speakers",
    });
    session.node = node;
    node.port.onmessage = (message) => this.fromWorklet(session, message.data);
    source.connect(node);
    node.connect(context.destination);
    await resumed;
    if (context.state !== "running") await context.resume().catch(() => {});
  }

  openSocket(session, wsUrl) {
    return new Promise((resolve, reject) => {
      const url = new URL(wsUrl, location.href);
      url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
      let socket;
      try {
        socket = new WebSocket(url.href);
      } catch (error) {
        reject(new PhoneError(`The call's WebSocket could not open: ${error.message}`));
        return;
      }
      session.socket = socket;
      let opened = false;
      socket.onopen = () => {
        if (session !== this.session || session.closed) {
          socket.close(1000);
          return;
        }
        opened = true;
        this.send(session, { event: "connected", protocol: "Call", version: "1.0.0" }, false);
        this.send(session, {
          event: "start",
          start: {
            accountSid: "browser",
            streamSid: this.streamSid,
            callSid: this.callSid,
            tracks: ["inbound"],
            customParameters: {},
            mediaFormat: { encoding: "audio/x-mulaw", sampleRate: STREAM_RATE, channels: 1 },
          },
        });
        session.node.port.postMessage({ type: "capture", on: true });
        this.setState(State.IN_CALL, `In a call with ${this.agent}.`);
        resolve();
      };
      socket.onmessage = (message) => this.fromGateway(session, message.data);
      socket.onclose = (event) => {
        if (!opened) {
          reject(new PhoneError("The gateway refused the call's WebSocket (was the ticket used or expired?)."));
          return;
        }
        if (session.closed) return;
        // The gateway hung up: let the agent's last words play, then close the audio.
        const why = event.reason ? `: ${event.reason}` : "";
        this.teardown(session, true);
        this.setState(State.ENDED, `The call ended${why}.`);
      };
      socket.onerror = () => {
        // A close event always follows with the details available.
      };
    });
  }

  /** Sends a Media Streams message; `numbered` adds sequenceNumber and streamSid. */
  send(session, message, numbered = true) {
    const socket = session.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    if (numbered) {
      session.sequence += 1;
      message = { event: message.event, sequenceNumber: String(session.sequence), ...message };
      message.streamSid = this.streamSid;
    }
    socket.send(JSON.stringify(message));
    return true;
  }

  fromGateway(session, data) {
    if (session !== this.session || typeof data !== "string") return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    const node = session.node;
    if (!node) return;
    switch (message.event) {
      case "media": {
        const payload = message.media && message.media.payload;
        if (typeof payload !== "string") return;
        let bytes;
        try {
          bytes = fromBase64(payload);
        } catch {
          return;
        }
        node.port.postMessage({ type: "media", bytes }, [bytes.buffer]);
        break;
      }
      case "mark":
        if (message.mark && typeof message.mark.name === "string") {
          node.port.postMessage({ type: "mark", name: message.mark.name });
        }
        break;
      case "clear":
        this.clears += 1;
        node.port.postMessage({ type: "clear" });
        break;
      default:
        break;
    }
  }

  fromWorklet(session, data) {
    if (session !== this.session || !data) return;
    switch (data.type) {
      case "frame": {
        if (this.state !== State.IN_CALL || session.closed) return;
        session.chunk += 1;
        const sent = this.send(session, {
          event: "media",
          media: {
            track: "inbound",
            chunk: String(session.chunk),
            timestamp: String((session.chunk - 1) * FRAME_MS),
            payload: toBase64(data.bytes),
          },
        });
        if (sent) this.sentChunks.push(data.bytes);
        else session.chunk -= 1;
        break;
      }
      case "played":
        this.playedChunks.push(data.bytes);
        break;
      case "mark":
        if (this.send(session, { event: "mark", mark: { name: data.name } })) {
          this.marksEchoed += 1;
        }
        break;
      case "stopped":
        if (session.stopped) session.stopped();
        break;
      default:
        break;
    }
  }

  /** Hangs up: `stop` to the gateway, the socket closed, the microphone released. */
  hangUp() {
    const session = this.session;
    if (!session || session.closed) return;
    if (this.state === State.IN_CALL) {
      this.send(session, { event: "stop", stop: { accountSid: "browser", callSid: this.callSid } });
    }
    this.teardown(session, false);
    this.setState(State.ENDED, "You hung up.");
  }

  /**
   * Releases the call's resources. drain: the agent's queued audio plays out first (the
   * gateway hung up); otherwise playback stops now.
   */
  teardown(session, drain) {
    if (session.closed) return;
    session.closed = true;
    const { socket, node, stream } = session;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000, "hang up");
    if (stream) for (const track of stream.getTracks()) track.stop();
    const closeAudio = () => {
      if (session.context) session.context.close().catch(() => {});
    };
    if (!node) {
      closeAudio();
      return;
    }
    node.port.postMessage({ type: "capture", on: false });
    node.port.postMessage({ type: drain ? "drain" : "stop", maxMs: DRAIN_MS });
    const wait = drain ? DRAIN_MS + STOP_WAIT_MS : STOP_WAIT_MS;
    const timer = setTimeout(closeAudio, wait);
    session.stopped = () => {
      clearTimeout(timer);
      // The worklet's last messages (played bytes) arrive before "stopped".
      setTimeout(closeAudio, 0);
    };
  }
}
