// A complete impala env client in JavaScript, written from the proto alone (docs/bring-your-own-env.md).
//
// It serves the one-step memory task: each step shows a random bit (observation float32 [1], +1 or -1);
// action 1 or 0 earns +1 when it equals the bit shown ONE STEP EARLIER (0 at an episode's first step).
// Episodes last LENGTH steps and end truncated. E envs share one stream (vectorized).
//
//   node memory_client.js --address 127.0.0.1:50051 --token TOKEN [--envs 8] [--steps 20000] [--reconnect]
//
// Prints one JSON line at the end: env steps, episodes, mean return per step of the last 100 episodes.
// With --reconnect it runs one env per stream and closes the stream at each episode end (reset by
// reconnect: closing is the truncation; the last Step carries the final reward without flags).
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const LENGTH = 20;
const PROTO_ROOT = process.env.IMPALA_PROTO_ROOT || path.join(__dirname, "..", "..", "proto");

function parseArgs(argv) {
  const args = { address: "127.0.0.1:50051", token: "", envs: 8, steps: 20000, reconnect: false, tlsCa: "" };
  for (let i = 2; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, "");
    if (key === "reconnect") args.reconnect = true;
    else if (key === "tls-ca") args.tlsCa = argv[++i];
    else args[key] = ["envs", "steps"].includes(key) ? Number(argv[++i]) : argv[++i];
  }
  if (args.reconnect) args.envs = 1;
  return args;
}

function loadService() {
  const definition = protoLoader.loadSync("impala/actorpool/v1/actorpool.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names exactly as in the .proto
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true, // a oneof's set field name is in msg.kind
  });
  return grpc.loadPackageDefinition(definition).impala.actorpool.v1.ActorPool;
}

// Tensor: raw little-endian bytes in C order.
function float32Tensor(values, shape) {
  const data = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => data.writeFloatLE(v, i * 4));
  return { dtype: "DTYPE_FLOAT32", shape, data };
}

function int64Values(tensor) {
  if (tensor.dtype !== "DTYPE_INT64") throw new Error(`actions dtype ${tensor.dtype}, expected DTYPE_INT64`);
  const out = [];
  for (let i = 0; i < tensor.data.length; i += 8) out.push(Number(tensor.data.readBigInt64LE(i)));
  return out;
}

class MemoryEnv {
  reset() {
    this.previous = 0;
    this.t = 0;
    this.bit = Math.random() < 0.5 ? 0 : 1;
    return 2 * this.bit - 1;
  }
  step(action) {
    const reward = action === this.previous ? 1 : 0;
    this.previous = this.bit;
    this.bit = Math.random() < 0.5 ? 0 : 1;
    this.t += 1;
    return { obs: 2 * this.bit - 1, reward, truncated: this.t >= LENGTH };
  }
}

// One bidirectional stream with strict turn-taking: write one message, read one reply.
function openStream(client, token) {
  const metadata = new grpc.Metadata();
  if (token) metadata.add("authorization", `Bearer ${token}`);
  const call = client.Connect(metadata);
  const replies = [];
  const waiting = [];
  let failure = null;
  const settle = () => {
    while (waiting.length && (replies.length || failure)) {
      const { resolve, reject } = waiting.shift();
      if (replies.length) resolve(replies.shift());
      else reject(failure);
    }
  };
  call.on("data", (msg) => { replies.push(msg); settle(); });
  call.on("error", (err) => { failure = err; settle(); });
  call.on("end", () => { failure = failure || new Error("stream ended"); settle(); });
  const read = () => new Promise((resolve, reject) => { waiting.push({ resolve, reject }); settle(); });
  const exchange = async (message) => { call.write(message); return read(); };
  const close = () => new Promise((resolve) => { call.on("status", resolve); call.end(); });
  return { exchange, close };
}

async function run(args) {
  const ActorPool = loadService();
  const credentials = args.tlsCa
    ? grpc.credentials.createSsl(require("fs").readFileSync(args.tlsCa))
    : grpc.credentials.createInsecure();
  const client = new ActorPool(args.address, credentials);
  const E = args.envs;
  const envs = Array.from({ length: E }, () => new MemoryEnv());
  const returns = new Array(E).fill(0);
  const finished = [];
  let steps = 0;
  let obs = envs.map((env) => env.reset());
  while (steps < args.steps) {
    const stream = openStream(client, args.token);
    const hello = {
      client_name: "node-memory",
      num_envs: E,
      observation_spec: { dtype: "DTYPE_FLOAT32", shape: [1] },
      num_actions: 2,
      protocol_version: 1,
      action_spec: { discrete: 2 },
    };
    const welcome = await stream.exchange({ hello });
    if (welcome.kind !== "welcome") throw new Error(`expected Welcome, got ${welcome.kind}`);
    // The first Step: reset observations, reward 0, no flags.
    let step = { observation: float32Tensor(obs, [E, 1]), reward: new Array(E).fill(0),
      terminated: new Array(E).fill(false), truncated: new Array(E).fill(false) };
    let closing = false;
    for (;;) {
      const reply = await stream.exchange({ step });
      if (reply.kind !== "actions") throw new Error(`expected Actions, got ${reply.kind}`);
      if (closing) break;
      const actions = int64Values(reply.actions.actions);
      const results = envs.map((env, i) => env.step(actions[i]));
      steps += E;
      const truncated = results.map((r) => r.truncated);
      const finals = [];
      results.forEach((r, i) => {
        returns[i] += r.reward;
        if (r.truncated) {
          finished.push(returns[i] / LENGTH);
          returns[i] = 0;
          finals.push(r.obs);
          obs[i] = envs[i].reset(); // same-step auto-reset: observation[i] starts the next episode
        } else {
          obs[i] = r.obs;
        }
      });
      const reward = results.map((r) => r.reward);
      if (args.reconnect && truncated[0]) {
        // Reset by reconnect: the last Step has the last observation and no flags; closing truncates.
        step = { observation: float32Tensor(finals, [1, 1]), reward, terminated: [false], truncated: [false] };
        closing = true;
        continue;
      }
      step = { observation: float32Tensor(obs, [E, 1]), reward, terminated: new Array(E).fill(false), truncated };
      if (finals.length) step.final_observation = float32Tensor(finals, [finals.length, 1]);
      if (steps >= args.steps) closing = true;
    }
    await stream.close();
  }
  client.close();
  const recent = finished.slice(-100);
  const mean = recent.length ? recent.reduce((a, b) => a + b, 0) / recent.length : null;
  console.log(JSON.stringify({ env_steps: steps, episodes: finished.length, return_per_step_last_100: mean }));
}

run(parseArgs(process.argv)).catch((err) => {
  console.error(`node client failed: ${err.message}`);
  process.exit(1);
});
