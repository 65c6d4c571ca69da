use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::*;

fn key() -> Key {
    Key::new(b"correct horse battery staple").unwrap()
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), port)
}

fn heartbeat() -> Message {
    Message::Heartbeat {
        run: 5,
        position: 2,
        epoch: 7,
        seq: 99,
    }
}

/// A frame with a valid tag around any body: what a buggy peer holding the key could send.
fn sealed(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = MAGIC.to_vec();
    frame.extend_from_slice(&[VERSION, kind]);
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(body);
    let tag = key().tag(&[&frame]);
    frame.extend_from_slice(&tag);
    frame
}

fn read(bytes: &[u8], max_body: usize) -> Result<Message, ControlError> {
    read_message(&mut Cursor::new(bytes), &key(), max_body)
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn peers() -> impl Strategy<Value = Vec<Peer>> {
    prop::collection::vec(
        (any::<u16>(), addr(), addr()).prop_map(|(position, data, transfer)| Peer {
            position,
            data,
            transfer,
        }),
        0..8,
    )
}

fn message() -> impl Strategy<Value = Message> {
    let fetch = (any::<u8>(), any::<bool>(), any::<u16>(), addr()).prop_map(
        |(group, as_head, source, addr)| Fetch {
            group,
            as_head,
            source,
            addr,
        },
    );
    prop_oneof![
        (
            (any::<u16>(), any::<u32>(), any::<u64>()),
            (addr(), addr(), any::<Nonce>(), any::<Option<Nonce>>()),
            any::<Option<(u32, u32)>>()
        )
            .prop_map(
                |((position, pid, chain), (data, transfer, nonce, launch), serving)| {
                    Message::Join {
                        position,
                        pid,
                        chain,
                        data,
                        transfer,
                        nonce,
                        launch,
                        serving: serving.map(|(epoch, routed)| Serving { epoch, routed }),
                    }
                }
            ),
        (any::<u64>(), any::<Nonce>(), any::<u64>()).prop_map(|(run, nonce, heartbeat_ns)| {
            Message::Challenge {
                run,
                nonce,
                heartbeat_ns,
            }
        }),
        ".{0,200}".prop_map(|reason| Message::Refused { reason }),
        (any::<u64>(), any::<u16>(), any::<u32>(), any::<u64>()).prop_map(
            |(run, position, epoch, seq)| {
                Message::Heartbeat {
                    run,
                    position,
                    epoch,
                    seq,
                }
            }
        ),
        (any::<u64>(), any::<u16>(), any::<u32>(), any::<u64>()).prop_map(
            |(run, position, epoch, bytes)| {
                Message::Ready {
                    run,
                    position,
                    epoch,
                    bytes,
                }
            }
        ),
        (
            any::<u64>(),
            any::<u16>(),
            any::<u32>(),
            any::<u8>(),
            any::<u16>()
        )
            .prop_map(
                |(run, position, epoch, group, source)| Message::TransferFailed {
                    run,
                    position,
                    epoch,
                    group,
                    source,
                }
            ),
        (any::<u64>(), any::<u16>(), any::<u32>()).prop_map(|(run, position, epoch)| {
            Message::Resumed {
                run,
                position,
                epoch,
            }
        }),
        (any::<u64>(), any::<u32>(), any::<u16>(), peers()).prop_map(
            |(run, epoch, position, peers)| Message::Assign {
                run,
                epoch,
                position,
                peers,
            }
        ),
        (any::<u32>(), prop::collection::vec(any::<u16>(), 0..8))
            .prop_map(|(epoch, failed)| Message::Fence { epoch, failed }),
        (
            any::<u64>(),
            any::<u32>(),
            prop::collection::vec(fetch, 0..8)
        )
            .prop_map(|(run, epoch, fetch)| Message::Recover { run, epoch, fetch }),
        (any::<u32>(), peers()).prop_map(|(epoch, peers)| Message::Reroute { epoch, peers }),
        Just(Message::Stop),
        (any::<u64>(), any::<Nonce>())
            .prop_map(|(run, nonce)| Message::TransferChallenge { run, nonce }),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u8>(),
            any::<bool>(),
            any::<Nonce>()
        )
            .prop_map(|(run, epoch, group, as_head, nonce)| Message::FetchGroup {
                run,
                epoch,
                group,
                as_head,
                nonce,
            }),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(run, epoch, group, state)| Message::GroupState {
                run,
                epoch,
                group,
                state,
            }),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(msg in message()) {
        let frame = encode(&msg, &key());
        prop_assert_eq!(decode(&frame, &key(), DEFAULT_MAX_BODY).unwrap(), msg.clone());
        let mut written = Vec::new();
        write_message(&mut written, &msg, &key()).unwrap();
        prop_assert_eq!(&written, &frame);
        // Two frames back to back on one stream, then a clean end.
        written.extend_from_slice(&frame);
        let mut stream = Cursor::new(&written[..]);
        for _ in 0..2 {
            prop_assert_eq!(read_message(&mut stream, &key(), DEFAULT_MAX_BODY).unwrap(), msg.clone());
        }
        prop_assert!(matches!(
            read_message(&mut stream, &key(), DEFAULT_MAX_BODY),
            Err(ControlError::Closed)
        ));
    }

    #[test]
    fn a_flipped_bit_anywhere_is_rejected(msg in message(), seed in any::<usize>()) {
        let mut frame = encode(&msg, &key());
        let bit = seed % (frame.len() * 8);
        frame[bit / 8] ^= 1 << (bit % 8);
        let got = decode(&frame, &key(), DEFAULT_MAX_BODY).unwrap_err();
        let from_stream = read(&frame, DEFAULT_MAX_BODY).unwrap_err();
        let same = std::mem::discriminant(&from_stream) == std::mem::discriminant(&got);
        let ok = match bit / 8 {
            0..4 => matches!(got, ControlError::BadMagic(_)) && same,
            4 => matches!(got, ControlError::UnsupportedVersion(_)) && same,
            // Another known kind fails the tag; anything else is unknown.
            5 => matches!(got, ControlError::UnknownKind(_) | ControlError::BadTag) && same,
            // A shorter length leaves bytes after the frame; a stream reads its tag from the
            // wrong place.
            6..10 => match got {
                ControlError::TrailingBytes(_) => matches!(from_stream, ControlError::BadTag),
                ControlError::Truncated { .. } | ControlError::TooLong { .. } => same,
                _ => false,
            },
            _ => matches!(got, ControlError::BadTag) && same,
        };
        prop_assert!(ok, "bit {} of {:?}: {} / {}", bit, msg, got, from_stream);
    }

    #[test]
    fn every_truncation_is_rejected(msg in message(), seed in any::<usize>()) {
        let frame = encode(&msg, &key());
        let cut = seed % frame.len();
        let got = decode(&frame[..cut], &key(), DEFAULT_MAX_BODY).unwrap_err();
        prop_assert!(
            matches!(got, ControlError::Truncated { got, .. } if got == cut),
            "{}", got
        );
        let from_stream = read(&frame[..cut], DEFAULT_MAX_BODY).unwrap_err();
        if cut == 0 {
            prop_assert!(matches!(from_stream, ControlError::Closed));
        } else {
            prop_assert!(
                matches!(from_stream, ControlError::Truncated { needed, got }
                    if got == cut && (needed == frame.len() || needed == HEADER_LEN)),
                "{}", from_stream
            );
        }
    }

    #[test]
    fn a_wrong_key_is_rejected(msg in message(), secret in prop::collection::vec(any::<u8>(), 1..40)) {
        prop_assume!(secret != b"correct horse battery staple");
        let frame = encode(&msg, &Key::new(&secret).unwrap());
        prop_assert!(matches!(decode(&frame, &key(), DEFAULT_MAX_BODY), Err(ControlError::BadTag)));
        prop_assert!(matches!(read(&frame, DEFAULT_MAX_BODY), Err(ControlError::BadTag)));
    }
}

#[test]
fn an_empty_secret_is_refused_and_keys_do_not_print_theirs() {
    assert!(matches!(Key::new(b""), Err(ControlError::EmptySecret)));
    assert_eq!(format!("{:?}", key()), "Key(..)");
}

#[test]
fn another_version_is_named_in_the_error() {
    let mut frame = encode(&heartbeat(), &key());
    frame[4] = 1;
    let err = decode(&frame, &key(), DEFAULT_MAX_BODY).unwrap_err();
    assert!(matches!(err, ControlError::UnsupportedVersion(1)));
    assert_eq!(
        err.to_string(),
        "control protocol version 1 is not supported (this build speaks version 7)"
    );
    assert!(matches!(
        read(&frame, DEFAULT_MAX_BODY),
        Err(ControlError::UnsupportedVersion(1))
    ));
}

/// A version 1 frame, tagged with HMAC-SHA256 as version 1 did, by hand.
fn hmac_sha256_frame(secret: &[u8], body_kind: u8, body: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut frame = MAGIC.to_vec();
    frame.extend_from_slice(&[1, body_kind]);
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(body);
    let mut k = [0u8; 64];
    k[..secret.len()].copy_from_slice(secret);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(&frame)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    frame.extend_from_slice(&outer);
    frame
}

#[test]
fn a_version_1_frame_is_refused_even_with_its_version_byte_changed() {
    let secret = b"correct horse battery staple";
    let body = [
        0, 0, 0, 0, 0, 0, 0, 5, 0, 2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 99,
    ];
    let old = hmac_sha256_frame(secret, 2, &body);
    assert!(matches!(
        decode(&old, &key(), DEFAULT_MAX_BODY),
        Err(ControlError::UnsupportedVersion(1))
    ));
    // Its HMAC-SHA256 tag is not a tag of this version.
    let mut relabelled = old.clone();
    relabelled[4] = VERSION;
    assert!(matches!(
        decode(&relabelled, &key(), DEFAULT_MAX_BODY),
        Err(ControlError::BadTag)
    ));
    // The same body under this version's tag is the heartbeat.
    assert_eq!(
        decode(
            &sealed(2, &old[HEADER_LEN..old.len() - TAG_LEN]),
            &key(),
            DEFAULT_MAX_BODY
        )
        .unwrap(),
        heartbeat()
    );
}

#[test]
fn a_borrowed_group_state_is_written_as_its_message_is() {
    for len in [0, 1, STREAM_CHUNK - 1, STREAM_CHUNK, 3 * STREAM_CHUNK + 17] {
        let state: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
        let msg = Message::GroupState {
            run: 0x0123_4567_89ab_cdef,
            epoch: 9,
            group: 4,
            state: state.clone(),
        };
        let mut written = Vec::new();
        write_group_state(&mut written, 0x0123_4567_89ab_cdef, 9, 4, &state, &key()).unwrap();
        assert_eq!(written, encode(&msg, &key()), "{len} bytes");
        let mut streamed = Vec::new();
        write_message(&mut streamed, &msg, &key()).unwrap();
        assert_eq!(written, streamed);
        assert_eq!(read(&written, DEFAULT_MAX_BODY).unwrap(), msg);
        // Cut anywhere in its body or tag: a truncation; any byte flipped: refused.
        for cut in [HEADER_LEN + 1, written.len() / 2, written.len() - 1] {
            assert!(matches!(
                read(&written[..cut], DEFAULT_MAX_BODY),
                Err(ControlError::Truncated { .. })
            ));
        }
        for at in [
            HEADER_LEN,
            HEADER_LEN + 5,
            written.len() / 2,
            written.len() - 1,
        ] {
            let mut bad = written.clone();
            bad[at] ^= 1;
            assert!(matches!(
                read(&bad, DEFAULT_MAX_BODY),
                Err(ControlError::BadTag)
            ));
        }
    }
}

#[test]
fn a_body_over_the_limit_is_refused_before_it_is_read() {
    let msg = Message::GroupState {
        run: 5,
        epoch: 3,
        group: 1,
        state: vec![7; 100],
    };
    let frame = encode(&msg, &key());
    for limit in [0, 112] {
        assert!(matches!(
            decode(&frame, &key(), limit),
            Err(ControlError::TooLong { len: 113, max }) if max == limit
        ));
    }
    assert_eq!(decode(&frame, &key(), 113).unwrap(), msg);
    // A header that claims 4 GiB on a control connection: refused from the header alone.
    let mut header = frame[..HEADER_LEN].to_vec();
    header[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        read(&header, CONTROL_MAX_BODY),
        Err(ControlError::TooLong { len, max: CONTROL_MAX_BODY }) if len == u32::MAX as usize
    ));
    // One that claims 1 GiB within the limit but sends 10 bytes: a truncation, not a 1 GiB
    // buffer waiting to be filled.
    header[6..10].copy_from_slice(&(1u32 << 30).to_be_bytes());
    header.extend_from_slice(&[0; 10]);
    assert!(matches!(
        read(&header, DEFAULT_MAX_BODY),
        Err(ControlError::Truncated { got: 20, .. })
    ));
}

#[test]
fn bytes_after_the_frame_are_refused() {
    let mut frame = encode(&heartbeat(), &key());
    frame.push(0);
    assert!(matches!(
        decode(&frame, &key(), DEFAULT_MAX_BODY),
        Err(ControlError::TrailingBytes(1))
    ));
}

#[test]
fn a_full_ring_of_ipv6_peers_fits_a_control_connection() {
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 9000);
    let peers = (0..255)
        .map(|position| Peer {
            position,
            data: v6,
            transfer: v6,
        })
        .collect();
    let msg = Message::Reroute { epoch: 1, peers };
    let frame = encode(&msg, &key());
    assert_eq!(decode(&frame, &key(), CONTROL_MAX_BODY).unwrap(), msg);
}

#[test]
fn malformed_bodies_under_a_valid_tag_say_what_is_wrong() {
    let decoded = |kind, body: &[u8]| decode(&sealed(kind, body), &key(), DEFAULT_MAX_BODY);
    // Heartbeat (kind 2) cut inside its run.
    assert!(matches!(
        decoded(2, &[0, 1, 0]),
        Err(ControlError::BodyTooShort { kind: "Heartbeat" })
    ));
    // Stop (kind 10) has no body.
    assert!(matches!(
        decoded(10, &[0]),
        Err(ControlError::BodyTooLong {
            kind: "Stop",
            extra: 1
        })
    ));
    // Fence (kind 7) claiming 40,000 failed servers in 2 bytes.
    let mut fence = 1u32.to_be_bytes().to_vec();
    fence.extend_from_slice(&40_000u16.to_be_bytes());
    fence.extend_from_slice(&[0, 1]);
    assert!(matches!(
        decoded(7, &fence),
        Err(ControlError::BadCount {
            kind: "Fence",
            count: 40_000,
            remaining: 2
        })
    ));
    // Join (kind 1) with address family 5.
    let mut join = vec![0, 1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 7, 5];
    join.extend_from_slice(&[0; 20]);
    assert!(matches!(
        decoded(1, &join),
        Err(ControlError::BadAddressFamily {
            kind: "Join",
            family: 5
        })
    ));
    // FetchGroup (kind 11) with as_head = 2.
    assert!(matches!(
        decoded(11, &[0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 1, 3, 2]),
        Err(ControlError::BadFlag {
            kind: "FetchGroup",
            value: 2
        })
    ));
    // GroupState (kind 12) shorter than its fixed part.
    assert!(matches!(
        decoded(12, &[0; 12]),
        Err(ControlError::BodyTooShort { kind: "GroupState" })
    ));
    // Refused (kind 13) whose text is not UTF-8.
    assert!(matches!(
        decoded(13, &[0, 2, 0xc3, 0x28]),
        Err(ControlError::BadText { kind: "Refused" })
    ));
    // An unknown kind is refused from the header, before the tag.
    assert!(matches!(
        decoded(16, &[]),
        Err(ControlError::UnknownKind(16))
    ));
    // The same bodies well-formed decode.
    let mut fetch_group = vec![0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 1, 3, 1];
    // A FetchGroup of version 5, without the nonce, is cut short.
    assert!(matches!(
        decoded(11, &fetch_group),
        Err(ControlError::BodyTooShort { kind: "FetchGroup" })
    ));
    fetch_group.extend_from_slice(&[5; NONCE_LEN]);
    assert_eq!(
        decoded(11, &fetch_group).unwrap(),
        Message::FetchGroup {
            run: 8,
            epoch: 1,
            group: 3,
            as_head: true,
            nonce: [5; NONCE_LEN],
        }
    );
    let mut challenge = vec![0, 0, 0, 0, 0, 0, 0, 8];
    challenge.extend_from_slice(&[6; NONCE_LEN]);
    assert_eq!(
        decoded(15, &challenge).unwrap(),
        Message::TransferChallenge {
            run: 8,
            nonce: [6; NONCE_LEN],
        }
    );
    let mut join = vec![
        0, 1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 7, 4, 10, 0, 0, 1, 0, 80,
    ];
    join.extend_from_slice(&[4, 10, 0, 0, 1, 0, 81]);
    join.extend_from_slice(&[3; NONCE_LEN]);
    // A Join of version 4, without the nonce, is cut short.
    assert!(matches!(
        decoded(1, &join[..join.len() - NONCE_LEN]),
        Err(ControlError::BodyTooShort { kind: "Join" })
    ));
    join.push(0);
    // A Join of version 6, without the serving flag, is cut short.
    assert!(matches!(
        decoded(1, &join),
        Err(ControlError::BodyTooShort { kind: "Join" })
    ));
    join.push(0);
    let mut launched = join.clone();
    assert_eq!(
        decoded(1, &join).unwrap(),
        Message::Join {
            position: 1,
            pid: 9,
            chain: 7,
            data: v4(80),
            transfer: v4(81),
            nonce: [3; NONCE_LEN],
            launch: None,
            serving: None,
        }
    );
    // A rejoining node's: a flag byte, then (flag 1) its epoch and the epoch of its routing.
    let mut rejoin = join.clone();
    let last = rejoin.len() - 1;
    rejoin[last] = 1;
    rejoin.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 4]);
    assert!(matches!(
        decoded(1, &rejoin).unwrap(),
        Message::Join {
            serving: Some(Serving {
                epoch: 5,
                routed: 4
            }),
            ..
        }
    ));
    // The launch token is a flag byte, then (flag 1) the token.
    let flag = join.len() - 2;
    launched[flag] = 1;
    launched.truncate(flag + 1);
    launched.extend_from_slice(&[4; NONCE_LEN]);
    launched.push(0);
    assert!(matches!(
        decoded(1, &launched).unwrap(),
        Message::Join { launch: Some(token), .. } if token == [4; NONCE_LEN]
    ));
    launched[flag] = 2;
    assert!(matches!(
        decoded(1, &launched),
        Err(ControlError::BadFlag {
            kind: "Join",
            value: 2
        })
    ));
}

/// The chain's flow key is the same for everyone with the deployment's secret, and another for
/// another secret.
#[test]
fn the_flow_key_follows_the_secret() {
    let a = Key::new(b"secret a").unwrap();
    assert_eq!(a.flow_seed(), Key::new(b"secret a").unwrap().flow_seed());
    assert_ne!(a.flow_seed(), Key::new(b"secret b").unwrap().flow_seed());
}
