//! The no-panic property for an adapter's own decoding of stored bytes
//! ([semantics §10](crate::docs::semantics)): a version field, a DynamoDB attribute map, a CQL row, a
//! Delta log line — arbitrary or mutated bytes must give `Ok` or a named
//! [`Error::InvalidInput`], never a panic.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::error::Error;

/// Cases per decoder property in CI (each case is a few hundred bytes).
pub const DECODER_CASES: u32 = 10_000;

/// Runs `cases` inputs through `decode`: arbitrary bytes (biased to small
/// values and `0xff`), and `seeds` (valid encodings) with random byte edits,
/// insertions and truncations. `decode` must return `Ok` or
/// [`Error::InvalidInput`]; a panic or any other error fails with the input.
///
/// # Panics
/// When the property fails (this is a test helper).
pub fn decoder_never_panics<F>(name: &str, seeds: &[Vec<u8>], cases: u32, decode: F)
where
    F: Fn(&[u8]) -> Result<(), Error>,
{
    let byte = prop_oneof![
        4 => any::<u8>(),
        2 => 0u8..=16,
        1 => Just(0xffu8),
        1 => prop::sample::select(b"{}[]\":,0123456789-.eE".to_vec()),
    ];
    let arbitrary = prop::collection::vec(byte.clone(), 0..128).boxed();
    let strategy = if seeds.is_empty() {
        arbitrary
    } else {
        let seeds = seeds.to_vec();
        let mutated = (
            prop::sample::select(seeds),
            prop::collection::vec((any::<usize>(), byte.clone()), 0..4),
            prop::option::weighted(0.3, any::<usize>()),
            prop::option::weighted(0.3, (any::<usize>(), prop::collection::vec(byte, 1..6))),
        )
            .prop_map(|(base, edits, cut, insert)| {
                let mut b = base;
                for (pos, v) in edits {
                    if !b.is_empty() {
                        let i = pos % b.len();
                        b[i] = v;
                    }
                }
                if let Some((pos, bytes)) = insert {
                    let i = pos % (b.len() + 1);
                    b.splice(i..i, bytes);
                }
                if let Some(c) = cut {
                    b.truncate(c % (b.len() + 1));
                }
                b
            });
        prop_oneof![1 => arbitrary, 2 => mutated].boxed()
    };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |bytes| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(&bytes))) {
            Ok(Ok(())) | Ok(Err(Error::InvalidInput(_))) => Ok(()),
            Ok(Err(other)) => Err(TestCaseError::fail(format!(
                "{name}: not InvalidInput: {other}"
            ))),
            Err(_) => Err(TestCaseError::fail(format!("{name}: panicked"))),
        }
    });
    if let Err(e) = result {
        panic!("{name}: decoder property failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_entity_key_decoder_passes_and_a_panicking_decoder_fails() {
        let seeds = vec![
            crate::codec::encode_entity_key(&[("id", crate::model::Value::Int64(7))]).unwrap(),
        ];
        decoder_never_panics("entity key", &seeds, 2_000, |b| {
            crate::codec::decode_entity_key(b).map(|_| ())
        });
        let r = std::panic::catch_unwind(|| {
            decoder_never_panics("indexing", &seeds, 200, |b| {
                let _ = b[3];
                Ok(())
            })
        });
        assert!(
            r.is_err(),
            "a decoder that indexes out of bounds must fail the property"
        );
    }
}
