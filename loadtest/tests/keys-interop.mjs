// The web client's KeyManager (sfu/web/e2ee/keys.js on Node's WebCrypto) as
// participant "browser", talking line by line to tests/keys_interop.rs:
// stdout gets every relay it sends ({to, payload}); stdin gives relays to it
// ({from, payload}) until {"done": true}; then one line with what its worker
// was told ({worker: [...]}, keys in hex).
import { createInterface } from "node:readline";
import { webModule } from "../../tests/browser/web-modules.mjs";

const { KeyManager } = await webModule("e2ee/keys.js");
const { toHex } = await webModule("e2ee/bytes.js");

const worker = { messages: [], postMessage(m) { this.messages.push(m); } };
const km = new KeyManager({ send: (to, payload) => console.log(JSON.stringify({ to, payload })), worker });
await km.start("browser");

const timer = setTimeout(() => { console.error("no 'done' within 30 s"); process.exit(1); }, 30000);
for await (const line of createInterface({ input: process.stdin })) {
  const m = JSON.parse(line);
  if (m.done) break;
  await km.handle(m.from, m.payload);
}
clearTimeout(timer);
const worker_log = worker.messages.map((m) => ({ ...m, key: m.key ? toHex(m.key) : undefined }));
console.log(JSON.stringify({ worker: worker_log }));
process.exit(0);
