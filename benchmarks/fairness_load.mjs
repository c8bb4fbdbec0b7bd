// Load for benchmarks/bench_fairness.py, Node + the "ws" package, Phoenix V2 frames. Two roles, run
// as two processes so that the flood's replies never delay the probe's own event loop:
//
//   node fairness_load.mjs '{"role": "flood", "url": "ws://...?token=...&vsn=2.0.0", "pushes": 50000}'
//   node fairness_load.mjs '{"role": "probe", "url": "..."}'   # until a line arrives on stdin
//
// flood: joins, waits for a line on stdin, writes every push at once (as fast as the client can send), waits for every reply.
// probe: joins, sends a heartbeat every 5 ms and times each reply.
// Each prints one JSON line: {"ready": true} once joined, then its results.
const { default: WebSocket } = await import(new URL("../tests/js/node_modules/ws/wrapper.mjs", import.meta.url));

const opts = JSON.parse(process.argv[2]);
const now = () => performance.now();
// Resolved once the line is written: process.exit() with a pipe's write pending cuts the line at
// 64 KiB (a probe's round trips over a long flood on a loaded machine are more than that).
const say = (obj) => new Promise((resolve) => process.stdout.write(JSON.stringify(obj) + "\n", resolve));

const ws = await new Promise((resolve, reject) => {
  const socket = new WebSocket(opts.url, { perMessageDeflate: false });
  socket.on("error", reject);
  socket.on("open", () => socket.send(JSON.stringify(["1", "1", `bench:${opts.role}`, "phx_join", {}])));
  socket.once("message", () => resolve(socket));
});

if (opts.role === "flood") {
  let replies = 0;
  const done = new Promise((resolve) => ws.on("message", (data) => {
    if (JSON.parse(data)[3] === "phx_reply" && ++replies === opts.pushes) resolve(now());
  }));
  for await (const _ of process.stdin) break;  // "go": the probe is ready
  const start = now();
  for (let i = 0; i < opts.pushes; i++) ws.send(JSON.stringify(["1", String(i + 2), "bench:flood", "msg", { n: i }]));
  const end = await done;
  await say({ flood_rate: opts.pushes / ((end - start) / 1000) });
} else {
  const rtts = [], pending = new Map();
  let ref = 1;
  ws.on("message", (data) => {
    const frame = JSON.parse(data);
    const sent = pending.get(frame[1]);
    if (sent !== undefined) { rtts.push(now() - sent); pending.delete(frame[1]); }
  });
  const beat = setInterval(() => {
    const r = String(++ref);
    pending.set(r, now());
    ws.send(JSON.stringify([null, r, "phoenix", "heartbeat", {}]));
  }, 5);
  say({ ready: true });
  for await (const _ of process.stdin) break;
  clearInterval(beat);
  await new Promise((r) => setTimeout(r, 50));
  await say({ rtts, lost: pending.size });
}
process.exit(0);
