//! Property tests over every decoder of bytes from outside: random bytes, mutated real
//! messages (XML and binary) and generated nested values never panic, and what decodes
//! stays within the limits.
#![allow(clippy::unwrap_used)]

use orchard_protocol::bounded::{self, Limit, Limits};
use orchard_protocol::checkin::{Authenticate, CheckinMessage};
use orchard_protocol::command::CommandEnvelope;
use orchard_protocol::enroll::{EnrollRequest, EnrollResponse};
use orchard_protocol::push::FrameDecoder;
use orchard_protocol::report::{CommandReport, CommandStatus};
use orchard_protocol::{ProtocolError, Udid};
use plist::Value;
use proptest::prelude::*;

/// Runs every decoder over `bytes`; none may panic.
fn decode_everywhere(bytes: &[u8]) {
    let _ = CheckinMessage::from_xml(bytes);
    let _ = CommandReport::from_xml(bytes);
    let _ = EnrollRequest::from_xml(bytes);
    let _ = EnrollResponse::from_xml(bytes);
    let _ = CommandEnvelope::from_xml(bytes);
    let mut frames = FrameDecoder::default();
    frames.push_bytes(bytes);
    while let Ok(Some(_)) = frames.next_frame() {}
    if let Ok(value) = bounded::decode(bytes, Limits::DEVICE) {
        let (depth, count) = shape(&value);
        assert!(depth <= Limits::DEVICE.depth && count <= Limits::DEVICE.values);
    }
}

/// Depth and value count of a decoded value (keys not counted).
fn shape(value: &Value) -> (usize, usize) {
    match value {
        Value::Array(items) => items
            .iter()
            .map(shape)
            .fold((1, 1), |(d, c), (id, ic)| (d.max(id + 1), c + ic)),
        Value::Dictionary(dict) => dict
            .values()
            .map(shape)
            .fold((1, 1), |(d, c), (id, ic)| (d.max(id + 1), c + ic)),
        _ => (0, 1),
    }
}

fn real_messages() -> Vec<Vec<u8>> {
    let authenticate = CheckinMessage::Authenticate(Authenticate {
        topic: "com.apple.mgmt.External.test".into(),
        udid: "UDID-1".into(),
        os_version: Some("17.5".into()),
        build_version: Some("21F79".into()),
        product_name: Some("iPhone15,2".into()),
        serial_number: Some("SN1".into()),
        device_name: Some("iPhone".into()),
        model: None,
        model_name: Some("iPhone".into()),
    })
    .to_xml()
    .unwrap();
    let idle = CommandReport::new(Udid::from("UDID-1"), CommandStatus::Idle, None)
        .to_xml()
        .unwrap();
    let mut out = vec![authenticate, idle];
    let binary: Vec<Vec<u8>> = out
        .iter()
        .map(|xml| {
            let value: Value = plist::from_bytes(xml).unwrap();
            let mut b = Vec::new();
            plist::to_writer_binary(&mut b, &value).unwrap();
            b
        })
        .collect();
    out.extend(binary);
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..256).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let at = |i: usize| i % bytes.len();
    match m {
        Mutation::Flip(i, b) => {
            let i = at(*i);
            bytes[i] ^= b | 1;
        }
        Mutation::Truncate(i) => bytes.truncate(at(*i)),
        Mutation::Insert(i, b) => {
            let i = at(*i);
            bytes.splice(i..i, b.iter().copied());
        }
        Mutation::Duplicate(i, n) => {
            let i = at(*i);
            let end = (i + n).min(bytes.len());
            let copy = bytes[i..end].to_vec();
            bytes.splice(end..end, copy);
        }
    }
}

/// Nested values, up to `depth` levels of arrays and dictionaries.
fn nested(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(|i| Value::Integer(i.into())),
        "[a-zA-Z0-9 ]{0,12}".prop_map(Value::String),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Data),
    ];
    leaf.prop_recursive(depth, 256, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| { Value::Dictionary(m.into_iter().collect()) }),
        ]
    })
}

/// Wraps a value in `levels` single-element arrays.
fn wrap(mut value: Value, levels: usize) -> Value {
    for _ in 0..levels {
        value = Value::Array(vec![value]);
    }
    value
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        decode_everywhere(&bytes);
        let mut binary = b"bplist00".to_vec();
        binary.extend_from_slice(&bytes);
        decode_everywhere(&binary);
    }

    #[test]
    fn mutated_real_messages_never_panic(
        which in 0usize..4,
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let mut bytes = real_messages().swap_remove(which);
        for m in &mutations {
            apply(&mut bytes, m);
        }
        decode_everywhere(&bytes);
    }

    #[test]
    fn nested_values_decode_exactly_within_the_depth_limit(
        value in nested(6),
        extra in 0usize..40,
        binary in any::<bool>(),
    ) {
        let value = wrap(value, extra);
        let mut bytes = Vec::new();
        if binary {
            plist::to_writer_binary(&mut bytes, &value).unwrap();
        } else {
            plist::to_writer_xml(&mut bytes, &value).unwrap();
        }
        let (depth, _) = shape(&value);
        match bounded::decode(&bytes, Limits::DEVICE) {
            Ok(decoded) => {
                prop_assert!(depth <= Limits::DEVICE.depth);
                prop_assert_eq!(decoded, value);
            }
            Err(ProtocolError::LimitExceeded { limit: Limit::Depth, .. }) => {
                prop_assert!(depth > Limits::DEVICE.depth);
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}
