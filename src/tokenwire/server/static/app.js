// The page: settings, the composer, and the turns. Each message starts an independent turn
// (several may stream at once); each turn follows its stream over SSE or the shared
// WebSocket, and is saved in sessionStorage so a reload resumes it.

import { Api, randomId } from "./api.js";
import { TurnView, nearBottom, scrollToEnd } from "./render.js";
import * as session from "./session.js";
import { SSEConnection } from "./sse.js";
import { Turn } from "./turn.js";
import { WSHub } from "./ws.js";

const SUMMARY_SCHEMA = {
  type: "object",
  properties: {
    sentiment: { enum: ["positive", "negative", "neutral"] },
    topics: { type: "array", items: { type: "string", maxLength: 24 }, maxItems: 3 },
    summary: { type: "string", maxLength: 160 },
  },
  required: ["sentiment", "topics", "summary"],
};

const $ = (id) => document.getElementById(id);
const form = {
  settings: $("settings"),
  route: $("route"),
  key: $("api-key"),
  insights: $("insights"),
  schemaField: $("schema-field"),
  schema: $("schema"),
  schemaError: $("schema-error"),
  extra: $("extra"),
  extraError: $("extra-error"),
  options: $("options"),
  clear: $("clear"),
  composer: $("composer"),
  message: $("message"),
  turns: $("turns"),
  empty: $("empty"),
};

let apiKey = session.loadApiKey();
const api = new Api(new URL("../", import.meta.url), () => apiKey);
const hub = new WSHub(api);
/** The turns on the page, oldest first. */
const turns = [];

// -- settings ------------------------------------------------------------------------------

const settings = session.loadSettings({
  route: "default",
  transport: "sse",
  insights: "off",
  schema: "",
  extra: "",
});

function showSettings() {
  form.route.value = settings.route;
  for (const radio of form.settings.elements.transport) radio.checked = radio.value === settings.transport;
  form.key.value = apiKey;
  form.insights.value = settings.insights;
  form.schema.value = settings.schema;
  form.extra.value = settings.extra;
  form.schemaField.hidden = settings.insights !== "custom";
}

function readSettings() {
  settings.route = form.route.value.trim();
  settings.transport = form.settings.elements.transport.value === "ws" ? "ws" : "sse";
  settings.insights = form.insights.value;
  settings.schema = form.schema.value;
  settings.extra = form.extra.value;
  form.schemaField.hidden = settings.insights !== "custom";
  session.saveSettings(settings);
  if (form.key.value !== apiKey) {
    apiKey = form.key.value.trim();
    session.saveApiKey(apiKey);
  }
}

form.settings.addEventListener("input", readSettings);
form.settings.addEventListener("change", readSettings);
form.settings.addEventListener("submit", (event) => event.preventDefault());

/** A field's JSON, or a thrown Error naming the field (shown next to it). */
function parseField(textarea, errorNode, { allowName = false } = {}) {
  const raw = textarea.value.trim();
  errorNode.textContent = "";
  textarea.removeAttribute("aria-invalid");
  if (!raw) return null;
  if (allowName && /^[\w.-]+$/.test(raw)) return raw;
  try {
    const value = JSON.parse(raw);
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new Error("must be a JSON object");
    }
    return value;
  } catch (error) {
    errorNode.textContent = `Not valid: ${error.message}`;
    textarea.setAttribute("aria-invalid", "true");
    form.options.open = true;
    textarea.focus();
    throw error;
  }
}

/**
 * The conversation so far, as the model should see it: every finished turn on the page that
 * produced an answer (its prompt, then its canonical answer), oldest first. Turns still
 * streaming have no answer yet and are left out, so several questions can be in flight at
 * once; "Clear finished" takes turns out of the history as well as off the page.
 */
function history() {
  const messages = [];
  for (const turn of turns) {
    const answer = turn.terminal?.type === "done" ? turn.terminal.answer : "";
    if (!answer) continue;
    messages.push({ role: "user", content: turn.prompt }, { role: "assistant", content: answer });
  }
  return messages;
}

/** The request body of a new turn, from the message, the history and the settings. */
function buildBody(prompt) {
  const messages = [...history(), { role: "user", content: prompt }];
  // "continue": leaving the page (a reload) must not stop the turn; the reloaded page resumes.
  const body = { messages, route: settings.route || "default", on_disconnect: "continue" };
  const schema =
    settings.insights === "summary"
      ? SUMMARY_SCHEMA
      : settings.insights === "custom"
        ? parseField(form.schema, form.schemaError, { allowName: true })
        : null;
  if (schema) body.extraction = { schema };
  const extra = parseField(form.extra, form.extraError);
  return extra ? { ...body, ...extra } : body;
}

// -- turns ---------------------------------------------------------------------------------

function persist() {
  session.saveTurns(turns.map((turn) => turn.record()));
}

function mount(record) {
  const view = new TurnView(record.id, record.prompt);
  const turn = new Turn(record, view);
  turn.onChange = persist;
  const follow = nearBottom();
  form.turns.append(view.root);
  form.empty.hidden = true;
  turns.push(turn);
  if (follow) scrollToEnd();
  return turn;
}

/** Follow a turn to its end over its transport (a new turn, or one to resume). */
function follow(turn) {
  if (turn.transport === "ws") {
    turn.view.onStop = () => {
      turn.markStopping();
      hub.stop(turn);
    };
    hub.add(turn);
    return;
  }
  const connection = new SSEConnection(api, turn);
  turn.view.onStop = () => {
    turn.markStopping();
    connection.stop();
  };
  turn.onStopPending = () => connection.stop();
  connection.run().catch((error) => {
    console.error("tokenwire: turn failed", error);
    turn.failLocally("client_error", String(error));
  });
}

function send(prompt) {
  let body;
  try {
    body = buildBody(prompt);
  } catch {
    return false;
  }
  const turn = mount({
    id: randomId().slice(0, 12),
    prompt,
    body,
    transport: settings.transport,
    idempotencyKey: randomId(),
    createdAt: Date.now(),
  });
  persist();
  turn.sentAt = performance.now();
  follow(turn);
  scrollToEnd();
  return true;
}

/** Stop the newest turn still running (Esc in the composer). */
function stopNewest() {
  const turn = turns.findLast((t) => !t.finished && !t.stopRequested);
  turn?.view.onStop();
}

form.clear.addEventListener("click", () => {
  for (const turn of turns.filter((t) => t.finished)) turn.view.root.remove();
  turns.splice(0, turns.length, ...turns.filter((t) => !t.finished));
  form.empty.hidden = turns.length > 0;
  persist();
});

// -- composer ------------------------------------------------------------------------------

function submitMessage() {
  const prompt = form.message.value.trim();
  if (!prompt) return;
  if (send(prompt)) {
    form.message.value = "";
    fitComposer();
    form.message.focus();
  }
}

function fitComposer() {
  const box = form.message;
  box.style.height = "auto";
  box.style.height = `${Math.min(box.scrollHeight, 200)}px`;
}

form.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  submitMessage();
});
form.message.addEventListener("input", fitComposer);
form.message.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    submitMessage();
  } else if (event.key === "Escape") {
    event.preventDefault();
    stopNewest();
  }
});

// -- start ---------------------------------------------------------------------------------

showSettings();
for (const record of session.loadTurns()) {
  const turn = mount(record);
  if (record.final) turn.restore(record.final);
  else follow(turn); // replayed from seq 0: the page shows exactly what the stream holds
}
scrollToEnd();
