// One Node.js Redis client, with its default settings, doing what a user does first against
// the proxy. Usage: node node_client.js PORT PREFIX LIBRARY [3]
// LIBRARY is an npm package of package.json (node-redis: redis, redis6; ioredis: ioredis,
// ioredis6, iovalkey); "3" asks node-redis for RESP3. Prints the script's results as JSON
// (see e2e/test_clients.py), waits for a line on stdin (the proxy restarts meanwhile), reads
// once more and prints that too.
"use strict";

const readline = require("readline");

const [port, prefix, library, protocol] = process.argv.slice(2);
const key = (name) => `${prefix}:${name}`;

function nodeRedis() {
  const { createClient } = require(library);
  const options = { socket: { host: "127.0.0.1", port: Number(port) } };
  if (protocol === "3") options.RESP = 3;
  const client = createClient(options);
  client.on("error", () => {}); // reconnections report here; each command reports its own
  return {
    connect: () => client.connect(),
    get: (name) => client.get(name),
    mget: (names) => client.mGet(names),
    pipeline: async (names) => {
      const batch = client.multi();
      for (const name of names) batch.get(name);
      return batch.execAsPipeline();
    },
    ping: () => client.ping(),
    set: (name, value) => client.set(name, value),
    close: () => client.close(),
  };
}

function ioredis() {
  const Redis = require(library);
  const client = new Redis(Number(port), "127.0.0.1", { lazyConnect: true });
  client.on("error", () => {});
  return {
    connect: () => client.connect(),
    get: (name) => client.get(name),
    mget: (names) => client.mget(names),
    pipeline: async (names) => {
      const results = await client.pipeline(names.map((name) => ["get", name])).exec();
      return results.map(([error, value]) => (error ? `error: ${error.message}` : value));
    },
    ping: () => client.ping(),
    set: (name, value) => client.set(name, value),
    close: () => client.quit(),
  };
}

async function errorOf(promise) {
  try {
    return `no error: ${JSON.stringify(await promise)}`;
  } catch (error) {
    return error.message;
  }
}

async function main() {
  const client = library.startsWith("redis") ? nodeRedis() : ioredis();
  await client.connect();
  const names = Array.from({ length: 100 }, (_, index) => key(`p${index}`));
  const results = {
    hit: await client.get(key("hit")),
    miss: await client.get(key("absent")),
    mget: await client.mget([key("hit"), key("absent"), key("p1")]),
    pipeline: await client.pipeline(names),
    ping: await client.ping(),
    write_error: await errorOf(client.set(key("written"), "x")),
  };
  console.log(JSON.stringify(results));
  const lines = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => lines.once("line", resolve));
  lines.close();
  console.log(JSON.stringify({ after_restart: await client.get(key("hit")) }));
  await client.close();
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error);
  process.exit(1);
});
