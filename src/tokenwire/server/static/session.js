// What survives a reload. The turns of this tab live in sessionStorage: a running turn as its
// identity (stream id, Idempotency-Key, request body) — after a reload it is replayed from seq
// 0, which is exact and needs no per-token writes —, a finished one with its outcome. The API
// key is kept for the tab only (sessionStorage); the other settings in localStorage.

const TURNS = "tokenwire.turns.v1";
const SETTINGS = "tokenwire.settings.v1";
const API_KEY = "tokenwire.apiKey";
const MAX_TURNS = 50;

function read(storage, key, fallback) {
  try {
    const raw = storage.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

function write(storage, key, value) {
  try {
    storage.setItem(key, JSON.stringify(value));
  } catch (error) {
    console.warn("tokenwire: could not save", key, error); // quota, or storage disabled
  }
}

export function loadTurns() {
  const turns = read(sessionStorage, TURNS, []);
  return Array.isArray(turns) ? turns.filter((t) => t && t.id && t.body) : [];
}

/** Save the records, oldest first; past MAX_TURNS the oldest finished ones are dropped. */
export function saveTurns(records) {
  let kept = records;
  while (kept.length > MAX_TURNS) {
    const index = kept.findIndex((record) => record.final);
    if (index === -1) break;
    kept = kept.toSpliced(index, 1);
  }
  write(sessionStorage, TURNS, kept);
}

export function loadSettings(defaults) {
  const saved = read(localStorage, SETTINGS, {});
  return { ...defaults, ...(saved && typeof saved === "object" ? saved : {}) };
}

export function saveSettings(settings) {
  write(localStorage, SETTINGS, settings);
}

export function loadApiKey() {
  return read(sessionStorage, API_KEY, "") || "";
}

export function saveApiKey(key) {
  if (key) write(sessionStorage, API_KEY, key);
  else sessionStorage.removeItem(API_KEY);
}
