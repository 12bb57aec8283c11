//! A load-test scenario: where, how many, for how long, with what media.
//! Read from TOML (`configs/loadtest/*.toml`) and/or set by flags.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::media::preset::VideoPreset;
use crate::signaling_url::{SignalingUrl, UrlError};

/// The SFU's public development-mode key (`sfu/src/auth.rs`): tokens signed
/// with it are accepted by a server without `auth.key`.
pub const DEVELOPMENT_KEY: &str = "sfu-development-key-not-secret";

/// A scenario. Every field has a default; see `configs/loadtest/*.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Name shown in reports; rooms are `loadtest-{name}-{index}`, so
    /// processes running scenarios of one name share rooms.
    pub name: String,
    /// The SFU's base URL (http://, https://, ws://, wss://) or its
    /// signaling WebSocket URL (…/ws).
    pub url: String,
    /// HS256 key for room tokens (the SFU's `auth.key`); empty = the
    /// development key.
    pub token_secret: String,
    /// Rooms.
    pub rooms: u32,
    /// Publishers per room (they also receive each other when
    /// `publishers_subscribe`).
    pub publishers: u32,
    /// Receive-only participants per room.
    pub subscribers: u32,
    /// Publishers per room that another loadtest process runs in the same
    /// rooms (same `name`): this one's receivers expect their tracks too.
    pub remote_publishers: u32,
    /// Participant identities are this prefix and an index from 0; give
    /// each process that joins the same rooms its own (the SFU replaces a
    /// participant when its identity joins again).
    pub identity_prefix: String,
    /// Publishers receive the other publishers of their room.
    pub publishers_subscribe: bool,
    /// Participants started per second.
    pub join_rate: f64,
    /// Seconds of media after the last participant has been started.
    pub duration_secs: f64,
    /// Publishers send audio.
    pub audio: bool,
    /// Publishers send video at this preset (`180p`, `360p`, `720p`, `none`).
    pub video: String,
    /// Video as three simulcast layers (rids q/h/f at ¼, ½ and the full
    /// size of the preset), as the web client publishes a camera.
    pub simulcast: bool,
    /// SFrame end-to-end encryption of every frame.
    pub e2ee: bool,
    /// Worker threads (each one mio loop with many participants).
    pub threads: usize,
    /// Media only through a TURN relay: empty = off, `sfu` = the relay and
    /// credentials of `joined.ice_servers`, or `turn:HOST:PORT`.
    pub via_turn: String,
    /// TURN username (default: from `joined.ice_servers`).
    pub turn_username: String,
    /// TURN password (default: from `joined.ice_servers`).
    pub turn_password: String,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "custom".into(),
            url: "ws://127.0.0.1:7880/ws".into(),
            token_secret: String::new(),
            rooms: 1,
            publishers: 2,
            subscribers: 0,
            remote_publishers: 0,
            identity_prefix: "lt-".into(),
            publishers_subscribe: true,
            join_rate: 50.0,
            duration_secs: 10.0,
            audio: true,
            video: "360p".into(),
            simulcast: true,
            e2ee: true,
            threads: 1,
            via_turn: String::new(),
            turn_username: String::new(),
            turn_password: String::new(),
        }
    }
}

impl Scenario {
    /// Reads a TOML scenario.
    pub fn from_file(path: &Path) -> anyhow::Result<Scenario> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> anyhow::Result<Scenario> {
        let s: Scenario = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// Checks values that would make a meaningless run.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.rooms >= 1, "rooms must be at least 1");
        anyhow::ensure!(self.publishers + self.subscribers >= 1, "no participants");
        anyhow::ensure!(self.join_rate > 0.0, "join_rate must be positive");
        anyhow::ensure!(self.duration_secs > 0.0, "duration_secs must be positive");
        anyhow::ensure!(self.threads >= 1, "threads must be at least 1");
        anyhow::ensure!(
            !self.identity_prefix.is_empty(),
            "identity_prefix must not be empty"
        );
        anyhow::ensure!(
            self.via_turn.is_empty()
                || self.via_turn == "sfu"
                || crate::turn::path::parse_turn_url(&self.via_turn).is_some(),
            "via_turn must be empty, \"sfu\" or turn:HOST:PORT"
        );
        anyhow::ensure!(
            self.video == "none" || VideoPreset::parse(&self.video).is_some(),
            "video must be 180p, 360p, 720p or none"
        );
        self.signaling_url()?;
        Ok(())
    }

    /// The signaling WebSocket URL derived from `url`.
    pub fn signaling_url(&self) -> Result<SignalingUrl, UrlError> {
        SignalingUrl::parse(&self.url)
    }

    /// The TURN relay for media, if `via_turn` is set.
    pub fn via_turn(&self) -> Option<crate::participant::ViaTurn> {
        if self.via_turn.is_empty() {
            return None;
        }
        let some = |v: &String| (!v.is_empty()).then(|| v.clone());
        Some(crate::participant::ViaTurn {
            server: crate::turn::path::parse_turn_url(&self.via_turn),
            username: some(&self.turn_username),
            password: some(&self.turn_password),
        })
    }

    /// The video preset, if any.
    pub fn video_preset(&self) -> Option<VideoPreset> {
        VideoPreset::parse(&self.video)
    }

    /// Tracks each publisher publishes.
    pub fn tracks_per_publisher(&self) -> u64 {
        u64::from(self.audio) + u64::from(self.video_preset().is_some())
    }

    /// Participants in total.
    pub fn participants(&self) -> u64 {
        u64::from(self.rooms) * u64::from(self.publishers + self.subscribers)
    }

    /// The key tokens are signed with.
    pub fn signing_key(&self) -> &str {
        if self.token_secret.is_empty() {
            DEVELOPMENT_KEY
        } else {
            &self.token_secret
        }
    }
}

/// Signs a room token (the claims of docs/protocol.md section 2).
pub fn mint_token(
    key: &str,
    room: &str,
    identity: &str,
    publish: bool,
    subscribe: bool,
) -> anyhow::Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600 * 6;
    let claims = serde_json::json!({
        "room": room, "sub": identity, "can_publish": publish, "can_subscribe": subscribe, "exp": exp,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .context("signing a token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_scenarios_parse() {
        for (file, participants) in [
            ("meeting.toml", 100),
            ("livestream.toml", 201),
            ("audio-room.toml", 205),
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../configs/loadtest")
                .join(file);
            let s = Scenario::from_file(&path).unwrap();
            assert_eq!(s.participants(), participants, "{file}");
        }
        assert!(Scenario::from_toml("rooms = 0").is_err());
        assert!(Scenario::from_toml("video = \"4k\"").is_err());
        assert!(Scenario::from_toml("romos = 1").is_err());
        assert!(Scenario::from_toml("identity_prefix = \"\"").is_err());
        let s = Scenario::from_toml("url = \"http://127.0.0.1:7880\"").unwrap();
        assert_eq!(s.signaling_url().unwrap().url, "ws://127.0.0.1:7880/ws");
        let e = Scenario::from_toml("url = \"127.0.0.1:7880\"").unwrap_err();
        assert!(
            format!("{e:#}").contains("write ws://127.0.0.1:7880"),
            "{e:#}"
        );
        let s = Scenario::from_toml("video = \"none\"").unwrap();
        assert_eq!(s.tracks_per_publisher(), 1);
        assert!(mint_token(s.signing_key(), "r", "i", true, true)
            .unwrap()
            .starts_with("eyJ"));
    }
}
