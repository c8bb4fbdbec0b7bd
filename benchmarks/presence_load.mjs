// Load generator for benchmarks/bench_presence.py: N raw WebSocket sessions join one topic at once.
//
// Usage: node presence_load.mjs URL TOKENS_FILE TOPIC TIMEOUT_MS [LOCAL_ADDRESSES]
// LOCAL_ADDRESSES (comma-separated, e.g. 127.0.0.1,127.0.0.2): sockets spread over them, for more
// sockets than one source address has ephemeral ports (about 28,000 on Linux).
// Opens one socket per token (not timed), then sends every phx_join in one burst and waits until
// every session's presence list holds all N keys (or the timeout). Each session keeps its list the
// way phoenix.js Presence does: diffs that arrive before its presence_state are buffered, then
// applied; joins add metas by phx_ref, leaves remove them. (Only refs are kept: cloning every meta
// as Presence.syncDiff does would make this generator, not the server, the bottleneck, and 25
// million metas do not fit in Node's heap.)
// Prints one JSON line: frames and bytes received by kind, time to complete, sessions complete.
import { readFileSync } from "node:fs";
import WebSocket from "../tests/js/node_modules/ws/index.js";

const [url, tokensFile, topic, timeoutMs, localAddresses] = process.argv.slice(2);
const sources = localAddresses ? localAddresses.split(",") : [undefined];
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

// Many sessions get the same presence bytes (a diff is one broadcast; a window's joiners share one
// presence_state encoding, behind their own join_ref): each distinct payload is parsed and resolved
// to ref and key numbers once, and each session applies the numbers. Parsing a 10,000-member list
// for each of 10,000 sessions (7 GB of JSON) would make this generator the bottleneck.
const seen = new Map();
function resolved(event, text, start) {
  const body = text.slice(start, -1);
  let found = seen.get(body);
  if (found === undefined) {
    const payload = JSON.parse(body);
    const pairs = (side) => {
      const out = [];
      for (const [key, { metas }] of Object.entries(side)) {
        const k = index(keyIndex, key);
        for (const m of metas) out.push(k, index(refIndex, m.phx_ref));
      }
      if (refIndex.size >= CAPACITY || keyIndex.size >= CAPACITY) throw new Error("more refs than this generator holds");
      return Int32Array.from(out);
    };
    found = event === "presence_count" ? { count: payload.count }
      : event === "presence_state" ? { joins: pairs(payload), leaves: new Int32Array(0) }
      : { joins: pairs(payload.joins), leaves: pairs(payload.leaves) };
    if (seen.size > 64) seen.clear();
    if (body.length > 256) seen.set(body, found);
  }
  return found;
}

function session(token, source) {
  // A list's arrays only once a list comes (count mode never needs them: 50,000 sessions).
  const s = { ws: null, present: null, metas: null, keys: 0,
              synced: false, pending: [], done: false, count: 0 };
  const apply = (diff) => {
    const { joins, leaves } = diff;
    if (s.present === null) {
      s.present = new Uint8Array(CAPACITY);
      s.metas = new Uint16Array(CAPACITY);
    }
    for (let i = 0; i < joins.length; i += 2) {
      const k = joins[i], r = joins[i + 1];
      if (s.present[r]) continue;
      s.present[r] = 1;
      if (s.metas[k]++ === 0) s.keys += 1;
    }
    for (let i = 0; i < leaves.length; i += 2) {
      const k = leaves[i], r = leaves[i + 1];
      if (!s.present[r]) continue;
      s.present[r] = 0;
      if (--s.metas[k] === 0) s.keys -= 1;
    }
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
    const at = data.indexOf(',"presence_');
    const event = at < 0 ? null : data.slice(at + 2, data.indexOf('"', at + 2));
    if (event === null || !(event in counts)) {
      const [, , , other] = JSON.parse(data);
      counts[other in counts ? other : "other"] += 1;
      return;
    }
    counts[event] += 1;
    const diff = resolved(event, data, at + event.length + 4);
    if (event === "presence_state") {
      if (s.present !== null) {
        s.present.fill(0);
        s.metas.fill(0);
      }
      s.keys = 0;
      apply(diff);
      s.synced = true;
      s.pending.forEach(apply);
      s.pending = [];
    } else if (event === "presence_diff") {
      if (s.synced) apply(diff); else s.pending.push(diff);
    } else {
      s.synced = true;
      s.count = diff.count;
    }
    check();
  };
  s.open = () => new Promise((ok, fail) => {
    s.ws = new WebSocket(`${url}?vsn=2.0.0&token=${token}`, { perMessageDeflate: false, localAddress: source });
    s.ws.on("open", ok);
    s.ws.on("error", fail);
    s.ws.on("message", (data) => s.onMessage(data.toString()));
  });
  return s;
}

const sessions = tokens.map((token, i) => session(token, sources[i % sources.length]));
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
