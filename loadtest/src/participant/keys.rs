//! The participant's side of the E2EE key exchange: relay messages paced
//! under the SFU's rate limit, and keys owed to newcomers sent in batches.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::Participant;
use crate::key_exchange::{KeyExchange, Outgoing};
/// How long what we owe newcomers (our pub and wrapped key) accumulates
/// before one batch goes out, as keys.js `BATCH_WINDOW_MS`.
pub(super) const KEY_BATCH_WINDOW: Duration = Duration::from_millis(50);
/// A newcomer whose hello has not reached us this long after it joined
/// gets ours directly, as keys.js `HELLO_FALLBACK_MS` (its hello went out
/// before its SFU node and ours were linked).
pub(super) const HELLO_FALLBACK: Duration = Duration::from_millis(1000);

impl Participant {
    /// Queues relay messages behind the send budget and sends what it allows.
    pub(super) fn relay(&mut self, out: Vec<Outgoing>, now: Instant) {
        self.pacer
            .push(out.iter().map(|o| o.relay_message().to_string()));
        self.flush_relays(now);
    }

    /// Sends the queued relay messages the send budget allows.
    pub(super) fn flush_relays(&mut self, now: Instant) {
        for text in self.pacer.release(now) {
            self.send_text(text);
        }
    }

    /// Handles an `e2ee-*` relay payload: key exchange answers, learned keys.
    pub(super) fn on_key_exchange(&mut self, from: &str, payload: &Value, now: Instant) {
        let mut out = Vec::new();
        if let Some(r) = self.kx.handle(from, payload, &mut out) {
            if let Err(e) = self.ring.learn(&r.from, r.key.kid, r.key.raw) {
                self.fail(format!("key from {from}: {e}"));
            }
        }
        self.relay(out, now);
        if self.kx.owed() >= KeyExchange::batch_capacity() {
            self.flush_keys(now);
        } else if self.kx.owed() > 0 && self.kx_flush.is_none() {
            self.kx_flush = Some(now + KEY_BATCH_WINDOW);
        }
    }

    /// A participant joined: hello to it later unless its hello comes.
    pub(super) fn on_joined(&mut self, id: &str, now: Instant) {
        if self.spec.e2ee && !self.kx.knows(id) {
            self.unheard.push((id.to_string(), now + HELLO_FALLBACK));
        }
    }

    /// Says hello to the newcomers whose hello is overdue, in one message.
    pub(super) fn hello_unheard(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = self.unheard.drain(..).partition(|(_, at)| *at <= now);
        self.unheard = later;
        let ids: Vec<String> = due
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !self.kx.knows(id))
            .collect();
        if !ids.is_empty() {
            let hello = self.kx.hello_to(ids);
            self.relay(vec![hello], now);
        }
    }

    /// Sends the batched keys owed to newcomers.
    pub(super) fn flush_keys(&mut self, now: Instant) {
        self.kx_flush = None;
        let batches = self.kx.flush();
        self.relay(batches, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_exchange::KeyExchange;
    use crate::participant::relay_pacer::{SEND_BURST, SEND_RATE};
    use crate::participant::*;

    fn publisher(now: Instant) -> (Participant, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let spec = ParticipantSpec {
            index: 1,
            room: "r".into(),
            token: "t".into(),
            publish: true,
            subscribe: false,
            audio: true,
            video: None,
            simulcast: false,
            e2ee: true,
            expected_tracks: 0,
            via_turn: None,
        };
        let ip = std::net::Ipv4Addr::LOCALHOST.into();
        (Participant::new(spec, ip, None, tx, now).unwrap(), rx)
    }

    fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Vec<Value> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|t| serde_json::from_str(&t).unwrap())
            .collect()
    }

    #[test]
    fn newcomers_get_one_batch_after_the_window() {
        let t0 = Instant::now();
        let (mut p, mut rx) = publisher(t0);
        p.on_signal(r#"{"type":"joined","participant":{"id":"PA_me"}}"#, t0);
        drain(&mut rx);
        let mut browsers: Vec<KeyExchange> =
            (0..100).map(|_| KeyExchange::new(None).unwrap()).collect();
        for (i, b) in browsers.iter().enumerate() {
            let msg =
                json!({"type": "relay", "from": format!("PA_{i}"), "payload": b.hello().payload});
            p.on_signal(&msg.to_string(), t0);
        }
        assert!(
            drain(&mut rx).is_empty(),
            "nothing before the window closes"
        );
        assert_eq!(p.deadline(), t0 + KEY_BATCH_WINDOW);
        p.poll(t0 + KEY_BATCH_WINDOW);
        let sent = drain(&mut rx);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["to"].as_array().map(Vec::len), Some(100));
        assert_eq!(sent[0]["payload"]["kind"], "e2ee-keys");
        for (i, b) in browsers.iter_mut().enumerate() {
            b.set_id(&format!("PA_{i}"));
            let got = b.handle("PA_me", &sent[0]["payload"], &mut Vec::new());
            assert_eq!(got.map(|r| r.key), p.kx.current(), "PA_{i}");
        }
    }

    #[test]
    fn key_exchange_over_signaling_is_paced_under_the_rate_limit() {
        let t0 = Instant::now();
        let (mut p, mut rx) = publisher(t0);
        p.on_signal(r#"{"type":"joined","participant":{"id":"PA_me"}}"#, t0);
        let first = drain(&mut rx);
        let hello = first.iter().find(|m| m["type"] == "relay").unwrap();
        assert_eq!(hello["to"], "everyone");
        assert_eq!(hello["payload"]["kind"], "e2ee-hello");
        // 200 senders already in the room answer our hello at once with
        // their batches: each wants an ack (200 relays), and we owe them all
        // our key (one batch).
        for i in 0..200 {
            let mut other = KeyExchange::new(Some(BaseKey::generate())).unwrap();
            let id = format!("PA_{i}");
            other.set_id(&id);
            other.handle("PA_me", &hello["payload"], &mut Vec::new());
            for b in other.flush() {
                let msg = json!({"type": "relay", "from": id, "payload": b.payload});
                p.on_signal(&msg.to_string(), t0);
            }
        }
        let burst = drain(&mut rx);
        assert!(
            burst.len() <= SEND_BURST as usize,
            "{} sent at once",
            burst.len()
        );
        // The rest follows at the paced rate, announced by the deadline.
        let mut sent = burst.len();
        let mut now = t0;
        for _ in 0..1000 {
            let next = p.deadline().min(now + Duration::from_millis(50));
            now = next.max(now);
            p.poll(now);
            sent += drain(&mut rx)
                .iter()
                .filter(|m| m["type"] == "relay")
                .count();
            if sent >= 201 {
                break;
            }
        }
        assert_eq!(sent, 201);
        let secs = now.duration_since(t0).as_secs_f64();
        assert!(secs >= (201.0 - SEND_BURST) / SEND_RATE - 0.1, "{secs}");
        assert!(secs < 201.0 / SEND_RATE, "{secs}");
    }

    #[test]
    fn keys_from_the_exchange_reach_the_ring() {
        let t0 = Instant::now();
        let (mut p, mut rx) = publisher(t0);
        p.on_signal(r#"{"type":"joined","participant":{"id":"PA_me"}}"#, t0);
        let hello = drain(&mut rx)
            .into_iter()
            .find(|m| m["type"] == "relay")
            .unwrap();
        let key = BaseKey::generate();
        let mut other = KeyExchange::new(Some(key)).unwrap();
        other.set_id("PA_other");
        other.handle("PA_me", &hello["payload"], &mut Vec::new());
        for o in other.flush() {
            let msg = json!({"type": "relay", "from": "PA_other", "payload": o.payload});
            p.on_signal(&msg.to_string(), t0);
        }
        assert!(p.ring.knows("PA_other"));
        // Our answers: the ack at once, our own key after the window.
        let mut answers = drain(&mut rx);
        p.poll(t0 + KEY_BATCH_WINDOW);
        answers.extend(drain(&mut rx));
        let kinds: Vec<&str> = answers
            .iter()
            .filter_map(|m| m["payload"]["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["e2ee-ack", "e2ee-keys"]);
        let mut out = Vec::new();
        let learned: Vec<_> = answers
            .iter()
            .filter_map(|m| other.handle("PA_me", &m["payload"], &mut out))
            .collect();
        assert_eq!(learned.len(), 1);
        let learned = &learned[0];
        assert_eq!(Some(learned.key), p.kx.current());
        assert!(other.acknowledged("PA_me", key.kid));
    }
}
