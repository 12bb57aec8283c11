//! The web client's key exchange (`sfu/web/e2ee/keys.js`, docs/web-client.md
//! "Keys: sender keys over the relay"), wire-compatible with it, so simulated
//! participants and browsers can share a room:
//!
//! - each session has an ephemeral ECDH P-256 key pair and says
//!   `{"kind":"e2ee-hello","v":1,"pub":…}` to everyone; whoever did not know
//!   the sender answers with its own hello (`"reply":true`) to it alone;
//! - on learning a peer, a sender wraps its 16-byte base key for it with
//!   AES-256-GCM under HKDF-SHA256(ECDH secret, salt "", info
//!   "sfu-web key wrap v1" ‖ sender public ‖ recipient public), AAD
//!   "e2ee-key {kid}", and relays `{"kind":"e2ee-key","kid","iv","wrapped"}`;
//! - the recipient unwraps it and answers `{"kind":"e2ee-ack","kid"}`.
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
        })
    }

    /// The base key handed out, if any.
    pub fn current(&self) -> Option<BaseKey> {
        self.current
    }

    /// The hello announcing this session to everyone (send after `joined`).
    pub fn hello(&self) -> Outgoing {
        Outgoing {
            to: To::Everyone,
            payload: json!({"kind": "e2ee-hello", "v": 1, "pub": B64.encode(&self.public)}),
        }
    }

    /// Whether `id` acknowledged our key `kid`.
    pub fn acknowledged(&self, id: &str, kid: u64) -> bool {
        self.acked.contains(&(id.to_string(), kid))
    }

    /// Forgets a participant that left.
    pub fn forget(&mut self, id: &str) {
        self.peers.remove(id);
        self.acked.retain(|(who, _)| who != id);
    }

    /// Handles an `e2ee-*` relay payload from `from`, appending what to relay
    /// to `out`; returns the key it carried, if it was one for us. Anything
    /// malformed, tampered with or not for us is ignored, as keys.js does.
    pub fn handle(&mut self, from: &str, p: &Value, out: &mut Vec<Outgoing>) -> Option<Received> {
        match p["kind"].as_str()? {
            "e2ee-hello" => {
                self.on_hello(from, p, out);
                None
            }
            "e2ee-key" => self.on_key(from, p, out),
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

    fn on_hello(&mut self, from: &str, p: &Value, out: &mut Vec<Outgoing>) {
        let Some(public) = p["pub"].as_str().and_then(|s| B64.decode(s).ok()) else {
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
        // They may not have our public key yet (we were there first).
        if !truthy(&p["reply"]) {
            out.push(Outgoing {
                to: To::One(from.to_string()),
                payload: json!({"kind": "e2ee-hello", "v": 1, "pub": B64.encode(&self.public),
                                "reply": true}),
            });
        }
        if let Some(key) = self.current {
            if let Some(msg) = self.wrap_for(from, key) {
                out.push(msg);
            }
        }
    }

    fn on_key(&mut self, from: &str, p: &Value, out: &mut Vec<Outgoing>) -> Option<Received> {
        let peer = self.peers.get(from)?;
        let kid = p["kid"].as_u64().filter(|k| *k <= MAX_SAFE_INTEGER)?;
        let iv: [u8; NONCE_LEN] = B64.decode(p["iv"].as_str()?).ok()?.try_into().ok()?;
        let mut wrapped = B64.decode(p["wrapped"].as_str()?).ok()?;
        let raw = peer
            .wrap_in
            .open_in_place(
                Nonce::assume_unique_for_key(iv),
                Aad::from(aad(kid)),
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

    /// The `e2ee-key` message giving `key` to peer `id`.
    fn wrap_for(&self, id: &str, key: BaseKey) -> Option<Outgoing> {
        let peer = self.peers.get(id)?;
        let iv: [u8; NONCE_LEN] = rand::random();
        let mut wrapped = key.raw.to_vec();
        peer.wrap_out
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(aad(key.kid)),
                &mut wrapped,
            )
            .ok()?;
        Some(Outgoing {
            to: To::One(id.to_string()),
            payload: json!({"kind": "e2ee-key", "kid": key.kid, "iv": B64.encode(iv),
                            "wrapped": B64.encode(&wrapped)}),
        })
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

/// The AAD of a wrapped key: `e2ee-key {kid}` (a JS number in decimal).
fn aad(kid: u64) -> Vec<u8> {
    format!("e2ee-key {kid}").into_bytes()
}

/// JavaScript truthiness of a JSON value (keys.js tests `!p.reply`).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
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
            }
        };
        for (from, o) in first {
            push(&mut queue, &from, o);
        }
        let mut got = Vec::new();
        for _ in 0..10_000 {
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

    /// Introduces `b` to `a` and returns the key message `a` makes for `b`.
    fn key_message(a: &mut KeyExchange, b: &KeyExchange) -> Value {
        let mut out = Vec::new();
        let mut hello = b.hello().payload;
        hello["reply"] = json!(true);
        assert!(a.handle("B", &hello, &mut out).is_none());
        assert_eq!(out.len(), 1, "a reply hello gets no reply");
        assert_eq!(out[0].to, To::One("B".into()));
        assert_eq!(out[0].relay_message()["to"], json!(["B"]));
        out.remove(0).payload
    }

    #[test]
    fn tampered_or_misdirected_keys_are_refused() {
        let ka = BaseKey::generate();
        let mut a = KeyExchange::new(Some(ka)).unwrap();
        let mut b = KeyExchange::new(None).unwrap();
        let msg = key_message(&mut a, &b);
        let mut out = Vec::new();
        b.handle("A", &a.hello().payload, &mut out);
        assert_eq!(out.len(), 1, "b answers a's hello");
        out.clear();
        let flip = |field: &str| {
            let mut m = msg.clone();
            let mut bytes = B64.decode(m[field].as_str().unwrap()).unwrap();
            bytes[3] ^= 1;
            m[field] = json!(B64.encode(bytes));
            m
        };
        let mut other_kid = msg.clone();
        other_kid["kid"] = json!(ka.kid + 1);
        for bad in [
            flip("wrapped"),
            flip("iv"),
            other_kid,
            json!({"kind": "e2ee-key", "kid": 1}),
        ] {
            assert!(b.handle("A", &bad, &mut out).is_none(), "{bad}");
        }
        // From someone whose hello we never saw, or under the wrong sender.
        assert!(b.handle("Z", &msg, &mut out).is_none());
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
    /// below and sent it its key.
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
    }
}
