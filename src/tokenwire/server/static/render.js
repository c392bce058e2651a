// The DOM of a turn. Text is never re-rendered per token: deltas are buffered per turn and
// written once per animation frame, as one new text node appended after the ones already
// there (the browser lays out only the new node). Model output only ever becomes text nodes
// and textContent, never markup.

const pending = new Set();
let frame = 0;

function schedule(view) {
  pending.add(view);
  if (!frame) frame = requestAnimationFrame(flushFrame);
}

function flushFrame() {
  frame = 0;
  const follow = nearBottom();
  for (const view of pending) view.flush();
  pending.clear();
  if (follow) scrollToEnd();
}

const scroller = () => document.scrollingElement;

/** Whether the reader is at the end of the page (then new text keeps it there). */
export function nearBottom() {
  const s = scroller();
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

export function scrollToEnd() {
  const s = scroller();
  s.scrollTop = s.scrollHeight;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

const PHASES = { queued: "Queued", generating: "Generating", extracting: "Extracting insights" };

export class TurnView {
  #pending = "";

  /** @param id the turn's id; @param prompt the user's message */
  constructor(id, prompt) {
    const qid = `q-${id}`;
    this.question = el("p", { class: "question", id: qid, text: prompt });
    this.text = el("span", { class: "answer-text" });
    this.cursor = el("span", { class: "cursor", "aria-hidden": "true" });
    this.answer = el(
      "div",
      { class: "answer", "aria-live": "polite", "aria-busy": "true" },
      this.text,
      this.cursor,
    );
    this.error = el("p", { class: "turn-error", role: "alert", hidden: "" });
    this.tools = el("ul", { class: "tools", "aria-label": "Tool calls", hidden: "" });
    this.insights = el("section", { class: "insights", "aria-label": "Insights", hidden: "" });
    this.sources = el("section", { class: "sources", "aria-label": "Sources", hidden: "" });
    this.badge = el("span", { class: "badge", role: "status" });
    this.metrics = el("span", { class: "metrics" });
    this.stop = el("button", {
      type: "button",
      class: "stop",
      "data-role": "stop",
      "aria-label": `Stop answering: ${prompt.length > 60 ? `${prompt.slice(0, 60)}…` : prompt}`,
    });
    this.stop.append(el("span", { class: "stop-icon", "aria-hidden": "true" }), "Stop");
    this.stop.addEventListener("click", () => {
      if (this.stop.getAttribute("aria-disabled") !== "true") this.onStop();
    });
    /** Called when the reader presses Stop. */
    this.onStop = () => {};
    const body = el("div", { class: "turn-body" }, this.answer, this.error, this.tools);
    this.root = el(
      "article",
      { class: "turn", id: `turn-${id}`, "aria-labelledby": qid, "data-state": "connecting" },
      el("div", { class: "turn-question" }, this.question),
      el(
        "div",
        { class: "turn-card" },
        el("div", { class: "turn-main" }, body, this.insights),
        this.sources,
        el("footer", { class: "turn-foot" }, this.badge, this.metrics, this.stop),
      ),
    );
  }

  setState(state) {
    this.root.dataset.state = state;
    if (this.stop.getAttribute("aria-disabled") === "true") return; // "Stopping…" stays
    if (state === "connecting") this.badge.textContent = "Connecting";
    else if (state === "reconnecting") this.badge.textContent = "Reconnecting…";
    else if (state === "streaming") {
      this.badge.textContent = PHASES[this.root.dataset.phase] ?? "Generating";
    }
  }

  setPhase(phase) {
    this.root.dataset.phase = phase;
    if (this.root.dataset.state === "streaming") this.setState("streaming");
  }

  setStopping() {
    // aria-disabled, not disabled: a disabled button would drop the keyboard focus.
    this.stop.setAttribute("aria-disabled", "true");
    this.badge.textContent = "Stopping…";
  }

  /** Buffer a delta; it reaches the DOM on the next animation frame. */
  appendText(delta) {
    this.#pending += delta;
    schedule(this);
  }

  /** Write the buffered text (called once per frame, and before the turn ends). */
  flush() {
    if (!this.#pending) return;
    this.text.append(document.createTextNode(this.#pending));
    this.#pending = "";
  }

  replaceText(text) {
    this.#pending = "";
    pending.delete(this);
    this.text.replaceChildren(document.createTextNode(text));
  }

  addTool(callId, name, args) {
    this.tools.hidden = false;
    const item = el("li", { class: "tool" }, el("code", { text: `${name}(${args})` }));
    if (callId) item.dataset.callId = callId;
    this.tools.append(item);
  }

  /** A tool finished: its item says whether it worked, and what it returned (one line). */
  setToolResult(callId, ok, summary) {
    const item = [...this.tools.children].find((li) => li.dataset.callId === callId);
    if (!item) return;
    item.dataset.ok = ok ? "true" : "false";
    item.append(el("span", { class: "tool-result", text: ` → ${ok ? "" : "failed: "}${summary}` }));
  }

  /** The insights panel from the structured channel: waiting, partial, done, error, skipped. */
  setInsights(structured) {
    const panel = this.insights;
    panel.hidden = false;
    panel.dataset.state = structured.state;
    panel.setAttribute("aria-busy", String(structured.state === "partial" || structured.state === "waiting"));
    const status = {
      waiting: "waiting…",
      partial: structured.attempt > 1 ? `extracting… (attempt ${structured.attempt})` : "extracting…",
      done: structured.valid === false ? "needs review" : "validated",
      error: "failed",
      skipped: structured.status ?? "skipped",
    }[structured.state];
    const head = el("h3", {}, "Insights", el("span", { class: "insights-state", text: status }));
    const parts = [head];
    if (structured.state === "error") {
      parts.push(el("p", { class: "insights-error", text: `${structured.code}: ${structured.message}` }));
    } else if (structured.data !== undefined && structured.data !== null) {
      parts.push(renderData(structured.data));
    } else {
      parts.push(el("p", { class: "insights-empty", text: "The structured channel has not sent anything yet." }));
    }
    panel.replaceChildren(...parts);
  }

  setMetrics({ ttftMs, tokens, tokensPerS, model }) {
    const parts = [];
    if (ttftMs !== null && ttftMs !== undefined) parts.push(["TTFT", formatMs(ttftMs)]);
    if (tokensPerS !== null) parts.push(["", `${tokensPerS.toFixed(1)} tok/s`]);
    if (tokens !== null && tokens !== undefined) parts.push(["", `${tokens} tokens`]);
    if (model) parts.push(["", model]);
    this.metrics.replaceChildren(
      ...parts.map(([label, value]) =>
        el("span", { class: "metric" }, ...(label ? [el("abbr", { title: "time to first token", text: label }), " "] : []), value),
      ),
    );
  }

  /** The turn ended: flush its text, drop the cursor and Stop, show badge, metrics, sources. */
  finish({ outcome, message, metrics, structured, sources }) {
    this.flush();
    pending.delete(this);
    this.root.dataset.state = "finished";
    this.root.dataset.kind = outcome.kind;
    this.root.dataset.reason = outcome.reason;
    this.answer.setAttribute("aria-busy", "false");
    this.badge.textContent = outcome.label;
    this.badge.title = outcome.reason;
    this.cursor.remove();
    if (document.activeElement === this.stop) {
      // Keep keyboard focus inside the turn rather than losing it to <body>.
      this.answer.tabIndex = -1;
      this.answer.focus();
    }
    this.stop.remove();
    if (message) {
      this.error.hidden = false;
      this.error.textContent = message;
    }
    if (!this.text.textContent && !message) this.text.classList.add("empty");
    this.setMetrics(metrics);
    if (structured) this.setInsights(structured);
    if (sources.length) this.#setSources(sources);
  }

  #setSources(sources) {
    const cards = sources.map((source, index) => sourceCard(source, index));
    this.sources.hidden = false;
    this.sources.replaceChildren(el("h3", { text: "Sources" }), el("ol", { class: "source-list" }, ...cards));
  }
}

function sourceCard(source, index) {
  const detail = typeof source === "string" ? { url: source } : source ?? {};
  const url = safeUrl(detail.url ?? detail.uri ?? detail.href);
  const title = String(detail.title ?? detail.name ?? (url ? url.hostname : `Source ${index + 1}`));
  const snippet = detail.snippet ?? detail.text ?? detail.excerpt ?? "";
  const card = el("li", { class: "source" });
  const heading = url
    ? el("a", { href: url.href, target: "_blank", rel: "noopener noreferrer", text: title })
    : el("span", { text: title });
  card.append(el("span", { class: "source-index", text: String(index + 1) }), el("div", { class: "source-title" }, heading));
  if (url) card.append(el("div", { class: "source-host", text: url.hostname }));
  if (snippet) card.append(el("p", { class: "source-snippet", text: String(snippet) }));
  return card;
}

/** Only http(s) links become anchors (a `javascript:` URL from a model never does). */
function safeUrl(value) {
  if (typeof value !== "string") return null;
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:" ? url : null;
  } catch {
    return null;
  }
}

/** A structured object as a definition list; arrays of scalars as chips, the rest as JSON. */
function renderData(data) {
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    return el("pre", { class: "insights-json", text: JSON.stringify(data, null, 2) });
  }
  const list = el("dl", { class: "insights-data" });
  for (const [key, value] of Object.entries(data)) {
    list.append(el("dt", { text: humanize(key) }), el("dd", {}, renderValue(value)));
  }
  return list;
}

function renderValue(value) {
  if (Array.isArray(value) && value.every((v) => v === null || typeof v !== "object")) {
    return el("ul", { class: "chips" }, ...value.map((v) => el("li", { class: "chip", text: String(v) })));
  }
  if (value !== null && typeof value === "object") {
    return el("pre", { class: "insights-json", text: JSON.stringify(value, null, 2) });
  }
  const node = el("span", { class: `value value-${typeof value}`, text: String(value) });
  if (typeof value === "string") node.dataset.value = value.toLowerCase();
  return node;
}

function humanize(key) {
  const words = key.replace(/[_-]+/g, " ").replace(/([a-z])([A-Z])/g, "$1 $2");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function formatMs(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}
