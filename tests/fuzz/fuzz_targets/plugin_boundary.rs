//! libFuzzer target: `switchboard_tests::fuzz::plugin_boundary` (its rule is in its docs).

#![no_main]

libfuzzer_sys::fuzz_target!(
    init: switchboard_tests::fuzz::write_seeds("plugin_boundary"),
    |data: &[u8]| switchboard_tests::fuzz::plugin_boundary(data)
);
