//! libFuzzer target: `switchboard_tests::fuzz::media_stream` (its rule is in its docs).

#![no_main]

libfuzzer_sys::fuzz_target!(
    init: switchboard_tests::fuzz::write_seeds("media_stream"),
    |data: &[u8]| switchboard_tests::fuzz::media_stream(data)
);
