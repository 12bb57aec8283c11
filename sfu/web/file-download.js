// A received file's download, in a dedicated worker: stream the ciphertext,
// open each chunk (e2ee/filecrypt.js), write it in place into the
// origin-private file system with a synchronous access handle (no copy of
// the whole file at the end, unlike a writable stream, and off the page's
// thread), resume with a Range request after a dropped connection, and
// compute the digest (the page compares it with the sender's, which arrives
// when the upload is complete: the download may start before). The server's
// response follows a running upload, so a download started early simply
// receives bytes as they are uploaded. Decryption of one group of chunks
// overlaps the write of the previous one and the network reads. Messages
// in: {type: "download", name, url, blob, key, size, chunk} and {type:
// "drop"}; out: {type: "progress", done, wire, resumes} and {type: "done",
// ok, digest?, error?}.
import { TAG_BYTES, chunkCount, cipherLength, digestOf, importFileKey, openChunk, tagOf } from "./e2ee/filecrypt.js";

/** Chunks opened together and written at once (fewer round trips to the crypto thread and to storage). */
const GROUP_CHUNKS = 32;
/** Groups being decrypted while the oldest is written. */
const DEPTH = 2;
/** Retries after network failures. */
const MAX_RETRIES = 8;

class Fatal extends Error {}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let current = null; // AbortController of the running request
let dropNext = false; // a drop that found no running request: cut the next one

async function download({ name, url, blob, key: raw, size, chunk }) {
  const dir = await navigator.storage.getDirectory();
  const handle = await dir.getFileHandle(name, { create: true });
  const access = await handle.createSyncAccessHandle();
  try {
    access.truncate(0);
    const key = await importFileKey(raw);
    const n = chunkCount(size, chunk);
    const stride = chunk + TAG_BYTES;
    const total = cipherLength(size, chunk);
    const chunkLength = (i) => (i < n - 1 ? stride : total - (n - 1) * stride);
    const tags = [];
    const progress = { type: "progress", done: 0, wire: 0, resumes: 0 };
    let index = 0; // chunks handed to decryption (written once `pending` drains)
    const pending = []; // groups being decrypted: {first, plains (a promise)}
    const out = new Uint8Array(GROUP_CHUNKS * chunk);
    // Writes the oldest group being decrypted, in order.
    const writeOldest = async () => {
      const g = pending.shift();
      let plains;
      try {
        plains = await g.plains;
      } catch {
        throw new Fatal("Damaged or altered in transit (a chunk failed to decrypt), discarded");
      }
      // One write per group: each write is a round trip to the storage
      // backend. Through one buffer for all groups: a fresh 2 MiB buffer per
      // group costs page faults (the write is synchronous, so reuse is safe).
      const bytes = plains.reduce((sum, p) => sum + p.length, 0);
      plains.reduce((at, p) => (out.set(p, at), at + p.length), 0);
      access.write(out.subarray(0, bytes), { at: g.first * chunk });
      progress.done += bytes;
      progress.wire += g.wire;
      postMessage(progress);
    };
    for (let attempt = 0; index < n; ) {
      const buf = new Uint8Array(GROUP_CHUNKS * stride);
      let fill = 0; // bytes of buf holding chunks index, index + 1, ...
      let held = 0; // whole chunks in buf
      // Hands the held chunks to decryption (WebCrypto copies its input at
      // the call, so buf is free again at once).
      const flush = async () => {
        const plains = [];
        let wire = 0;
        for (let k = 0, at = 0; k < held; k++) {
          const len = chunkLength(index + k);
          const sealed = buf.subarray(at, at + len);
          plains.push(openChunk(key, blob, index + k, index + k === n - 1, sealed));
          tags.push(tagOf(sealed));
          wire += len;
          at += len;
        }
        const group = { first: index, wire, plains: Promise.all(plains) };
        group.plains.catch(() => {}); // awaited in writeOldest
        pending.push(group);
        index += held;
        held = 0;
        fill = 0;
        while (pending.length > DEPTH) await writeOldest();
      };
      current = new AbortController();
      try {
        const headers = index ? { Range: `bytes=${index * stride}-` } : {};
        if (dropNext) {
          dropNext = false;
          throw new Error("connection dropped");
        }
        const r = await fetch(url, { headers, signal: current.signal });
        if (r.status === 404) throw new Fatal("The file has expired or was deleted");
        // The upload stopped before the end (the server says how far it got).
        if (r.status === 409) throw new Fatal(`The sender stopped sending: ${(await r.text()).trim()}`);
        if (r.status !== (index ? 206 : 200)) throw new Error(`download: HTTP ${r.status}`);
        const reader = r.body.getReader();
        // Bounded by the response: each read consumes bytes of it.
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          let v = value;
          while (v.length) {
            const next = index + held;
            if (next >= n) throw new Fatal("The server sent more than the file's length");
            // Bytes still missing of chunk `next`.
            let start = 0;
            for (let k = 0; k < held; k++) start += chunkLength(index + k);
            const need = start + chunkLength(next) - fill;
            const take = Math.min(need, v.length);
            buf.set(v.subarray(0, take), fill);
            fill += take;
            v = v.subarray(take);
            if (take < need) continue;
            held++;
            if (held === GROUP_CHUNKS || index + held === n) await flush();
          }
        }
        if (index < n) throw new Error("connection ended early");
      } catch (e) {
        if (e instanceof Fatal || ++attempt > MAX_RETRIES) throw e;
        progress.resumes++;
        await sleep(Math.min(5000, 250 * 2 ** attempt));
      } finally {
        current = null;
      }
    }
    // Bounded: each round writes one group.
    while (pending.length) await writeOldest();
    const digest = await digestOf(tags);
    access.flush();
    access.close();
    postMessage({ type: "done", ok: true, digest });
  } catch (e) {
    access.close();
    await dir.removeEntry(name).catch(() => {});
    postMessage({ type: "done", ok: false, error: e.message });
  }
}

onmessage = (e) => {
  if (e.data?.type === "download") download(e.data);
  else if (e.data?.type === "drop") {
    if (current) current.abort(new Error("connection dropped"));
    else dropNext = true;
  }
};
