// Reads one tokenwire AI SDK stream with the `ai` package's own client code and prints what a
// frontend would end up with, as JSON on stdout.
//
//   node read_stream.mjs '<config JSON>'
//
// config: {
//   url:      the endpoint (POST /v1/ai-sdk/chat),
//   package:  "ai" (default) or another installed name of the package, e.g. "ai-5.0.0",
//   mode:     "transport" (default): DefaultChatTransport.sendMessages builds the request and
//             parses the response (parseJsonEventStream + uiMessageChunkSchema);
//             readUIMessageStream assembles the message.
//             "chat": AbstractChat (what useChat drives) sends one message and processes the
//             answer: status, error, messages, onFinish, onData.
//   chatId, text, headers, body: the chat id, the user's text, request headers, and extra
//             body fields (tokenwire options), as an app would give them to the transport.
// }
//
// Output (transport): { request, status, headers, raw, chunks, snapshots, message, errors }
// Output (chat):      { request, status, headers, raw, chatStatus, error, messages, finish, data }

const config = JSON.parse(process.argv[2]);
const ai = await import(config.package ?? "ai");

const seen = { request: null, status: null, headers: null, raw: null };
let rawDone = Promise.resolve();

// The transport's fetch, observed: the request exactly as the package built it, and the raw
// response body (teed; the package reads the other branch).
async function observingFetch(input, init) {
  seen.request = { url: String(input), method: init.method, body: JSON.parse(init.body) };
  const response = await fetch(input, init);
  seen.status = response.status;
  seen.headers = Object.fromEntries(response.headers.entries());
  if (!response.body) {
    return response;
  }
  const [mine, theirs] = response.body.tee();
  rawDone = new Response(mine).text().then((text) => {
    seen.raw = text;
  });
  return new Response(theirs, { status: response.status, headers: response.headers });
}

const transport = new ai.DefaultChatTransport({
  api: config.url,
  headers: config.headers ?? {},
  body: config.body ?? {},
  fetch: observingFetch,
});

const chatId = config.chatId ?? "chat-1";
const userMessage = {
  id: "msg-user-1",
  role: "user",
  parts: [{ type: "text", text: config.text ?? "Hello" }],
};

async function viaTransport() {
  const stream = await transport.sendMessages({
    chatId,
    messages: [userMessage],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
  });
  // Recorded as they pass, cloned: the reader keeps data chunks as message parts and updates
  // them in place when a later chunk replaces them.
  const chunks = [];
  const recorded = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        chunks.push(structuredClone(chunk));
        controller.enqueue(chunk);
      },
    }),
  );
  const errors = [];
  const snapshots = [];
  for await (const message of ai.readUIMessageStream({
    stream: recorded,
    onError: (error) => errors.push(String(error?.message ?? error)),
  })) {
    snapshots.push(message);
  }
  await rawDone;
  return {
    ...seen,
    chunks,
    snapshots,
    message: snapshots.at(-1) ?? null,
    errors,
  };
}

// The state useChat keeps (React's Chat keeps the same, in React state).
class MemoryChatState {
  constructor() {
    this.status = "ready";
    this.error = undefined;
    this.messages = [];
  }
  pushMessage(message) {
    this.messages = this.messages.concat(message);
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  }
  snapshot(thing) {
    return structuredClone(thing);
  }
}

class Chat extends ai.AbstractChat {
  constructor(init) {
    super({ ...init, state: new MemoryChatState() });
  }
}

async function viaChat() {
  let finish = null;
  const data = [];
  const onErrorCalls = [];
  const chat = new Chat({
    id: chatId,
    transport,
    generateId: (() => {
      let n = 0;
      return () => `gen-${++n}`;
    })(),
    onError: (error) => onErrorCalls.push(String(error?.message ?? error)),
    onData: (part) => data.push(part),
    onFinish: ({ message, isAbort, isDisconnect, isError, finishReason }) => {
      finish = { messageId: message?.id, isAbort, isDisconnect, isError, finishReason };
    },
  });
  await chat.sendMessage({ text: config.text ?? "Hello" });
  await rawDone;
  return {
    ...seen,
    chatStatus: chat.status,
    error: chat.error ? String(chat.error.message) : null,
    onErrorCalls,
    messages: chat.messages,
    finish,
    data,
  };
}

const result = config.mode === "chat" ? await viaChat() : await viaTransport();
process.stdout.write(JSON.stringify(result));
