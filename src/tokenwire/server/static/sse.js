// Server-sent events read with fetch() and a ReadableStream, not EventSource: fetch can send
// the Authorization header and Last-Event-ID on a resume, and a POST body. The decoder is
// incremental: text in (any split, even inside a line or a CRLF), messages out.

/** An incremental SSE decoder (the WHATWG event-stream grammar). */
export class SSEDecoder {
  #buffer = "";
  #data = [];
  #event = "";
  #id = "";
  #afterCR = false;

  /** Feed decoded text; returns the messages it completed: {event, data, id}. */
  feed(text) {
    if (text === "") return [];
    // A CRLF split between two chunks: its LF ends no second line.
    if (this.#afterCR && text.startsWith("\n")) text = text.slice(1);
    this.#afterCR = false;
    const buffer = this.#buffer + text;
    const messages = [];
    let start = 0;
    for (let i = 0; i < buffer.length; i++) {
      const c = buffer.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = buffer.slice(start, i);
      if (c === 13) {
        if (i + 1 === buffer.length) this.#afterCR = true;
        else if (buffer.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
      const message = this.#line(line);
      if (message) messages.push(message);
    }
    this.#buffer = buffer.slice(start);
    return messages;
  }

  #line(line) {
    if (line === "") {
      if (this.#data.length === 0) {
        this.#event = "";
        return null;
      }
      const message = { event: this.#event || "message", data: this.#data.join("\n"), id: this.#id };
      this.#data = [];
      this.#event = "";
      return message;
    }
    if (line.startsWith(":")) return null; // a comment: the server's keep-alive
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "event") this.#event = value;
    else if (field === "id" && !value.includes("\0")) this.#id = value;
    return null;
  }
}

/**
 * Read a text/event-stream response to its end, calling onEvent with each protocol event (the
 * JSON of each message). Resolves when the server closes the stream; rejects on a network
 * error, an abort, a stall (nothing, not even the server's keep-alive comment, for stallMs),
 * and with whatever onEvent throws (the reader is cancelled then).
 */
export async function pump(response, onEvent, stallMs = STALL_MS) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const decoder = new SSEDecoder();
  let stall;
  const stalled = new Promise((_, reject) => {
    stall = () => reject(new Error("the stream stalled"));
  });
  stalled.catch(() => {});
  let timer = 0;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(stall, stallMs);
  };
  arm();
  try {
    for (;;) {
      const { value, done } = await Promise.race([reader.read(), stalled]);
      if (done) return;
      arm();
      for (const message of decoder.feed(value)) onEvent(JSON.parse(message.data));
    }
  } catch (error) {
    reader.cancel().catch(() => {});
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/** Longer than two of the server's keep-alive intervals (15 s by default). */
const STALL_MS = 40_000;

/** A turn's events over SSE: POST, then resume with Last-Event-ID after any drop. */
export class SSEConnection {
  #api;
  #turn;
  #abort = null;
  #stopping = null;

  constructor(api, turn) {
    this.#api = api;
    this.#turn = turn;
  }

  /**
   * Follow the turn to its terminal event. A new turn is POSTed (with its Idempotency-Key, so
   * a retry after a drop before the headers joins the same turn instead of starting another);
   * a turn with a stream id is resumed after its last seq. Drops are retried with backoff.
   */
  async run() {
    // Offline, the connection is as good as gone (it stalls rather than fails): drop it now
    // and resume once the browser is back online.
    const dropOnOffline = () => this.#abort?.abort();
    window.addEventListener("offline", dropOnOffline);
    try {
      await this.#follow();
    } finally {
      window.removeEventListener("offline", dropOnOffline);
    }
  }

  async #follow() {
    const turn = this.#turn;
    let attempt = 0;
    while (!turn.finished) {
      if (this.#stopping) await this.#stopping;
      this.#abort = new AbortController();
      const signal = this.#abort.signal;
      let progressed = false;
      try {
        const response = turn.streamId
          ? await this.#api.streamEvents(turn.streamId, turn.lastSeq, turn.streamToken, signal)
          : await this.#api.postStream(turn.body, turn.idempotencyKey, signal);
        if (!response.ok) {
          const error = await this.#api.errorOf(response);
          if (turn.streamId && (response.status === 404 || response.status === 410)) {
            await this.#api.recover(turn);
            return;
          }
          if (response.status < 500 || response.status === 503) {
            turn.failLocally(error.code, error.message);
            return;
          }
          throw new Error(error.message);
        }
        if (!turn.streamId) {
          // A stop pressed before now is carried out here (turn.onStopPending).
          turn.attach(
            response.headers.get("X-Tokenwire-Stream-Id"),
            response.headers.get("Tokenwire-Stream-Token"),
          );
        }
        const before = turn.lastSeq;
        await pump(response, (event) => turn.apply(event)).finally(() => {
          progressed = turn.lastSeq > before;
        });
      } catch (error) {
        if (turn.finished) return;
        if (!signal.aborted && !(error instanceof TypeError) && error.name !== "SequenceGap") {
          console.warn("tokenwire: stream read failed", error);
        }
      }
      if (turn.finished) return;
      if (progressed) attempt = 0;
      turn.markReconnecting();
      if (this.#stopping) continue; // our own abort: resume as soon as the cancel has landed
      if (!(await backoff(attempt++))) {
        turn.failLocally("connection_lost", "the connection dropped and could not be resumed");
        return;
      }
    }
  }

  /**
   * Stop the turn. The browser holds at most six HTTP/1.1 connections per origin, all of which
   * may be streams: our own stream is dropped first (the turn keeps running, on_disconnect is
   * "continue"), which frees a connection for the cancel; then the stream is resumed to read
   * the terminal event (`done`, reason `cancelled`).
   */
  stop() {
    const turn = this.#turn;
    turn.stopRequested = true;
    if (!turn.streamId || this.#stopping || turn.finished) return;
    this.#stopping = this.#api
      .cancel(turn.streamId)
      .catch((error) => console.warn("tokenwire: cancel failed", error))
      .finally(() => {
        this.#stopping = null;
      });
    // Abort after the cancel was queued, so its request takes the connection freed here.
    this.#abort?.abort();
  }
}

const MAX_ATTEMPTS = 10;

/** Wait before reconnecting (250 ms doubling to 4 s); offline, wait for the network instead. */
export async function backoff(attempt) {
  if (attempt >= MAX_ATTEMPTS) return false;
  if (!navigator.onLine) {
    await new Promise((resolve) => window.addEventListener("online", resolve, { once: true }));
    return true;
  }
  const delay = Math.min(250 * 2 ** attempt, 4000);
  await new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      window.removeEventListener("online", done);
      resolve();
    };
    const timer = setTimeout(done, delay);
    window.addEventListener("online", done);
  });
  return true;
}
