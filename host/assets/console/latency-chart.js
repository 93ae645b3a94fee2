// Per-turn latency of a recorded call as a small inline SVG bar chart.
//
// A record's `turn_latency` entries are milestones measured from the end of the caller's
// speech (host/src/records.rs TurnLatency): endpointing (the turn-taking's decision), STT final,
// LLM first text, TTS first audio, first audio out. Each turn is one horizontal bar on that
// timeline, stacked from one milestone to the next, so the bar's length is the time until the
// agent's first audio went out (or the last milestone recorded, for a turn cut short) and each
// colour is the share of one stage. The numbers are also in
// the SVG's <desc> and in a table under a <details> for screen readers and copy-paste.

import { h, svg } from "./dom.js";

/** The milestones in timeline order: record field, label, colour (Okabe–Ito palette). */
export const STAGES = [
  { key: "endpointing_ms", label: "Endpointing", color: "#8c96a3" },
  { key: "stt_final_ms", label: "STT final", color: "#56b4e9" },
  { key: "llm_first_text_ms", label: "LLM first text", color: "#e69f00" },
  { key: "tts_first_audio_ms", label: "TTS first audio", color: "#009e73" },
  { key: "first_audio_out_ms", label: "First audio out", color: "#cc79a7" },
];

// Geometry in SVG user units (the chart scales to its box; 640 wide fits the detail panel).
/** Width of the whole chart. */
const WIDTH = 640;
/** Room left of the bars for "Turn n". */
const LABEL_W = 64;
/** Room right of the longest bar for its total ("1,510 ms"). */
const VALUE_W = 72;
/** Height of one turn's bar, and the gap between bars. */
const BAR_H = 16;
const ROW_GAP = 8;
/** Room under the bars for the axis labels, and above them. */
const AXIS_H = 22;
const TOP = 4;

let chartCount = 0;

const ms = (v) => `${Math.round(v).toLocaleString("en-US")} ms`;

/** A round axis step giving about 4–6 ticks up to `max`. */
function tickStep(max) {
  const raw = max / 5;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

/** An axis label: one unit for the whole axis (seconds from 1 s up, else ms). */
function tickLabel(v, scaleMax) {
  if (v === 0) return "0";
  return scaleMax >= 1000 ? `${Number((v / 1000).toFixed(2))} s` : `${v} ms`;
}

/** The stacked segments of one turn: [{stage, from, to}] in ms, skipping missing milestones. */
export function segments(turn) {
  const out = [];
  let at = 0;
  for (const stage of STAGES) {
    const v = turn[stage.key];
    if (typeof v !== "number") continue;
    const to = Math.max(at, v);
    out.push({ stage, from: at, to, value: v });
    at = to;
  }
  return out;
}

function describeTurn(turn, i) {
  const parts = segments(turn).map((s) => `${s.stage.label.toLowerCase()} ${ms(s.value)}`);
  if (typeof turn.speech_ms === "number") parts.push(`caller spoke ${ms(turn.speech_ms)}`);
  return `Turn ${i + 1}: ${parts.length ? parts.join(", ") : "no timings"}.`;
}

/**
 * A <figure> with the chart, its legend and a data table, for `turns` (a record's
 * turn_latency array). Returns a short note when there is nothing to draw.
 */
export function latencyChart(turns) {
  const figure = h("figure", { class: "latency" });
  if (!Array.isArray(turns) || turns.length === 0) {
    figure.append(h("p", { class: "muted" }, "No per-turn latency was recorded for this call."));
    return figure;
  }
  const id = `latency-${++chartCount}`;
  let max = 0;
  for (const turn of turns) for (const s of segments(turn)) max = Math.max(max, s.to);
  const step = tickStep(Math.max(max, 100));
  const scaleMax = Math.ceil(Math.max(max, 100) / step) * step;
  const plotW = WIDTH - LABEL_W - VALUE_W;
  const x = (v) => LABEL_W + (v / scaleMax) * plotW;
  const height = TOP + turns.length * (BAR_H + ROW_GAP) + AXIS_H;

  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${height}`,
    width: WIDTH,
    height,
    role: "img",
    "aria-labelledby": `${id}-title ${id}-desc`,
    class: "latency-chart",
  });
  chart.append(
    svg("title", { id: `${id}-title` }, "Per-turn latency from the end of the caller's speech (ms)"),
    svg("desc", { id: `${id}-desc` }, turns.map(describeTurn).join(" ")),
  );
  const plotBottom = TOP + turns.length * (BAR_H + ROW_GAP);
  const grid = svg("g", { class: "axis", "aria-hidden": "true" });
  for (let v = 0; v <= scaleMax; v += step) {
    grid.append(
      svg("line", { x1: x(v), x2: x(v), y1: TOP - 2, y2: plotBottom, class: v === 0 ? "zero" : "grid" }),
      svg("text", { x: x(v), y: plotBottom + 14, "text-anchor": "middle" }, tickLabel(v, scaleMax)),
    );
  }
  chart.append(grid);
  turns.forEach((turn, i) => {
    const y = TOP + i * (BAR_H + ROW_GAP) + ROW_GAP / 2;
    const row = svg("g", { class: "bar-row" });
    row.append(svg("text", { x: 0, y: y + BAR_H - 4, class: "label" }, `Turn ${i + 1}`));
    const segs = segments(turn);
    for (const s of segs) {
      const w = Math.max(x(s.to) - x(s.from), s.to > s.from ? 1 : 0);
      if (w === 0) continue;
      const rect = svg("rect", { x: x(s.from), y, width: w, height: BAR_H, fill: s.stage.color });
      rect.append(svg("title", {}, `Turn ${i + 1} — ${s.stage.label}: ${ms(s.value)}`));
      row.append(rect);
    }
    const end = segs.length ? segs[segs.length - 1].to : 0;
    row.append(
      svg("text", { x: x(end) + 6, y: y + BAR_H - 4, class: "value" }, segs.length ? ms(end) : "—"),
    );
    chart.append(row);
  });

  const legend = h("ul", { class: "legend", "aria-hidden": "true" });
  for (const stage of STAGES) {
    const item = h("li");
    const swatch = h("span", { class: "swatch" });
    swatch.style.background = stage.color;
    item.append(swatch, document.createTextNode(stage.label));
    legend.append(item);
  }

  const details = h("details", { class: "latency-table" });
  details.append(h("summary", {}, "Latency table"));
  const table = h("table");
  const head = h("tr");
  head.append(h("th", { scope: "col" }, "Turn"));
  for (const stage of STAGES) head.append(h("th", { scope: "col" }, stage.label));
  head.append(h("th", { scope: "col" }, "Speech"));
  const thead = h("thead");
  thead.append(head);
  table.append(thead);
  const body = h("tbody");
  turns.forEach((turn, i) => {
    const tr = h("tr");
    tr.append(h("th", { scope: "row" }, String(i + 1)));
    for (const stage of [...STAGES, { key: "speech_ms" }]) {
      const v = turn[stage.key];
      tr.append(h("td", {}, typeof v === "number" ? ms(v) : "—"));
    }
    body.append(tr);
  });
  table.append(body);
  details.append(table);

  const caption = h(
    "figcaption",
    {},
    "Milestones after the caller stopped speaking, stacked; a bar ends at the turn's last recorded milestone (first audio out when the agent answered).",
  );
  figure.append(caption, chart, legend, details);
  return figure;
}
