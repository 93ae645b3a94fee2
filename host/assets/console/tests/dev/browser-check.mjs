// Drives the console in headless Chromium (through chromedriver's WebDriver HTTP API) against
// tests/dev/mock-gateway.mjs: login refused and accepted, overview, recent calls and a call's
// detail with its latency chart, a live call followed, and a browser-phone call to the echo
// agent with Chromium's fake microphone (beckett.wav): what the page sent must be what the mock
// received, what it played must be what the mock echoed (minus what `clear` dropped), marks
// echoed, the transcript shown, `stop` on hang-up. Also: no console errors; a screenshot.
//
// Run by hand (needs /usr/bin/chromium and /usr/bin/chromedriver, no npm):
//   node tests/dev/browser-check.mjs [screenshot.png]

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createMock } from "./mock-gateway.mjs";

const HERE = fileURLToPath(new URL(".", import.meta.url));
const WAV = resolve(HERE, "../../../../../tests/fixtures/speech/beckett.wav");
const SHOT = process.argv[2] || "/tmp/console.png";
const ELEMENT = "element-6066-11e4-a52e-4f735466cecf";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const mock = createMock();
const port = await mock.listen();
const base = `http://127.0.0.1:${port}`;

const driverPort = 9515 + Math.floor(Math.random() * 400);
const driver = spawn("/usr/bin/chromedriver", [`--port=${driverPort}`], { stdio: "ignore" });
const wd = `http://127.0.0.1:${driverPort}`;

async function call(method, path, body) {
  const response = await fetch(`${wd}${path}`, {
    method,
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(20000),
  });
  const json = await response.json();
  if (json.value && json.value.error) throw new Error(`${path}: ${json.value.error}: ${json.value.message}`);
  return json.value;
}

let session;
try {
  for (let i = 0; ; i++) {
    try {
      await fetch(`${wd}/status`);
      break;
    } catch {
      if (i > 50) throw new Error("chromedriver did not start");
      await sleep(100);
    }
  }
  const created = await call("POST", "/session", {
    capabilities: {
      alwaysMatch: {
        browserName: "chrome",
        "goog:loggingPrefs": { browser: "ALL" },
        "goog:chromeOptions": {
          binary: "/usr/bin/chromium",
          args: [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            `--user-data-dir=${mkdtempSync(join(tmpdir(), "console-check-"))}`,
            "--window-size=1280,800",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            `--use-file-for-fake-audio-capture=${WAV}`,
            "--autoplay-policy=no-user-gesture-required",
          ],
        },
      },
    },
  });
  session = `/session/${created.sessionId}`;
  const js = (script, ...args) => call("POST", `${session}/execute/sync`, { script, args });
  const find = async (css) => (await call("POST", `${session}/element`, { using: "css selector", value: css }))[ELEMENT];
  const click = async (css) => call("POST", `${session}/element/${await find(css)}/click`, {});
  const type = async (css, text) => call("POST", `${session}/element/${await find(css)}/value`, { text });
  async function until(what, fn, ms = 10000) {
    const end = Date.now() + ms;
    for (;;) {
      const value = await fn();
      if (value) return value;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await sleep(100);
    }
  }

  // 1. A wrong token from the link: refused, the form shows the error, the fragment is gone.
  await call("POST", `${session}/url`, { url: `${base}/console#token=wrong` });
  await until("the login error", () => js("return !document.querySelector('#login-error').hidden"));
  assert.equal(await js("return location.hash"), "");
  assert.match(await js("return document.querySelector('#login-error').textContent"), /refused/);
  assert.equal(await js("return sessionStorage.getItem('switchboard.token')"), null);
  console.log("ok - a wrong token is refused (#login-error shown)");

  // 2. The right token through the form.
  await type("#login-token", "secret");
  await click("#login-submit");
  await until("the console", () => js("return !document.querySelector('#app').hidden"));
  assert.equal(await js("return sessionStorage.getItem('switchboard.token')"), "secret");
  await until("agents", () => js("return document.querySelectorAll('#agents [data-agent]').length === 3"));
  const options = await js(
    "return [...document.querySelectorAll('#agent-select option')].map(o => [o.value, o.disabled])",
  );
  assert.deepEqual(options, [["front-desk", false], ["echo", false], ["sales", true]]);
  assert.match(await js("return document.querySelector('#metrics').textContent"), /Active calls/);
  console.log("ok - login, agents (disabled agent disabled in #agent-select), metrics");

  // 3. Recent calls and a call's detail.
  await until("recent calls", () => js("return document.querySelectorAll('#recent-calls tr[data-call-sid]').length >= 4"));
  const withLatency = await js(
    "return [...document.querySelectorAll('#recent-calls tr[data-call-sid]')].find(r => r.textContent.includes('front-desk')).dataset.callSid",
  );
  await click(`#recent-calls tr[data-call-sid="${withLatency}"] td:nth-child(3)`);
  await until("the detail", () => js("return document.querySelector('#call-detail svg.latency-chart') !== null"));
  const detail = await js(
    "const d = document.querySelector('#call-detail'); return {text: d.textContent, bars: d.querySelectorAll('svg rect').length, title: d.querySelector('svg title').textContent, desc: d.querySelector('svg desc').textContent, turns: d.querySelectorAll('.turn').length}",
  );
  assert.match(detail.text, /what time do you open|garden hoses/i, "transcript shown");
  assert.ok(detail.bars >= 4, `bars ${detail.bars}`);
  assert.match(detail.desc, /Turn 1: endpointing/);
  console.log(`ok - call detail: ${detail.turns} turns, ${detail.bars} latency bars; desc "${detail.desc.slice(0, 70)}…"`);

  // 4. A live call appears from the event feed; follow it.
  await until("a live call", () => js("return document.querySelectorAll('#live-calls tr[data-call-sid]').length > 0"), 30000);
  const liveSid = await js("return document.querySelector('#live-calls tr[data-call-sid]').dataset.callSid");
  await click(`#live-calls tr[data-call-sid="${liveSid}"]`);
  await until("the followed transcript", () => js("return document.querySelectorAll('#live-transcript .turn').length > 0"), 10000);
  console.log("ok - live call listed and followed");

  // 5. The browser phone: call the echo agent.
  await js("const s = document.querySelector('#agent-select'); s.value = 'echo'; s.dispatchEvent(new Event('change'));");
  await click("#call-button");
  console.log("   (call button clicked)");
  await until("in call", () => js("return window.switchboardPhone.state === 'in call'"), 10000);
  assert.equal(await js("return document.querySelector('#phone-status').textContent"), "in call");
  const callSid = await js("return window.switchboardPhone.callSid");
  assert.match(callSid, /^CA[0-9a-f]{32}$/);
  await until("150 frames echoed", async () => (await mock.mockState()).phone?.echoed.length >= 150 * 160 * 4 / 3 - 4, 15000);
  await until("the phone transcript", () => js("return document.querySelectorAll('#phone-transcript .turn.caller').length > 0 && document.querySelectorAll('#phone-transcript .turn.agent:not(.partial)').length > 0"), 5000);
  const lines = await js("return [...document.querySelectorAll('#phone-transcript .turn')].map(t => t.className + ': ' + t.textContent)");
  await sleep(600);
  await js("window.scrollTo(0, 0)");
  const png = await call("GET", `${session}/screenshot`);
  writeFileSync(SHOT, Buffer.from(png, "base64"));
  await click("#hangup-button");
  await until("ended", () => js("return window.switchboardPhone.state === 'ended'"), 5000);
  await sleep(1500); // the worklet's last report
  const hooks = await js(
    "const p = window.switchboardPhone; return {sent: p.sentMulaw(), played: p.playedMulaw(), marks: p.marksEchoed, clears: p.clears, status: document.querySelector('#phone-status').textContent}",
  );
  const seen = mock.mockState().phone;
  assert.equal(hooks.status, "ended");
  assert.equal(seen.messages[0], "connected");
  assert.equal(seen.messages[1], "start");
  assert.ok(seen.connected, "connected first, protocol Call");
  assert.deepEqual(seen.start.start.mediaFormat, { encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1 });
  assert.deepEqual(seen.start.start.tracks, ["inbound"]);
  assert.equal(seen.start.start.accountSid, "browser");
  assert.equal(seen.start.sequenceNumber, "1");
  assert.ok(seen.sequenceOk, "sequenceNumber runs 1, 2, 3… as strings");
  assert.ok(seen.chunkOk, "media: track inbound, chunk 1, 2, 3…, timestamp 20 ms apart, 160 bytes");
  assert.ok(seen.stop && seen.stop.stop.callSid === callSid, "stop sent on hang-up");
  assert.equal(hooks.sent, seen.received, "sentMulaw() is exactly what the gateway received");
  const sent = Buffer.from(hooks.sent, "base64");
  const played = Buffer.from(hooks.played, "base64");
  const echoed = Buffer.from(seen.echoed, "base64");
  assert.ok(sent.length >= 150 * 160, `sent ${sent.length} bytes`);
  let run = 0;
  let longest = 0;
  for (const b of sent) {
    run = b === 0xff || b === 0x7f ? run + 1 : 0;
    longest = Math.max(longest, run);
  }
  console.log(`   longest digital silence in what was sent: ${longest} samples`);
  // The microphone really carried the file's speech (not silence).
  const loud = [...sent].filter((b) => (b & 0x7f) < 0x60).length;
  assert.ok(loud > sent.length / 20, `speech in what was sent (${loud} loud samples)`);
  // Played: the echo in order, minus what the clear dropped, never more than was echoed.
  assert.equal(hooks.clears, 1);
  assert.ok(played.length > 0 && played.length <= echoed.length, `played ${played.length} of ${echoed.length}`);
  let j = 0;
  for (let i = 0; i < played.length; i++) {
    while (j < echoed.length && echoed[j] !== played[i]) j++;
    assert.ok(j < echoed.length, `played byte ${i} is not in the echo, in order`);
    j++;
  }
  // The first bytes played are the first bytes echoed, exactly.
  assert.deepEqual(played.subarray(0, 1600), echoed.subarray(0, 1600));
  assert.ok(hooks.marks >= seen.marksSent - 1 && hooks.marks === seen.marksEchoed, `marks echoed ${hooks.marks}/${seen.marksSent}, gateway saw ${seen.marksEchoed}`);
  console.log(
    `ok - phone: sent ${sent.length} B (= received), played ${played.length}/${echoed.length} B in order, ` +
      `marks ${hooks.marks}/${seen.marksSent}, clears ${hooks.clears}, stop sent`,
  );
  console.log(`   transcript: ${JSON.stringify(lines)}`);

  // 6. The calls list shows the phone call after it ended.
  await until("the phone call in recent calls", () => js(`return document.querySelector('#recent-calls tr[data-call-sid="${callSid}"]') !== null`), 5000);
  console.log("ok - recent calls refreshed after call.ended");

  // 7. A browser that will not connect the microphone to an 8 kHz context (as Firefox): the
  // page falls back to the device's rate and the worklet resamples both ways.
  await js(`
    const original = AudioContext.prototype.createMediaStreamSource;
    AudioContext.prototype.createMediaStreamSource = function (stream) {
      if (this.sampleRate === 8000) throw new DOMException("different sample-rate", "NotSupportedError");
      return original.call(this, stream);
    };`);
  await click("#call-button");
  await until("in call (fallback)", () => js("return window.switchboardPhone.state === 'in call'"), 10000);
  await until("100 frames echoed (fallback)", async () => mock.mockState().phone?.echoed.length >= 100 * 160 * 4 / 3 - 4, 15000);
  await sleep(500);
  await click("#hangup-button");
  await until("ended (fallback)", () => js("return window.switchboardPhone.state === 'ended'"), 5000);
  await sleep(1500);
  const fallback = await js("const p = window.switchboardPhone; return {sent: p.sentMulaw(), played: p.playedMulaw()}");
  const seen2 = mock.mockState().phone;
  assert.equal(fallback.sent, seen2.received);
  const sent2 = Buffer.from(fallback.sent, "base64");
  const played2 = Buffer.from(fallback.played, "base64");
  const echoed2 = Buffer.from(seen2.echoed, "base64");
  const loud2 = [...sent2].filter((b) => (b & 0x7f) < 0x60).length;
  assert.ok(loud2 > sent2.length / 20, `speech in what was sent at 48 kHz (${loud2} loud samples)`);
  assert.ok(seen2.chunkOk && seen2.sequenceOk);
  assert.ok(played2.length > echoed2.length / 2, `played ${played2.length} of ${echoed2.length}`);
  assert.deepEqual(played2.subarray(0, 1600), echoed2.subarray(0, 1600));
  console.log(`ok - microphone refused at 8 kHz: resampled in the worklet; sent ${sent2.length} B (= received, speech), played ${played2.length}/${echoed2.length} B in order`);

  // 8. No errors in the console.
  let logs = [];
  try {
    logs = await call("POST", `${session}/se/log`, { type: "browser" });
  } catch (error) {
    console.log(`(browser log unavailable: ${error.message})`);
  }
  const errors = logs.filter((l) => l.level === "SEVERE" && !/401 \(Unauthorized\)/.test(l.message));
  for (const l of logs) if (l.level !== "INFO") console.log(`   log ${l.level}: ${l.message}`);
  assert.deepEqual(errors, [], "no console errors (a 401 for the wrong token is expected)");
  console.log(`ok - no console errors; screenshot ${SHOT}`);
} catch (error) {
  console.error(error);
  process.exitCode = 1;
} finally {
  if (session) await call("DELETE", session).catch(() => {});
  driver.kill();
  await mock.close();
}
