// The SSE parser against the WHATWG rules, and EventFeed against a real HTTP server on
// loopback (a drop mid-stream, resumption with Last-Event-ID, back-off, 401).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { EventFeed, SseParser } from "../sse.js";

function parseAll(pieces) {
  const events = [];
  const comments = [];
  const parser = new SseParser((e) => events.push(e), (c) => comments.push(c));
  for (const p of pieces) parser.push(p);
  return { events, comments, parser };
}

test("the contract's frames: id, event, one-line JSON data, keep-alive comments", () => {
  const text =
    ": keep-alive\n\n" +
    'id: b1-1\nevent: call.started\ndata: {"id":"b1-1","type":"call.started"}\n\n' +
    'id: b1-2\nevent: caller.transcript\ndata: {"id":"b1-2","data":{"text":"hi: there"}}\n\n';
  const { events, comments, parser } = parseAll([text]);
  assert.deepEqual(comments, [" keep-alive"]);
  assert.equal(events.length, 2);
  assert.deepEqual(events[0], {
    id: "b1-1",
    event: "call.started",
    data: '{"id":"b1-1","type":"call.started"}',
  });
  assert.equal(events[1].event, "caller.transcript");
  assert.equal(JSON.parse(events[1].data).data.text, "hi: there");
  assert.equal(parser.lastEventId, "b1-2");
});

test("multi-line data joins with newlines; a single leading space is stripped", () => {
  const { events } = parseAll(["data: one\ndata:two\ndata:  three\ndata\n\n"]);
  assert.equal(events[0].data, "one\ntwo\n three\n");
  assert.equal(events[0].event, "message");
});

test("any split of the stream gives the same events (CRLF, CR, LF)", () => {
  const text =
    "\uFEFFid: 1\r\nevent: a\r\ndata: x\r\n\r\n" +
    "id: 2\revent: b\rdata: y\r\r" +
    ":c\nid: 3\nevent: c\ndata: z\ndata: w\n\n";
  const whole = parseAll([text]).events;
  assert.deepEqual(
    whole.map((e) => [e.id, e.event, e.data]),
    [
      ["1", "a", "x"],
      ["2", "b", "y"],
      ["3", "c", "z\nw"],
    ],
  );
  for (let cut = 0; cut <= text.length; cut++) {
    assert.deepEqual(parseAll([text.slice(0, cut), text.slice(cut)]).events, whole, `cut ${cut}`);
  }
  const chars = parseAll([...text]).events;
  assert.deepEqual(chars, whole);
});

test("no data, no dispatch; the id still moves; the event type resets", () => {
  const { events, parser } = parseAll(["id: 7\nevent: lonely\n\ndata: d\n\n"]);
  assert.deepEqual(events, [{ id: "7", event: "message", data: "d" }]);
  assert.equal(parser.lastEventId, "7");
});

test("an id with NUL is ignored; unknown fields ignored; retry read", () => {
  const { events, parser } = parseAll(["id: 5\n\nid: bad\0id\nfoo: bar\nretry: 3000\nretry: x\ndata: d\n\n"]);
  assert.equal(events[0].id, "5");
  assert.equal(parser.retry, 3000);
});

test("an unterminated event at end of stream is not dispatched", () => {
  const events = [];
  const parser = new SseParser((e) => events.push(e));
  parser.push("data: half");
  parser.end();
  parser.push("\n\n");
  assert.equal(events.length, 0);
});

/** A test server: each request gets `handler(req, res, n)`. */
async function serve(handler) {
  let n = 0;
  const requests = [];
  const server = createServer((req, res) => {
    n += 1;
    requests.push({ headers: req.headers, url: req.url, at: Date.now() });
    handler(req, res, n);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}/events`;
  return {
    url,
    requests,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(r);
      }),
  };
}

function frame(id, type) {
  return `id: ${id}\nevent: ${type}\ndata: {"id":"${id}","type":"${type}"}\n\n`;
}

test("EventFeed resumes with Last-Event-ID after a drop and sends the token", async () => {
  const server = await serve((req, res, n) => {
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    if (n === 1) {
      res.write(": hello\n\n" + frame("b-1", "call.started"));
      // Second event split across writes, then the connection drops.
      res.write("id: b-2\nevent: caller.transcript\nda");
      setTimeout(() => {
        res.write('ta: {"id":"b-2"}\n\n');
        setTimeout(() => res.destroy(), 20);
      }, 20);
    } else {
      res.write(frame("b-3", "call.ended"));
    }
  });
  const got = [];
  const statuses = [];
  let resolveDone;
  const done = new Promise((r) => (resolveDone = r));
  const feed = new EventFeed({
    url: server.url,
    headers: () => ({ Authorization: "Bearer sekrit" }),
    onEvent: (e) => {
      got.push(e.id);
      if (e.id === "b-3") resolveDone();
    },
    onStatus: (s) => statuses.push(s),
    minRetryMs: 50,
  });
  feed.start();
  await done;
  await feed.stop();
  await server.close();
  assert.deepEqual(got, ["b-1", "b-2", "b-3"]);
  assert.equal(server.requests.length, 2);
  assert.equal(server.requests[0].headers.authorization, "Bearer sekrit");
  assert.equal(server.requests[0].headers["last-event-id"], undefined);
  assert.equal(server.requests[1].headers["last-event-id"], "b-2");
  assert.equal(server.requests[1].headers.accept, "text/event-stream");
  assert.ok(statuses.includes("reconnecting"));
  assert.equal(statuses.at(-1), "stopped");
});

test("EventFeed backs off (doubling, capped) while the server fails", async () => {
  const server = await serve((req, res) => {
    res.writeHead(503);
    res.end();
  });
  const waits = [];
  const feed = new EventFeed({
    url: server.url,
    onEvent: () => {},
    onStatus: (s, wait) => {
      if (s === "reconnecting") waits.push(wait);
    },
    minRetryMs: 20,
    maxRetryMs: 80,
  });
  feed.start();
  while (server.requests.length < 5) await new Promise((r) => setTimeout(r, 10));
  await feed.stop();
  await server.close();
  assert.deepEqual(waits.slice(0, 4), [20, 40, 80, 80]);
  const gaps = server.requests.slice(1, 5).map((r, i) => r.at - server.requests[i].at);
  assert.ok(gaps[0] >= 15 && gaps[2] >= 70, `gaps ${gaps}`);
});

test("EventFeed stops on 401 and says so", async () => {
  const server = await serve((req, res) => {
    res.writeHead(401, { "Content-Type": "application/json" });
    res.end('{"error":"wrong bearer token","code":"unauthorized"}');
  });
  let unauthorized = 0;
  const feed = new EventFeed({
    url: server.url,
    onEvent: () => {},
    onUnauthorized: () => unauthorized++,
    minRetryMs: 10,
  });
  feed.start();
  await feed.done;
  await new Promise((r) => setTimeout(r, 50));
  await server.close();
  assert.equal(unauthorized, 1);
  assert.equal(server.requests.length, 1);
});

test("EventFeed reconnects a stream that goes silent", async () => {
  const server = await serve((req, res, n) => {
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    res.write(frame(`s-${n}`, "x"));
    // …then nothing: no keep-alive.
  });
  const got = [];
  const feed = new EventFeed({
    url: server.url,
    onEvent: (e) => got.push(e.id),
    minRetryMs: 10,
    idleTimeoutMs: 100,
  });
  feed.start();
  while (got.length < 2) await new Promise((r) => setTimeout(r, 10));
  await feed.stop();
  await server.close();
  assert.deepEqual(got.slice(0, 2), ["s-1", "s-2"]);
  assert.equal(server.requests[1].headers["last-event-id"], "s-1");
});
