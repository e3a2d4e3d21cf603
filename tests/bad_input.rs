//! Bad input found by a machine: property tests over the two parsers every user input
//! goes through, the record decoder (whatever is stored at the lock's key) and the
//! lock-name parser (the LOCK argument). In the library, neither may panic, and a record
//! that decodes encodes back to itself. Through the built binary, every rejected input
//! ends in one line naming the lock, with its documented exit status: 65 for a lock object
//! that is not a record, 64 for a lock name that is not one.

#[macro_use]
mod e2e;
mod support;

use proptest::prelude::*;
use s3lead::record::LockRecord;
use s3lead::store::LockUrl;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// A JSON value of any shape, a few levels deep.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Something close to a record: the real fields, each either a plausible value or any
/// JSON value, some of them left out. Most are refused, for one field or another; some
/// are records.
fn near_record() -> impl Strategy<Value = Vec<u8>> {
    let field = |good: BoxedStrategy<serde_json::Value>| prop_oneof![4 => good.prop_map(Some), 1 => any_json().prop_map(Some), 1 => Just(None)];
    let num = |r: std::ops::RangeInclusive<u64>| r.prop_map(serde_json::Value::from).boxed();
    let text = || {
        "[a-z0-9 ()-]{0,16}"
            .prop_map(serde_json::Value::from)
            .boxed()
    };
    let time = || {
        prop_oneof![
            Just(serde_json::Value::from("2026-12-01T10:00:00Z")),
            ".{0,24}".prop_map(serde_json::Value::from),
        ]
        .boxed()
    };
    (
        field(num(0..=2)),
        field(num(0..=u64::MAX)),
        field(text()),
        field(text()),
        field(num(0..=u64::MAX)),
        field(num(0..=100_000_000)),
        field(time()),
        field(time()),
        field(any::<bool>().prop_map(serde_json::Value::from).boxed()),
    )
        .prop_map(
            |(v, term, holder, lease_id, seq, lease_ms, acq, ren, rel)| {
                let names = [
                    "v",
                    "term",
                    "holder",
                    "lease_id",
                    "seq",
                    "lease_ms",
                    "acquired_at",
                    "renewed_at",
                    "released",
                ];
                let values = [v, term, holder, lease_id, seq, lease_ms, acq, ren, rel];
                let object: serde_json::Map<String, serde_json::Value> = names
                    .into_iter()
                    .zip(values)
                    .filter_map(|(n, v)| Some((n.to_owned(), v?)))
                    .collect();
                serde_json::to_vec(&object).expect("JSON")
            },
        )
}

/// Lock names, most of them wrong in one of the ways a user gets them wrong.
fn lock_name() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,20}",
        "s3://.{0,20}",
        "s3://[a-z]{0,5}/{0,2}[a-z/]{0,6}",
        "[a-z0-9]{1,6}://.{0,12}",
        "(file://)?[a-z/]{0,10}/",
        Just(String::new()),
    ]
}

proptest! {
    #[test]
    fn the_decoder_never_panics_and_a_record_encodes_back_to_itself(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            any_json().prop_map(|j| serde_json::to_vec(&j).expect("JSON")),
            near_record(),
        ]
    ) {
        if let Ok(record) = LockRecord::decode(&bytes) {
            let again = LockRecord::decode(&record.encode()).expect("an encoded record decodes");
            prop_assert_eq!(again, record);
        }
    }

    #[test]
    fn the_lock_name_parser_never_panics_and_keeps_the_spelling(name in lock_name()) {
        if let Ok(url) = LockUrl::parse(&name) {
            prop_assert_eq!(url.as_str(), name.as_str());
        }
    }
}

proptest! {
    // Each case runs the binary: a few dozen, not hundreds.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_lock_object_that_is_not_a_record_exits_65_with_one_line(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..128), near_record()]
    ) {
        prop_assume!(LockRecord::decode(&bytes).is_err());
        let lock = e2e::Lock::file();
        std::fs::write(lock.file.as_ref().expect("a file lock"), &bytes).expect("write");
        let mut c = lock.s3lead();
        c.args(["status", &lock.url]);
        let f = e2e::finish(c, LIMIT);
        prop_assert_eq!(f.code, Some(65), "{}", f.stderr);
        prop_assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
        prop_assert!(f.stderr.contains(&lock.url), "{}", f.stderr);
    }

    #[test]
    fn a_lock_name_that_is_not_one_exits_64_with_one_line(name in lock_name()) {
        // An argument cannot hold a NUL byte: no user can type one.
        prop_assume!(!name.contains('\0') && LockUrl::parse(&name).is_err());
        let mut c = e2e::s3lead();
        c.args(["status", "--", &name]);
        let f = e2e::finish(c, LIMIT);
        prop_assert_eq!(f.code, Some(64), "{}", f.stderr);
        prop_assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
    }
}
