// One end-to-end encrypted call across three SFU nodes of a cluster (driven
// by sfu/tests/cluster_call.rs). Usage:
//   node cluster-call.mjs --base-a URL --base-b URL --base-c URL [--artifacts DIR]
// Alice joins node A, Bob node B, Carol node C: each decodes both others
// and all show one safety number. Then node B is killed (SIGKILL): Alice and
// Carol see Bob leave (within 10 s) and keep decoding each other. Then Redis
// is killed and restarted: they keep decoding, and Dave, joining node C
// afterwards, decodes both and shares their safety number.
// What only the test can do is asked on stdout as `STEP name` and answered
// with one line on stdin. Prints one JSON line: {"ok": true|false, ...}.
import { mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { allDecoding, args, finish, join, launch, peerStats, state, until } from "./lib.mjs";

const a = args();
const artifacts = a.artifacts || "target/artifacts";
const room = `cluster-${Date.now().toString(36)}`;
const report = { ok: false };
const people = [];
const browser = await launch();
const started = Date.now();
const answers = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the Rust test to do `step`; resolves with its answer. */
async function ask(step) {
  console.log(`STEP ${step}`);
  const { value, done } = await answers.next();
  if (done) throw new Error(`no answer to ${step}`);
  return value;
}

/** Video frames `p` has decoded of each of `others`, by "P<-Q". */
async function frames(p, others) {
  const out = {};
  for (const q of others) out[`${p.name}<-${q.name}`] = (await peerStats(p, q.name))?.video?.framesDecoded ?? 0;
  return out;
}

/** Waits until every page of `ps` decoded >= 30 more frames of every other than in `before`. */
async function keepDecoding(ps, before, what) {
  return until(20000, what, async () => {
    const out = {};
    for (const p of ps) {
      const now = await frames(p, ps.filter((q) => q !== p));
      for (const [pair, n] of Object.entries(now)) {
        if (!(n >= before[pair] + 30)) return false;
        out[pair] = n - before[pair];
      }
    }
    return out;
  });
}

async function allFrames(ps) {
  const out = {};
  for (const p of ps) Object.assign(out, await frames(p, ps.filter((q) => q !== p)));
  return out;
}

/** The pages' states once they all show one non-empty safety number. */
async function sameSafetyNumber(ps) {
  return until(15000, "encrypted badge and equal safety numbers", async () => {
    const s = await Promise.all(ps.map(state));
    const numbers = new Set(s.map((x) => x.safetyNumber));
    return s.every((x) => x.e2ee === "on" && x.transform) && numbers.size === 1 && !numbers.has("") ? s : false;
  });
}

async function run() {
  for (const [name, base] of [["Alice", a["base-a"]], ["Bob", a["base-b"]], ["Carol", a["base-c"]]]) {
    people.push(await join(browser, base, room, name));
  }
  const [alice, bob, carol] = people;
  report.decoding = await allDecoding(people, 30, 60000);
  report.call_ready_ms = Date.now() - started;
  report.safety_number = (await sameSafetyNumber(people))[0].safetyNumber;
  mkdirSync(artifacts, { recursive: true });
  report.screenshot = `${artifacts}/cluster-call.png`;
  await alice.page.screenshot({ path: report.screenshot });

  // Node B dies: Bob leaves on A and C, who keep their call.
  const pair = [alice, carol];
  let before = await allFrames(pair);
  await ask("kill-node-b");
  const killed = Date.now();
  const left = {};
  await until(15000, "Alice and Carol see Bob leave", async () => {
    for (const p of pair) {
      if (left[p.name] === undefined && !(await state(p)).people.some((x) => x.name === "Bob")) left[p.name] = Date.now() - killed;
    }
    return Object.keys(left).length === 2;
  });
  // Bob's page would retry its dead node forever.
  await bob.context.close();
  people.splice(people.indexOf(bob), 1);
  report.node_b_killed = { left_after_ms: left, frames_since: await keepDecoding(pair, before, "A and C keep decoding after node B died") };

  // Redis restarts (empty): the call goes on.
  before = await allFrames(pair);
  await ask("restart-redis");
  report.redis_restarted = { frames_since: await keepDecoding(pair, before, "A and C keep decoding after the Redis restart") };

  // A new participant on node C afterwards sees and decodes everyone.
  const dave = await join(browser, a["base-c"], room, "Dave");
  people.push(dave);
  report.dave = { decoding: await allDecoding(people, 30, 45000) };
  await sameSafetyNumber(people);
  report.dave.safety_numbers_agree = true;
  const errors = (await Promise.all(people.map(state))).flatMap((x) => x.serverErrors);
  if (errors.length) throw new Error(`the SFU sent errors: ${JSON.stringify(errors)}`);
}

try {
  await run();
  report.ok = true;
} catch (e) {
  report.error = e.message;
}
report.wall_ms = Date.now() - started;
await browser.close().catch(() => {});
finish(report, people);
