//! The WebSocket signaling messages, version 1 (see `docs/protocol.md`).
//!
//! Every message is a JSON object with a `type`. Relay payloads are kept as
//! raw JSON: the SFU never looks inside them.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::IceServer;

/// The protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Messages a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message on a connection.
    Join {
        /// Must be [`PROTOCOL_VERSION`].
        version: u32,
        /// Room token (JWT).
        token: String,
        /// Subscribe to every track automatically (default true).
        #[serde(default)]
        auto_subscribe: Option<bool>,
    },
    /// SDP offer of the client's publishing connection (initial or renegotiation).
    PublishOffer {
        /// The offer.
        sdp: String,
        /// Optional labels for the offered m-lines, by mid.
        #[serde(default)]
        tracks: Vec<TrackLabel>,
    },
    /// Answer to a [`ServerMessage::SubscribeOffer`].
    SubscribeAnswer {
        /// The answer.
        sdp: String,
    },
    /// Receive these tracks (adds to the current set).
    Subscribe {
        /// Track ids.
        track_ids: Vec<String>,
    },
    /// Stop receiving these tracks.
    Unsubscribe {
        /// Track ids.
        track_ids: Vec<String>,
    },
    /// Mute or unmute one of the sender's own tracks (signaled to others only;
    /// the client stops sending media itself).
    Mute {
        /// The track.
        track_id: String,
        /// New state.
        muted: bool,
    },
    /// Send an opaque payload to some or all other participants.
    /// (Parsed by [`parse_client_message`]: raw JSON cannot pass through
    /// serde's tagged-enum buffering.)
    #[serde(skip_deserializing)]
    Relay {
        /// Participant ids or the string `"everyone"`.
        to: RelayTarget,
        /// Any JSON value; delivered untouched.
        payload: Box<RawValue>,
    },
    /// How the client shows a track it receives (adaptive stream): the
    /// SFU sends no larger a simulcast layer than the tile needs, and
    /// nothing while it is hidden.
    TrackSettings {
        /// The track.
        track_id: String,
        /// Whether it is on screen.
        visible: bool,
        /// Tile width in device pixels (0: unknown).
        #[serde(default)]
        width: u32,
        /// Tile height in device pixels (0: unknown).
        #[serde(default)]
        height: u32,
    },
    /// Keep-alive; answered with `pong`.
    Ping,
    /// Leave the room (the server closes the connection).
    Leave,
}

/// Client-chosen metadata for a published m-line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TrackLabel {
    /// The m-line's mid in the publish offer.
    pub mid: String,
    /// E.g. `camera`, `microphone`, `screen`.
    pub source: String,
}

/// Who receives a relay message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayTarget {
    /// Every other participant in the room.
    Everyone,
    /// These participants (unknown ids are ignored).
    Participants(Vec<String>),
}

impl<'de> Deserialize<'de> for RelayTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Ids(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "everyone" => Ok(RelayTarget::Everyone),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "relay target {w:?}: expected \"everyone\" or a list of participant ids"
            ))),
            Raw::Ids(ids) => Ok(RelayTarget::Participants(ids)),
        }
    }
}

/// Messages the server sends.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to `join`.
    Joined {
        /// [`PROTOCOL_VERSION`].
        version: u32,
        /// The room name.
        room: String,
        /// This participant.
        participant: ParticipantInfo,
        /// Everyone else, with their tracks.
        participants: Vec<ParticipantInfo>,
        /// ICE servers for `RTCPeerConnection`.
        ice_servers: Vec<IceServer>,
    },
    /// Answer to `publish_offer`.
    PublishAnswer {
        /// The answer.
        sdp: String,
    },
    /// Offer for the subscribing connection; answer with `subscribe_answer`.
    SubscribeOffer {
        /// The offer.
        sdp: String,
        /// Which track each sending m-line carries.
        tracks: Vec<SubscribedTrack>,
    },
    /// Someone joined.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone left (or was removed after a timeout, or replaced).
    ParticipantLeft {
        /// Their id.
        participant_id: String,
    },
    /// A track appeared.
    TrackPublished {
        /// The track.
        track: TrackInfo,
    },
    /// A track went away.
    TrackUnpublished {
        /// Its id.
        track_id: String,
        /// Its publisher.
        participant_id: String,
    },
    /// A track's mute state changed.
    TrackMuted {
        /// The track.
        track_id: String,
        /// Its publisher.
        participant_id: String,
        /// New state.
        muted: bool,
    },
    /// An opaque message from another participant.
    Relay {
        /// Sender's participant id.
        from: String,
        /// The payload, untouched.
        payload: Box<RawValue>,
    },
    /// Who is speaking, sent to everyone in the room when it changes (at
    /// most every 200 ms): the dominant speaker first, while they hold the
    /// floor (even in a pause), then the others speaking now.
    ActiveSpeakers {
        /// Ordered speakers; empty when nobody holds the floor.
        speakers: Vec<ActiveSpeaker>,
    },
    /// Dynacast, to a publisher: which simulcast layers (by rid) of its
    /// track to send. Sent when that changes; rids in neither list are left
    /// as they are.
    PublisherLayers {
        /// One of the publisher's tracks.
        track_id: String,
        /// Rids to send (`encodings[i].active = true`).
        active: Vec<String>,
        /// Rids nobody receives (`encodings[i].active = false`).
        inactive: Vec<String>,
    },
    /// Adaptive media, to a subscriber: the layer it receives of a video
    /// track, sent when that changes.
    TrackLayer {
        /// The track.
        track_id: String,
        /// The layer's rid (`""` for a track without simulcast); `null`:
        /// paused (a hidden tile, or no downlink left for it).
        layer: Option<String>,
        /// Its highest temporal layer carried (with the web client's L1T3:
        /// 0 a quarter, 1 half, 2 all of the frame rate); `null` when paused.
        temporal: Option<u8>,
        /// Its downlink, not its tile, holds it below the layer its tile
        /// needs (the client may say "low bandwidth").
        limited: bool,
    },
    /// Answer to `ping`.
    Pong,
    /// Something went wrong; see [`ErrorCode`].
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

/// One entry of [`ServerMessage::ActiveSpeakers`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActiveSpeaker {
    /// The speaking participant.
    pub participant_id: String,
    /// Its audio track.
    pub track_id: String,
    /// Recent loudness from the RTP audio level: 0 (silence, -127 dBov) to
    /// 1 (0 dBov), linear in dB, over the last 300 ms.
    pub level: f32,
}

/// A participant as others see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// Server-assigned, unique per session.
    pub id: String,
    /// From the token.
    pub identity: String,
    /// Display name from the token, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Published tracks.
    pub tracks: Vec<TrackInfo>,
}

/// A published track.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrackInfo {
    /// Unique within the room.
    pub id: String,
    /// Publisher's participant id.
    pub participant_id: String,
    /// `audio` or `video`.
    pub kind: String,
    /// The m-line of the publisher's publish connection (lets the publisher
    /// match its own tracks).
    pub mid: String,
    /// The client's label, e.g. `camera`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Mute state as signaled by the publisher.
    pub muted: bool,
}

/// Which track a subscribe m-line carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubscribedTrack {
    /// The m-line in the subscribe offer.
    pub mid: String,
    /// The track it carries.
    pub track_id: String,
    /// The track's publisher.
    pub participant_id: String,
    /// `audio` or `video`.
    pub kind: String,
}

/// Error codes of [`ServerMessage::Error`]. Fatal ones close the connection.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not an object with a string `type`.
    BadJson,
    /// A `type` this server does not know.
    UnknownMessage,
    /// A known `type` with missing or wrongly typed fields.
    BadMessage,
    /// The SDP could not be parsed or applied.
    BadSdp,
    /// The token is invalid (fatal).
    BadToken,
    /// The token has expired (fatal).
    TokenExpired,
    /// Unsupported protocol version (fatal).
    UnsupportedVersion,
    /// Message larger than `signaling.max_message_bytes` (or a relay payload
    /// larger than `signaling.max_relay_bytes`).
    MessageTooLarge,
    /// More messages than `signaling.messages_per_second` allows; the message was dropped.
    RateLimited,
    /// A message other than `join` before joining.
    NotJoined,
    /// A second `join` on the same connection.
    AlreadyJoined,
    /// The token does not grant this (e.g. publishing).
    Forbidden,
    /// A track id that does not exist in the room.
    UnknownTrack,
    /// Another connection joined with the same identity (fatal).
    Replaced,
    /// The participant's media connection went silent and it was removed (fatal).
    MediaTimeout,
}

impl ErrorCode {
    /// Whether the server closes the connection after this error.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::BadToken
                | ErrorCode::TokenExpired
                | ErrorCode::UnsupportedVersion
                | ErrorCode::Replaced
                | ErrorCode::MediaTimeout
        )
    }

    /// The snake_case name, as on the wire and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownMessage => "unknown_message",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::BadSdp => "bad_sdp",
            ErrorCode::BadToken => "bad_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::UnknownTrack => "unknown_track",
            ErrorCode::Replaced => "replaced",
            ErrorCode::MediaTimeout => "media_timeout",
        }
    }
}

impl ServerMessage {
    /// An error message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }
}

const KNOWN_TYPES: &[&str] = &[
    "join",
    "publish_offer",
    "subscribe_answer",
    "subscribe",
    "unsubscribe",
    "mute",
    "track_settings",
    "relay",
    "ping",
    "leave",
];

/// Parses one text frame, classifying failures into the error a client gets.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, (ErrorCode, String)> {
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    let typed: Typed = serde_json::from_str(text).map_err(|e| {
        (
            ErrorCode::BadJson,
            format!("expected a JSON object with a string \"type\": {e}"),
        )
    })?;
    if !KNOWN_TYPES.contains(&typed.kind.as_ref()) {
        return Err((
            ErrorCode::UnknownMessage,
            format!("unknown message type {:?}", typed.kind),
        ));
    }
    let bad = |e: serde_json::Error| (ErrorCode::BadMessage, format!("{}: {e}", typed.kind));
    if typed.kind == "relay" {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Relay {
            #[serde(rename = "type")]
            _kind: String,
            to: RelayTarget,
            payload: Box<RawValue>,
        }
        let r: Relay = serde_json::from_str(text).map_err(bad)?;
        return Ok(ClientMessage::Relay {
            to: r.to,
            payload: r.payload,
        });
    }
    serde_json::from_str(text).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classifies_bad_input() {
        assert_eq!(parse_client_message("{").unwrap_err().0, ErrorCode::BadJson);
        assert_eq!(
            parse_client_message("[1]").unwrap_err().0,
            ErrorCode::BadJson
        );
        assert_eq!(
            parse_client_message(r#"{"type":"dance"}"#).unwrap_err().0,
            ErrorCode::UnknownMessage
        );
        assert_eq!(
            parse_client_message(r#"{"type":"join","version":1}"#)
                .unwrap_err()
                .0,
            ErrorCode::BadMessage
        );
        assert_eq!(
            parse_client_message(r#"{"type":"relay","to":"someone","payload":1}"#)
                .unwrap_err()
                .0,
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn publisher_layers_has_the_documented_shape() {
        let msg = ServerMessage::PublisherLayers {
            track_id: "TR_c4Cam9Zp2R".into(),
            active: vec!["q".into(), "h".into()],
            inactive: vec!["f".into()],
        };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"publisher_layers","track_id":"TR_c4Cam9Zp2R","active":["q","h"],"inactive":["f"]}"#
        );
    }

    #[test]
    fn track_layer_has_the_documented_shape() {
        let msg = ServerMessage::TrackLayer {
            track_id: "TR_c4Cam9Zp2R".into(),
            layer: Some("h".into()),
            temporal: Some(1),
            limited: true,
        };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"track_layer","track_id":"TR_c4Cam9Zp2R","layer":"h","temporal":1,"limited":true}"#
        );
    }

    #[test]
    fn relay_payload_is_kept_verbatim() {
        let text = r#"{"type":"relay","to":["p1","p2"],"payload":{"k":[1, 2,"x"]}}"#;
        let ClientMessage::Relay { to, payload } = parse_client_message(text).unwrap() else {
            panic!("not a relay");
        };
        assert_eq!(
            to,
            RelayTarget::Participants(vec!["p1".into(), "p2".into()])
        );
        assert_eq!(payload.get(), r#"{"k":[1, 2,"x"]}"#);
        let out = serde_json::to_string(&ServerMessage::Relay {
            from: "p0".into(),
            payload,
        })
        .unwrap();
        assert_eq!(
            out,
            r#"{"type":"relay","from":"p0","payload":{"k":[1, 2,"x"]}}"#
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(s in ".{0,200}") {
            let _ = parse_client_message(&s);
        }

        #[test]
        fn never_panics_on_json_shaped_text(kind in "[a-z_]{0,20}", body in "[\\[\\]{}\":,0-9a-z ]{0,80}") {
            let _ = parse_client_message(&format!(r#"{{"type":"{kind}",{body}}}"#));
        }
    }
}
