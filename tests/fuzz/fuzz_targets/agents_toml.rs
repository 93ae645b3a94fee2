//! libFuzzer target: `switchboard_tests::fuzz::agents_toml` (its rule is in its docs).

#![no_main]

libfuzzer_sys::fuzz_target!(
    init: switchboard_tests::fuzz::write_seeds("agents_toml"),
    |data: &[u8]| switchboard_tests::fuzz::agents_toml(data)
);
