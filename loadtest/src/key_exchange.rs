//! The web client's key exchange (`sfu/web/e2ee/keys.js`, docs/web-client.md
//! "Keys: sender keys over the relay"), wire-compatible with it, so simulated
//! participants and browsers can share a room:
//!
//! - each session has an ephemeral ECDH P-256 key pair and says
//!   `{"kind":"e2ee-hello","v":1,"pub":…}` to everyone;
//! - what a session owes the peers it learned (its public key and its
//!   16-byte base key, wrapped per recipient with AES-256-GCM under
//!   HKDF-SHA256(ECDH secret, salt "", info "sfu-web key wrap v1" ‖ sender
//!   public ‖ recipient public), AAD "e2ee-keys {kid} {sender} {recipient}")
//!   goes out in batches, each relayed to the ids it lists: `{"kind":"e2ee-keys","v":1,"pub","kid","keys":{id:{iv,wrapped}}}`,
//!   at most [`MAX_BATCH_BYTES`] of JSON each. A batch from a sender we did not
//!   know doubles as its reply hello; without a key to give, `kid` is absent
//!   and `keys` empty. The caller decides when to [`KeyExchange::flush`]
//!   (keys.js waits 50 ms after the first newcomer);
//! - the recipient unwraps its entry and answers `{"kind":"e2ee-ack","kid"}`.
//! - single-recipient `e2ee-key` and `"reply":true` hellos of older clients
//!   are still understood; they are no longer sent.
//!
//! Sans-IO: payloads go in, payloads to relay come out. Unlike keys.js this
//! side never rotates its own key (simulated participants do not outlive the
//! people they talk to), but it learns every key a peer sends, rotations
//! included.

use std::collections::{HashMap, HashSet};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, ECDH_P256};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use thiserror::Error;

/// HKDF info prefix of the wrap key (keys.js `#wrapKey`).
const WRAP_INFO: &[u8] = b"sfu-web key wrap v1";
/// Length of a raw uncompressed P-256 public key.
const PUBLIC_LEN: usize = 65;
/// Largest KID keys.js accepts (`Number.isSafeInteger`).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// Cap on one batch's payload JSON: a quarter of the relay limit
/// (`signaling.max_relay_bytes`, 131072), as keys.js `MAX_BATCH_BYTES`.
pub const MAX_BATCH_BYTES: usize = 32 * 1024;

/// A failure of the local crypto (never of network input, which is dropped).
#[derive(Debug, Error)]
pub enum KeyExchangeError {
    /// The platform could not make or use a key.
    #[error("key exchange crypto failed: {0}")]
    Crypto(&'static str),
}

/// A sender's base key and its key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseKey {
    /// Key id (SFrame KID).
    pub kid: u64,
    /// The 16-byte base key.
    pub raw: [u8; 16],
}

impl BaseKey {
    /// A random key with a random KID in 1 ..= 2³¹−1, as keys.js `newKid`.
    pub fn generate() -> Self {
        let kid = loop {
            let v = rand::random::<u32>() & 0x7fff_ffff;
            if v != 0 {
                break u64::from(v);
            }
        };
        BaseKey {
            kid,
            raw: rand::random(),
        }
    }
}

/// Who a relay payload goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    /// Every other participant of the room.
    Everyone,
    /// One participant.
    One(String),
    /// The participants listed.
    Some(Vec<String>),
}

/// A payload to relay.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Recipients.
    pub to: To,
    /// The relay payload.
    pub payload: Value,
}

impl Outgoing {
    /// The signaling `relay` message carrying it (as signaling.js sends it).
    pub fn relay_message(&self) -> Value {
        let to = match &self.to {
            To::Everyone => json!("everyone"),
            To::One(id) => json!([id]),
            To::Some(ids) => json!(ids),
        };
        json!({"type": "relay", "to": to, "payload": self.payload})
    }
}

/// A key learned from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The sender's participant id.
    pub from: String,
    /// Its key.
    pub key: BaseKey,
}

struct Peer {
    public: Vec<u8>,
    /// Wraps what we send to them (info: our public, then theirs).
    wrap_out: LessSafeKey,
    /// Unwraps what they send us (info: their public, then ours).
    wrap_in: LessSafeKey,
}

/// One session's side of the key exchange.
pub struct KeyExchange {
    private: PrivateKey,
    public: Vec<u8>,
    current: Option<BaseKey>,
    peers: HashMap<String, Peer>,
    acked: HashSet<(String, u64)>,
    /// Our participant id, to find our entry in a batch.
    me: Option<String>,
    /// Peers we owe our public key and base key, in order learned.
    owed: Vec<String>,
}

impl KeyExchange {
    /// A fresh ephemeral key pair; `current` is the base key to hand out
    /// (None for a participant that only receives).
    pub fn new(current: Option<BaseKey>) -> Result<Self, KeyExchangeError> {
        let private = PrivateKey::generate(&ECDH_P256)
            .map_err(|_| KeyExchangeError::Crypto("generate P-256 key"))?;
        Self::with_private(private, current)
    }

    fn with_private(
        private: PrivateKey,
        current: Option<BaseKey>,
    ) -> Result<Self, KeyExchangeError> {
        let public = private
            .compute_public_key()
            .map_err(|_| KeyExchangeError::Crypto("P-256 public key"))?
            .as_ref()
            .to_vec();
        Ok(KeyExchange {
            private,
            public,
            current,
            peers: HashMap::new(),
            acked: HashSet::new(),
            me: None,
            owed: Vec::new(),
        })
    }

    /// The base key handed out, if any.
    pub fn current(&self) -> Option<BaseKey> {
        self.current
    }

    /// The hello announcing this session to everyone (send after `joined`).
    /// Without a key to give it says `"keyless":true`: other keyless
    /// sessions then owe it nothing (it would never use their pub).
    pub fn hello(&self) -> Outgoing {
        let mut payload = json!({"kind": "e2ee-hello", "v": 1, "pub": B64.encode(&self.public)});
        if self.current.is_none() {
            payload["keyless"] = json!(true);
        }
        Outgoing {
            to: To::Everyone,
            payload,
        }
    }

    /// Our hello for `ids` only: for newcomers whose own hello did not reach
    /// us (it was sent before their SFU node and ours were linked).
    pub fn hello_to(&self, ids: Vec<String>) -> Outgoing {
        Outgoing {
            to: To::Some(ids),
            ..self.hello()
        }
    }

    /// Whether we know `id`'s public key.
    pub fn knows(&self, id: &str) -> bool {
        self.peers.contains_key(id)
    }

    /// Sets our participant id (from `joined`): batches name recipients by it.
    pub fn set_id(&mut self, id: &str) {
        self.me = Some(id.to_string());
    }

    /// How many peers wait for what [`KeyExchange::flush`] sends.
    pub fn owed(&self) -> usize {
        self.owed.len()
    }

    /// How many entries fit one batch for sure (flush early at this many).
    pub fn batch_capacity() -> usize {
        // An entry is ≤ 64 bytes of iv/wrapped/punctuation plus its id
        // (SFU ids are short; 64 bytes leaves room).
        MAX_BATCH_BYTES / 128
    }

    /// The batches giving everyone owed our public key and base key, each
    /// at most [`MAX_BATCH_BYTES`] of payload JSON; empty if nobody is owed.
    pub fn flush(&mut self) -> Vec<Outgoing> {
        let owed = std::mem::take(&mut self.owed);
        if owed.is_empty() {
            return Vec::new();
        }
        let pub_b64 = B64.encode(&self.public);
        let Some(key) = self.current else {
            // Nothing to wrap: one pub-only batch is the reply hello.
            return vec![Outgoing {
                to: To::Some(owed),
                payload: json!({"kind": "e2ee-keys", "v": 1, "pub": pub_b64, "keys": {}}),
            }];
        };
        self.batches(key, &owed)
    }

    /// Batches giving `key` to `ids` (those we know), split by size.
    fn batches(&self, key: BaseKey, ids: &[String]) -> Vec<Outgoing> {
        let pub_b64 = B64.encode(&self.public);
        let empty = json!({"kind": "e2ee-keys", "v": 1, "pub": pub_b64, "kid": key.kid,
                           "keys": {}});
        let base = empty.to_string().len();
        let mut out = Vec::new();
        let mut keys = serde_json::Map::new();
        let mut size = base;
        for id in ids {
            let Some(entry) = self.wrap_entry(id, key) else {
                continue;
            };
            // "id":{...} plus a comma.
            let add = Value::String(id.clone()).to_string().len() + 2 + entry.to_string().len();
            if !keys.is_empty() && size + add > MAX_BATCH_BYTES {
                let mut m = empty.clone();
                let keys = std::mem::take(&mut keys);
                let to = To::Some(keys.keys().cloned().collect());
                m["keys"] = Value::Object(keys);
                out.push(Outgoing { to, payload: m });
                size = base;
            }
            size += add;
            keys.insert(id.clone(), entry);
        }
        if !keys.is_empty() {
            let mut m = empty;
            let to = To::Some(keys.keys().cloned().collect());
            m["keys"] = Value::Object(keys);
            out.push(Outgoing { to, payload: m });
        }
        out
    }

    /// Whether `id` acknowledged our key `kid`.
    pub fn acknowledged(&self, id: &str, kid: u64) -> bool {
        self.acked.contains(&(id.to_string(), kid))
    }

    /// Forgets a participant that left.
    pub fn forget(&mut self, id: &str) {
        self.peers.remove(id);
        self.owed.retain(|who| who != id);
        self.acked.retain(|(who, _)| who != id);
    }

    /// Handles an `e2ee-*` relay payload from `from`, appending what to relay
    /// to `out`; returns the key it carried, if it was one for us. Anything
    /// malformed, tampered with or not for us is ignored, as keys.js does.
    pub fn handle(&mut self, from: &str, p: &Value, out: &mut Vec<Outgoing>) -> Option<Received> {
        match p["kind"].as_str()? {
            "e2ee-hello" => {
                self.on_hello(from, &p["pub"], p["keyless"] == json!(true));
                None
            }
            "e2ee-key" => {
                let kid = p["kid"].as_u64()?;
                self.on_key(from, kid, p, aad(kid), out)
            }
            "e2ee-keys" => {
                // The pub is a reply hello for whoever did not know `from`.
                self.on_hello(from, &p["pub"], false);
                let me = self.me.as_deref()?;
                let entry = p["keys"].get(me)?;
                let kid = p["kid"].as_u64()?;
                let aad = batch_aad(kid, from, me);
                self.on_key(from, kid, entry, aad, out)
            }
            "e2ee-ack" => {
                if let Some(kid) = p["kid"].as_u64() {
                    if self.peers.contains_key(from) {
                        self.acked.insert((from.to_string(), kid));
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// A public key `public` (base64) from `from`; `keyless` if they will
    /// send no media key of their own.
    fn on_hello(&mut self, from: &str, public: &Value, keyless: bool) {
        let Some(public) = public.as_str().and_then(|s| B64.decode(s).ok()) else {
            return;
        };
        if public.len() != PUBLIC_LEN {
            return;
        }
        if self.peers.get(from).is_some_and(|k| k.public == public) {
            return;
        }
        // An unusable point (off the curve) is dropped like any bad input.
        let Ok(peer) = self.derive(&public) else {
            return;
        };
        self.peers.insert(from.to_string(), peer);
        // Keyless to keyless: neither has anything to wrap for the other.
        if self.current.is_none() && keyless {
            return;
        }
        // They may not have our public key yet, and need our base key: both
        // go in the next batch (a reply hello needs no pub back, but the
        // batch goes to everyone anyway). Nothing is sent from here.
        if !self.owed.iter().any(|o| o == from) {
            self.owed.push(from.to_string());
        }
    }

    /// Sender `from`'s key `kid`, wrapped for us in `entry` (`iv`,
    /// `wrapped`) under `aad`.
    fn on_key(
        &mut self,
        from: &str,
        kid: u64,
        entry: &Value,
        aad: Vec<u8>,
        out: &mut Vec<Outgoing>,
    ) -> Option<Received> {
        let peer = self.peers.get(from)?;
        if kid > MAX_SAFE_INTEGER {
            return None;
        }
        let iv: [u8; NONCE_LEN] = B64.decode(entry["iv"].as_str()?).ok()?.try_into().ok()?;
        let mut wrapped = B64.decode(entry["wrapped"].as_str()?).ok()?;
        let raw = peer
            .wrap_in
            .open_in_place(
                Nonce::assume_unique_for_key(iv),
                Aad::from(aad),
                &mut wrapped,
            )
            .ok()?;
        let raw: [u8; 16] = raw.try_into().ok()?;
        out.push(Outgoing {
            to: To::One(from.to_string()),
            payload: json!({"kind": "e2ee-ack", "kid": kid}),
        });
        Some(Received {
            from: from.to_string(),
            key: BaseKey { kid, raw },
        })
    }

    /// The batch entry `{iv, wrapped}` giving `key` to peer `id`.
    fn wrap_entry(&self, id: &str, key: BaseKey) -> Option<Value> {
        let peer = self.peers.get(id)?;
        let me = self.me.as_deref()?;
        let iv: [u8; NONCE_LEN] = rand::random();
        let mut wrapped = key.raw.to_vec();
        peer.wrap_out
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(batch_aad(key.kid, me, id)),
                &mut wrapped,
            )
            .ok()?;
        Some(json!({"iv": B64.encode(iv), "wrapped": B64.encode(&wrapped)}))
    }

    /// Both wrap keys for a peer with public key `theirs`.
    fn derive(&self, theirs: &[u8]) -> Result<Peer, KeyExchangeError> {
        let shared = agreement::agree(
            &self.private,
            UnparsedPublicKey::new(&ECDH_P256, theirs),
            KeyExchangeError::Crypto("ECDH"),
            |secret| Ok(secret.to_vec()),
        )?;
        let wrap_out = wrap_key(&shared, &self.public, theirs)?;
        let wrap_in = wrap_key(&shared, theirs, &self.public)?;
        Ok(Peer {
            public: theirs.to_vec(),
            wrap_out,
            wrap_in,
        })
    }
}

/// HKDF-SHA256(salt "", ikm = ECDH secret, info = label ‖ sender ‖ recipient)
/// → AES-256-GCM key: one key per direction.
fn wrap_key(shared: &[u8], from: &[u8], to: &[u8]) -> Result<LessSafeKey, KeyExchangeError> {
    let info = [WRAP_INFO, from, to];
    let prk = Salt::new(HKDF_SHA256, &[]).extract(shared);
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| KeyExchangeError::Crypto("HKDF"))?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// The AAD of a single `e2ee-key` (older clients): `e2ee-key {kid}` (a JS
/// number in decimal).
fn aad(kid: u64) -> Vec<u8> {
    format!("e2ee-key {kid}").into_bytes()
}

/// The AAD of a batch entry, `e2ee-keys {kid} {sender id} {recipient id}`:
/// batches go to everyone, so an entry must not be replayable by someone
/// else claiming the sender's public key.
fn batch_aad(kid: u64, from: &str, to: &str) -> Vec<u8> {
    format!("e2ee-keys {kid} {from} {to}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// An in-memory relay: ordered delivery, payloads as JSON text.
    fn settle(
        people: &mut [(&str, &mut KeyExchange)],
        first: Vec<(String, Outgoing)>,
    ) -> Vec<(String, Received)> {
        let ids: Vec<String> = people.iter().map(|(id, _)| id.to_string()).collect();
        let mut queue: VecDeque<(String, String, String)> = VecDeque::new();
        let push = |queue: &mut VecDeque<_>, from: &str, o: Outgoing| {
            let text = o.payload.to_string();
            match o.to {
                To::Everyone => {
                    for id in ids.iter().filter(|id| *id != from) {
                        queue.push_back((from.to_string(), id.clone(), text.clone()));
                    }
                }
                To::One(id) => queue.push_back((from.to_string(), id, text)),
                To::Some(list) => {
                    for id in list {
                        queue.push_back((from.to_string(), id, text.clone()));
                    }
                }
            }
        };
        for (from, o) in first {
            push(&mut queue, &from, o);
        }
        let mut got = Vec::new();
        for _ in 0..10_000 {
            if queue.is_empty() {
                // The batching window closes: everyone sends what it owes.
                for (id, kx) in people.iter_mut() {
                    for o in kx.flush() {
                        push(&mut queue, id, o);
                    }
                }
            }
            let Some((from, to, text)) = queue.pop_front() else {
                return got;
            };
            let p: Value = serde_json::from_str(&text).unwrap();
            let (_, kx) = people.iter_mut().find(|(id, _)| *id == to).unwrap();
            let mut out = Vec::new();
            if let Some(r) = kx.handle(&from, &p, &mut out) {
                got.push((to.clone(), r));
            }
            for o in out {
                push(&mut queue, &to, o);
            }
        }
        panic!("relay did not settle");
    }

    #[test]
    fn two_sessions_exchange_and_acknowledge_keys() {
        let (ka, kb) = (BaseKey::generate(), BaseKey::generate());
        assert!(ka.kid >= 1 && ka.kid < 1 << 31);
        let mut a = KeyExchange::new(Some(ka)).unwrap();
        let mut b = KeyExchange::new(Some(kb)).unwrap();
        let mut c = KeyExchange::new(None).unwrap();
        let d = KeyExchange::new(None).unwrap();
        a.set_id("A");
        b.set_id("B");
        c.set_id("C");
        // A joins alone (its hello reaches nobody), then B, then C.
        let ha = a_hello(&a);
        let got = settle(&mut [("A", &mut a)], vec![("A".into(), ha)]);
        assert!(got.is_empty());
        let hb = b.hello();
        let got = settle(&mut [("A", &mut a), ("B", &mut b)], vec![("B".into(), hb)]);
        assert_eq!(got.len(), 2);
        assert!(got.contains(&(
            "A".into(),
            Received {
                from: "B".into(),
                key: kb
            }
        )));
        assert!(got.contains(&(
            "B".into(),
            Received {
                from: "A".into(),
                key: ka
            }
        )));
        assert!(a.acknowledged("B", ka.kid) && b.acknowledged("A", kb.kid));
        let hc = c.hello();
        let got = settle(
            &mut [("A", &mut a), ("B", &mut b), ("C", &mut c)],
            vec![("C".into(), hc)],
        );
        // C holds no key to give; it learns both.
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|(to, _)| to == "C"));
        assert!(a.acknowledged("C", ka.kid) && b.acknowledged("C", kb.kid));
        // D is keyless like C: C learns D's pub but sends it nothing.
        assert_eq!(d.hello().payload["keyless"], true);
        c.handle("D", &d.hello().payload, &mut Vec::new());
        assert_eq!(c.owed(), 0);
        // A keyed newcomer is owed C's pub (to wrap its key for C).
        let e = KeyExchange::new(Some(BaseKey::generate())).unwrap();
        assert!(e.hello().payload.get("keyless").is_none());
        c.handle("E", &e.hello().payload, &mut Vec::new());
        assert_eq!(c.owed(), 1);
    }

    #[test]
    fn two_hundred_newcomers_get_the_key_in_one_batch() {
        assert_eq!(newcomers_get_the_key(200), 1);
    }

    #[test]
    fn a_thousand_newcomers_get_it_in_size_capped_batches() {
        // ~100 bytes an entry: 32 KiB holds about 320.
        assert!((3..=5).contains(&newcomers_get_the_key(1000)));
    }

    /// `n` newcomers' hellos reach one sender; returns how many batches its
    /// flush made, after checking every newcomer unwraps the key from them.
    fn newcomers_get_the_key(n: usize) -> usize {
        let key = BaseKey::generate();
        let mut sender = KeyExchange::new(Some(key)).unwrap();
        sender.set_id("PA_sender");
        let mut newcomers: Vec<(String, KeyExchange)> = (0..n)
            .map(|i| {
                let mut kx = KeyExchange::new(None).unwrap();
                let id = format!("PA_newcomer_{i:04}");
                kx.set_id(&id);
                (id, kx)
            })
            .collect();
        let mut out = Vec::new();
        for (id, kx) in &newcomers {
            assert!(sender.handle(id, &kx.hello().payload, &mut out).is_none());
        }
        assert!(out.is_empty());
        assert_eq!(sender.owed(), n);
        let batches = sender.flush();
        let mut entries = 0;
        for b in &batches {
            // Addressed to exactly the recipients it holds entries for.
            let keys = b.payload["keys"].as_object().unwrap();
            assert_eq!(b.to, To::Some(keys.keys().cloned().collect()));
            assert_eq!(b.payload["kind"], "e2ee-keys");
            let len = b.payload.to_string().len();
            assert!(len <= MAX_BATCH_BYTES, "{len}");
            entries += b.payload["keys"].as_object().unwrap().len();
        }
        assert_eq!(entries, n);
        // Every newcomer finds its entry (in one batch), learns the key and
        // acks; the sender's pub taught each newcomer of the sender.
        for (id, kx) in newcomers.iter_mut() {
            let mut got = Vec::new();
            let mut out = Vec::new();
            for b in &batches {
                got.extend(kx.handle("PA_sender", &b.payload, &mut out));
            }
            assert_eq!(got.len(), 1, "{id}");
            assert_eq!(got[0].key, key);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].to, To::One("PA_sender".into()));
            assert_eq!(kx.owed(), 1, "{id} owes the sender its pub");
            sender.handle(id, &out[0].payload, &mut Vec::new());
            assert!(sender.acknowledged(id, key.kid));
        }
        assert_eq!(sender.flush().len(), 0, "nothing owed twice");
        batches.len()
    }

    fn a_hello(a: &KeyExchange) -> Outgoing {
        let h = a.hello();
        assert_eq!(h.payload["kind"], "e2ee-hello");
        assert_eq!(h.payload["v"], 1);
        assert_eq!(
            B64.decode(h.payload["pub"].as_str().unwrap())
                .unwrap()
                .len(),
            65
        );
        assert_eq!(h.relay_message()["to"], "everyone");
        h
    }

    /// Introduces `b` to `a` and returns the batch `a` makes for `b`.
    fn key_message(a: &mut KeyExchange, b: &KeyExchange) -> Value {
        let mut out = Vec::new();
        assert!(a.handle("B", &b.hello().payload, &mut out).is_none());
        assert!(out.is_empty(), "nothing is sent before the flush");
        assert_eq!(a.owed(), 1);
        let mut batch = a.flush();
        assert_eq!(a.owed(), 0);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].to, To::Some(vec!["B".into()]));
        assert_eq!(batch[0].relay_message()["to"], json!(["B"]));
        batch.remove(0).payload
    }

    #[test]
    fn tampered_or_misdirected_keys_are_refused() {
        let ka = BaseKey::generate();
        let mut a = KeyExchange::new(Some(ka)).unwrap();
        a.set_id("A");
        let mut b = KeyExchange::new(None).unwrap();
        b.set_id("B");
        let msg = key_message(&mut a, &b);
        let mut out = Vec::new();
        b.handle("A", &a.hello().payload, &mut out);
        assert_eq!(b.owed(), 1, "b owes a its pub");
        let reply = b.flush();
        assert_eq!(reply.len(), 1);
        assert_eq!(reply[0].payload["keys"], json!({}));
        assert!(reply[0].payload.get("kid").is_none(), "b has no key");
        let flip = |field: &str| {
            let mut m = msg.clone();
            let entry = &mut m["keys"]["B"];
            let mut bytes = B64.decode(entry[field].as_str().unwrap()).unwrap();
            bytes[3] ^= 1;
            entry[field] = json!(B64.encode(bytes));
            m
        };
        let mut other_kid = msg.clone();
        other_kid["kid"] = json!(ka.kid + 1);
        let mut not_mine = msg.clone();
        let entry = not_mine["keys"]["B"].take();
        not_mine["keys"] = json!({ "C": entry });
        for bad in [
            flip("wrapped"),
            flip("iv"),
            other_kid,
            not_mine,
            json!({"kind": "e2ee-key", "kid": 1}),
            json!({"kind": "e2ee-keys", "kid": 1, "keys": 7}),
        ] {
            assert!(b.handle("A", &bad, &mut out).is_none(), "{bad}");
        }
        // Under the wrong sender (its pub is taken as Z's hello: the wrap
        // key then differs).
        assert!(b.handle("Z", &msg, &mut out).is_none());
        b.forget("Z");
        assert!(out.is_empty(), "no ack for refused keys");
        let got = b.handle("A", &msg, &mut out).unwrap();
        assert_eq!(got.key, ka);
        assert_eq!(out[0].payload, json!({"kind": "e2ee-ack", "kid": ka.kid}));
        // Malformed hellos are ignored.
        for bad in [
            json!({"kind": "e2ee-hello", "pub": "AAAA"}),
            json!({"kind": "e2ee-hello", "pub": B64.encode([4u8; 65])}),
            json!({"kind": "e2ee-hello", "pub": 7}),
        ] {
            out.clear();
            b.handle("Y", &bad, &mut out);
            assert!(out.is_empty(), "{bad}");
        }
    }

    /// Made by `tests/keys-vector.mjs`: the web client's own KeyManager
    /// (keys.js on Node's WebCrypto) met a peer with the fixed private key
    /// below (participant "rust") and sent it its key in a batch.
    const BROWSER_VECTOR: &str = include_str!("../tests/data/keys-vector.json");

    #[test]
    fn unwraps_a_key_wrapped_by_the_web_client() {
        let v: Value = serde_json::from_str(BROWSER_VECTOR).unwrap();
        let hex = |s: &Value| -> Vec<u8> {
            let s = s.as_str().unwrap();
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let private = PrivateKey::from_private_key(&ECDH_P256, &hex(&v["private"])).unwrap();
        let mut me = KeyExchange::with_private(private, None).unwrap();
        me.set_id("rust");
        assert_eq!(B64.encode(&me.public), v["public"].as_str().unwrap());
        let mut out = Vec::new();
        me.handle("browser", &v["hello"], &mut out);
        let got = me.handle("browser", &v["key"], &mut out).unwrap();
        let raw: [u8; 16] = hex(&v["base_key"]).try_into().unwrap();
        assert_eq!(
            got.key,
            BaseKey {
                kid: v["kid"].as_u64().unwrap(),
                raw
            }
        );
        // The AAD binds the KID the browser chose.
        let mut tampered = v["key"].clone();
        tampered["kid"] = json!(v["kid"].as_u64().unwrap() ^ 1);
        assert!(me.handle("browser", &tampered, &mut out).is_none());
        // ... and the sender's id: replayed as someone else's it fails.
        assert!(me.handle("other", &v["key"], &mut out).is_none());
    }

    #[test]
    fn single_keys_of_older_clients_are_still_accepted() {
        let ka = BaseKey::generate();
        let mut a = KeyExchange::new(Some(ka)).unwrap();
        let mut b = KeyExchange::new(None).unwrap();
        let mut out = Vec::new();
        a.handle("B", &b.hello().payload, &mut out);
        let mut hello = a.hello().payload;
        hello["reply"] = json!(true);
        b.handle("A", &hello, &mut out);
        // What keys.js sent before batching: one e2ee-key, AAD "e2ee-key {kid}".
        let iv = [7u8; NONCE_LEN];
        let mut wrapped = ka.raw.to_vec();
        a.peers["B"]
            .wrap_out
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(aad(ka.kid)),
                &mut wrapped,
            )
            .unwrap();
        let single = json!({"kind": "e2ee-key", "kid": ka.kid, "iv": B64.encode(iv),
                            "wrapped": B64.encode(&wrapped)});
        assert_eq!(b.handle("A", &single, &mut out).unwrap().key, ka);
    }
}
