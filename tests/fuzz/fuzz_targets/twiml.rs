//! libFuzzer target: `switchboard_tests::fuzz::twiml` (its rule is in its docs).

#![no_main]

libfuzzer_sys::fuzz_target!(
    init: switchboard_tests::fuzz::write_seeds("twiml"),
    |data: &[u8]| switchboard_tests::fuzz::twiml(data)
);
