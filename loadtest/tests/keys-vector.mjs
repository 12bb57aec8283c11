// Makes loadtest/tests/data/keys-vector.json: the web client's own KeyManager
// (sfu/web/e2ee/keys.js on Node's WebCrypto) meets a peer whose P-256 private
// key is printed (as participant "rust"), and sends it its base key in an
// e2ee-keys batch. key_exchange.rs unwraps it.
// Run: node loadtest/tests/keys-vector.mjs > loadtest/tests/data/keys-vector.json
import { webModule } from "../../tests/browser/web-modules.mjs";

const { KeyManager } = await webModule("e2ee/keys.js");
const { toB64, toHex } = await webModule("e2ee/bytes.js");

const subtle = crypto.subtle;
const pair = await subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"]);
const pub = new Uint8Array(await subtle.exportKey("raw", pair.publicKey));
const d = (await subtle.exportKey("jwk", pair.privateKey)).d;
const priv = Buffer.from(d, "base64url");

const sent = [];
const worker = { messages: [], postMessage(m) { this.messages.push(m); } };
const km = new KeyManager({ send: (to, payload) => sent.push({ to, payload }), worker });
await km.start("browser");
await km.handle("rust", { kind: "e2ee-hello", v: 1, pub: toB64(pub) });
// The batch goes out when the window closes.
for (let i = 0; i < 100 && km.batching; i++) await new Promise((r) => setTimeout(r, 10));

const hello = sent.find((m) => m.to === "everyone" && m.payload.kind === "e2ee-hello");
const key = sent.find((m) => Array.isArray(m.to) && m.to[0] === "rust" && m.payload.kind === "e2ee-keys" && m.payload.keys.rust);
const sendKey = worker.messages.find((m) => m.type === "send-key");
if (!hello || !key || !sendKey || sent.length !== 2) {
  console.error("unexpected KeyManager output", JSON.stringify(sent));
  process.exit(1);
}
console.log(JSON.stringify({
  private: toHex(priv),
  public: toB64(pub),
  hello: hello.payload,
  key: key.payload,
  kid: sendKey.kid,
  base_key: toHex(sendKey.key),
}, null, 1));
