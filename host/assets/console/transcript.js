// The live transcript of one call, built from its /events feed.
//
// Caller lines: partial recognitions (caller.transcript final=false) replace the open caller
// line until the final one closes it. Agent lines: fragments (agent.text final=false) append to
// the open agent line; the final agent.text (the whole turn as heard) replaces it. A barge-in
// (agent.barge_in) closes the agent line to new fragments: the next reply starts a line of its
// own, and the cut line takes the final text (what the caller heard) if one comes. Tool calls
// and plugin failures get lines of their own. Pure data, no DOM: Node's tests import it.

/** Most lines kept per call; older ones are dropped. */
export const MAX_TURNS = 300;

/**
 * One line: side is "caller" | "agent" | "tool" | "system"; partial is true until its final
 * text is known. heardMs is set on an agent line cut short by barge-in.
 */
export class Turn {
  constructor(side, text, partial) {
    this.side = side;
    this.text = text;
    this.partial = partial;
    this.heardMs = null;
    this.toolId = null;
  }
}

/** The lines of one call, in the order they began. */
export class Transcript {
  constructor(maxTurns = MAX_TURNS) {
    this.maxTurns = maxTurns;
    /** @type {Turn[]} */
    this.turns = [];
    this.openCaller = null;
    this.openAgent = null;
    /** An agent line cut by barge-in, waiting for its final text (what the caller heard). */
    this.cutAgent = null;
    /** Bumped on every change, for cheap re-render checks. */
    this.version = 0;
  }

  /** The newest line with text, or null. */
  latest() {
    for (let i = this.turns.length - 1; i >= 0; i--) {
      if (this.turns[i].text) return this.turns[i];
    }
    return null;
  }

  push(turn) {
    this.turns.push(turn);
    if (this.turns.length > this.maxTurns) {
      this.turns.splice(0, this.turns.length - this.maxTurns);
    }
    return turn;
  }

  /**
   * Applies one event ({type, data}, as sent on /events). Returns true when the lines changed.
   */
  apply(event) {
    const data = event.data || {};
    const changed = this.applyData(event.type, data);
    if (changed) this.version++;
    return changed;
  }

  applyData(type, data) {
    switch (type) {
      case "caller.transcript": {
        const text = String(data.text ?? "");
        const final = data.final !== false;
        if (this.openCaller) {
          this.openCaller.text = text;
          this.openCaller.partial = !final;
        } else {
          if (!text && final) return false;
          this.openCaller = this.push(new Turn("caller", text, !final));
        }
        if (final) {
          if (!this.openCaller.text) this.dropTurn(this.openCaller);
          this.openCaller = null;
        }
        return true;
      }
      case "agent.text": {
        const text = String(data.text ?? "");
        const final = data.final === true;
        if (!final) {
          if (!text) return false;
          if (this.openAgent) {
            this.openAgent.text += text;
          } else {
            // A new reply: a cut line still waiting for its final text will not get one now.
            this.settleCut();
            this.openAgent = this.push(new Turn("agent", text, true));
          }
          return true;
        }
        const turn = this.openAgent || this.cutAgent;
        if (turn) {
          if (text) turn.text = text;
          turn.partial = false;
          if (turn === this.openAgent) this.openAgent = null;
          else this.cutAgent = null;
        } else {
          if (!text) return false;
          this.push(new Turn("agent", text, false));
        }
        return true;
      }
      case "agent.barge_in": {
        const turn = this.openAgent || this.lastOf("agent");
        if (!turn) return false;
        turn.heardMs = typeof data.heard_ms === "number" ? data.heard_ms : null;
        if (turn === this.openAgent) {
          this.settleCut();
          this.cutAgent = turn;
          this.openAgent = null;
        }
        return true;
      }
      case "tool.call": {
        const args =
          typeof data.arguments === "string" ? data.arguments : JSON.stringify(data.arguments ?? {});
        const turn = this.push(new Turn("tool", `${data.name ?? "tool"}(${args})`, true));
        turn.toolId = data.id ?? null;
        return true;
      }
      case "tool.result": {
        let turn = null;
        for (let i = this.turns.length - 1; i >= 0; i--) {
          const t = this.turns[i];
          if (t.side === "tool" && t.partial && (data.id == null || t.toolId === data.id)) {
            turn = t;
            break;
          }
        }
        const outcome = data.ok === false ? "error" : "ok";
        const ms = typeof data.duration_ms === "number" ? ` (${data.duration_ms} ms)` : "";
        if (!turn) turn = this.push(new Turn("tool", `${data.name ?? "tool"}()`, true));
        turn.text += ` → ${outcome}${ms}`;
        turn.partial = false;
        return true;
      }
      case "plugin.failed": {
        const stage = data.stage ? ` (${data.stage})` : "";
        const message = data.message ? `: ${data.message}` : "";
        this.push(new Turn("system", `Plugin ${data.plugin ?? "?"}${stage} failed${message}`, false));
        return true;
      }
      default:
        return false;
    }
  }

  /** The cut agent line stays as generated (marked interrupted) without a final text. */
  settleCut() {
    if (!this.cutAgent) return;
    this.cutAgent.partial = false;
    this.cutAgent = null;
  }

  lastOf(side) {
    for (let i = this.turns.length - 1; i >= 0; i--) {
      if (this.turns[i].side === side) return this.turns[i];
    }
    return null;
  }

  dropTurn(turn) {
    const i = this.turns.indexOf(turn);
    if (i >= 0) this.turns.splice(i, 1);
  }
}
