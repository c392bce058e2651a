// The HTTP side of the protocol: where the server is, how requests are authenticated, and the
// few REST calls the UI makes. The base URL is derived from this module's own URL
// (<base>/ui/api.js), so the UI works wherever the router is mounted (e.g. under /llm).

export class Api {
  /** @param {URL} base the router's base URL; @param {() => string} key the API key, or "" */
  constructor(base, key) {
    this.base = base;
    this.key = key;
  }

  url(path) {
    return new URL(path, this.base);
  }

  headers(extra = {}) {
    const key = this.key();
    return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
  }

  /** POST /v1/streams: the SSE response of a new turn (or of the turn its key started). */
  postStream(body, idempotencyKey, signal) {
    return fetch(this.url("v1/streams"), {
      method: "POST",
      headers: this.headers({
        "Content-Type": "application/json",
        Accept: "text/event-stream",
        "Idempotency-Key": idempotencyKey,
      }),
      body: JSON.stringify(body),
      cache: "no-store",
      signal,
    });
  }

  /** GET /v1/streams/{id}/events after `after`: replay, then follow live. */
  streamEvents(streamId, after, token, signal) {
    const url = this.#streamUrl(streamId, "/events", token);
    return fetch(url, {
      headers: this.headers({ Accept: "text/event-stream", "Last-Event-ID": String(after) }),
      cache: "no-store",
      signal,
    });
  }

  /** POST /v1/streams/{id}/cancel; resolves to whether a running turn was stopped. */
  async cancel(streamId) {
    const response = await fetch(this.#streamUrl(streamId, "/cancel"), {
      method: "POST",
      headers: this.headers(),
      cache: "no-store",
    });
    if (!response.ok) throw new Error((await this.errorOf(response)).message);
    return (await response.json()).cancelled === true;
  }

  /**
   * The last resort when a stream's events are gone (404, or 410 resume_unavailable): the
   * terminal event from GET /v1/streams/{id} (or its stored record) ends the turn with the
   * canonical answer; without one the turn ends as lost.
   */
  async recover(turn) {
    try {
      const response = await fetch(this.#streamUrl(turn.streamId, "", turn.streamToken), {
        headers: this.headers(),
        cache: "no-store",
      });
      if (response.ok) {
        const status = await response.json();
        const terminal = status.terminal ?? status.record?.terminal;
        if (terminal && (terminal.type === "done" || terminal.type === "error")) {
          turn.applyRecovered(terminal);
          return;
        }
      }
    } catch (error) {
      console.warn("tokenwire: status lookup failed", error);
    }
    turn.failLocally("resume_unavailable", "the stream's events are no longer available");
  }

  /** The `{code, message}` of an error response (every tokenwire error is JSON). */
  async errorOf(response) {
    try {
      const body = await response.json();
      if (body?.error?.code) return body.error;
    } catch {
      // not JSON: a proxy in between, say
    }
    return { code: `http_${response.status}`, message: response.statusText || "request failed" };
  }

  /** The WebSocket endpoint, same host, ws: or wss:. */
  wsUrl() {
    const url = this.url("v1/ws");
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url;
  }

  /**
   * The subprotocols to offer: a browser cannot set Authorization on a WebSocket handshake, so
   * the key travels as "tokenwire.bearer.<key>" beside "tokenwire.v1", which the server selects.
   */
  wsProtocols() {
    const key = this.key();
    return key ? ["tokenwire.v1", `tokenwire.bearer.${key}`] : ["tokenwire.v1"];
  }

  #streamUrl(streamId, suffix, token) {
    const url = this.url(`v1/streams/${encodeURIComponent(streamId)}${suffix}`);
    // The stream token opens this one stream's events and status when no API key is at hand.
    if (token && !this.key()) url.searchParams.set("token", token);
    return url;
  }
}

/** A random id; crypto.randomUUID exists only in secure contexts (not plain http on a LAN). */
export function randomId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
