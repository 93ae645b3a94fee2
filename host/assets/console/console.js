// The Switchboard console: login, live calls from the event feed, recent calls with their
// transcript and latency, agents and metrics, and the browser phone.
//
// Requests to the gateway (all with the bearer token; the console keeps well under the
// operator API's rate limit): GET /console/api/overview every 10 s, GET /calls?limit=20 at
// start and after each call.ended, GET /calls?outcome=in-progress once at start (calls already
// live), GET /calls/{sid} on a click, one long GET /events (reconnected after drops).

import {
  ApiError,
  Unauthorized,
  api,
  authHeaders,
  clearToken,
  onUnauthorized,
  refused,
  setToken,
  token,
} from "./api.js";
import { toBase64 } from "./base64.js";
import { h } from "./dom.js";
import { latencyChart } from "./latency-chart.js";
import { BrowserPhone, State } from "./phone.js";
import { EventFeed } from "./sse.js";
import { Transcript } from "./transcript.js";

/** Overview (agents, metrics) refresh period (ms). */
const OVERVIEW_EVERY_MS = 10000;
/** Recent calls listed. */
const RECENT_LIMIT = 20;
/** Wait after call.ended before re-reading the records (the record is written as it ends). */
const RECENT_AFTER_END_MS = 1200;
/** Second look at the records after a call ended (ms after the first). */
const RECENT_SETTLE_MS = 5000;
/** Least time between two automatic reads of the recent calls (ms). */
const RECENT_MIN_INTERVAL_MS = 5000;
/** Ended calls whose transcript stays in memory (for following, the phone). */
const KEEP_ENDED = 30;
/** How long a fetched call record is reused for a second click (ms). */
const DETAIL_CACHE_MS = 30000;

const $ = (selector) => document.querySelector(selector);

// ---------------------------------------------------------------- formatting

/** "1:05" / "1:02:05" for a duration in seconds. */
function clock(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "—";
  const s = Math.floor(seconds);
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh > 0 ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

/** "3 d 4 h", "2 h 5 min", "7 min", "42 s". */
function uptime(seconds) {
  if (!Number.isFinite(seconds)) return "—";
  const d = Math.floor(seconds / 86400);
  const hh = Math.floor((seconds % 86400) / 3600);
  const mm = Math.floor((seconds % 3600) / 60);
  if (d > 0) return `${d} d ${hh} h`;
  if (hh > 0) return `${hh} h ${mm} min`;
  if (mm > 0) return `${mm} min`;
  return `${Math.floor(seconds)} s`;
}

/** Local time of an epoch-ms instant; with the date when not today. */
function when(ms) {
  if (!Number.isFinite(ms)) return "—";
  const date = new Date(ms);
  const today = new Date();
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (date.toDateString() === today.toDateString()) return time;
  return `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

/** Seconds of a recorded call: the stream's own span, else Twilio's CallDuration. */
function recordSeconds(call) {
  if (Number.isFinite(call.started_at_ms) && Number.isFinite(call.ended_at_ms)) {
    return (call.ended_at_ms - call.started_at_ms) / 1000;
  }
  if (Number.isFinite(call.duration_s)) return call.duration_s;
  return NaN;
}

const OUTCOME_TONE = {
  completed: "good",
  "in-progress": "info",
  hangup: "good",
  "caller-hangup": "good",
  "agent-hangup": "good",
  failed: "bad",
  error: "bad",
  "plugin-failed": "bad",
  interrupted: "warn",
  busy: "warn",
  "no-answer": "warn",
  canceled: "warn",
  refused: "bad",
};

function badge(text, tone = "neutral") {
  return h("span", { class: `badge ${tone}` }, text);
}

function outcomeBadge(outcome) {
  if (!outcome) return badge("unknown");
  const tone = OUTCOME_TONE[outcome] || (/fail|error/.test(outcome) ? "bad" : "neutral");
  return badge(outcome, tone);
}

// ---------------------------------------------------------------- state

const live = {
  /** sid → LiveCall */
  calls: new Map(),
  /** The sid whose transcript #live-transcript shows. */
  followed: null,
};

/**
 * A call seen on the event feed (or in progress at start).
 * @typedef {{sid: string, agent: string|null, from: string, to: string, direction: string,
 *   mode: string, startedAt: number, transcript: Transcript, ended: boolean,
 *   outcome: string|null, speaking: boolean, endedAt: number|null}} LiveCall
 */
function liveCall(sid) {
  let call = live.calls.get(sid);
  if (!call) {
    call = {
      sid,
      agent: null,
      from: "",
      to: "",
      direction: "",
      mode: "",
      startedAt: Date.now(),
      transcript: new Transcript(),
      ended: false,
      outcome: null,
      speaking: false,
      endedAt: null,
    };
    live.calls.set(sid, call);
  }
  return call;
}

function pruneEnded() {
  const ended = [...live.calls.values()].filter((c) => c.ended);
  if (ended.length <= KEEP_ENDED) return;
  ended.sort((a, b) => a.endedAt - b.endedAt);
  for (const call of ended.slice(0, ended.length - KEEP_ENDED)) {
    if (call.sid === live.followed || call.sid === phone.callSid) continue;
    live.calls.delete(call.sid);
  }
}

// ---------------------------------------------------------------- session (login/logout)

let feed = null;
let overviewTimer = null;
let tickTimer = null;
let recentTimer = null;
let started = false;

function showLogin(message = "") {
  stopSession();
  $("#app").hidden = true;
  $("#session-bar").hidden = true;
  $("#instance").hidden = true;
  $("#login").hidden = false;
  const error = $("#login-error");
  error.textContent = message;
  error.hidden = !message;
  const input = $("#login-token");
  input.setAttribute("aria-invalid", message ? "true" : "false");
  input.focus();
  if (message) input.select();
}

function showApp() {
  $("#login").hidden = true;
  $("#login-error").hidden = true;
  $("#app").hidden = false;
  $("#session-bar").hidden = false;
}

function stopSession() {
  started = false;
  if (feed) feed.stop();
  feed = null;
  clearInterval(overviewTimer);
  clearInterval(tickTimer);
  clearTimeout(recentTimer);
  clearTimeout(settleTimer);
  recentTimer = null;
  if (phone.state === State.CONNECTING || phone.state === State.IN_CALL) phone.hangUp();
}

/** Signs in with `candidate`: checked against the overview, then the console starts. */
async function login(candidate) {
  const submit = $("#login-submit");
  submit.disabled = true;
  setToken(candidate);
  try {
    const overview = await api("/console/api/overview");
    showApp();
    startSession(overview);
  } catch (error) {
    if (error instanceof Unauthorized) return; // the form is back, with its message
    // The token may be fine and the overview the problem: go in and say so.
    showApp();
    startSession(null);
    notice(`The overview is unavailable: ${error.message}`, "overview");
  } finally {
    submit.disabled = false;
  }
}

function startSession(overview) {
  if (started) return;
  started = true;
  $("#app-title").focus({ preventScroll: true });
  if (overview) renderOverview(overview);
  else refreshOverview();
  overviewTimer = setInterval(refreshOverview, OVERVIEW_EVERY_MS);
  tickTimer = setInterval(tick, 1000);
  refreshRecent();
  seedLiveCalls();
  feed = new EventFeed({
    url: "/events",
    headers: authHeaders,
    onEvent: onFeedEvent,
    onStatus: feedStatus,
    onUnauthorized: refused,
  });
  feed.start();
}

let noticeTimer = null;
let noticeKind = null;

/** Shows `message` in the banner under the header (for `ms` when given); "" hides it. `kind`
 * names the message so a later success can clear only its own. */
function notice(message, kind = null, ms = 0) {
  const banner = $("#notice");
  clearTimeout(noticeTimer);
  banner.textContent = message;
  banner.hidden = !message;
  noticeKind = message ? kind : null;
  if (message && ms > 0) noticeTimer = setTimeout(() => notice(""), ms);
}

function clearNotice(kind) {
  if (noticeKind === kind) notice("");
}

function feedStatus(status, wait) {
  const node = $("#feed-status");
  node.dataset.state = status;
  const text = node.querySelector(".feed-text");
  text.textContent =
    status === "live"
      ? "Live"
      : status === "reconnecting"
        ? `Reconnecting in ${Math.round(wait / 1000)} s…`
        : status === "connecting"
          ? "Connecting…"
          : "Offline";
  node.title = status === "live" ? "Receiving live call events" : "Live events are not flowing";
}

// ---------------------------------------------------------------- overview: metrics, agents

let agentsSnapshot = [];
/** The gateway instance the console talks to (its events are this instance's calls). */
let instanceName = null;

async function refreshOverview() {
  if (document.hidden && agentsSnapshot.length > 0) return; // no need while the tab is hidden
  const asked = Date.now();
  try {
    const overview = await api("/console/api/overview");
    renderOverview(overview);
    clearNotice("overview");
    if (overview.active_calls === 0) endStaleCalls(asked);
  } catch (error) {
    if (error instanceof Unauthorized) return;
    const metrics = $("#metrics");
    if (!metrics.querySelector(".tile")) {
      metrics.replaceChildren(h("p", { class: "muted" }, `Overview unavailable: ${error.message}`));
    }
  }
}

/**
 * The gateway says no call is active: calls still listed as live that started before the
 * question was asked ended unseen (a call.ended lost in a reconnection, or a stale record).
 */
function endStaleCalls(asked) {
  let changed = false;
  for (const call of live.calls.values()) {
    if (call.ended || call.sid === phone.callSid || call.startedAt >= asked - 2000) continue;
    call.ended = true;
    call.endedAt = Date.now();
    changed = true;
  }
  if (changed) scheduleRender();
}

function renderOverview(o) {
  if (o.instance) instanceName = o.instance;
  const instance = $("#instance");
  const parts = [o.instance, o.version && `v${o.version}`].filter(Boolean);
  instance.textContent = parts.join(" · ");
  instance.hidden = parts.length === 0;
  renderMetrics(o);
  renderAgents(Array.isArray(o.agents) ? o.agents : []);
}

function tile(label, value, extra = null, tone = "") {
  return h(
    "div",
    { class: `tile ${tone}` },
    h("dt", {}, label),
    h("dd", {}, h("span", { class: "value" }, value), extra),
  );
}

function renderMetrics(o) {
  const totals = o.calls_total && typeof o.calls_total === "object" ? o.calls_total : {};
  const entries = Object.entries(totals)
    .filter(([, n]) => Number.isFinite(n))
    .sort((a, b) => b[1] - a[1]);
  const total = entries.reduce((sum, [, n]) => sum + n, 0);
  const breakdown = h("ul", { class: "outcomes", "aria-label": "Calls by outcome" });
  for (const [outcome, n] of entries) {
    breakdown.append(h("li", {}, outcomeBadge(outcome), h("span", { class: "n" }, n.toLocaleString())));
  }
  if (entries.length === 0) breakdown.append(h("li", { class: "muted" }, "none yet"));
  const dl = h(
    "dl",
    { class: "tiles" },
    tile("Active calls", String(o.active_calls ?? 0), null, o.active_calls > 0 ? "active" : ""),
    tile("Calls since start", total.toLocaleString()),
    h("div", { class: "tile wide" }, h("dt", {}, "By outcome"), h("dd", {}, breakdown)),
    tile("Uptime", uptime(o.uptime_s)),
    tile(
      "Status",
      o.draining ? "Draining" : "Serving",
      null,
      o.draining ? "warn" : "ok",
    ),
  );
  $("#metrics").replaceChildren(h("h2", { class: "visually-hidden", id: "metrics-title" }, "At a glance"), dl);
}

const BREAKER_TONE = { closed: "good", "half-open": "warn", open: "bad" };

function renderAgents(agents) {
  agentsSnapshot = agents;
  const list = $("#agents");
  if (agents.length === 0) {
    list.replaceChildren(h("li", { class: "empty" }, "No agents configured."));
  } else {
    list.replaceChildren(
      ...agents.map((agent) => {
        const plugins = h("ul", { class: "plugins", "aria-label": `Plugins of ${agent.name}` });
        for (const p of agent.plugins || []) {
          const breaker = p.breaker || "closed";
          plugins.append(
            h(
              "li",
              { class: "plugin" },
              h("span", { class: "plugin-name" }, p.name),
              h("span", { class: "plugin-meta" }, [p.stage, p.kind].filter(Boolean).join(" · ")),
              h(
                "span",
                {
                  class: `badge ${BREAKER_TONE[breaker] || "neutral"}`,
                  title: "Circuit breaker: closed = healthy, open = failing, calls fall back",
                },
                h("span", { class: "visually-hidden" }, "breaker "),
                breaker,
              ),
            ),
          );
        }
        const numbers = (agent.numbers || []).join(", ");
        return h(
          "li",
          { class: `agent${agent.disabled ? " disabled" : ""}`, dataset: { agent: agent.name } },
          h(
            "div",
            { class: "agent-head" },
            h("span", { class: "agent-name" }, agent.name),
            badge(agent.mode || "?", "mode"),
            agent.disabled ? badge("disabled", "bad") : null,
            agent.default ? badge("default", "mode") : null,
          ),
          h(
            "p",
            { class: "agent-numbers muted" },
            [numbers, agent.default ? "every call no other agent takes" : ""].filter(Boolean).join(" · ") ||
              "No phone numbers (browser and outbound only)",
          ),
          (agent.plugins || []).length ? plugins : null,
        );
      }),
    );
  }
  renderAgentSelect(agents);
}

function renderAgentSelect(agents) {
  const select = $("#agent-select");
  const previous = select.value;
  const options = agents.map((agent) =>
    h(
      "option",
      { value: agent.name, disabled: agent.disabled },
      agent.disabled ? `${agent.name} (disabled)` : `${agent.name} · ${agent.mode}`,
    ),
  );
  if (options.length === 0) options.push(h("option", { value: "" }, "No agents"));
  select.replaceChildren(...options);
  const enabled = agents.filter((a) => !a.disabled).map((a) => a.name);
  select.value = enabled.includes(previous) ? previous : enabled[0] || "";
  updatePhoneControls();
}

// ---------------------------------------------------------------- recent calls and detail

let recentCalls = [];
let selectedSid = null;
/** When the recent calls were last asked for (epoch ms). */
let lastRecentAt = 0;
/** The second look, a little after the refresh a call's end asked for. */
let settleTimer = null;
/** Whether the coming refresh is to be followed by a second look. */
let recentSettle = false;
const detailCache = new Map();

async function refreshRecent() {
  lastRecentAt = Date.now();
  const button = $("#recent-refresh");
  button.disabled = true;
  try {
    const body = await api(`/calls?limit=${RECENT_LIMIT}`);
    recentCalls = Array.isArray(body && body.calls) ? body.calls : [];
    renderRecent();
  } catch (error) {
    if (error instanceof Unauthorized) return;
    $("#recent-calls").replaceChildren();
    const empty = $("#recent-empty");
    empty.hidden = false;
    empty.textContent =
      error instanceof ApiError && error.code === "records_off"
        ? "Call records are off ([records] in the config)."
        : `Recent calls are unavailable: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

/**
 * Re-reads the recent calls soon after a call started or ended, and once more a little later
 * (Twilio's status callback may complete the record after the stream ended). Throttled: one
 * request covers every call that started or ended meanwhile, and requests are at least
 * RECENT_MIN_INTERVAL_MS apart, however busy the gateway (the token's rate limit is shared).
 */
function scheduleRecent(delay = RECENT_AFTER_END_MS, settle = true) {
  recentSettle = recentSettle || settle;
  if (recentTimer) return; // one is coming: it will see this call too
  const wait = Math.max(delay, lastRecentAt + RECENT_MIN_INTERVAL_MS - Date.now());
  recentTimer = setTimeout(async () => {
    recentTimer = null;
    const again = recentSettle;
    recentSettle = false;
    await refreshRecent();
    clearTimeout(settleTimer);
    if (again) settleTimer = setTimeout(() => scheduleRecent(0, false), RECENT_SETTLE_MS);
  }, wait);
}

function renderRecent() {
  const body = $("#recent-calls");
  // The rows are rebuilt: keep the keyboard focus on the same call's button.
  const focused = document.activeElement && document.activeElement.closest("#recent-calls tr");
  const focusedSid = focused ? focused.dataset.callSid : null;
  body.replaceChildren(
    ...recentCalls.map((call) => {
      const seconds = recordSeconds(call);
      const row = h(
        "tr",
        {
          class: call.call_sid === selectedSid ? "selected" : "",
          dataset: { callSid: call.call_sid },
          "aria-current": call.call_sid === selectedSid ? "true" : null,
        },
        h(
          "td",
          {},
          h(
            "button",
            { type: "button", class: "row-link", "aria-label": `Show call ${call.call_sid}` },
            when(call.started_at_ms ?? call.created_at_ms),
          ),
        ),
        h("td", {}, call.agent || "—"),
        h("td", { class: "mono" }, call.from || "—"),
        h("td", { class: "mono" }, call.to || "—"),
        h("td", {}, call.direction || "—"),
        h("td", {}, outcomeBadge(call.outcome || call.status)),
        h("td", { class: "num" }, clock(seconds)),
      );
      return row;
    }),
  );
  const empty = $("#recent-empty");
  empty.hidden = recentCalls.length > 0;
  empty.textContent = "No calls recorded yet.";
  if (focusedSid) {
    const again = body.querySelector(`tr[data-call-sid="${CSS.escape(focusedSid)}"] button`);
    if (again) again.focus({ preventScroll: true });
  }
}

async function showDetail(sid) {
  selectedSid = sid;
  for (const row of document.querySelectorAll("#recent-calls tr")) {
    const on = row.dataset.callSid === sid;
    row.classList.toggle("selected", on);
    if (on) row.setAttribute("aria-current", "true");
    else row.removeAttribute("aria-current");
  }
  const section = $("#call-detail");
  section.hidden = false;
  $("#detail-title").textContent = "Call";
  const body = $("#detail-body");
  const cached = detailCache.get(sid);
  let record;
  if (cached && Date.now() - cached.at < DETAIL_CACHE_MS) {
    record = cached.record;
  } else {
    body.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    try {
      record = await api(`/calls/${encodeURIComponent(sid)}`);
      // A finished call's record is reused for a little while; a live one never.
      if (record && record.ended_at_ms && record.outcome !== "in-progress") {
        detailCache.set(sid, { at: Date.now(), record });
      }
    } catch (error) {
      if (error instanceof Unauthorized) return;
      if (selectedSid !== sid) return;
      const why =
        error instanceof ApiError && error.status === 404
          ? "No record of this call."
          : error instanceof ApiError && error.status === 429
            ? `Too many requests; try again in ${error.retryAfterS || "a few"} s.`
            : error.message;
      body.replaceChildren(h("p", { class: "error" }, why));
      return;
    }
  }
  if (selectedSid !== sid) return;
  renderDetail(record);
  section.scrollIntoView({ block: "nearest", behavior: "smooth" });
  $("#detail-title").focus({ preventScroll: true });
}

function field(label, value) {
  if (value === null || value === undefined || value === "") return null;
  return h("div", { class: "field" }, h("dt", {}, label), h("dd", {}, value));
}

function renderDetail(call) {
  $("#detail-title").textContent = `Call with ${call.agent || "no agent"}`;
  const seconds = recordSeconds(call);
  const meta = h(
    "dl",
    { class: "fields" },
    field("Outcome", outcomeBadge(call.outcome || call.status)),
    field("Reason", call.reason),
    field("Duration", Number.isFinite(seconds) ? clock(seconds) : null),
    field("Direction", call.direction),
    field("From", call.from),
    field("To", call.to),
    field("Started", when(call.started_at_ms ?? call.created_at_ms)),
    field(
      "First audio",
      Number.isFinite(call.first_audio_ms) ? `${call.first_audio_ms.toLocaleString("en-US")} ms` : null,
    ),
    field(
      "Frames in / out",
      Number.isFinite(call.frames_in) ? `${call.frames_in} / ${call.frames_out ?? "—"}` : null,
    ),
    field("Plugin", call.plugin),
    field("Failure", call.failure_kind),
    field("Instance", call.instance),
    field("Call sid", h("code", {}, call.call_sid)),
  );

  const turns = Array.isArray(call.transcript) ? call.transcript : [];
  const transcript = h("div", { class: "transcript record" });
  if (turns.length === 0) {
    transcript.append(h("p", { class: "muted" }, "No transcript was recorded."));
  }
  for (const turn of turns) {
    const side = ["caller", "agent", "tool"].includes(turn.side) ? turn.side : "system";
    let text = turn.text || "";
    if (side === "tool" && turn.tool) {
      const t = turn.tool;
      text = `${t.name}(${t.arguments}) ${t.ok ? "→" : "→ error:"} ${t.result} (${t.latency_ms} ms)`;
    }
    const line = h("p", { class: `turn ${side}${side === "tool" && turn.tool && !turn.tool.ok ? " failed" : ""}` }, text);
    if (Number.isFinite(turn.heard_ms)) {
      line.append(h("span", { class: "note" }, ` — interrupted, heard ${(turn.heard_ms / 1000).toFixed(1)} s`));
    }
    transcript.append(line);
  }

  const parts = [
    meta,
    h("h3", {}, "Transcript"),
    transcript,
    h("h3", {}, "Latency per turn"),
    latencyChart(call.turn_latency),
  ];
  if (call.task) {
    parts.push(h("details", {}, h("summary", {}, "Task"), h("pre", {}, JSON.stringify(call.task, null, 2))));
  }
  if (call.result) {
    parts.push(
      h("details", { open: true }, h("summary", {}, "Result"), h("pre", {}, JSON.stringify(call.result, null, 2))),
    );
  }
  $("#detail-body").replaceChildren(...parts);
}

// ---------------------------------------------------------------- live calls

/** Calls already in progress when the page opens (the feed only tells what happens next). */
async function seedLiveCalls() {
  try {
    const body = await api("/calls?outcome=in-progress&limit=50");
    for (const record of (body && body.calls) || []) {
      if (live.calls.has(record.call_sid)) continue;
      // Another instance's calls never reach this instance's event feed.
      if (instanceName && record.instance && record.instance !== instanceName) continue;
      const call = liveCall(record.call_sid);
      call.agent = record.agent;
      call.from = record.from || "";
      call.to = record.to || "";
      call.direction = record.direction || "";
      call.startedAt = record.started_at_ms ?? record.created_at_ms ?? Date.now();
    }
    renderLive();
  } catch {
    // Records off or unreachable: the feed will show new calls anyway.
  }
}

function onFeedEvent(frame) {
  let event;
  try {
    event = JSON.parse(frame.data);
  } catch {
    return;
  }
  if (!event || typeof event !== "object") return;
  const type = event.type || frame.event;
  if (type === "events.lost") {
    const missed = event.data && event.data.missed;
    notice(
      `${missed ?? "Some"} live events were missed while reconnecting; transcripts may have gaps.`,
      "lost",
      15000,
    );
    scheduleRecent();
    return;
  }
  const sid = event.call_sid;
  if (!sid) return;
  const known = live.calls.get(sid);
  if (!known && type === "call.ended") {
    scheduleRecent();
    return;
  }
  const call = liveCall(sid);
  if (event.agent) call.agent = event.agent;
  const data = event.data || {};
  switch (type) {
    case "call.started": {
      call.from = data.from || "";
      call.to = data.to || "";
      call.direction = data.direction || "";
      call.mode = data.mode || "";
      const at = Date.parse(event.time);
      if (Number.isFinite(at)) call.startedAt = at;
      scheduleRecent(RECENT_AFTER_END_MS, false); // listed as in progress
      break;
    }
    case "caller.speech_started":
      call.speaking = true;
      break;
    case "caller.speech_stopped":
      call.speaking = false;
      break;
    case "call.ended":
      call.ended = true;
      call.speaking = false;
      call.outcome = data.outcome || null;
      call.endedAt = Date.now();
      detailCache.delete(sid);
      scheduleRecent();
      pruneEnded();
      break;
    default:
      call.transcript.apply({ type, data });
      break;
  }
  scheduleRender();
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderLive();
    renderFollow();
    renderPhoneTranscript();
  });
}

const liveRows = new Map();

function renderLive() {
  const body = $("#live-calls");
  const calls = [...live.calls.values()]
    .filter((c) => !c.ended)
    .sort((a, b) => a.startedAt - b.startedAt);
  const keep = new Set(calls.map((c) => c.sid));
  for (const [sid, row] of liveRows) {
    if (!keep.has(sid)) {
      row.remove();
      liveRows.delete(sid);
    }
  }
  calls.forEach((call, index) => {
    let row = liveRows.get(call.sid);
    if (!row) {
      row = h(
        "tr",
        { dataset: { callSid: call.sid } },
        h("td", {}, h("button", { type: "button", class: "row-link agent-cell" })),
        h("td", { class: "mono from" }),
        h("td", { class: "mono to" }),
        h("td", { class: "direction" }),
        h("td", { class: "num duration", dataset: { since: "" } }),
        h("td", { class: "latest" }),
      );
      liveRows.set(call.sid, row);
    }
    // Sorted by start; moved only when out of place (moving a row would drop its focus).
    if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
    const [agentCell, from, to, direction, duration, latest] = row.children;
    const button = agentCell.firstChild;
    const name = call.agent || "unknown agent";
    button.textContent = name;
    button.setAttribute("aria-pressed", call.sid === live.followed ? "true" : "false");
    button.setAttribute("aria-label", `Follow the call with ${name} from ${call.from || "unknown"}`);
    row.classList.toggle("selected", call.sid === live.followed);
    row.classList.toggle("speaking", call.speaking);
    from.textContent = call.from || "—";
    to.textContent = call.to || "—";
    direction.textContent = call.direction || "—";
    duration.dataset.since = String(call.startedAt);
    duration.textContent = clock((Date.now() - call.startedAt) / 1000);
    const line = call.transcript.latest();
    latest.textContent = line ? line.text : call.speaking ? "…" : "";
    latest.className = `latest${line ? ` ${line.side}` : ""}${line && line.partial ? " partial" : ""}`;
    latest.title = line ? line.text : "";
  });
  $("#live-empty").hidden = calls.length > 0;
  $("#live-count").textContent = calls.length ? String(calls.length) : "";
}

function tick() {
  const now = Date.now();
  for (const cell of document.querySelectorAll("#live-calls [data-since]")) {
    const since = Number(cell.dataset.since);
    if (since) cell.textContent = clock((now - since) / 1000);
  }
}

function follow(sid) {
  live.followed = live.followed === sid ? null : sid;
  renderLive();
  renderFollow();
}

// ---------------------------------------------------------------- transcript views

/** Keeps a container's lines in step with a Transcript, reusing elements (no re-announcing). */
class TranscriptView {
  constructor(container) {
    this.container = container;
    this.elements = new Map();
    this.source = null;
    this.version = -1;
  }

  render(transcript, emptyText) {
    if (transcript !== this.source) {
      this.source = transcript;
      this.version = -1;
      this.elements.clear();
      this.container.replaceChildren();
    }
    if (!transcript) {
      this.container.replaceChildren(h("p", { class: "muted placeholder" }, emptyText));
      return;
    }
    if (transcript.version === this.version) return;
    this.version = transcript.version;
    const stick =
      this.container.scrollHeight - this.container.scrollTop - this.container.clientHeight < 40;
    const placeholder = this.container.querySelector(".placeholder");
    if (placeholder) placeholder.remove();
    const live = new Set(transcript.turns);
    for (const [turn, node] of this.elements) {
      if (!live.has(turn)) {
        node.remove();
        this.elements.delete(turn);
      }
    }
    let previous = null;
    for (const turn of transcript.turns) {
      let node = this.elements.get(turn);
      if (!node) {
        node = h("p");
        this.elements.set(turn, node);
        if (previous) previous.after(node);
        else this.container.prepend(node);
      }
      const cls = `turn ${turn.side}${turn.partial ? " partial" : ""}${turn.heardMs !== null ? " interrupted" : ""}`;
      if (node.className !== cls) node.className = cls;
      if (node.textContent !== turn.text) node.textContent = turn.text;
      if (turn.heardMs !== null) node.title = `Interrupted: the caller heard ${(turn.heardMs / 1000).toFixed(1)} s`;
      previous = node;
    }
    if (transcript.turns.length === 0) {
      this.container.replaceChildren(h("p", { class: "muted placeholder" }, emptyText));
      this.elements.clear();
    }
    if (stick) this.container.scrollTop = this.container.scrollHeight;
  }
}

const followView = new TranscriptView($("#live-transcript"));
const phoneView = new TranscriptView($("#phone-transcript"));

function renderFollow() {
  const panel = $("#follow");
  const call = live.followed ? live.calls.get(live.followed) : null;
  if (!call) {
    panel.hidden = true;
    live.followed = null;
    return;
  }
  panel.hidden = false;
  const status = call.ended ? ` — ended${call.outcome ? ` (${call.outcome})` : ""}` : "";
  $("#follow-title").textContent = `Transcript: ${call.agent || "call"} · ${call.from || call.sid}${status}`;
  followView.render(call.transcript, "Waiting for someone to speak…");
}

function renderPhoneTranscript() {
  if (!phone.callSid) {
    phoneView.render(null, "");
    $("#phone-transcript").replaceChildren();
    return;
  }
  const call = live.calls.get(phone.callSid);
  if (!call) {
    phoneView.render(null, "Waiting for the live transcript…");
    return;
  }
  phoneView.render(call.transcript, "Say something: the transcript appears here.");
}

// ---------------------------------------------------------------- browser phone

const phone = new BrowserPhone({
  onState(state, message) {
    $("#phone-status").textContent = state;
    $("#phone-status").parentElement.dataset.state = state;
    if (message) $("#phone-message").textContent = message;
    if (state === State.ENDED && started) scheduleRecent();
    updatePhoneControls();
    scheduleRender();
  },
});

function updatePhoneControls() {
  const busy = phone.state === State.CONNECTING || phone.state === State.IN_CALL;
  const select = $("#agent-select");
  const option = select.selectedOptions[0];
  const usable = Boolean(select.value) && option && !option.disabled;
  select.disabled = busy || select.options.length === 0 || !agentsSnapshot.some((a) => !a.disabled);
  $("#call-button").disabled = busy || !usable;
  $("#hangup-button").disabled = !busy;
}

/** The test hooks of the contract (tests read these through the DevTools protocol). */
window.switchboardPhone = {
  get state() {
    return phone.state;
  },
  get callSid() {
    return phone.callSid;
  },
  sentMulaw() {
    return toBase64(phone.sentMulaw());
  },
  playedMulaw() {
    return toBase64(phone.playedMulaw());
  },
  get marksEchoed() {
    return phone.marksEchoed;
  },
  get clears() {
    return phone.clears;
  },
};

// ---------------------------------------------------------------- wiring

function wire() {
  onUnauthorized(() => {
    clearToken();
    showLogin("That token was refused.");
  });

  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("#login-token").value.trim();
    if (!value) {
      showLogin("Enter an access token.");
      return;
    }
    login(value);
  });

  $("#logout-button").addEventListener("click", () => {
    clearToken();
    $("#login-token").value = "";
    showLogin();
  });

  // Rows are clickable as a whole; their first cell holds a real button for the keyboard.
  $("#recent-calls").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-call-sid]");
    if (row) showDetail(row.dataset.callSid);
  });
  $("#recent-refresh").addEventListener("click", refreshRecent);
  $("#detail-close").addEventListener("click", () => {
    $("#call-detail").hidden = true;
    const sid = selectedSid;
    selectedSid = null;
    renderRecent();
    const back = sid && document.querySelector(`#recent-calls tr[data-call-sid="${CSS.escape(sid)}"] button`);
    if (back) back.focus();
  });

  $("#live-calls").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-call-sid]");
    if (row) follow(row.dataset.callSid);
  });
  $("#follow-close").addEventListener("click", () => follow(null));

  $("#agent-select").addEventListener("change", updatePhoneControls);
  $("#call-button").addEventListener("click", () => {
    const agent = $("#agent-select").value;
    if (!agent) return;
    phone.call(agent).then(() => {
      if (phone.state === State.IN_CALL) $("#hangup-button").focus();
    });
  });
  $("#hangup-button").addEventListener("click", () => {
    phone.hangUp();
    $("#call-button").focus();
  });

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && started) refreshOverview();
  });
}

/** Signs in with a `#token=…` fragment (the link the gateway logs), removing it from the
 * address bar. Returns whether there was one. */
function tokenFromFragment() {
  const match = /^#token=(.+)$/.exec(location.hash);
  if (!match) return false;
  let fromLink = match[1];
  try {
    fromLink = decodeURIComponent(fromLink);
  } catch {
    // Use it as written.
  }
  history.replaceState(null, "", location.pathname + location.search);
  stopSession();
  login(fromLink.trim());
  return true;
}

function boot() {
  wire();
  window.addEventListener("hashchange", tokenFromFragment);
  if (tokenFromFragment()) return;
  const stored = token();
  if (stored) login(stored);
  else showLogin();
}

boot();
