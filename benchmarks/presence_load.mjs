// Load generator for benchmarks/bench_presence.py: N raw WebSocket sessions join one topic at once.
//
// Usage: node presence_load.mjs URL TOKENS_FILE TOPIC TIMEOUT_MS MEMBERS [LOCAL_ADDRESSES]
// MEMBERS: how many keys a complete list holds (the tokens of every generator process: a run may
// spread its sessions over several processes, each under the open-file limit).
// LOCAL_ADDRESSES (comma-separated, e.g. 127.0.0.1,127.0.0.2): sockets spread over them, for more
// sockets than one source address has ephemeral ports (about 28,000 on Linux).
// Opens one socket per token (not timed), prints "ready", waits for a "go" line on stdin (so that
// several processes burst together), then sends every phx_join in one burst and waits until
// every session's presence list holds all MEMBERS keys (or the timeout). Each session keeps its list the
// way phoenix.js Presence does: diffs that arrive before its presence_state are buffered, then
// applied; joins add metas by phx_ref, leaves remove them. (Only refs are kept: cloning every meta
// as Presence.syncDiff does would make this generator, not the server, the bottleneck, and 25
// million metas do not fit in Node's heap.)
// Prints one JSON line: frames and bytes received by kind, time to complete, sessions complete,
// and this process's CPU from the burst to completion.
//
// Why a WebSocket client of its own (RFC 6455, the client side of text frames only): a 10,000
// list run delivers 7 GB (N clients each learning N presences, about 70 bytes each). Through the
// `ws` package every frame becomes a freshly allocated Buffer (concatenated from its reads) and the
// generator spent about 4 times the server's CPU, most of it allocating and collecting. Here every
// socket reads into one shared, reused buffer (net's `onread`), and a presence payload is never
// copied: it is compared, piece by piece as it arrives, with the payloads already parsed (a diff is
// one broadcast, and a window's joiners share one presence_state encoding: the same bytes for
// thousands of sessions); only a payload not seen before is gathered and parsed.
import { readFileSync } from "node:fs";
import net from "node:net";
import { randomBytes } from "node:crypto";

const [url, tokensFile, topic, timeoutMs, members, localAddresses] = process.argv.slice(2);
const sources = localAddresses ? localAddresses.split(",") : [undefined];
const tokens = readFileSync(tokensFile, "utf8").trim().split("\n");
const N = Number(members);
const target = new URL(url);

const counts = { frames: 0, bytes: 0, presence_diff: 0, presence_state: 0, presence_count: 0, phx_reply: 0, other: 0,
                 state_bytes: 0, diff_bytes: 0 };
let complete = 0;
let firstDoneAt = null;
let t0 = 0;
let resolveDone;
const allDone = new Promise((ok) => (resolveDone = ok));

// Refs and keys are numbered once for all sessions; each session keeps one byte per ref (present?)
// and one counter per key (metas present), so 10,000 lists of 10,000 stay small.
const refIndex = new Map();
const keyIndex = new Map();
const index = (map, value) => {
  let i = map.get(value);
  if (i === undefined) map.set(value, (i = map.size));
  return i;
};
const CAPACITY = 4 * N + 64;

// Payloads parsed so far, by event, newest first: [{bytes, found}, ...] (bytes: the payload and the
// message's closing "]").
const seen = { presence_state: [], presence_diff: [], presence_count: [] };
const KEEP = 64; // distinct payloads in flight at once: a slow session may be many windows behind

function resolve(event, bytes) {
  for (const entry of seen[event]) if (entry.bytes.equals(bytes)) return entry.found;
  const payload = JSON.parse(bytes.toString("utf8", 0, bytes.length - 1));
  const pairs = (side) => {
    const out = [];
    for (const [key, { metas }] of Object.entries(side)) {
      const k = index(keyIndex, key);
      for (const m of metas) out.push(k, index(refIndex, m.phx_ref));
    }
    if (refIndex.size >= CAPACITY || keyIndex.size >= CAPACITY) throw new Error("more refs than this generator holds");
    return Int32Array.from(out);
  };
  const found = event === "presence_count" ? { count: payload.count }
    : event === "presence_state" ? { joins: pairs(payload), leaves: new Int32Array(0) }
    : { joins: pairs(payload.joins), leaves: pairs(payload.leaves) };
  if (bytes.length > 256) {
    seen[event].unshift({ bytes, found });
    if (seen[event].length > KEEP) seen[event].pop();
  }
  return found;
}

// Bytes of a message read before deciding what it is: enough for ["join_ref",null,"topic","presence_state",
const HEAD = 192;
const MARK = Buffer.from(',"presence_');

function session(token, source) {
  // A list's arrays only once a list comes (count mode never needs them: 50,000 sessions).
  const s = { sock: null, present: null, metas: null, keys: 0, synced: false, pending: [], done: false, count: 0 };
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
      if (complete === tokens.length) resolveDone();
    }
  };
  const received = (event, found) => {
    counts[event] += 1;
    if (event === "presence_state") {
      if (s.present !== null) {
        s.present.fill(0);
        s.metas.fill(0);
      }
      s.keys = 0;
      apply(found);
      s.synced = true;
      s.pending.forEach(apply);
      s.pending = [];
    } else if (event === "presence_diff") {
      if (s.synced) apply(found); else s.pending.push(found);
    } else {
      s.synced = true;
      s.count = found.count;
    }
    check();
  };

  // The reader: HTTP response head, then frames. A message may come in fragments (the server
  // sends a large one so): its payload is the frames' payloads one after the other.
  let http = "";
  let onOpen = null;
  const hdr = Buffer.alloc(14);
  let hdrLen = 0;
  let fin = true, length = 0, got = 0;  // the frame being read: its payload bytes so far
  let control = false;                  // a control frame (close, ping): not part of a message
  const head = Buffer.alloc(HEAD);
  let size = 0;                         // the message being read: its payload bytes so far
  let decided = false, event = null, start = 0;
  // Its presence payload so far either matches a seen one up to pos (cand), or is gathered (chunks).
  let cand = null, pos = 0, chunks = null;

  const headerSize = () => {
    if (hdrLen < 2) return 0;
    const len7 = hdr[1] & 0x7f;
    return len7 === 126 ? 4 : len7 === 127 ? 10 : 2;
  };
  // The seen payload that matches the one read so far (pos bytes) and then buf[off, off + n).
  // The one it matched so far first; another only if it has the same bytes so far (compared last:
  // up to the whole payload read so far).
  const matching = (buf, off, n) => {
    if (cand !== null && cand.bytes.length >= pos + n && buf.compare(cand.bytes, pos, pos + n, off, off + n) === 0) return cand;
    for (const entry of seen[event]) {
      const bytes = entry.bytes;
      if (entry !== cand && bytes.length >= pos + n && buf.compare(bytes, pos, pos + n, off, off + n) === 0
          && (cand === null || bytes.compare(cand.bytes, 0, pos, 0, pos) === 0)) {
        return entry;
      }
    }
    return null;
  };
  const body = (buf, off, n) => {
    if (n <= 0) return;
    if (chunks === null) {
      const next = matching(buf, off, n);
      if (next !== null) {
        cand = next;
        pos += n;
        return;
      }
      chunks = pos > 0 ? [cand.bytes.subarray(0, pos)] : [];
      cand = null;
    }
    chunks.push(Buffer.from(buf.subarray(off, off + n))); // a copy: buf is the shared read buffer
    pos += n;
  };
  const decide = (h) => {
    decided = true;
    const at = head.subarray(0, h).indexOf(MARK);
    if (at >= 0) {
      const quote = head.indexOf(34, at + 2);
      event = head.toString("latin1", at + 2, quote);
      start = quote + 2;
      if (!(event in seen)) event = null;
    }
    if (event !== null) {
      cand = null;
      pos = 0;
      chunks = null;
      body(head, start, h - start);
    }
  };
  const feed = (buf, off, n) => {
    if (!decided) {
      const h = Math.min(n, HEAD - size);
      buf.copy(head, size, off, off + h);
      size += h;
      if (size < HEAD) return;
      decide(HEAD);
      off += h;
      n -= h;
    }
    if (event !== null) body(buf, off, n);
    size += n;
  };
  const messageDone = () => {
    if (!decided) decide(size);
    counts.frames += 1;
    counts.bytes += size;
    if (event === null) {
      let name = "other";
      if (size <= HEAD) {
        const [, , , e] = JSON.parse(head.toString("utf8", 0, size));
        if (e in counts) name = e;
      }
      counts[name] += 1;
    } else {
      if (event === "presence_state") counts.state_bytes += size;
      else if (event === "presence_diff") counts.diff_bytes += size;
      if (chunks === null && cand !== null && cand.bytes.length !== pos) {
        // It matched a longer payload so far: one of its own length with the same bytes, if seen.
        const same = cand;
        cand = seen[event].find((e) => e.bytes.length === pos && e.bytes.compare(same.bytes, 0, pos, 0, pos) === 0) ?? null;
        if (cand === null) chunks = [same.bytes.subarray(0, pos)];
      }
      received(event, chunks === null && cand !== null ? cand.found : resolve(event, Buffer.concat(chunks ?? [])));
    }
    size = 0;
    decided = false;
    event = null;
    cand = chunks = null;
  };

  const onread = (nread, buf) => {
    let off = 0;
    if (onOpen !== null) {
      http += buf.toString("latin1", 0, nread);
      const end = http.indexOf("\r\n\r\n");
      if (end < 0) return;
      if (!http.startsWith("HTTP/1.1 101")) throw new Error(`handshake refused: ${http.split("\r\n")[0]}`);
      off = end + 4 - (http.length - nread); // latin1: a character is a byte
      http = "";
      onOpen();
      onOpen = null;
    }
    while (off < nread) {
      if (hdrLen < 2 || hdrLen < headerSize()) {
        hdr[hdrLen++] = buf[off++];
        if (hdrLen < 2 || hdrLen < headerSize()) continue;
        const len7 = hdr[1] & 0x7f;
        length = len7 === 126 ? hdr.readUInt16BE(2) : len7 === 127 ? Number(hdr.readBigUInt64BE(2)) : len7;
        fin = (hdr[0] & 0x80) !== 0;
        control = (hdr[0] & 0x08) !== 0;
        got = 0;
      } else {
        const n = Math.min(nread - off, length - got);
        if (!control) feed(buf, off, n);
        got += n;
        off += n;
      }
      if (hdrLen >= 2 && hdrLen === headerSize() && got === length) {
        hdrLen = 0;
        if (control) {
          if ((hdr[0] & 0x0f) === 8) s.sock.end(); // close (the server sends no pings)
        } else if (fin) {
          messageDone();
        }
      }
    }
  };

  s.open = () => new Promise((ok, fail) => {
    onOpen = ok;
    const sock = s.sock = net.connect({
      host: target.hostname, port: Number(target.port), localAddress: source,
      onread: { buffer: READ, callback: (nread, buf) => { onread(nread, buf); } },
    });
    sock.setNoDelay(true);
    sock.on("error", fail);
    sock.on("connect", () => {
      sock.write(
        `GET ${target.pathname}?vsn=2.0.0&token=${token} HTTP/1.1\r\nHost: ${target.host}\r\n` +
        `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\n\r\n`,
      );
    });
  });
  // A masked text frame (the mask is zeros: the payload goes as is; the server unmasks anyway).
  s.send = (text) => {
    const data = Buffer.from(text);
    const header = data.length < 126 ? Buffer.from([0x81, 0x80 | data.length, 0, 0, 0, 0])
      : Buffer.from([0x81, 0x80 | 126, data.length >> 8, data.length & 0xff, 0, 0, 0, 0]);
    s.sock.write(Buffer.concat([header, data]));
  };
  return s;
}

// Every socket reads into this one buffer: a read is consumed before the next one starts.
const READ = Buffer.alloc(256 * 1024);

const sessions = tokens.map((token, i) => session(token, sources[i % sources.length]));
for (let i = 0; i < N && i < sessions.length; i += 100) await Promise.all(sessions.slice(i, i + 100).map((s) => s.open()));

// Every socket is open: bench_presence.py answers "go" once every generator process is ready (and
// reads the server's CPU counter then).
process.stdout.write("ready\n");
await new Promise((ok) => process.stdin.once("data", ok));
process.stdin.pause();
t0 = performance.now();
const cpu0 = process.cpuUsage();
sessions.forEach((s, i) => s.send(JSON.stringify([String(i + 1), String(i + 1), topic, "phx_join", {}])));
const timedOut = await Promise.race([
  allDone.then(() => false),
  new Promise((ok) => setTimeout(() => ok(true), Number(timeoutMs))),
]);
const elapsed = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
// Frames still in flight after completion (e.g. a last batched diff) are counted for a moment more.
await new Promise((ok) => setTimeout(ok, 300));
process.stdout.write(JSON.stringify({
  sessions: tokens.length, complete, timed_out: timedOut,
  all_complete_ms: timedOut ? null : Math.round(elapsed), first_complete_ms: firstDoneAt && Math.round(firstDoneAt - t0),
  generator_cpu_ms: Math.round((cpu.user + cpu.system) / 1000),
  ...counts,
}) + "\n");
for (const s of sessions) s.sock.destroy();
process.exit(0);
