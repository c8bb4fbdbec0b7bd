// Recovery load for benchmarks/bench_history.py: N clients join one topic at once with
// {"since": {"offset", "epoch"}} and each waits for EXPECT replayed broadcasts.
//
//   node recovery_load.mjs '{"url": "ws://...", "topic": "bench:1", "n": 1000, "since": {...}, "expect": 100}'
//
// Prints one JSON line: wall ms from the first join sent to the last client complete, how many
// clients recovered, and the generator's own CPU share.
const { default: WebSocket } = await import(new URL("../tests/js/node_modules/ws/wrapper.mjs", import.meta.url));

const opts = JSON.parse(process.argv[2]);
const sockets = await Promise.all(Array.from({ length: opts.n }, () => new Promise((resolve, reject) => {
  const ws = new WebSocket(opts.url, { perMessageDeflate: false });
  ws.on("error", reject);
  ws.on("open", () => resolve(ws));
})));
// Connected: say so, and wait for "go" so that the server's CPU is read after the connects.
console.log(JSON.stringify({ ready: sockets.length }));
for await (const line of (await import("node:readline")).createInterface({ input: process.stdin })) if (line === "go") break;
const cpuStart = process.cpuUsage();
const started = performance.now();
let recovered = 0, done = 0;
await new Promise((finish) => {
  sockets.forEach((ws, i) => {
    let got = 0;
    ws.on("message", (data) => {
      const [, ref, , event, payload] = JSON.parse(data);
      if (event === "phx_reply" && ref === "1") {
        if (payload.response.recovered === true) recovered += 1;
      } else if (event === "msg") {
        got += 1;
        if (got === opts.expect && ++done === opts.n) finish();
      }
    });
    ws.send(JSON.stringify(["1", "1", opts.topic, "phx_join", { since: opts.since }]));
  });
});
const wall = performance.now() - started;
const cpu = process.cpuUsage(cpuStart);
console.log(JSON.stringify({ wall_ms: wall, recovered, gen_cpu: (cpu.user + cpu.system) / 1000 / wall }));
for (const ws of sockets) ws.terminate();
process.exit(0);
