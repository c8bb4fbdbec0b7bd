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

async function chat() {
  const { rooms, rate, seconds } = opts;
  const latencies = [];
  let delivered = 0, sent = 0;
  const onMessageOf = () => (data) => {
    const text = data.toString();
    const t = T.exec(text);
    if (!t) return;
    delivered++;
    latencies.push(now() - Number(t[1]));
  };
  const sockets = await connectMany(rooms * 2, (i) => `bench:room${i >> 1}`, onMessageOf);
  const cpu0 = process.cpuUsage(), t0 = now();
  const period = 1000 / rate;
  const timers = sockets.map((ws, i) => {
    const topic = `bench:room${i >> 1}`;
    let ref = 2;
    const tick = () => { ws.send(JSON.stringify(["1", String(ref++), topic, "msg", { t: now() }])); sent++; };
    return new Promise((done) => {
      setTimeout(() => {
        const timer = setInterval(tick, period);
        setTimeout(() => { clearInterval(timer); done(); }, seconds * 1000);
      }, (i / sockets.length) * period);
    });
  });
  await Promise.all(timers);
  const deadline = now() + 5000;
  while (delivered < sent * 2 && now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const cpu = cpuShare(cpu0, t0);
  latencies.sort((a, b) => a - b);
  return { sent, delivered, expected: sent * 2, p50_ms: percentile(latencies, 50), p99_ms: percentile(latencies, 99), gen_cpu: cpu };
}

async function connectRate() {
  const { n, concurrency } = opts;
  const cpu0 = process.cpuUsage(), t0 = now();
  const sockets = await connectMany(n, (i) => `bench:c${i % 100}`, () => () => {}, concurrency);
  const elapsed = (now() - t0) / 1000;
  const cpu = cpuShare(cpu0, t0);
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
