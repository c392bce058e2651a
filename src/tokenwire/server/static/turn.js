// One turn on the client: the protocol's events applied in seq order, exactly once. Every
// transport (a first POST, an SSE resume, a WebSocket resume, a replay from 0 after a reload)
// feeds apply(); an event at or below the last seq seen is a replay and is dropped, so a
// resume can never duplicate text, and a gap is refused so it can never lose any.

/** Thrown by apply() for an event past lastSeq + 1: the reader must resume from lastSeq. */
export class SequenceGap extends Error {
  name = "SequenceGap";
}

/** Badge kinds and labels by terminal reason (README, "Reasons"). */
const REASONS = {
  stop: ["ok", "Completed"],
  length: ["partial", "Max tokens reached"],
  content_filter: ["partial", "Partial · content filter"],
  cancelled: ["partial", "Stopped"],
  client_gone: ["partial", "Partial · client left"],
  shutdown: ["partial", "Partial · server shut down"],
  interrupted: ["partial", "Partial · interrupted"],
  timeout_first_token: ["timeout", "Timed out · no first token"],
  timeout_idle: ["timeout", "Timed out · upstream idle"],
  timeout_total: ["timeout", "Timed out · total deadline"],
  upstream_error: ["partial", "Partial · upstream error"],
  upstream_truncated: ["partial", "Partial · upstream cut off"],
  worker_lost: ["partial", "Partial · worker lost"],
  log_unavailable: ["partial", "Partial · event log unavailable"],
};

/** The badge of a finished turn: {kind: ok|partial|timeout|failed, label, reason}. */
export function outcomeOf(terminal) {
  if (terminal.type === "done") {
    const [kind, label] = REASONS[terminal.reason] ?? ["partial", `Partial · ${terminal.reason}`];
    return { kind: terminal.partial || kind !== "ok" ? kind : "ok", label, reason: terminal.reason };
  }
  const [kind, label] = REASONS[terminal.code] ?? [];
  if (kind === "timeout") return { kind, label, reason: terminal.code };
  return { kind: "failed", label: "Failed", reason: terminal.code };
}

export class Turn {
  /** @param record what is persisted (see record()); @param view the TurnView */
  constructor(record, view) {
    this.id = record.id;
    this.prompt = record.prompt;
    this.body = record.body;
    this.transport = record.transport;
    this.idempotencyKey = record.idempotencyKey;
    this.createdAt = record.createdAt;
    this.streamId = record.streamId ?? null;
    this.streamToken = record.streamToken ?? null;
    this.view = view;
    /** Called when what record() returns changed (persist it). */
    this.onChange = () => {};
    /** Called when a stop was asked before the stream id was known, once it is known. */
    this.onStopPending = () => {};
    this.stopRequested = false;
    this.lastSeq = 0;
    this.text = "";
    this.terminal = null;
    this.structured = record.body?.extraction ? { state: "waiting" } : null;
    this.usage = null;
    this.model = null;
    this.tools = [];
    this.sentAt = null; // performance.now() when this page sent the request, for TTFT
    this.ttftMs = null;
    this.state = "connecting";
    view.setState(this.state);
    if (this.structured) view.setInsights(this.structured);
  }

  get finished() {
    return this.terminal !== null;
  }

  /** The stream id and browser token from the POST response headers. */
  attach(streamId, streamToken) {
    if (!streamId || this.streamId) return;
    this.streamId = streamId;
    this.streamToken = streamToken || null;
    this.onChange();
    if (this.stopRequested) this.onStopPending();
  }

  /** Apply one protocol event (seq-checked: replays are dropped, gaps refused). */
  apply(event) {
    if (this.finished || typeof event.seq !== "number" || event.seq <= this.lastSeq) return;
    if (event.seq !== this.lastSeq + 1) {
      throw new SequenceGap(`expected seq ${this.lastSeq + 1}, got ${event.seq}`);
    }
    this.lastSeq = event.seq;
    const view = this.view;
    switch (event.type) {
      case "start":
        this.model = event.model;
        this.#setState("streaming");
        if (!this.streamId) this.attach(event.stream_id, null);
        break;
      case "status":
        if (this.state !== "streaming") this.#setState("streaming");
        view.setPhase(event.phase);
        break;
      case "text.delta":
        if (this.text === "" && this.sentAt !== null && this.ttftMs === null) {
          this.ttftMs = performance.now() - this.sentAt;
          view.setMetrics(this.metrics());
        }
        this.text += event.delta;
        view.appendText(event.delta);
        if (this.state !== "streaming") this.#setState("streaming");
        break;
      case "text.done":
        if (event.text !== this.text) {
          // Cannot happen if seq numbers hold; if it does, show the server's text.
          console.error("tokenwire: streamed text differs from text.done; showing text.done");
          this.text = event.text;
          view.replaceText(event.text);
        }
        break;
      case "tool.call":
        this.tools.push({ callId: event.call_id, name: event.name, arguments: event.arguments });
        view.addTool(event.call_id, event.name, event.arguments);
        break;
      case "tool.result": {
        const tool = this.tools.find((t) => t.callId === event.call_id);
        if (tool) Object.assign(tool, { ok: event.ok, summary: event.summary });
        view.setToolResult(event.call_id, event.ok, event.summary);
        break;
      }
      case "structured.partial":
        this.structured = { state: "partial", data: event.data, attempt: this.structured?.attempt };
        view.setInsights(this.structured);
        break;
      case "structured.reset":
        // A re-ask starts the object over: the earlier partials are not part of it.
        this.structured = { state: "partial", data: null, attempt: event.attempt };
        view.setInsights(this.structured);
        break;
      case "structured.done":
        this.structured = { state: "done", data: event.data, valid: event.valid };
        view.setInsights(this.structured);
        break;
      case "structured.error":
        this.structured = { state: "error", code: event.code, message: event.message };
        view.setInsights(this.structured);
        break;
      case "usage":
        this.usage = { output_tokens: event.output_tokens, estimated: event.estimated };
        break;
      case "done":
      case "error":
        this.#finish(event);
        break;
      default:
        break; // a newer server's event type: ignored, as the protocol allows
    }
  }

  /** End with a terminal event fetched from the stream's status (its events were gone). */
  applyRecovered(terminal) {
    if (this.finished) return;
    if (terminal.type === "done" && terminal.answer !== this.text) {
      this.text = terminal.answer;
      this.view.replaceText(terminal.answer);
    }
    this.#finish(terminal);
  }

  /** End without a server terminal event (refused request, lost connection). */
  failLocally(code, message) {
    if (this.finished) return;
    this.#finish({ type: "error", code, message, local: true });
  }

  markReconnecting() {
    if (!this.finished) this.#setState("reconnecting");
  }

  markStopping() {
    if (!this.finished) this.view.setStopping();
  }

  /** TTFT (this page's measure, else the server's) and tokens/s over the streaming time. */
  metrics() {
    const terminal = this.terminal;
    const timings = terminal?.timings ?? {};
    const ttftMs = this.ttftMs ?? timings.first_token ?? null;
    const tokens = terminal?.usage?.output_tokens ?? this.usage?.output_tokens ?? null;
    const streamMs = timings.stream ?? null;
    const tokensPerS = tokens && streamMs > 0 ? (tokens * 1000) / streamMs : null;
    return { ttftMs, tokens, tokensPerS, model: terminal?.model ?? this.model };
  }

  /** What survives a reload (sessionStorage): identity while running, the outcome once done. */
  record() {
    return {
      id: this.id,
      prompt: this.prompt,
      body: this.body,
      transport: this.transport,
      idempotencyKey: this.idempotencyKey,
      createdAt: this.createdAt,
      streamId: this.streamId,
      streamToken: this.streamToken,
      final: this.finished
        ? {
            text: this.text,
            terminal: this.terminal,
            structured: this.structured,
            tools: this.tools,
            ttftMs: this.ttftMs,
          }
        : null,
    };
  }

  /** Show a finished turn from its record, without the network. */
  restore(final) {
    this.text = final.text;
    this.view.replaceText(final.text);
    this.tools = final.tools ?? [];
    for (const tool of this.tools) {
      this.view.addTool(tool.callId, tool.name, tool.arguments);
      if (tool.ok !== undefined) this.view.setToolResult(tool.callId, tool.ok, tool.summary);
    }
    this.structured = final.structured;
    if (this.structured) this.view.setInsights(this.structured);
    this.ttftMs = final.ttftMs;
    this.#finish(final.terminal, { quiet: true });
  }

  #setState(state) {
    this.state = state;
    this.view.setState(state);
  }

  #finish(terminal, { quiet = false } = {}) {
    this.terminal = terminal;
    if (terminal.type === "done" && terminal.structured && this.structured?.state !== "done") {
      const s = terminal.structured;
      if (s.status === "ok") this.structured = { state: "done", data: s.data, valid: s.valid };
      else if (s.status === "error")
        this.structured = { state: "error", code: s.error?.code, message: s.error?.message };
      else this.structured = { state: "skipped", status: s.status };
    } else if (this.structured?.state === "waiting" || this.structured?.state === "partial") {
      this.structured = { ...this.structured, state: "skipped", status: "not extracted" };
    }
    this.state = "finished";
    this.view.finish({
      outcome: outcomeOf(terminal),
      message: terminal.type === "error" ? terminal.message : null,
      metrics: this.metrics(),
      structured: this.structured,
      sources: terminal.source_details?.length ? terminal.source_details : terminal.sources ?? [],
    });
    if (!quiet) this.onChange();
  }
}
