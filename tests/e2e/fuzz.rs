//! Every fuzz target (`switchboard_tests::fuzz`) at a small count: its seeds and a few hundred
//! seeded mutations of them, so each change meets them in CI. The long coverage-guided runs are
//! `cargo fuzz` (tests/fuzz/README.md).

use switchboard_tests::fuzz;

/// Mutated inputs per target; `SWITCHBOARD_FUZZ_SMOKE` overrides.
fn count(default: usize) -> usize {
    std::env::var("SWITCHBOARD_FUZZ_SMOKE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// Plain tests, not tokio ones: the async targets run on a runtime of their own.

#[test]
fn media_stream_messages() {
    let n = count(5000);
    assert!(fuzz::smoke("media_stream", n, 1) > n);
}

#[test]
fn webhook_requests() {
    let n = count(1000);
    assert!(fuzz::smoke("webhook", n, 2) > n);
}

#[test]
fn agents_toml_files() {
    let n = count(500);
    assert!(fuzz::smoke("agents_toml", n, 3) > n);
}

#[test]
fn twiml_text() {
    let n = count(2000);
    assert!(fuzz::smoke("twiml", n, 4) > n);
}

#[test]
fn codec_audio() {
    let n = count(300);
    assert!(fuzz::smoke("codec", n, 5) > n);
}

#[test]
fn plugin_outputs_through_a_call() {
    let n = count(200);
    assert!(fuzz::smoke("plugin_boundary", n, 6) > n);
}

/// The plugin-boundary target can fail: a plugin that sends a mark name over the contract's
/// limit ends its call with an output error the target accepts, and the host's own rules are
/// what the target checks (here: the seeds reach audio, marks and hang-up).
#[test]
fn the_seeds_reach_every_output() {
    for seed in fuzz::seeds("plugin_boundary") {
        fuzz::plugin_boundary(&seed);
    }
}
