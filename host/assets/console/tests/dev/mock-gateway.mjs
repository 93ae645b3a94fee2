// A stand-in for the gateway's console side, for working on the console without building the
// gateway: it serves the page and answers the console's HTTP contract with made-up data
// (/console/api/overview, /calls, /calls/{sid}, /events, POST /console/phone) and plays the
// echo agent on /console/phone/ws (Media Streams: the caller's audio is sent back, with marks,
// and one `clear`). It records what the browser sent for tests/dev/browser-check.mjs.
//
// Run by hand: node tests/dev/mock-gateway.mjs [port]  → http://127.0.0.1:port/console#token=secret
// No dependencies: the WebSocket server is a minimal RFC 6455 one (text frames, close, ping).

import { createHash, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, extname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ASSETS = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
};
const BOOT = "b7";

const hex = (n) => randomBytes(n).toString("hex");
const sid = (prefix) => prefix + hex(16);

/** The made-up gateway state. */
export function createMock({ token = "secret", simulateCalls = true } = {}) {
  const state = {
    token,
    events: [], // {id, type, json}
    seq: 0,
    sseClients: new Set(),
    sockets: new Set(),
    tickets: new Map(),
    records: new Map(),
    phone: null, // what the last phone socket saw
    phones: [],
    started: Date.now(),
    authFailures: 0,
    /** Requests by method and path (no query), to keep the console frugal. */
    hits: {},
  };

  const now = Date.now();
  const agents = [
    {
      name: "front-desk",
      mode: "pipeline",
      disabled: false,
      numbers: ["+15005550006"],
      plugins: [
        { name: "moonshine", kind: "native", stage: "stt", breaker: "closed" },
        { name: "hours-llm", kind: "wasm", stage: "llm", breaker: "half-open" },
        { name: "piper", kind: "native", stage: "tts", breaker: "closed" },
      ],
    },
    {
      name: "echo",
      mode: "echo",
      disabled: false,
      numbers: ["+15005550007"],
      plugins: [{ name: "echo", kind: "wasm", stage: "realtime", breaker: "closed" }],
    },
    {
      name: "sales",
      mode: "realtime",
      disabled: true,
      numbers: [],
      plugins: [{ name: "openai-realtime", kind: "native", stage: "realtime", breaker: "open" }],
    },
  ];

  function record(overrides) {
    const r = {
      call_sid: sid("CA"),
      direction: "inbound",
      from: "+14155550123",
      to: "+15005550006",
      agent: "front-desk",
      plugin: "moonshine",
      stream_sid: sid("MZ"),
      status: "completed",
      outcome: "completed",
      reason: "caller hung up",
      failure_kind: null,
      task: null,
      result: null,
      created_at_ms: now - 600000,
      started_at_ms: now - 599000,
      answered_at_ms: now - 599500,
      ended_at_ms: now - 520000,
      status_ended_at_ms: now - 519000,
      duration_s: 80,
      frames_in: 3950,
      frames_out: 1800,
      first_audio_ms: 640,
      transcript: [],
      turn_latency: [],
      status_history: [],
      instance: "gw-a",
      updated_at_ms: now - 519000,
      ...overrides,
    };
    state.records.set(r.call_sid, r);
    return r;
  }

  record({
    created_at_ms: now - 300000,
    started_at_ms: now - 299000,
    ended_at_ms: now - 236000,
    transcript: [
      { side: "agent", text: "Thanks for calling Hollis Hardware, how can I help?", heard_ms: null },
      { side: "caller", text: "Hi, what time do you open on Saturday?", heard_ms: null },
      { side: "agent", text: "We open at nine on Saturdays and close at five.", heard_ms: null },
      { side: "caller", text: "And is order 1042 ready?", heard_ms: null },
      {
        side: "tool",
        text: "order_status({\"order\":\"1042\"}) → {\"status\":\"ready\"} (212 ms)",
        heard_ms: null,
        tool: { name: "order_status", arguments: "{\"order\":\"1042\"}", ok: true, result: "{\"status\":\"ready\"}", latency_ms: 212 },
      },
      { side: "agent", text: "Yes, order 1042 is ready for pickup at the front counter. Anything else I", heard_ms: 2300 },
      { side: "caller", text: "No, that's all, thanks.", heard_ms: null },
    ],
    turn_latency: [
      { endpointing_ms: 520, stt_final_ms: 610, llm_first_text_ms: 890, tts_first_audio_ms: 1040, first_audio_out_ms: 1060, speech_ms: 2100 },
      { endpointing_ms: 480, stt_final_ms: 560, llm_first_text_ms: 1320, tts_first_audio_ms: 1490, first_audio_out_ms: 1510, speech_ms: 1500 },
      { endpointing_ms: 300, stt_final_ms: 380, llm_first_text_ms: 620, tts_first_audio_ms: null, first_audio_out_ms: 790, speech_ms: 900 },
    ],
  });
  record({ direction: "browser", from: "browser", to: "echo", agent: "echo", outcome: "completed", reason: "the caller hung up", created_at_ms: now - 900000, started_at_ms: now - 899000, ended_at_ms: now - 880000, duration_s: null });
  record({ from: "+14155550188", outcome: "failed", reason: "plugin hours-llm failed: timed out after 5000 ms", failure_kind: "timeout", created_at_ms: now - 1500000, started_at_ms: now - 1499000, ended_at_ms: now - 1470000 });
  record({ direction: "outbound-api", from: "+15005550006", to: "+14155550199", outcome: "no-answer", status: "no-answer", reason: "no answer", created_at_ms: now - 2400000, started_at_ms: null, ended_at_ms: null, duration_s: 0 });

  const totals = { completed: 41, failed: 2, "no-answer": 3, interrupted: 1 };
  let active = 0;

  function emit(type, callSid, agent, data, streamSid = null) {
    state.seq += 1;
    const id = `${BOOT}-${state.seq}`;
    const json = JSON.stringify({
      id,
      type,
      time: new Date().toISOString(),
      call_sid: callSid,
      stream_sid: streamSid,
      agent,
      data,
    });
    const event = { id, type, json };
    state.events.push(event);
    if (state.events.length > 500) state.events.shift();
    for (const client of state.sseClients) writeEvent(client, event);
  }

  function writeEvent(res, event) {
    res.write(`id: ${event.id}\nevent: ${event.type}\ndata: ${event.json}\n\n`);
  }

  // A pipeline call every ~25 s: a live transcript to watch.
  function simulate() {
    const callSid = sid("CA");
    const agent = "front-desk";
    const steps = [
      [0, "call.started", { from: "+14155550142", to: "+15005550006", direction: "inbound", mode: "pipeline", plugins: ["moonshine", "hours-llm", "piper"] }],
      [300, "agent.text", { text: "Thanks for calling, ", final: false }],
      [500, "agent.text", { text: "how can I help?", final: false }],
      [700, "agent.text", { text: "Thanks for calling, how can I help?", final: true }],
      [2000, "caller.speech_started", { at_ms: 2000 }],
      [2400, "caller.transcript", { text: "Do you", final: false }],
      [2900, "caller.transcript", { text: "Do you sell garden", final: false }],
      [3400, "caller.transcript", { text: "Do you sell garden hoses", final: false }],
      [3900, "caller.speech_stopped", { at_ms: 3900, speech_ms: 1900 }],
      [4400, "caller.transcript", { text: "Do you sell garden hoses?", final: true }],
      [4700, "agent.text", { text: "Yes, aisle seven ", final: false }],
      [5000, "agent.text", { text: "has hoses from ten to fifty metres.", final: false }],
      [5200, "agent.audio_started", { at_ms: 5200 }],
      [5400, "turn.latency", { turn: 1, endpointing_ms: 500, stt_final_ms: 520, llm_first_text_ms: 800, tts_first_audio_ms: 1000, first_audio_out_ms: 1300, speech_ms: 1900 }],
      [6200, "agent.text", { text: "Yes, aisle seven has hoses from ten to fifty metres.", final: true }],
    ];
    let ended = false;
    for (const [at, type, data] of steps) setTimeout(() => emit(type, callSid, agent, data), at);
    active += 1;
    setTimeout(() => {
      if (ended) return;
      ended = true;
      active -= 1;
      totals.completed += 1;
      emit("call.ended", callSid, agent, { outcome: "completed", reason: "caller hung up", duration_ms: 15000, frames_in: 750, frames_out: 300, first_audio_ms: 700 });
      record({ call_sid: callSid, from: "+14155550142", created_at_ms: Date.now() - 15000, started_at_ms: Date.now() - 15000, ended_at_ms: Date.now(), transcript: [{ side: "agent", text: "Thanks for calling, how can I help?", heard_ms: null }, { side: "caller", text: "Do you sell garden hoses?", heard_ms: null }, { side: "agent", text: "Yes, aisle seven has hoses from ten to fifty metres.", heard_ms: null }], turn_latency: [{ endpointing_ms: 500, stt_final_ms: 520, llm_first_text_ms: 800, tts_first_audio_ms: 1000, first_audio_out_ms: 1300, speech_ms: 1900 }] });
    }, 15000);
  }
  let simTimer = null;
  if (simulateCalls) {
    setTimeout(simulate, 500);
    simTimer = setInterval(simulate, 25000);
  }

  function authorized(req) {
    const ok = req.headers.authorization === `Bearer ${state.token}`;
    if (!ok) state.authFailures += 1;
    return ok;
  }

  function json(res, status, body, headers = {}) {
    res.writeHead(status, { "Content-Type": "application/json", ...headers });
    res.end(JSON.stringify(body));
  }

  function unauthorized(res) {
    json(res, 401, { error: "wrong bearer token", code: "unauthorized" }, { "WWW-Authenticate": "Bearer" });
  }

  async function readBody(req) {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    return Buffer.concat(chunks).toString("utf8");
  }

  async function handle(req, res) {
    const url = new URL(req.url, "http://localhost");
    const path = url.pathname;
    const hit = `${req.method} ${path.startsWith("/calls/") ? "/calls/{sid}" : path}`;
    state.hits[hit] = (state.hits[hit] || 0) + 1;
    if (req.method === "GET" && (path === "/console" || path === "/console/")) {
      return serveFile(res, "index.html");
    }
    if (req.method === "GET" && path.startsWith("/console/assets/")) {
      const name = path.slice("/console/assets/".length);
      if (!/^[a-z0-9-]+\.(js|css|html)$/.test(name)) return json(res, 404, { error: "no such asset" });
      return serveFile(res, name);
    }
    if (path === "/mock/state") return json(res, 200, mockState());
    if (!authorized(req)) return unauthorized(res);
    if (req.method === "GET" && path === "/console/api/overview") {
      return json(res, 200, {
        version: "0.1.0",
        instance: "gw-a",
        uptime_s: Math.floor((Date.now() - state.started) / 1000) + 93784,
        active_calls: active,
        draining: false,
        calls_total: totals,
        agents,
      });
    }
    if (req.method === "GET" && path === "/calls") {
      const limit = Number(url.searchParams.get("limit") || 50);
      const outcome = url.searchParams.get("outcome");
      const calls = [...state.records.values()]
        .filter((r) => !outcome || r.outcome === outcome)
        .sort((a, b) => b.created_at_ms - a.created_at_ms)
        .slice(0, limit)
        .map((r) => ({ ...r }));
      return json(res, 200, { calls });
    }
    if (req.method === "GET" && path.startsWith("/calls/")) {
      const r = state.records.get(decodeURIComponent(path.slice(7)));
      return r ? json(res, 200, r) : json(res, 404, { error: "no call with this sid", code: "not_found" });
    }
    if (req.method === "GET" && path === "/events") {
      res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
      res.write(": switchboard events\n\n");
      const last = req.headers["last-event-id"];
      if (last) {
        const at = state.events.findIndex((e) => e.id === last);
        if (at < 0) {
          res.write(`event: events.lost\ndata: ${JSON.stringify({ id: `${BOOT}-0`, type: "events.lost", data: { missed: 1 } })}\n\n`);
        } else {
          for (const e of state.events.slice(at + 1)) writeEvent(res, e);
        }
      }
      state.sseClients.add(res);
      const keepAlive = setInterval(() => res.write(": keep-alive\n\n"), 15000);
      req.on("close", () => {
        clearInterval(keepAlive);
        state.sseClients.delete(res);
      });
      return;
    }
    if (req.method === "POST" && path === "/console/phone") {
      let body;
      try {
        body = JSON.parse(await readBody(req));
      } catch {
        return json(res, 400, { error: "invalid JSON", code: "bad_request" });
      }
      const agent = agents.find((a) => a.name === body.agent);
      if (!agent) return json(res, 404, { error: `no agent named "${body.agent}"`, code: "unknown_agent" });
      if (agent.disabled) return json(res, 409, { error: "agent disabled", code: "agent_disabled" });
      const ticket = hex(16);
      const t = { ticket, call_sid: sid("CA"), stream_sid: sid("MZ"), agent: agent.name, at: Date.now() };
      state.tickets.set(ticket, t);
      return json(res, 200, { ticket, call_sid: t.call_sid, stream_sid: t.stream_sid, ws_url: `/console/phone/ws?ticket=${ticket}` });
    }
    json(res, 404, { error: "not found", code: "not_found" });
  }

  async function serveFile(res, name) {
    try {
      const body = await readFile(join(ASSETS, name));
      res.writeHead(200, { "Content-Type": TYPES[extname(name)] || "application/octet-stream", "Cache-Control": "no-cache" });
      res.end(body);
    } catch {
      json(res, 404, { error: "no such asset" });
    }
  }

  function mockState() {
    const p = state.phone;
    return {
      authFailures: state.authFailures,
      hits: state.hits,
      phone: p && {
        messages: p.messages.map((m) => m.event),
        start: p.start,
        connected: p.connected,
        sequenceOk: p.sequenceOk,
        chunkOk: p.chunkOk,
        received: Buffer.concat(p.received).toString("base64"),
        echoed: Buffer.concat(p.echoed).toString("base64"),
        marksSent: p.marksSent,
        marksEchoed: p.marksEchoed,
        clearsSent: p.clearsSent,
        stop: p.stop,
        closed: p.closed,
      },
    };
  }

  // ------------------------------------------------------------ the echo agent over WebSocket

  function upgrade(req, socket) {
    const url = new URL(req.url, "http://localhost");
    const ticket = state.tickets.get(url.searchParams.get("ticket") || "");
    if (url.pathname !== "/console/phone/ws" || !ticket) {
      socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    state.tickets.delete(ticket.ticket); // one use
    state.sockets.add(socket);
    socket.on("close", () => state.sockets.delete(socket));
    const key = req.headers["sec-websocket-key"];
    const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
    socket.write(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    const phone = {
      ticket,
      messages: [],
      connected: false,
      start: null,
      sequenceOk: true,
      chunkOk: true,
      lastSeq: 0,
      lastChunk: 0,
      received: [],
      echoed: [],
      marksSent: 0,
      marksEchoed: 0,
      clearsSent: 0,
      stop: null,
      closed: false,
      frames: 0,
    };
    state.phone = phone;
    state.phones.push(phone);
    const ws = new MiniSocket(socket, (text) => onPhoneMessage(phone, ws, text), () => {
      phone.closed = true;
      endPhoneCall(phone);
    });
  }

  function endPhoneCall(phone) {
    if (!phone.start || phone.ended) return;
    phone.ended = true;
    active -= 1;
    emit("call.ended", phone.ticket.call_sid, phone.ticket.agent, { outcome: "completed", reason: "the caller hung up", duration_ms: phone.frames * 20, frames_in: phone.frames, frames_out: phone.echoed.length, first_audio_ms: 40 });
    record({ call_sid: phone.ticket.call_sid, stream_sid: phone.ticket.stream_sid, direction: "browser", from: "browser", to: phone.ticket.agent, agent: phone.ticket.agent, created_at_ms: Date.now() - phone.frames * 20, started_at_ms: Date.now() - phone.frames * 20, ended_at_ms: Date.now(), duration_s: null, transcript: [{ side: "caller", text: "Testing one two three.", heard_ms: null }, { side: "agent", text: "Testing one two three.", heard_ms: null }], turn_latency: [] });
  }

  function onPhoneMessage(phone, ws, text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      ws.close(1003, "not JSON");
      return;
    }
    phone.messages.push(m);
    if (m.sequenceNumber !== undefined) {
      const n = Number(m.sequenceNumber);
      if (typeof m.sequenceNumber !== "string" || n !== phone.lastSeq + 1) phone.sequenceOk = false;
      phone.lastSeq = n;
    }
    const call = phone.ticket.call_sid;
    const agent = phone.ticket.agent;
    switch (m.event) {
      case "connected":
        phone.connected = phone.messages.length === 1 && m.protocol === "Call";
        break;
      case "start":
        phone.start = m;
        if (m.start.callSid !== call || m.start.streamSid !== phone.ticket.stream_sid || m.streamSid !== phone.ticket.stream_sid) {
          ws.close(1008, "wrong stream");
          return;
        }
        active += 1;
        emit("call.started", call, agent, { from: "browser", to: agent, direction: "browser", mode: "echo", plugins: ["echo"] }, phone.ticket.stream_sid);
        break;
      case "media": {
        const bytes = Buffer.from(m.media.payload, "base64");
        phone.frames += 1;
        const chunk = Number(m.media.chunk);
        if (typeof m.media.chunk !== "string" || chunk !== phone.lastChunk + 1 || m.media.track !== "inbound" || bytes.length !== 160 || m.media.timestamp !== String((chunk - 1) * 20)) {
          phone.chunkOk = false;
        }
        phone.lastChunk = chunk;
        phone.received.push(bytes);
        // Echo agent: the audio goes back; a mark every 10 frames; one clear at frame 100.
        if (phone.frames === 100) {
          ws.send(JSON.stringify({ event: "clear", streamSid: phone.ticket.stream_sid }));
          phone.clearsSent += 1;
        }
        ws.send(JSON.stringify({ event: "media", streamSid: phone.ticket.stream_sid, media: { payload: bytes.toString("base64") } }));
        phone.echoed.push(bytes);
        if (phone.frames % 10 === 0) {
          ws.send(JSON.stringify({ event: "mark", streamSid: phone.ticket.stream_sid, mark: { name: `m${phone.frames}` } }));
          phone.marksSent += 1;
        }
        if (phone.frames === 50) emit("caller.transcript", call, agent, { text: "Testing one", final: false });
        if (phone.frames === 75) emit("caller.transcript", call, agent, { text: "Testing one two three.", final: true });
        if (phone.frames === 80) emit("agent.text", call, agent, { text: "Testing ", final: false });
        if (phone.frames === 85) emit("agent.text", call, agent, { text: "one two three.", final: false });
        if (phone.frames === 90) emit("agent.text", call, agent, { text: "Testing one two three.", final: true });
        break;
      }
      case "mark":
        if (typeof m.mark?.name === "string" && m.streamSid === phone.ticket.stream_sid) phone.marksEchoed += 1;
        break;
      case "stop":
        phone.stop = m;
        break;
      default:
        break;
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((error) => {
      res.writeHead(500);
      res.end(String(error));
    });
  });
  server.on("upgrade", upgrade);
  return {
    state,
    server,
    listen: (port = 0) => new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server.address().port))),
    close: () =>
      new Promise((resolve) => {
        clearInterval(simTimer);
        for (const c of state.sseClients) c.destroy();
        for (const s of state.sockets) s.destroy();
        server.closeAllConnections();
        server.close(resolve);
      }),
    mockState,
  };
}

/** A server-side WebSocket: text messages in and out, close and ping handled. */
class MiniSocket {
  constructor(socket, onText, onClose) {
    this.socket = socket;
    this.onText = onText;
    this.onClose = onClose;
    this.buffer = Buffer.alloc(0);
    this.fragments = [];
    this.closed = false;
    socket.on("data", (data) => this.data(data));
    socket.on("close", () => this.finish());
    socket.on("error", () => this.finish());
  }

  finish() {
    if (this.closed) return;
    this.closed = true;
    this.onClose();
  }

  data(data) {
    this.buffer = Buffer.concat([this.buffer, data]);
    for (;;) {
      const b = this.buffer;
      if (b.length < 2) return;
      const fin = (b[0] & 0x80) !== 0;
      const opcode = b[0] & 0x0f;
      const masked = (b[1] & 0x80) !== 0;
      let length = b[1] & 0x7f;
      let at = 2;
      if (length === 126) {
        if (b.length < 4) return;
        length = b.readUInt16BE(2);
        at = 4;
      } else if (length === 127) {
        if (b.length < 10) return;
        length = Number(b.readBigUInt64BE(2));
        at = 10;
      }
      const maskAt = at;
      if (masked) at += 4;
      if (b.length < at + length) return;
      const payload = Buffer.from(b.subarray(at, at + length));
      if (masked) for (let i = 0; i < payload.length; i++) payload[i] ^= b[maskAt + (i % 4)];
      this.buffer = b.subarray(at + length);
      if (opcode === 0x8) {
        this.frame(0x8, payload.subarray(0, 2));
        this.socket.end();
        this.finish();
        return;
      }
      if (opcode === 0x9) {
        this.frame(0xa, payload);
        continue;
      }
      if (opcode === 0x1 || opcode === 0x0) {
        this.fragments.push(payload);
        if (fin) {
          const text = Buffer.concat(this.fragments).toString("utf8");
          this.fragments = [];
          this.onText(text);
        }
      }
    }
  }

  frame(opcode, payload) {
    if (this.socket.destroyed) return;
    let head;
    if (payload.length < 126) {
      head = Buffer.from([0x80 | opcode, payload.length]);
    } else if (payload.length < 65536) {
      head = Buffer.alloc(4);
      head[0] = 0x80 | opcode;
      head[1] = 126;
      head.writeUInt16BE(payload.length, 2);
    } else {
      head = Buffer.alloc(10);
      head[0] = 0x80 | opcode;
      head[1] = 127;
      head.writeBigUInt64BE(BigInt(payload.length), 2);
    }
    this.socket.write(Buffer.concat([head, payload]));
  }

  send(text) {
    this.frame(0x1, Buffer.from(text, "utf8"));
  }

  close(code = 1000, reason = "") {
    const body = Buffer.alloc(2 + Buffer.byteLength(reason));
    body.writeUInt16BE(code, 0);
    body.write(reason, 2);
    this.frame(0x8, body);
    this.socket.end();
    this.finish();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const mock = createMock();
  const port = await mock.listen(Number(process.argv[2] || 0));
  console.log(`mock gateway: http://127.0.0.1:${port}/console#token=${mock.state.token}`);
}
