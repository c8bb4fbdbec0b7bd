// Load generator for benchmarks/run.py: Node + the "ws" package, speaking Phoenix V2 frames.
//
//   node loadgen.mjs '{"mode": "fanout", "url": "ws://...", ...}'
//
// Prints one JSON line with the results (and, in "idle" mode, a {"ready": n} line first, then
// waits for a line on stdin before closing). Reports its own CPU use so that run.py can say when
// the generator, not the server, was the bottleneck.
import { createInterface } from "node:readline";

// The "ws" package the test suite already installs (npm ci --prefix tests/js).
const { default: WebSocket } = await import(new URL("../tests/js/node_modules/ws/wrapper.mjs", import.meta.url));

const opts = JSON.parse(process.argv[2]);
const now = () => performance.now();
const cpuStart = process.cpuUsage();
const wallStart = now();

function connect(topic, onMessage, url = opts.url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on("error", reject);
    ws.on("open", () => ws.send(JSON.stringify(["1", "1", topic, "phx_join", {}])));
    let joined = false;
    ws.on("message", (data) => {
      if (!joined) {
        joined = true;
        resolve(ws);
        return;
      }
      onMessage(data);
    });
  });
}

// opts.urls (several nodes of a cluster): socket i connects to urls[i % urls.length].
const urls = opts.urls || [opts.url];

async function connectMany(n, topicOf, onMessageOf, concurrency = 100) {
  const sockets = new Array(n);
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      sockets[i] = await connect(topicOf(i), onMessageOf(i), urls[i % urls.length]);
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return sockets;
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function cpuShare(since, wallSince) {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1000 / (now() - wallSince);
}

const T = /"t":\s*([0-9.]+)/;
const K = /"k":\s*(\d+)/;

async function fanout() {
  const { subs, messages, window } = opts;
  const remaining = new Int32Array(messages).fill(subs);
  const latencies = [];
  let delivered = 0, completed = 0, sent = 0, release = null;
  const onMessageOf = (i) => (data) => {
    const text = data.toString();
    const k = K.exec(text);
    if (!k) return;
    delivered++;
    if (i % 10 === 0) latencies.push(now() - Number(T.exec(text)[1]));
    if (--remaining[Number(k[1])] === 0) {
      completed++;
      if (release) release();
    }
  };
  await connectMany(subs, () => "bench:fan", onMessageOf);
  const publisher = await connect("bench:fan", () => {});
  const cpu0 = process.cpuUsage(), t0 = now();
  while (sent < messages) {
    while (sent < messages && sent - completed < window) {
      publisher.send(JSON.stringify(["1", String(sent + 2), "bench:fan", "msg", { k: sent, t: now() }]));
      sent++;
    }
    await new Promise((r) => (release = r));
    release = null;
  }
  while (completed < messages) await new Promise((r) => (release = r));
  const elapsed = (now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return { deliveries: delivered, per_s: delivered / elapsed, p50_ms: percentile(latencies, 50), p99_ms: percentile(latencies, 99), gen_cpu: cpuShare(cpu0, t0) };
}

// Issue 15's latency at low load: rooms of two, every member sending `rate` messages a second.
// The sends follow one fixed schedule, socket i at t0 + (i / n + k) / rate seconds, so the n * rate
// messages a second are spread evenly (one every 0.5 ms at 1,000 sockets x 2/s). A setInterval per
// socket, as before, drifted into step: Node restarts an interval from the moment its batch of
// timers ran, so timers that once ran together stay together, and 70-90% of the sends went out in
// bursts of 20 to 78 within one millisecond (the latency measured those bursts, not the servers).
// The first `warmup` seconds are sent and delivered but not measured (both processes' first
// messages: cold caches, first allocations). {"mark": ...} lines say when the measured window
// starts and when its last delivery arrived, for run.py to read the server's CPU for the window
// alone (not the connects).
async function chat() {
  const { rooms, rate, seconds, warmup = 2 } = opts;
  const latencies = [];
  let delivered = 0, sent = 0, measureFrom = Infinity;
  const onMessageOf = () => (data) => {
    const t = T.exec(data.toString());
    if (!t) return;
    const sentAt = Number(t[1]);
    if (sentAt < measureFrom) return; // a warm-up message
    delivered++;
    latencies.push(now() - sentAt);
  };
  const sockets = await connectMany(rooms * 2, (i) => `bench:room${i >> 1}`, onMessageOf);
  const n = sockets.length, gap = 1000 / rate / n, total = Math.round((warmup + seconds) * rate) * n;
  const topics = sockets.map((_, i) => `bench:room${i >> 1}`), refs = new Array(n).fill(2);
  const start = now() + 10;
  measureFrom = start + warmup * 1000;
  let s = 0, cpu0 = null, t0 = null;
  await new Promise((done) => {
    const pump = () => {
      while (s < total && start + s * gap <= now()) {
        const i = s % n, at = now();
        if (cpu0 === null && at >= measureFrom) {
          process.stdout.write(JSON.stringify({ mark: "measure" }) + "\n");
          cpu0 = process.cpuUsage();
          t0 = at;
        }
        sockets[i].send(JSON.stringify(["1", String(refs[i]++), topics[i], "msg", { t: at }]));
        if (at >= measureFrom) sent++;
        s++;
      }
      if (s < total) setTimeout(pump, start + s * gap - now());
      else done();
    };
    pump();
  });
  const deadline = now() + 5000;
  while (delivered < sent * 2 && now() < deadline) await new Promise((r) => setTimeout(r, 20));
  process.stdout.write(JSON.stringify({ mark: "end" }) + "\n");
  const cpu = cpuShare(cpu0, t0);
  latencies.sort((a, b) => a - b);
  return { sent, delivered, expected: sent * 2, p50_ms: percentile(latencies, 50), p90_ms: percentile(latencies, 90),
           p99_ms: percentile(latencies, 99), max_ms: latencies[latencies.length - 1] ?? null, gen_cpu: cpu };
}

async function connectRate() {
  const { n, concurrency } = opts;
  const cpu0 = process.cpuUsage(), t0 = now();
  const sockets = await connectMany(n, (i) => `bench:c${i % 100}`, () => () => {}, concurrency);
  const elapsed = (now() - t0) / 1000;
  const cpu = cpuShare(cpu0, t0);
  if (opts.hold) {
    // Every socket joined: say so, and close only when told (the caller reads the server's CPU in between).
    process.stdout.write(JSON.stringify({ joined: n }) + "\n");
    const rl = createInterface({ input: process.stdin });
    for await (const _ of rl) break;
  }
  for (const ws of sockets) ws.terminate();
  return { per_s: n / elapsed, gen_cpu: cpu };
}

async function idle() {
  const sockets = await connectMany(opts.n, (i) => `bench:idle${i % 100}`, () => () => {}, 200);
  process.stdout.write(JSON.stringify({ ready: sockets.length }) + "\n");
  const rl = createInterface({ input: process.stdin });
  for await (const _ of rl) break;
  for (const ws of sockets) ws.terminate();
  return { n: sockets.length };
}

const modes = { fanout, chat, connect: connectRate, idle };
const result = await modes[opts.mode]();
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(0);
