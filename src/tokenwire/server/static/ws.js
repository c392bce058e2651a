// Turns over one WebSocket (/v1/ws): generate, cancel and resume messages, events told apart
// by request_id. When the socket drops, every unfinished turn is resumed on the next socket
// from its last seq (a turn whose stream id never arrived is generated again). A browser
// cannot put an Authorization header on a WebSocket handshake: with auth on, use SSE.

import { backoff } from "./sse.js";
import { SequenceGap } from "./turn.js";

const CLOSE_POLICY_VIOLATION = 1008;

export class WSHub {
  #api;
  #socket = null;
  #attempt = 0;
  #reconnecting = false;
  /** request_id → turn; a turn gets a new request_id for each resume. */
  #requests = new Map();
  /** turn → its current request_id. */
  #turns = new Map();
  #refusal = null;

  constructor(api) {
    this.#api = api;
    // Offline, the socket is as good as gone (it stalls rather than closes): drop it now and
    // resume every turn on a new socket once the browser is back online.
    window.addEventListener("offline", () => {
      const socket = this.#socket;
      if (socket) this.#closed(socket, { code: 1006, reason: "offline" });
      socket?.close();
    });
  }

  /** Follow a turn over the socket: generate it, or resume it after its last seq. */
  add(turn) {
    this.#turns.set(turn, null);
    if (this.#socket?.readyState === WebSocket.OPEN) this.#send(turn);
    else this.#connect();
  }

  /** Stop a turn: a cancel frame, or the HTTP cancel when the socket is down. */
  stop(turn) {
    turn.stopRequested = true;
    if (turn.finished) return;
    const rid = this.#turns.get(turn);
    if (rid && this.#socket?.readyState === WebSocket.OPEN) {
      this.#socket.send(JSON.stringify({ type: "cancel", request_id: rid }));
    } else if (turn.streamId) {
      this.#api.cancel(turn.streamId).catch((error) => console.warn("tokenwire: cancel failed", error));
    }
    // Otherwise the cancel goes out once the turn has a request on an open socket.
  }

  #connect() {
    if (this.#socket || this.#reconnecting) return;
    const socket = new WebSocket(this.#api.wsUrl(), this.#api.wsProtocols());
    this.#socket = socket;
    socket.addEventListener("open", () => {
      this.#attempt = 0;
      for (const turn of this.#turns.keys()) this.#send(turn);
    });
    socket.addEventListener("message", (message) => this.#receive(message.data));
    socket.addEventListener("close", (event) => this.#closed(socket, event));
  }

  #send(turn) {
    const old = this.#turns.get(turn);
    if (old) this.#requests.delete(old);
    const rid = `${turn.id}.${turn.lastSeq}.${Date.now().toString(36)}`;
    this.#turns.set(turn, rid);
    this.#requests.set(rid, turn);
    const message = turn.streamId
      ? { type: "resume", request_id: rid, after_seq: turn.lastSeq, stream_id: turn.streamId }
      : { ...turn.body, type: "generate", request_id: rid };
    this.#socket.send(JSON.stringify(message));
    if (turn.stopRequested) this.#socket.send(JSON.stringify({ type: "cancel", request_id: rid }));
  }

  #receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      console.warn("tokenwire: a WebSocket frame that is not JSON");
      return;
    }
    if (message.type === "error" && typeof message.seq !== "number") {
      this.#requestError(message);
      return;
    }
    const turn = this.#requests.get(message.request_id);
    if (!turn) return; // a request we gave up on (resumed under another id)
    try {
      turn.apply(message);
    } catch (error) {
      if (!(error instanceof SequenceGap)) throw error;
      console.warn("tokenwire:", error.message, "— resuming");
      this.#send(turn);
    }
    if (turn.finished) this.#forget(turn);
  }

  /** An answer to a message the server could not serve (not a protocol event). */
  #requestError({ request_id: rid, code, message }) {
    if (rid === null) {
      this.#refusal = { code, message }; // e.g. unauthorized: the socket closes next
      return;
    }
    const turn = this.#requests.get(rid);
    if (!turn || code === "unknown_request") return; // a cancel that came after the end
    this.#forget(turn);
    if (turn.streamId && (code === "unknown_stream" || code === "resume_unavailable")) {
      this.#api.recover(turn);
    } else {
      turn.failLocally(code, message);
    }
  }

  #forget(turn) {
    this.#requests.delete(this.#turns.get(turn));
    this.#turns.delete(turn);
  }

  async #closed(socket, event) {
    if (this.#socket !== socket) return;
    this.#socket = null;
    this.#requests.clear();
    for (const turn of this.#turns.keys()) this.#turns.set(turn, null);
    if (this.#turns.size === 0) return;
    if (event.code === CLOSE_POLICY_VIOLATION || this.#refusal) {
      const { code, message } = this.#refusal ?? { code: "unauthorized", message: event.reason };
      this.#refusal = null;
      for (const turn of [...this.#turns.keys()]) turn.failLocally(code, message);
      this.#turns.clear();
      return;
    }
    for (const turn of this.#turns.keys()) turn.markReconnecting();
    this.#reconnecting = true;
    const again = await backoff(this.#attempt++);
    this.#reconnecting = false;
    if (!again) {
      for (const turn of [...this.#turns.keys()]) {
        turn.failLocally("connection_lost", "the WebSocket dropped and could not be reopened");
      }
      this.#turns.clear();
      return;
    }
    if (this.#turns.size) this.#connect();
  }
}
