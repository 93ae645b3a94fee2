//! A whole call: webhook → TwiML → Media Streams → echo plugin → back to the caller.

use std::time::Duration;

use switchboard::simulate::{self, Options};
use switchboard_tests::{Gateway, beckett, best_ncc, write_config};

const ECHO: &str = r#"
[plugins.echo]
path = "{plugins}/echo.wasm"

[[agents]]
name = "echo"
realtime = { plugin = "echo", settings = { mode = "utterance" } }

[[agents]]
name = "loopback"
numbers = ["+15005550999"]
realtime = { plugin = "echo", settings = { mode = "immediate" } }

[routing]
default = "echo"
"#;

/// The caller speaks a real recording; the echo agent plays each utterance back after the caller
/// pauses. Every reply the caller heard must match what they said (NCC ≥ 0.9 at the best lag),
/// each reply must be followed by a mark that Twilio reached, and `stop` must end the call with
/// the socket closed and the session dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_call_plays_back_what_the_caller_said() -> anyhow::Result<()> {
    let gateway = Gateway::start(&write_config(ECHO)?).await?;
    let mut ended = gateway.state.subscribe();
    let audio = beckett()?;
    let spoken = audio.len();
    let summary = simulate::run(Options::new(&gateway.url, audio)).await?;

    assert_eq!(summary.rejected, None, "twiml: {}", summary.twiml);
    assert!(
        summary
            .parameters
            .contains(&("agent".into(), "echo".into()))
    );
    assert!(
        !summary.closed_by_gateway,
        "the caller hung up, not the gateway"
    );
    assert_eq!(summary.bad_messages, 0);
    let utterances: Vec<_> = summary
        .marks
        .iter()
        .filter(|(name, _)| name.starts_with("utterance-"))
        .collect();
    assert!(utterances.len() >= 2, "marks: {:?}", summary.marks);
    // Each reply lies between the previous mark (or the first audio) and its own mark.
    let mut start = summary
        .heard
        .iter()
        .position(|s| *s != 0)
        .expect("the caller heard something");
    let mut replied = 0;
    for (name, at) in utterances {
        let end = at.unwrap_or_else(|| panic!("mark {name} never played"));
        // Trim the silence around the reply.
        let seg = &summary.heard[start..end];
        let first = seg.iter().position(|s| *s != 0).unwrap_or(0);
        let last = seg.iter().rposition(|s| *s != 0).unwrap_or(0);
        let seg = &seg[first..=last];
        let (ncc, lag) = best_ncc(seg, &summary.sent, 0..start + first)?;
        assert!(
            ncc >= 0.9,
            "{name}: NCC {ncc:.3} at lag {lag} for {} samples",
            seg.len()
        );
        replied += seg.len();
        start = end;
    }
    // Together the replies carry most of the recording (pauses excepted).
    assert!(
        replied > spoken * 4 / 10,
        "replied {replied} of {spoken} samples"
    );

    let event = tokio::time::timeout(Duration::from_secs(5), ended.recv()).await??;
    assert_eq!(event.reason, switchboard::call::EndReason::Stop);
    assert_eq!(event.stats.frames_in, summary.frames_sent);
    assert_eq!(event.stats.frames_out, summary.frames_received);
    assert_eq!(event.stats.marks_echoed, event.stats.marks_sent);
    assert_eq!(
        gateway.state.active_calls(),
        0,
        "session dropped, task ended"
    );
    Ok(())
}

/// Immediate mode returns every frame as it arrives: what the caller hears is what they said,
/// one frame later at most, and the gateway ends the call when the plugin hangs up on `#`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_immediate_and_hash_hangs_up() -> anyhow::Result<()> {
    let gateway = Gateway::start(&write_config(ECHO)?).await?;
    let mut ended = gateway.state.subscribe();
    let audio = beckett()?[..8000 * 3].to_vec();
    let mut opts = Options::new(&gateway.url, audio);
    opts.to = "+15005550999".into();
    opts.dtmf = vec![(Duration::from_millis(2000), "#".into())];
    let summary = simulate::run(opts).await?;
    assert!(
        summary
            .parameters
            .contains(&("agent".into(), "loopback".into()))
    );
    assert!(summary.closed_by_gateway, "the plugin hung up");
    let ttfa = summary.time_to_first_audio.expect("audio came back");
    assert!(
        ttfa < Duration::from_millis(500),
        "first audio after {ttfa:?}"
    );
    // heard[t] = sent[t - delay]: align the first second heard with what was sent.
    let start = summary
        .heard
        .iter()
        .position(|s| *s != 0)
        .expect("heard audio");
    let heard = &summary.heard[start..start + 8000];
    let (ncc, lag) = best_ncc(heard, &summary.sent, 0..start + 1)?;
    assert!(ncc >= 0.99, "NCC {ncc:.3} at lag {lag}");
    // One frame of delay is the floor (the reply to frame i plays at tick i+1); a debug build
    // on a busy 2-core machine adds scheduling jitter that Twilio's buffer then keeps, so allow
    // 100 ms. Latency itself is measured by the load tool, not here.
    assert!(start - lag <= 5 * 160, "heard {} samples late", start - lag);
    let event = tokio::time::timeout(Duration::from_secs(5), ended.recv()).await??;
    assert_eq!(event.reason, switchboard::call::EndReason::HungUp);
    assert_eq!(event.stats.dtmf, 1);
    Ok(())
}

/// A DTMF key other than `#` makes the echo plugin clear its reply: the gateway sends `clear`,
/// the simulated Twilio drops what it buffered, and the rest of the reply never leaves the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_clears_playback_and_drops_the_rest_of_the_reply() -> anyhow::Result<()> {
    let gateway = Gateway::start(&write_config(ECHO)?).await?;
    // 1.5 s of a loud tone (one utterance) then quiet: the reply plays from about 2.1 s to
    // 3.6 s; press 1 half a second into it.
    let mut audio: Vec<i16> = (0..12_000)
        .map(|i| (8000.0 * (f64::from(i) * 0.3).sin()) as i16)
        .collect();
    audio.extend(std::iter::repeat_n(0, 8000 * 3));
    let mut opts = Options::new(&gateway.url, audio);
    opts.dtmf = vec![(Duration::from_millis(2600), "1".into())];
    let summary = simulate::run(opts).await?;
    assert_eq!(summary.clears, 1);
    // The plugin's mark after the reply never played: the playback clock held it (with the rest
    // of the reply) in the gateway, or Twilio returned it with the clear.
    assert!(
        summary
            .marks
            .iter()
            .all(|(name, at)| !name.starts_with("utterance-") || at.is_none()),
        "{:?}",
        summary.marks
    );
    // The clock's own marks in flight at the clear came back unplayed: at most the lead's worth.
    let unplayed = summary.marks.iter().filter(|(_, at)| at.is_none()).count();
    assert!(unplayed <= 2, "{:?}", summary.marks);
    let heard = summary.heard.iter().filter(|s| **s != 0).count();
    assert!(
        heard > 800,
        "part of the reply played first: heard {heard} samples"
    );
    assert!(
        heard < 8000,
        "most of the reply was cut: heard {heard} samples"
    );
    Ok(())
}

/// One plugin source, two builds: the echo plugin built as a WASM component and as a native
/// library answers the same call with the same audio. The caller's recording goes through each;
/// what the caller hears (its samples, in order, with the silence between replies left out, since
/// that depends on timing) and the marks that came back are identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_built_as_wasm_and_native_sounds_the_same() -> anyhow::Result<()> {
    let both = r#"
[plugins.echo-wasm]
path = "{plugins}/echo.wasm"

[plugins.echo-native]
path = "{native:echo}"

[[agents]]
name = "wasm"
numbers = ["+15005550001"]
realtime = { plugin = "echo-wasm", settings = { mode = "utterance", greeting_tone = true } }

[[agents]]
name = "native"
numbers = ["+15005550002"]
realtime = { plugin = "echo-native", settings = { mode = "utterance", greeting_tone = true } }
"#;
    let gateway = Gateway::start(&write_config(both)?).await?;
    let mut ended = gateway.state.subscribe();
    let mut heard = Vec::new();
    for (number, agent) in [("+15005550001", "wasm"), ("+15005550002", "native")] {
        let mut options = Options::new(&gateway.url, beckett()?);
        options.to = number.into();
        let summary = simulate::run(options).await?;
        let event = tokio::time::timeout(Duration::from_secs(5), ended.recv()).await??;
        assert_eq!(event.stats.agent.as_deref(), Some(agent));
        assert_eq!(event.reason, switchboard::call::EndReason::Stop, "{agent}");
        let audio: Vec<i16> = summary.heard.iter().copied().filter(|s| *s != 0).collect();
        let marks: Vec<String> = summary.marks.iter().map(|(n, _)| n.clone()).collect();
        assert!(marks.len() >= 3, "{agent}: marks {marks:?}");
        assert!(audio.len() > 8000, "{agent}: heard {} samples", audio.len());
        heard.push((audio, marks));
    }
    let (native, wasm) = (&heard[1], &heard[0]);
    assert_eq!(wasm.1, native.1, "same marks");
    assert_eq!(wasm.0.len(), native.0.len(), "same amount of audio");
    assert!(wasm.0 == native.0, "same samples");
    Ok(())
}
