//! Hostile input: the decoders never panic, whatever the bytes, and every record of the
//! committed corpus (`tests/corpus/hostile.jsonl`: oversized, deeply nested, NaN and
//! infinity, out-of-range numbers and times, wrong types, unknown fields, invalid UTF-8,
//! garbage) ends as the documented acceptance or rejection, with a reason.

use proptest::prelude::*;
use wearflow_sources::{Event, StreamKind, decode};

fn stream_named(name: &str) -> StreamKind {
    StreamKind::ALL
        .into_iter()
        .find(|s| s.name() == name)
        .unwrap_or_else(|| panic!("unknown stream {name}"))
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn the_corpus_ends_as_documented() {
    let corpus = include_str!("corpus/hostile.jsonl");
    let mut cases = 0;
    for line in corpus.lines() {
        let case: serde_json::Value = serde_json::from_str(line).expect("corpus line");
        let stream = stream_named(case["stream"].as_str().expect("stream"));
        let name = case["name"].as_str().expect("name");
        let bytes = match (case["record"].as_str(), case["hex"].as_str()) {
            (Some(record), _) => record.as_bytes().to_vec(),
            (None, Some(h)) => hex(h),
            _ => panic!("{name}: no record"),
        };
        let expect = case["expect"].as_str().expect("expect");
        let outcome = decode(stream, 7, 42, &bytes);
        match (expect.strip_prefix("reject:"), outcome) {
            (None, Ok(event)) => {
                assert_eq!(expect, "accept", "{name}");
                // What is accepted re-encodes to a line that decodes to the same event.
                let again = decode(stream, 0, 0, event.to_json_line().as_bytes());
                assert_eq!(again.as_ref().ok(), Some(&event), "{name}: round trip");
            }
            (None, Err(e)) => panic!("{name}: expected acceptance, rejected: {}", e.reason),
            (Some(reason), Ok(event)) => {
                panic!("{name}: expected rejection ({reason}), accepted {event:?}")
            }
            (Some(reason), Err(e)) => {
                assert!(e.reason.contains(reason), "{name}: reason {:?}", e.reason);
                assert_eq!((e.partition, e.position), (7, 42), "{name}: located");
                assert!(e.raw.len() <= 1024, "{name}: raw bytes are bounded");
            }
        }
        cases += 1;
    }
    assert!(cases >= 25, "the corpus has {cases} cases");
}

/// A valid telemetry line to mutate.
const VALID: &str = r#"{"device_id":"M1-T1","machine_id":"M1","ts":1767225600000,"metrics":{"remaining_mm":41.5,"impact_g":3.2}}"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Arbitrary bytes on any stream: a clean `Ok` or `Err`, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), s in 0usize..4) {
        let stream = StreamKind::ALL[s];
        if let Ok(event) = decode(stream, 0, 0, &bytes) {
            prop_assert_eq!(event.stream(), stream);
        }
    }

    /// A valid line with one byte replaced, inserted or removed: never a panic, and what is
    /// accepted still re-encodes to itself.
    #[test]
    fn mutated_lines_never_panic(at in 0usize..VALID.len(), byte in any::<u8>(), op in 0u8..3) {
        let mut bytes = VALID.as_bytes().to_vec();
        match op {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ => { bytes.remove(at); }
        }
        if let Ok(event) = decode(StreamKind::Telemetry, 0, 0, &bytes) {
            let again = decode(StreamKind::Telemetry, 0, 0, event.to_json_line().as_bytes());
            prop_assert_eq!(again.ok(), Some(event));
        }
    }

    /// Any JSON number as a metric: accepted exactly when finite and within ±9·10¹².
    #[test]
    fn metric_values_are_bounded(value in any::<f64>()) {
        let line = format!(
            r#"{{"device_id":"d","machine_id":"m","ts":1767225600000,"metrics":{{"load_kn":{}}}}}"#,
            serde_json::Number::from_f64(value).map_or("null".to_string(), |n| n.to_string())
        );
        let accepted = matches!(decode(StreamKind::Telemetry, 0, 0, line.as_bytes()), Ok(Event::Telemetry(_)));
        prop_assert_eq!(accepted, value.is_finite() && value.abs() <= 9.0e12, "{}", line);
    }
}
