//! The encrypted-file store's HTTP API against a real server on loopback:
//! tokens, quotas, resumable uploads (also after a dropped connection),
//! ranged downloads by capability, downloads that follow a running upload
//! (and end when it stalls or the file is deleted), deletion and expiry from
//! disk.

mod common;

use common::{http_request_bytes as request, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use std::path::Path;
use std::time::{Duration, Instant};

use sfu::auth::TokenAuthority;
use sfu::config::Config;
use sfu::server::Server;

const MIB: usize = 1024 * 1024;

async fn server(dir: &Path, edit: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.media.udp_listen = "127.0.0.1:0".parse().unwrap();
    config.media.tcp_listen = "127.0.0.1:0".parse().unwrap();
    config.auth.key = common::KEY.into();
    config.turn.enabled = false;
    config.files.dir = dir.to_string_lossy().into_owned();
    edit(&mut config);
    Server::start(config).await.expect("server starts")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn random(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

/// Creates a file of `length` bytes; returns its id.
async fn create(server: &Server, token: &str, length: usize) -> String {
    let auth = bearer(token);
    let len = length.to_string();
    let r = request(
        server,
        "POST",
        "/files",
        &[("Authorization", &auth), ("Upload-Length", &len)],
        b"",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(r.header("location"), Some(format!("/files/{id}").as_str()));
    id
}

async fn patch(server: &Server, token: &str, id: &str, offset: usize, body: &[u8]) -> Reply {
    let auth = bearer(token);
    let off = offset.to_string();
    request(
        server,
        "PATCH",
        &format!("/files/{id}"),
        &[("Authorization", &auth), ("Upload-Offset", &off)],
        body,
    )
    .await
}

async fn offset(server: &Server, id: &str) -> Option<usize> {
    let r = request(server, "HEAD", &format!("/files/{id}"), &[], b"").await;
    r.header("upload-offset").and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_resumes_after_a_dropped_connection_and_downloads_by_capability() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), |_| {}).await;
    let alice = common::token("r", "alice");
    let data = random(5 * MIB);
    let id = create(&server, &alice, data.len()).await;

    // First MiB, then a request that dies after 2 of its 3 MiB.
    let r = patch(&server, &alice, &id, 0, &data[..MIB]).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("upload-offset"), Some("1048576"));
    {
        let mut s = tokio::net::TcpStream::connect(server.http_addr)
            .await
            .unwrap();
        let head = format!(
            "PATCH /files/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\
             Upload-Offset: {MIB}\r\nContent-Length: {}\r\n\r\n",
            3 * MIB
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&data[MIB..3 * MIB]).await.unwrap();
        s.flush().await.unwrap();
    } // dropped: the connection closes mid-body
    common::eventually(Duration::from_secs(10), "the cut request ends", || async {
        // Busy (409) while the server still reads the dead connection.
        let probe = patch(&server, &alice, &id, 3 * MIB, b"").await;
        probe.status == 204
    })
    .await;
    assert_eq!(
        offset(&server, &id).await,
        Some(3 * MIB),
        "what arrived stays"
    );

    // A wrong offset is refused with the right one; the rest completes it.
    let r = patch(&server, &alice, &id, 0, &data[..10]).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.header("upload-offset"), Some("3145728"));
    let r = patch(&server, &alice, &id, 3 * MIB, &data[3 * MIB..]).await;
    assert_eq!(r.status, 204, "{}", r.text());
    // Nothing beyond the declared length.
    let r = patch(&server, &alice, &id, 5 * MIB, b"x").await;
    assert_eq!(r.status, 413, "{}", r.text());

    // Whole and ranged downloads, with the capability only.
    let r = request(&server, "GET", &format!("/files/{id}"), &[], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body == data, "downloaded bytes differ");
    let r = request(
        &server,
        "GET",
        &format!("/files/{id}"),
        &[("Range", "bytes=4194304-")],
        b"",
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some("bytes 4194304-5242879/5242880")
    );
    assert!(r.body == data[4 * MIB..]);
    let r = request(
        &server,
        "GET",
        &format!("/files/{id}"),
        &[("Range", "bytes=9999999-")],
        b"",
    )
    .await;
    assert_eq!(r.status, 416);

    // Without the capability: 404 for a guessed id or a malformed one.
    let mut guess = id.clone().into_bytes();
    guess[0] = if guess[0] == b'0' { b'1' } else { b'0' };
    let guess = String::from_utf8(guess).unwrap();
    for path in [
        format!("/files/{guess}"),
        "/files/..%2Fetc%2Fpasswd".to_string(),
        "/files/XYZ".to_string(),
    ] {
        let r = request(&server, "GET", &path, &[], b"").await;
        assert_eq!(r.status, 404, "{path}");
    }

    // The bytes on disk are exactly what was uploaded (the browser encrypts).
    let on_disk = std::fs::read(dir.path().join(format!("{id}.blob"))).unwrap();
    assert!(on_disk == data);
    assert!(common::metric(&server, "sfu_files_uploaded_bytes_total").await >= data.len() as f64);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_quotas_and_bad_input_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), |c| {
        c.files.max_file_bytes = 3 * MIB as u64;
        c.files.user_quota_bytes = 4 * MIB as u64;
        c.files.total_quota_bytes = 6 * MIB as u64;
    })
    .await;
    let alice = common::token("r", "alice");
    let bob = common::token("r", "bob");
    let carol = common::token("r", "carol");
    let len = [("Upload-Length", "10")];

    // No token, a forged one, an expired one.
    let r = request(&server, "POST", "/files", &len, b"").await;
    assert_eq!(r.status, 401);
    let forged = TokenAuthority::new("not-the-key")
        .mint(&TokenAuthority::grants("r", "x", Duration::from_secs(60)))
        .unwrap();
    let mut grants = TokenAuthority::grants("r", "x", Duration::ZERO);
    grants.exp = sfu::auth::unix_now() - 5;
    let expired = TokenAuthority::new(common::KEY).mint(&grants).unwrap();
    for token in [forged, expired, "garbage".to_string()] {
        let auth = bearer(&token);
        let r = request(
            &server,
            "POST",
            "/files",
            &[("Authorization", &auth), len[0]],
            b"",
        )
        .await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    // Missing or bad length.
    let auth = bearer(&alice);
    for bad in [None, Some("-1"), Some("ten")] {
        let mut h = vec![("Authorization", auth.as_str())];
        if let Some(v) = bad {
            h.push(("Upload-Length", v));
        }
        let r = request(&server, "POST", "/files", &h, b"").await;
        assert_eq!(r.status, 400, "{bad:?}: {}", r.text());
    }
    // Too large, then over quota (per user, then in total).
    let big = (3 * MIB + 1).to_string();
    let r = request(
        &server,
        "POST",
        "/files",
        &[("Authorization", &auth), ("Upload-Length", &big)],
        b"",
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("too large"), "{}", r.text());
    let first = create(&server, &alice, 3 * MIB).await;
    let two = (2 * MIB).to_string();
    let r = request(
        &server,
        "POST",
        "/files",
        &[("Authorization", &auth), ("Upload-Length", &two)],
        b"",
    )
    .await;
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(r.text().contains("quota exceeded"), "{}", r.text());
    create(&server, &bob, 3 * MIB).await;
    let carol_auth = bearer(&carol);
    let r = request(
        &server,
        "POST",
        "/files",
        &[("Authorization", &carol_auth), ("Upload-Length", "1")],
        b"",
    )
    .await;
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(r.text().contains("storage is full"), "{}", r.text());

    // Only the uploader writes; a token of another room neither.
    let r = patch(&server, &bob, &first, 0, b"abc").await;
    assert_eq!(r.status, 403, "{}", r.text());
    let other_room = common::token("elsewhere", "alice");
    let r = patch(&server, &other_room, &first, 0, b"abc").await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = patch(&server, &alice, &first, 7, b"abc").await;
    assert_eq!(r.status, 409, "{}", r.text());
    let auth = bearer(&alice);
    let r = request(
        &server,
        "PATCH",
        &format!("/files/{first}"),
        &[("Authorization", &auth)],
        b"abc",
    )
    .await;
    assert_eq!(r.status, 400, "no Upload-Offset: {}", r.text());
    assert_eq!(offset(&server, &first).await, Some(0), "nothing changed");

    // Deletion: not by another participant; by the uploader; a room's
    // operator deletes all of the room's files.
    let r = request(
        &server,
        "DELETE",
        &format!("/files/{first}"),
        &[("Authorization", &bearer(&bob))],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    let r = request(
        &server,
        "DELETE",
        "/files",
        &[("Authorization", &bearer(&bob))],
        b"",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = request(
        &server,
        "DELETE",
        &format!("/files/{first}"),
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(offset(&server, &first).await, None);
    assert!(!dir.path().join(format!("{first}.blob")).exists());
    let mut admin = TokenAuthority::grants("r", "operator", Duration::from_secs(60));
    admin.room_admin = true;
    let admin = TokenAuthority::new(common::KEY).mint(&admin).unwrap();
    let r = request(
        &server,
        "DELETE",
        "/files",
        &[("Authorization", &bearer(&admin))],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("1 files deleted"), "{}", r.text());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_files_are_gone_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), |c| {
        c.files.ttl_s = 1;
        c.files.sweep_interval_s = 1;
    })
    .await;
    let alice = common::token("r", "alice");
    let id = create(&server, &alice, 3).await;
    assert_eq!(patch(&server, &alice, &id, 0, b"abc").await.status, 204);
    let blob = dir.path().join(format!("{id}.blob"));
    assert!(blob.exists());
    common::eventually(
        Duration::from_secs(5),
        "the expired file is deleted",
        || async { !blob.exists() },
    )
    .await;
    let r = request(&server, "GET", &format!("/files/{id}"), &[], b"").await;
    assert_eq!(r.status, 404);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(common::metric(&server, "sfu_files_expired_total").await >= 1.0);
    server.stop().await;
}

/// Status, declared length, body, and when the response ended.
type Streamed = (u16, usize, Vec<u8>, Instant);

/// A GET read as it arrives: `progress` counts the body bytes received so
/// far; the result is the status, the declared length, the body and when
/// the response ended (completely or not).
fn streaming_get(
    server: &Server,
    path: String,
    range: Option<String>,
) -> (watch::Receiver<usize>, tokio::task::JoinHandle<Streamed>) {
    let addr = server.http_addr;
    let (tx, rx) = watch::channel(0);
    let task = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{range}\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut body_at = None;
        // Bounded by the test's timeouts around it: the server ends the response.
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if body_at.is_none() {
                body_at = out.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
            }
            if let Some(at) = body_at {
                tx.send_replace(out.len() - at);
            }
        }
        let ended = Instant::now();
        let at = body_at.expect("a response head");
        let head = String::from_utf8_lossy(&out[..at]).to_ascii_lowercase();
        let status = head[9..12].parse().unwrap();
        let declared = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        (status, declared, out[at..].to_vec(), ended)
    });
    (rx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_follow_a_running_upload_and_end_when_the_file_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), |_| {}).await;
    let alice = common::token("r", "alice");
    let data = random(6 * MIB);
    let id = create(&server, &alice, data.len()).await;
    let path = format!("/files/{id}");

    // Started before a byte is uploaded: the whole file, and a range.
    let (whole_seen, whole) = streaming_get(&server, path.clone(), None);
    let (_, part) = streaming_get(&server, path.clone(), Some(format!("bytes={}-", MIB + 5)));
    let r = patch(&server, &alice, &id, 0, &data[..2 * MIB]).await;
    assert_eq!(r.status, 204, "{}", r.text());
    // The reader gets what is committed while the upload is still running.
    let mut seen = whole_seen.clone();
    tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|&n| n >= 2 * MIB))
        .await
        .expect("the first 2 MiB reach the reader before the rest is uploaded")
        .unwrap();
    assert!(!whole.is_finished());
    assert_eq!(offset(&server, &id).await, Some(2 * MIB));
    for at in [2 * MIB, 4 * MIB] {
        let r = patch(&server, &alice, &id, at, &data[at..at + 2 * MIB]).await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let (status, declared, body, _) = tokio::time::timeout(Duration::from_secs(10), whole)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status, declared), (200, data.len()));
    assert!(body == data, "the followed download differs");
    let (status, declared, body, _) = tokio::time::timeout(Duration::from_secs(10), part)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status, declared), (206, data.len() - MIB - 5));
    assert!(body == data[MIB + 5..], "the followed range differs");

    // A reader waiting for an upload that is deleted ends at once, not at the stall bound.
    let id = create(&server, &alice, 2 * MIB).await;
    assert_eq!(
        patch(&server, &alice, &id, 0, &data[..MIB]).await.status,
        204
    );
    let (mut seen, waiting) = streaming_get(&server, format!("/files/{id}"), None);
    seen.wait_for(|&n| n >= MIB).await.unwrap();
    let deleted = Instant::now();
    let r = request(
        &server,
        "DELETE",
        &format!("/files/{id}"),
        &[("Authorization", &bearer(&alice))],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    let (status, declared, body, ended) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status, declared, body.len()), (200, 2 * MIB, MIB));
    assert!(
        ended - deleted < Duration::from_secs(5),
        "{:?}",
        ended - deleted
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_upload_ends_a_waiting_download_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), |c| c.files.stall_s = 1).await;
    let alice = common::token("r", "alice");
    let data = random(3 * MIB);
    let id = create(&server, &alice, data.len()).await;
    let path = format!("/files/{id}");
    assert_eq!(
        patch(&server, &alice, &id, 0, &data[..MIB]).await.status,
        204
    );
    let last_upload = Instant::now();
    let (_, waiting) = streaming_get(&server, path.clone(), None);
    // The sender stops: the download ends after the stall bound (1 s), cut short.
    let (status, declared, body, ended) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status, declared), (200, data.len()));
    assert!(body == data[..MIB], "what was uploaded arrives");
    let waited = ended - last_upload;
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "ended {waited:?} after the last upload"
    );
    // Asked again: a clear refusal that says how far the upload got.
    let r = request(&server, "GET", &path, &[], b"").await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("upload stalled"), "{}", r.text());
    assert_eq!(r.header("upload-offset"), Some("1048576"));
    // The sender comes back and finishes: downloadable again.
    let r = patch(&server, &alice, &id, MIB, &data[MIB..]).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = request(&server, "GET", &path, &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == data);
    server.stop().await;
}
