// Runs one phoenix.js scenario for the pytest suite.
//
// The scenario is the body of an async function, read from stdin, called with:
//   Socket, Presence  - the official phoenix.js client (npm "phoenix", pinned by package-lock.json);
//                       its LongPoll transport is the global LongPoll
//   RealtimeClient     - the global: Supabase's official client (npm "@supabase/realtime-js", pinned too)
//   createClient       - the global: supabase-js's (npm "@supabase/supabase-js"), whose .channel() is realtime-js
//                       (both loaded only for a scenario that names them: supabase-js warns on Node 20)
//   WebSocket         - the "ws" package, handed to phoenix.js as its transport (Node 20 has no global one)
//   emit(obj)         - print one JSON line; pytest reads them back in order
//   env               - process.env (URL, TOKEN, ... set by the test)
//   until(fn, ms)     - a promise resolved when fn(resolve) calls resolve, or rejected after ms
// The process exits 0 when the scenario returns, 2 when it throws, 3 on the overall time limit.
import { Socket, Presence, LongPoll } from "phoenix";
import WebSocket from "ws";

globalThis.LongPoll = LongPoll;

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const until = (fn, ms = 5000) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`until: nothing after ${ms} ms: ${fn}`)), ms);
    fn((value) => { clearTimeout(timer); resolve(value); });
  });

let source = "";
for await (const chunk of process.stdin) source += chunk;
if (source.includes("RealtimeClient")) globalThis.RealtimeClient = (await import("@supabase/realtime-js")).RealtimeClient;
if (source.includes("createClient")) globalThis.createClient = (await import("@supabase/supabase-js")).createClient;
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
const scenario = new AsyncFunction("Socket", "Presence", "WebSocket", "emit", "env", "until", source);
const limit = setTimeout(() => { emit({ harness: "timeout" }); process.exit(3); }, Number(process.env.HARNESS_TIMEOUT_MS || 20000));
try {
  await scenario(Socket, Presence, WebSocket, emit, process.env, until);
} catch (error) {
  emit({ harness: "error", message: String((error && error.stack) || error) });
  process.exit(2);
}
clearTimeout(limit);
process.exit(0);
