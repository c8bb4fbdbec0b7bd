// Load generator for benchmarks/bench_presence.py: N raw WebSocket sessions join one topic at once.
//
// Usage: node presence_load.mjs URL TOKENS_FILE TOPIC TIMEOUT_MS
// Opens one socket per token (not timed), then sends every phx_join in one burst and waits until
// every session's presence list holds all N keys (or the timeout). Each session keeps its list the
// way phoenix.js Presence does: diffs that arrive before its presence_state are buffered, then
// applied; joins add metas by phx_ref, leaves remove them. (Only refs are kept: cloning every meta
// as Presence.syncDiff does would make this generator, not the server, the bottleneck, and 25
// million metas do not fit in Node's heap.)
// Prints one JSON line: frames and bytes received by kind, time to complete, sessions complete.
import { readFileSync } from "node:fs";
import WebSocket from "../tests/js/node_modules/ws/index.js";

const [url, tokensFile, topic, timeoutMs] = process.argv.slice(2);
const tokens = readFileSync(tokensFile, "utf8").trim().split("\n");
const N = tokens.length;

const counts = { frames: 0, bytes: 0, presence_diff: 0, presence_state: 0, presence_count: 0, phx_reply: 0, other: 0 };
let complete = 0;
let firstDoneAt = null;
let t0 = 0;
let resolveDone;
const allDone = new Promise((ok) => (resolveDone = ok));

// Refs and keys are numbered once for all sessions; each session keeps one byte per ref (present?)
// and one counter per key (metas present), so 5,000 lists of 5,000 stay small.
const refIndex = new Map();
const keyIndex = new Map();
const index = (map, value) => {
  let i = map.get(value);
  if (i === undefined) map.set(value, (i = map.size));
  return i;
};
const CAPACITY = 4 * N + 64;

function session(token) {
  const s = { ws: null, present: new Uint8Array(CAPACITY), metas: new Uint16Array(CAPACITY), keys: 0,
              synced: false, pending: [], done: false, count: 0 };
  const apply = (diff) => {
    for (const [key, { metas }] of Object.entries(diff.joins)) {
      const k = index(keyIndex, key);
      for (const m of metas) {
        const r = index(refIndex, m.phx_ref);
        if (s.present[r]) continue;
        s.present[r] = 1;
        if (s.metas[k]++ === 0) s.keys += 1;
      }
    }
    for (const [key, { metas }] of Object.entries(diff.leaves)) {
      const k = index(keyIndex, key);
      for (const m of metas) {
        const r = index(refIndex, m.phx_ref);
        if (!s.present[r]) continue;
        s.present[r] = 0;
        if (--s.metas[k] === 0) s.keys -= 1;
      }
    }
    if (refIndex.size >= CAPACITY || keyIndex.size >= CAPACITY) throw new Error("more refs than this generator holds");
  };
  const check = () => {
    const size = s.count || s.keys;
    if (!s.done && s.synced && size === N) {
      s.done = true;
      complete += 1;
      if (firstDoneAt === null) firstDoneAt = performance.now();
      if (complete === N) resolveDone();
    }
  };
  s.onMessage = (data) => {
    counts.frames += 1;
    counts.bytes += data.length;
    const [, , , event, payload] = JSON.parse(data);
    counts[event in counts ? event : "other"] += 1;
    if (event === "presence_state") {
      s.present.fill(0);
      s.metas.fill(0);
      s.keys = 0;
      apply({ joins: payload, leaves: {} });
      s.synced = true;
      s.pending.forEach(apply);
      s.pending = [];
    } else if (event === "presence_diff") {
      if (s.synced) apply(payload); else s.pending.push(payload);
    } else if (event === "presence_count") {
      s.synced = true;
      s.count = payload.count;
    } else return;
    check();
  };
  s.open = () => new Promise((ok, fail) => {
    s.ws = new WebSocket(`${url}?vsn=2.0.0&token=${token}`, { perMessageDeflate: false });
    s.ws.on("open", ok);
    s.ws.on("error", fail);
    s.ws.on("message", (data) => s.onMessage(data.toString()));
  });
  return s;
}

const sessions = tokens.map(session);
for (let i = 0; i < N; i += 100) await Promise.all(sessions.slice(i, i + 100).map((s) => s.open()));

t0 = performance.now();
sessions.forEach((s, i) => s.ws.send(JSON.stringify([String(i + 1), String(i + 1), topic, "phx_join", {}])));
const timedOut = await Promise.race([
  allDone.then(() => false),
  new Promise((ok) => setTimeout(() => ok(true), Number(timeoutMs))),
]);
const elapsed = performance.now() - t0;
// Frames still in flight after completion (e.g. a last batched diff) are counted for a moment more.
await new Promise((ok) => setTimeout(ok, 300));
process.stdout.write(JSON.stringify({
  sessions: N, complete, timed_out: timedOut,
  all_complete_ms: timedOut ? null : Math.round(elapsed), first_complete_ms: firstDoneAt && Math.round(firstDoneAt - t0),
  ...counts,
}) + "\n");
for (const s of sessions) s.ws.terminate();
process.exit(0);
