//! libFuzzer target: `switchboard_tests::fuzz::codec` (its rule is in its docs).

#![no_main]

libfuzzer_sys::fuzz_target!(
    init: switchboard_tests::fuzz::write_seeds("codec"),
    |data: &[u8]| switchboard_tests::fuzz::codec(data)
);
