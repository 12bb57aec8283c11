//! The key exchange against the web client's own code: `keys-interop.mjs`
//! runs sfu/web/e2ee/keys.js under Node as participant "browser"; this side is
//! `key_exchange` as participant "rust". Each must end up with the other's
//! base key. Skipped (with a message) where `node` is missing.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use loadtest::key_exchange::{BaseKey, KeyExchange, To};
use serde_json::{json, Value};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn keys_cross_between_loadtest_and_web_client() {
    let has_node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_node {
        eprintln!("SKIPPED: `node` not found (scripts/test-deps.sh installs it)");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys-interop.mjs");
    let mut child = Command::new("node")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx
                .send(serde_json::from_str(&line).expect("JSON line"))
                .is_err()
            {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("node answers within 30 s")
    };
    let mut send = |payload: &Value| {
        let line = json!({"from": "rust", "payload": payload}).to_string();
        writeln!(stdin, "{line}").expect("write to node");
    };

    let mine = BaseKey::generate();
    let mut kx = KeyExchange::new(Some(mine)).unwrap();
    kx.set_id("rust");
    let hello = next();
    assert_eq!(hello["to"], "everyone");
    let mut out = Vec::new();
    assert!(kx.handle("browser", &hello["payload"], &mut out).is_none());
    assert!(out.is_empty());
    // Our pub and wrapped key: one batch, to the browser.
    let batch = kx.flush();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].to, To::Some(vec!["browser".into()]));
    send(&batch[0].payload);
    // The browser acknowledges ours at once, then sends its key in a batch.
    let ack = next();
    assert_eq!(ack["to"], json!(["rust"]), "{ack}");
    assert_eq!(ack["payload"]["kind"], "e2ee-ack");
    assert!(kx.handle("browser", &ack["payload"], &mut out).is_none());
    let theirs_batch = next();
    assert_eq!(theirs_batch["to"], json!(["rust"]), "{theirs_batch}");
    assert_eq!(theirs_batch["payload"]["kind"], "e2ee-keys");
    let theirs = kx
        .handle("browser", &theirs_batch["payload"], &mut out)
        .map(|r| r.key);
    let theirs = theirs.expect("the browser's key unwraps");
    assert!(kx.acknowledged("browser", mine.kid), "the browser acked");
    assert_eq!(out.len(), 1, "our ack");
    send(&out[0].payload);
    stdin.write_all(b"{\"done\":true}\n").unwrap();
    let report = next();
    let worker = report["worker"].as_array().expect("worker log");
    let told = |kind: &str| {
        worker
            .iter()
            .find(|m| m["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {report}"))
    };
    let send_key = told("send-key");
    assert_eq!(send_key["kid"].as_u64(), Some(theirs.kid));
    assert_eq!(send_key["key"], hex(&theirs.raw));
    let recv_key = told("recv-key");
    assert_eq!(recv_key["participantId"], "rust");
    assert_eq!(recv_key["kid"].as_u64(), Some(mine.kid));
    assert_eq!(
        recv_key["key"],
        hex(&mine.raw),
        "the browser unwrapped our key"
    );
    assert!(child.wait().expect("node exits").success());
    reader.join().unwrap();
}
