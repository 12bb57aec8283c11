//! The trunk's wire format, sans-IO: media datagrams (RFC 9221) and the
//! length-prefixed control messages of the control stream.
//!
//! A media datagram is an 8-byte header and the RTP packet as the
//! publisher's node received it (header and payload untouched):
//!
//! ```text
//!  0       1       2       3       4               8
//! +-------+-------+-------+-------+---------------+----------------
//! |version| flags | layer |  0    | track (u32 BE)| RTP packet ...
//! +-------+-------+-------+-------+---------------+----------------
//! ```
//!
//! `track` is the number the *sending* node gave the track in its
//! `track_published` control message; `layer` is the simulcast spatial layer
//! (0 = lowest; 0 for non-simulcast tracks).
//!
//! A control frame is a 4-byte big-endian length and that many bytes of one
//! JSON object with a `type` field (the variants of [`Control`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use str0m::format::CodecSpec;

use crate::signal::protocol::{ParticipantInfo, TrackInfo};

/// Version of both the datagram header and the control messages.
pub const VERSION: u8 = 1;
/// Bytes before the RTP packet in a media datagram.
pub const MEDIA_HEADER_LEN: usize = 8;
/// Smallest RTP packet: the fixed 12-byte header.
pub const MIN_RTP_LEN: usize = 12;
/// Highest spatial layer number (simulcast has at most 3 layers; one spare).
pub const MAX_LAYER: u8 = 3;
/// Largest control message body. A relay payload may be
/// `signaling.max_relay_bytes` (128 KiB by default) and is escaped nowhere
/// (it travels as raw JSON), so 1 MiB leaves room for any sane setting.
pub const MAX_CONTROL_BYTES: usize = 1 << 20;
/// Longest node id, room name, participant or track id carried.
pub const MAX_ID_LEN: usize = 256;

/// Flag: the packet starts a keyframe (as the sending node detected it).
pub const FLAG_KEYFRAME: u8 = 0x01;
/// Flag: the track is simulcast and `layer` names one of its encodings
/// (without it, the track has one encoding and `layer` is 0).
pub const FLAG_SIMULCAST: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_KEYFRAME | FLAG_SIMULCAST;

/// Why bytes from a peer node are not a valid datagram or control frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the header plus a minimal RTP packet.
    #[error("media datagram of {0} bytes is shorter than header + RTP header ({min})", min = MEDIA_HEADER_LEN + MIN_RTP_LEN)]
    TooShort(usize),
    /// A version this node does not speak.
    #[error("unsupported trunk wire version {0} (this node speaks {VERSION})")]
    Version(u8),
    /// Flag bits this version does not define.
    #[error("unknown media datagram flags {0:#04x}")]
    Flags(u8),
    /// The reserved byte is not zero.
    #[error("reserved media header byte is {0}, expected 0")]
    Reserved(u8),
    /// A spatial layer above [`MAX_LAYER`].
    #[error("spatial layer {0} out of range (0..={MAX_LAYER})")]
    Layer(u8),
    /// The payload does not look like RTP version 2.
    #[error("payload is not RTP version 2")]
    NotRtp,
    /// A control frame announces more than [`MAX_CONTROL_BYTES`].
    #[error("control frame of {0} bytes exceeds the limit of {MAX_CONTROL_BYTES}")]
    ControlTooLarge(usize),
    /// A control frame is not a valid control message.
    #[error("bad control message: {0}")]
    BadControl(String),
}

/// The header of a media datagram, for a sender that writes the RTP packet
/// behind it itself.
pub fn media_header(track: u32, layer: u8, flags: u8) -> [u8; MEDIA_HEADER_LEN] {
    let t = track.to_be_bytes();
    [VERSION, flags, layer, 0, t[0], t[1], t[2], t[3]]
}

/// One RTP packet of one track (and layer) between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDatagram {
    /// The sending node's number for the track.
    pub track: u32,
    /// Simulcast spatial layer (0 = lowest).
    pub layer: u8,
    /// [`FLAG_KEYFRAME`] or 0.
    pub flags: u8,
    /// The RTP packet, unchanged: on receipt a view into the QUIC
    /// datagram's buffer, so the payload is copied once (into the engine's
    /// shared packet), not twice.
    pub rtp: Bytes,
}

impl MediaDatagram {
    /// Bytes this datagram takes on the wire (before QUIC's own overhead).
    pub fn encoded_len(&self) -> usize {
        MEDIA_HEADER_LEN + self.rtp.len()
    }

    /// Appends the encoded datagram to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&media_header(self.track, self.layer, self.flags));
        out.extend_from_slice(&self.rtp);
    }

    /// The encoded datagram.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out.into()
    }

    /// Parses a datagram, checking every header field and that the payload
    /// starts like an RTP packet.
    pub fn decode(bytes: &Bytes) -> Result<MediaDatagram, WireError> {
        let (header, rtp) = bytes
            .split_first_chunk::<MEDIA_HEADER_LEN>()
            .filter(|(_, rtp)| rtp.len() >= MIN_RTP_LEN)
            .ok_or(WireError::TooShort(bytes.len()))?;
        let [version, flags, layer, reserved, t0, t1, t2, t3] = *header;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        if flags & !KNOWN_FLAGS != 0 {
            return Err(WireError::Flags(flags));
        }
        if reserved != 0 {
            return Err(WireError::Reserved(reserved));
        }
        if layer > MAX_LAYER {
            return Err(WireError::Layer(layer));
        }
        if rtp[0] >> 6 != 2 {
            return Err(WireError::NotRtp);
        }
        Ok(MediaDatagram {
            track: u32::from_be_bytes([t0, t1, t2, t3]),
            layer,
            flags,
            rtp: bytes.slice(MEDIA_HEADER_LEN..),
        })
    }
}

/// Who receives a relayed message on the receiving node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayTo {
    /// Everyone in the room on that node.
    Everyone,
    /// These participants (those not on that node are ignored).
    Participants(Vec<String>),
}

/// One of a published track's codecs: the payload type its RTP packets
/// carry and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrunkCodec {
    /// RTP payload type as the publisher sends it.
    pub pt: u8,
    /// Codec, clock rate, channels and format parameters.
    pub spec: CodecSpec,
}

/// A control message on the trunk's control stream. Room events name the
/// room; the payloads are those of docs/protocol.md, so the receiving node
/// can hand them to its participants as if the sender were local.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// First message each way: who the sender is, and its proof of the
    /// cluster secret (hex HMAC-SHA256, see `trunk/auth.rs`).
    Hello {
        /// [`VERSION`].
        version: u8,
        /// The sender's node id.
        node_id: String,
        /// Hex HMAC over the connection's exported keying material.
        proof: String,
    },
    /// Send me this track's datagrams, of these spatial layers.
    SubscribeTrack {
        /// The receiver's (this message's recipient's) track number.
        track: u32,
        /// Spatial layers wanted (replaces any earlier choice).
        layers: Vec<u8>,
    },
    /// Stop sending this track.
    UnsubscribeTrack {
        /// The recipient's track number.
        track: u32,
    },
    /// Ask the publisher of this track (and layer) for a keyframe.
    KeyframeRequest {
        /// The recipient's track number.
        track: u32,
        /// Spatial layer.
        layer: u8,
    },
    /// A participant on the sender's node published a track.
    TrackPublished {
        /// Room.
        room: String,
        /// The sender's number for it (datagrams carry it).
        track: u32,
        /// Spatial layers the publisher sends (`[0]` without simulcast).
        layers: Vec<u8>,
        /// As in `track_published`.
        info: TrackInfo,
        /// The publisher's codecs for the track by payload type, so the
        /// receiving node reads the datagrams' RTP payload types as the
        /// publisher's node does.
        #[serde(default)]
        codecs: Vec<TrunkCodec>,
    },
    /// A track is gone.
    TrackUnpublished {
        /// Room.
        room: String,
        /// The sender's number for it.
        track: u32,
    },
    /// A track's mute state changed.
    TrackMuted {
        /// Room.
        room: String,
        /// The sender's number for it.
        track: u32,
        /// New state.
        muted: bool,
    },
    /// A participant joined the room on the sender's node.
    ParticipantJoined {
        /// Room.
        room: String,
        /// As in `participant_joined`.
        participant: ParticipantInfo,
    },
    /// A participant on the sender's node left the room.
    ParticipantLeft {
        /// Room.
        room: String,
        /// Its id.
        participant_id: String,
    },
    /// The sender holds participants of this room: send it the room's
    /// participants and tracks on this node, then every change, until
    /// `room_left` (or the connection ends).
    RoomSync {
        /// Room.
        room: String,
    },
    /// The sender no longer holds this room (or never did, in answer to a
    /// `room_sync`): stop sending its events and media.
    RoomLeft {
        /// Room.
        room: String,
    },
    /// A `relay` from a participant on the sender's node.
    Relay {
        /// Room.
        room: String,
        /// Sender's participant id (set by its node, never by the client).
        from: String,
        /// Recipients.
        to: RelayTo,
        /// The payload's JSON text exactly as the client sent it (a string
        /// here, so the text survives byte for byte).
        payload: String,
    },
}

impl Control {
    /// Checks what serde cannot: lengths and ranges.
    pub fn validate(&self) -> Result<(), WireError> {
        let bad = |m: String| Err(WireError::BadControl(m));
        let id = |what: &str, s: &str| {
            if s.is_empty() || s.len() > MAX_ID_LEN {
                Err(WireError::BadControl(format!(
                    "{what} must be 1..={MAX_ID_LEN} bytes, got {}",
                    s.len()
                )))
            } else {
                Ok(())
            }
        };
        let layers = |l: &[u8]| {
            if l.is_empty() || l.len() > usize::from(MAX_LAYER) + 1 {
                return Err(WireError::BadControl(format!(
                    "layers must list 1..={} layers",
                    MAX_LAYER + 1
                )));
            }
            match l.iter().find(|&&x| x > MAX_LAYER) {
                Some(x) => Err(WireError::Layer(*x)),
                None => Ok(()),
            }
        };
        match self {
            Control::Hello {
                version,
                node_id,
                proof,
            } => {
                if *version != VERSION {
                    return Err(WireError::Version(*version));
                }
                crate::cluster::node_id::check(node_id)
                    .map_err(|e| WireError::BadControl(e.to_string()))?;
                if proof.len() != 64 {
                    return bad(format!("proof must be 64 hex digits, got {}", proof.len()));
                }
                Ok(())
            }
            Control::SubscribeTrack { layers: l, .. } => layers(l),
            Control::UnsubscribeTrack { .. } => Ok(()),
            Control::KeyframeRequest { layer, .. } if *layer > MAX_LAYER => {
                Err(WireError::Layer(*layer))
            }
            Control::KeyframeRequest { .. } => Ok(()),
            Control::TrackPublished {
                room,
                layers: l,
                info,
                ..
            } => {
                id("room", room)?;
                id("track id", &info.id)?;
                id("participant id", &info.participant_id)?;
                layers(l)
            }
            Control::TrackUnpublished { room, .. }
            | Control::TrackMuted { room, .. }
            | Control::RoomSync { room }
            | Control::RoomLeft { room } => id("room", room),
            Control::ParticipantJoined { room, participant } => {
                id("room", room)?;
                id("participant id", &participant.id)
            }
            Control::ParticipantLeft {
                room,
                participant_id,
            } => {
                id("room", room)?;
                id("participant id", participant_id)
            }
            Control::Relay {
                room,
                from,
                to,
                payload,
            } => {
                id("room", room)?;
                id("from", from)?;
                if serde_json::from_str::<&RawValue>(payload).is_err() {
                    return bad("relay payload is not JSON".into());
                }
                if let RelayTo::Participants(ids) = to {
                    ids.iter().try_for_each(|p| id("recipient", p))?;
                }
                Ok(())
            }
        }
    }

    /// The control frame: length prefix and JSON.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let body = serde_json::to_vec(self).map_err(|e| WireError::BadControl(e.to_string()))?;
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&n| n as usize <= MAX_CONTROL_BYTES)
            .ok_or(WireError::ControlTooLarge(body.len()))?;
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Parses and validates one control message body (without its prefix).
    pub fn decode_body(body: &[u8]) -> Result<Control, WireError> {
        let msg: Control =
            serde_json::from_slice(body).map_err(|e| WireError::BadControl(e.to_string()))?;
        msg.validate()?;
        Ok(msg)
    }
}

/// Splits a control stream's bytes into messages, whatever the chunking.
#[derive(Debug, Default)]
pub struct ControlDecoder {
    buf: Vec<u8>,
}

impl ControlDecoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed. An
    /// error is final: the stream is out of sync and must be closed.
    pub fn next_message(&mut self) -> Result<Option<Control>, WireError> {
        let Some((len, rest)) = self.buf.split_first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > MAX_CONTROL_BYTES {
            return Err(WireError::ControlTooLarge(len));
        }
        if rest.len() < len {
            return Ok(None);
        }
        let msg = Control::decode_body(&rest[..len]);
        self.buf.drain(..4 + len);
        msg.map(Some)
    }

    /// Bytes buffered and not yet a whole message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rtp(payload: &[u8]) -> Bytes {
        let mut p = vec![0x80, 96, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7];
        p.extend_from_slice(payload);
        p.into()
    }

    #[test]
    fn media_header_layout_is_as_documented() {
        let d = MediaDatagram {
            track: 0x0102_0304,
            layer: 2,
            flags: FLAG_KEYFRAME,
            rtp: rtp(b"x"),
        };
        let bytes = d.encode();
        assert_eq!(&bytes[..8], &[1, 1, 2, 0, 1, 2, 3, 4]);
        assert_eq!(&bytes[8..], &d.rtp[..]);
        assert_eq!(MediaDatagram::decode(&bytes), Ok(d));
    }

    #[test]
    fn bad_datagrams_are_named() {
        let good = MediaDatagram {
            track: 1,
            layer: 0,
            flags: 0,
            rtp: rtp(b""),
        }
        .encode();
        assert_eq!(
            MediaDatagram::decode(&good.slice(..19)),
            Err(WireError::TooShort(19))
        );
        let with = |i: usize, v: u8| {
            let mut b = good.to_vec();
            b[i] = v;
            MediaDatagram::decode(&b.into())
        };
        assert_eq!(with(0, 2), Err(WireError::Version(2)));
        assert_eq!(with(1, 0x80), Err(WireError::Flags(0x80)));
        assert_eq!(with(2, 4), Err(WireError::Layer(4)));
        assert_eq!(with(3, 1), Err(WireError::Reserved(1)));
        assert_eq!(with(8, 0x40), Err(WireError::NotRtp));
    }

    #[test]
    fn control_frames_split_anywhere() {
        let msgs = vec![
            Control::SubscribeTrack {
                track: 7,
                layers: vec![0, 2],
            },
            Control::Relay {
                room: "r".into(),
                from: "PA_1".into(),
                to: RelayTo::Everyone,
                payload: "{ \"k\" : [1, 2] }".into(),
            },
            Control::ParticipantLeft {
                room: "r".into(),
                participant_id: "PA_1".into(),
            },
        ];
        let bytes: Vec<u8> = msgs.iter().flat_map(|m| m.encode().unwrap()).collect();
        for chunk in [1, 3, 7, bytes.len()] {
            let mut d = ControlDecoder::new();
            let mut out = Vec::new();
            for c in bytes.chunks(chunk) {
                d.push(c);
                while let Some(m) = d.next_message().unwrap() {
                    out.push(m);
                }
            }
            assert_eq!(out, msgs);
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn relay_payload_text_is_untouched() {
        let text = "{ \"b\":1,  \"a\" : \"x\" }";
        let m = Control::Relay {
            room: "r".into(),
            from: "PA_1".into(),
            to: RelayTo::Participants(vec!["PA_2".into()]),
            payload: text.into(),
        };
        let mut d = ControlDecoder::new();
        d.push(&m.encode().unwrap());
        let Some(Control::Relay { payload, .. }) = d.next_message().unwrap() else {
            panic!("not a relay");
        };
        assert_eq!(payload, text);
    }

    #[test]
    fn bad_control_frames_are_clear_errors() {
        let mut d = ControlDecoder::new();
        d.push(&(MAX_CONTROL_BYTES as u32 + 1).to_be_bytes());
        assert!(matches!(
            d.next_message(),
            Err(WireError::ControlTooLarge(_))
        ));
        for body in [
            &b"not json"[..],
            br#"{"type":"nope"}"#,
            br#"{"type":"subscribe_track","track":1,"layers":[9]}"#,
            br#"{"type":"subscribe_track","track":1,"layers":[]}"#,
            br#"{"type":"participant_left","room":"","participant_id":"p"}"#,
            br#"{"type":"hello","version":1,"node_id":"a b","proof":"00"}"#,
            br#"{"type":"hello","version":9,"node_id":"a","proof":"00"}"#,
            br#"{"type":"relay","room":"r","from":"p","to":"everyone","payload":"{nope"}"#,
        ] {
            let e = Control::decode_body(body).unwrap_err();
            assert!(!e.to_string().is_empty());
        }
    }

    fn any_control() -> impl Strategy<Value = Control> {
        let id = "[A-Za-z0-9_]{1,20}";
        let layers = proptest::collection::vec(0..=MAX_LAYER, 1..=4);
        prop_oneof![
            (any::<u32>(), layers.clone())
                .prop_map(|(track, layers)| Control::SubscribeTrack { track, layers }),
            any::<u32>().prop_map(|track| Control::UnsubscribeTrack { track }),
            (any::<u32>(), 0..=MAX_LAYER)
                .prop_map(|(track, layer)| Control::KeyframeRequest { track, layer }),
            (id, any::<u32>(), layers, id, id, any::<bool>()).prop_map(
                |(room, track, layers, tid, pid, muted)| Control::TrackPublished {
                    room,
                    track,
                    layers,
                    info: TrackInfo {
                        id: tid,
                        participant_id: pid,
                        kind: "video".into(),
                        mid: "1".into(),
                        source: Some("camera".into()),
                        muted,
                    },
                    codecs: Vec::new(),
                }
            ),
            id.prop_map(|room| Control::RoomSync { room }),
            id.prop_map(|room| Control::RoomLeft { room }),
            (id, any::<u32>(), any::<bool>())
                .prop_map(|(room, track, muted)| { Control::TrackMuted { room, track, muted } }),
            (id, id, ".{0,40}").prop_map(|(room, from, text)| Control::Relay {
                room,
                from,
                to: RelayTo::Everyone,
                payload: serde_json::to_string(&text).unwrap(),
            }),
        ]
    }

    proptest! {
        #[test]
        fn media_round_trips(track in any::<u32>(), layer in 0..=MAX_LAYER, key in any::<bool>(),
                             payload in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let d = MediaDatagram { track, layer, flags: if key { FLAG_KEYFRAME } else { 0 }, rtp: rtp(&payload) };
            prop_assert_eq!(MediaDatagram::decode(&d.encode()), Ok(d));
        }

        #[test]
        fn control_round_trips(m in any_control()) {
            let mut d = ControlDecoder::new();
            d.push(&m.encode().unwrap());
            prop_assert_eq!(d.next_message().unwrap(), Some(m));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = MediaDatagram::decode(&Bytes::copy_from_slice(&bytes));
            let mut d = ControlDecoder::new();
            d.push(&bytes);
            let _ = d.next_message();
        }
    }
}
