//! The web console in a real browser: headless Chromium (Debian's package, installed by
//! `scripts/setup`) driven over WebDriver (`switchboard_tests::browser`), against a gateway in
//! this process. The browser phone's microphone is Chromium's fake capture device playing
//! `tests/fixtures/speech/beckett.wav` (in a loop, or once with a question after it); what the
//! page sent and played is read back through its test hooks (`window.switchboardPhone`).
//!
//! With `SWITCHBOARD_SCREENSHOTS=<dir>`, the pipeline test also saves the README's screenshots
//! there (`console.png`, `call-detail.png`), taken by the same browser.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_tests::browser::{
    Browser, BrowserOptions, Sound, WINDOW, decode_mulaw_base64, recording, rms,
};
use switchboard_tests::{
    Gateway, beckett, best_ncc, fixture, offline_agent_config, speech_plugins, write_config,
};

/// The operator API token the gateways of these tests accept.
const TOKEN: &str = "console-test-token-4f1d0c2a";

/// μ-law bytes (= samples) per second on a Media Stream.
const RATE: usize = 8000;

/// The browser tests run one at a time: each is a Chromium (several processes) beside a gateway,
/// on a machine with two cores that the rest of the suite also uses.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `[api]` with [`TOKEN`], and the shipped echo agent (`agents.toml`'s, with its greeting tone).
fn echo_config() -> String {
    format!(
        r#"
[api]
tokens = ["{TOKEN}"]

[plugins.echo]
path = "{{plugins}}/echo.wasm"

[[agents]]
name = "echo"
greeting = "You are talking to the Switchboard echo agent."
realtime = {{ plugin = "echo", settings = {{ mode = "utterance", silence_ms = 600, greeting_tone = true }} }}

[routing]
default = "echo"
"#
    )
}

/// The offline front desk (local Whisper, scripted dialogue, local Piper: as the shipped
/// agents.toml's) and the echo agent, with [`TOKEN`].
fn pipeline_config(models: &Path) -> String {
    let front_desk = offline_agent_config(models, "nine in the morning to six in the evening");
    format!(
        r#"
[api]
tokens = ["{TOKEN}"]

[plugins.echo]
path = "{{plugins}}/echo.wasm"

[[agents]]
name = "echo"
realtime = {{ plugin = "echo", settings = {{ mode = "utterance", silence_ms = 600, greeting_tone = true }} }}
{front_desk}"#
    )
}

/// The fake microphone's file: beckett.wav (mono 16-bit PCM, 16 kHz), which Chromium's fake
/// capture device resamples and plays in a loop.
fn microphone() -> PathBuf {
    fixture("speech/beckett.wav")
}

/// A browser whose fake microphone plays beckett.wav in a loop.
async fn browser() -> anyhow::Result<Browser> {
    Browser::start(&BrowserOptions {
        fake_audio: Some(microphone()),
        play_once: false,
    })
    .await
}

/// Opens the console and signs in with `token` through the login form.
async fn sign_in(browser: &Browser, gateway: &Gateway, token: &str) -> anyhow::Result<()> {
    browser.goto(&format!("{}/console", gateway.url)).await?;
    let input = browser
        .find("#login-token", Duration::from_secs(10))
        .await?;
    input.clear().await?;
    input.send_keys(token).await?;
    browser
        .find("#login-submit", Duration::from_secs(5))
        .await?
        .click()
        .await?;
    Ok(())
}

/// Whether the element `selector` is shown (exists, not hidden, has a box).
const SHOWN: &str = "const e = document.querySelector(arguments[0]);
    return !!e && !e.closest('[hidden]') && e.getClientRects().length > 0;";

async fn shown(browser: &Browser, selector: &str) -> anyhow::Result<bool> {
    Ok(browser.eval(SHOWN, vec![json!(selector)]).await? == json!(true))
}

/// How many elements match `selector`.
async fn count(browser: &Browser, selector: &str) -> anyhow::Result<u64> {
    let n = browser
        .eval(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![json!(selector)],
        )
        .await?;
    Ok(n.as_u64().unwrap_or(0))
}

/// Picks `agent` in #agent-select (once the overview has filled it) and presses Call; waits for
/// #phone-status to say "in call" and returns the call's sid.
async fn call(browser: &Browser, agent: &str) -> anyhow::Result<String> {
    browser
        .wait_until(
            &format!("#agent-select to offer {agent:?}"),
            Duration::from_secs(15),
            &format!(
                "const s = document.querySelector('#agent-select');
                 return !!s && !s.disabled && [...s.options].some(o => o.value === {agent:?});"
            ),
        )
        .await?;
    browser
        .find("#agent-select", Duration::from_secs(1))
        .await?
        .select_by_value(agent)
        .await?;
    browser
        .wait_until(
            "#call-button to be enabled",
            Duration::from_secs(10),
            "const b = document.querySelector('#call-button'); return !!b && !b.disabled;",
        )
        .await?;
    browser
        .find("#call-button", Duration::from_secs(1))
        .await?
        .click()
        .await?;
    let status = browser
        .wait_until(
            "#phone-status to say \"in call\"",
            Duration::from_secs(20),
            "const s = document.querySelector('#phone-status').textContent.trim();
             return s === 'in call' || s === 'ended' ? s : null;",
        )
        .await;
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            dump(browser).await;
            return Err(e);
        }
    };
    if status != json!("in call") {
        dump(browser).await;
        anyhow::bail!("the call ended before it was up (#phone-status {status})");
    }
    let sid = browser
        .wait_until(
            "window.switchboardPhone.callSid",
            Duration::from_secs(5),
            "return window.switchboardPhone && window.switchboardPhone.callSid;",
        )
        .await?;
    sid.as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("callSid is not a string: {sid}"))
}

/// Presses Hang up and waits for #phone-status "ended".
async fn hang_up(browser: &Browser) -> anyhow::Result<()> {
    browser
        .find("#hangup-button", Duration::from_secs(1))
        .await?
        .click()
        .await?;
    browser
        .wait_until(
            "#phone-status to say \"ended\"",
            Duration::from_secs(15),
            "return document.querySelector('#phone-status').textContent.trim() === 'ended';",
        )
        .await?;
    Ok(())
}

/// Prints the page's console lines and the phone's state (for a failing test's output).
async fn dump(browser: &Browser) {
    if let Ok(lines) = browser.console_log().await {
        for line in lines {
            eprintln!("page: {line}");
        }
    }
    if let Ok(state) = browser
        .eval(
            "const p = window.switchboardPhone || {};
             return { state: p.state, callSid: p.callSid, marksEchoed: p.marksEchoed,
                      clears: p.clears,
                      status: (document.querySelector('#phone-status') || {}).textContent,
                      message: (document.querySelector('#phone-message') || {}).textContent };",
            vec![],
        )
        .await
    {
        eprintln!("phone: {state}");
    }
}

/// μ-law samples the page reports through `window.switchboardPhone.<hook>()`, decoded.
async fn hook_audio(browser: &Browser, hook: &str) -> anyhow::Result<Vec<i16>> {
    let text = browser
        .eval(&format!("return window.switchboardPhone.{hook}();"), vec![])
        .await?;
    decode_mulaw_base64(text.as_str().unwrap_or_default())
}

/// Waits for #recent-calls to list `sid` (a row with `data-call-sid`) as ended: its outcome
/// "completed" (the page lists calls in progress too). Returns the row's text.
async fn wait_recent(browser: &Browser, sid: &str) -> anyhow::Result<String> {
    let row = browser
        .wait_until(
            &format!("#recent-calls to list {sid} as completed"),
            Duration::from_secs(20),
            &format!(
                "const row = document.querySelector('#recent-calls [data-call-sid=\"{sid}\"]');
                 const text = row ? row.innerText.replace(/\\s+/g, ' ').trim() : '';
                 return /completed/i.test(text) ? text : null;"
            ),
        )
        .await?;
    println!("#recent-calls: {row}");
    Ok(row.as_str().unwrap_or_default().to_string())
}

/// Lowercase words of `text`, punctuation dropped.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Where the README's screenshots go, if asked for (`SWITCHBOARD_SCREENSHOTS=<dir>`).
fn screenshots() -> Option<PathBuf> {
    std::env::var_os("SWITCHBOARD_SCREENSHOTS")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// A wrong token is refused at the login form (its error shows, and no agent or call of the
/// gateway reaches the page); the right one, in a `#token=` link, then opens the console, which
/// lists the agent, and is removed from the address bar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_a_wrong_token() -> anyhow::Result<()> {
    let _one = ONE_BROWSER.lock().await;
    let gw = Gateway::start(&write_config(&echo_config())?).await?;
    let browser = Browser::start(&BrowserOptions::default()).await?;

    sign_in(&browser, &gw, "not-the-token").await?;
    let refused = browser
        .wait_until(
            "#login-error to show",
            Duration::from_secs(10),
            "const e = document.querySelector('#login-error');
             return !!e && !e.hidden && !e.closest('[hidden]') && e.textContent.trim();",
        )
        .await?;
    println!("login error: {refused}");
    assert!(
        shown(&browser, "#login-token").await?,
        "the login form went away"
    );
    assert!(
        !shown(&browser, "#agents").await?,
        "the agents list is shown"
    );
    assert_eq!(count(&browser, "#agents [data-agent]").await?, 0);
    assert_eq!(count(&browser, "[data-call-sid]").await?, 0);
    let page = browser
        .eval("return document.body.innerText;", vec![])
        .await?;
    assert!(
        !page.as_str().unwrap_or_default().contains("echo"),
        "the page shows the gateway's agent after a refused token: {page}"
    );
    let stored = browser
        .eval(
            "return sessionStorage.getItem('switchboard.token');",
            vec![],
        )
        .await?;
    assert!(
        stored.is_null() || stored == json!(""),
        "the refused token was kept: {stored}"
    );

    // The right token, in the link the gateway logs (`#token=…`), opens the console and leaves
    // the address bar.
    browser
        .goto(&format!("{}/console#token={TOKEN}", gw.url))
        .await?;
    browser
        .wait_until(
            "#agents to list the echo agent",
            Duration::from_secs(15),
            "return !!document.querySelector('#agents [data-agent=\"echo\"]');",
        )
        .await?;
    assert!(!shown(&browser, "#login-error").await?);
    let address = browser.eval("return location.href;", vec![]).await?;
    assert!(
        !address.as_str().unwrap_or_default().contains(TOKEN),
        "the token stayed in the address bar: {address}"
    );
    Ok(())
}

/// A console call to the echo agent: the fake microphone's speech (beckett.wav) goes out, the
/// agent plays each utterance back, and what the page played is found, sample for sample, in
/// what it sent (normalised cross-correlation); what it sent is the recording (speech level,
/// and it correlates with beckett.wav). After hang-up the recent calls list the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_call_to_the_echo_agent_plays_back_what_was_said() -> anyhow::Result<()> {
    let _one = ONE_BROWSER.lock().await;
    let gw = Gateway::start(&write_config(&echo_config())?).await?;
    let browser = browser().await?;
    sign_in(&browser, &gw, TOKEN).await?;
    let started = Instant::now();
    let sid = call(&browser, "echo").await?;
    println!("in call {sid} after {:?}", started.elapsed());

    // The tone (0.4 s), then utterances as the recording pauses (the first ends ≈ 2.2 s in):
    // wait for 2 s of played-back speech after the tone, at most 20 s.
    let enough = 0.4 * RATE as f64 + 2.0 * RATE as f64;
    let waited = browser
        .wait_until(
            "2.4 s of played audio",
            Duration::from_secs(20),
            &format!(
                "return atob(window.switchboardPhone.playedMulaw()).length >= {enough} \
                 && window.switchboardPhone.state === 'in call';"
            ),
        )
        .await;
    if let Err(e) = waited {
        dump(&browser).await;
        return Err(e);
    }
    let call_time = started.elapsed();
    hang_up(&browser).await?;
    let sent = hook_audio(&browser, "sentMulaw").await?;
    let played = hook_audio(&browser, "playedMulaw").await?;
    let marks = browser
        .eval("return window.switchboardPhone.marksEchoed;", vec![])
        .await?;
    println!(
        "call {call_time:?}: sent {:.2} s (RMS {:.0}), played {:.2} s (RMS {:.0}), marks echoed {marks}",
        sent.len() as f64 / RATE as f64,
        rms(&sent),
        played.len() as f64 / RATE as f64,
        rms(&played),
    );

    assert!(
        marks.as_u64().unwrap_or(0) > 0,
        "the page echoed no mark of the played audio"
    );

    // What went out is the recording: speech level, and it matches beckett.wav (8 kHz). The
    // page asks for echo cancellation, noise suppression and automatic gain, which reshape the
    // recording a little (≈ 0.7, where the echo below is ≈ 1.0), and it loops (lags wrap).
    assert!(rms(&sent) > 300.0, "the microphone sent near-silence");
    let reference = beckett()?;
    let mut matches = Vec::new();
    for window in sent.chunks_exact(RATE) {
        if rms(window) < 300.0 {
            continue;
        }
        matches.push(best_ncc(window, &reference, 0..reference.len() - RATE)?);
    }
    println!("sent vs beckett.wav, 1 s windows: {matches:.2?}");
    let mut nccs: Vec<f64> = matches.iter().map(|(ncc, _)| *ncc).collect();
    nccs.sort_by(f64::total_cmp);
    assert!(
        nccs.len() >= 2 && nccs[nccs.len() / 2] > 0.55,
        "the audio sent does not match beckett.wav: {matches:.2?}"
    );

    // What came back is what went out: each 0.5 s window of played speech (after the greeting
    // tone) is found in the sent audio.
    let mut echoes = Vec::new();
    for window in played[(RATE * 2 / 5).min(played.len())..].chunks_exact(RATE / 2) {
        if rms(window) < 300.0 {
            continue;
        }
        echoes.push(best_ncc(window, &sent, 0..sent.len() - window.len())?);
    }
    println!("played vs sent, 0.5 s windows: {echoes:.2?}");
    let good = echoes.iter().filter(|(ncc, _)| *ncc > 0.6).count();
    assert!(
        good >= 2 && good * 5 >= echoes.len() * 4,
        "the played audio is not the sent audio: {echoes:.2?}"
    );
    // Played after it was said (a lag into the sent audio), not before.
    assert!(
        echoes.windows(2).all(|w| w[1].1 + RATE / 10 >= w[0].1),
        "the echoes are out of order: {echoes:.2?}"
    );

    // The call, ended, is in the recent calls.
    wait_recent(&browser, &sid).await?;
    Ok(())
}

/// A console call to the offline front desk (local Whisper, the scripted dialogue, local
/// Piper): the live transcript on the page shows the caller's words (from beckett.wav) and the
/// agent's answer while the call goes on; after hang-up the recent calls list it, and its
/// detail shows the transcript and a latency chart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_transcript_of_a_pipeline_call_appears_in_the_console() -> anyhow::Result<()> {
    let built = Instant::now();
    let models = speech_plugins()?;
    println!("speech plugins and models ready in {:?}", built.elapsed());
    let _one = ONE_BROWSER.lock().await;
    let gw = Gateway::start(&write_config(&pipeline_config(&models))?).await?;
    // The caller says beckett.wav's lines, then asks for the opening hours and listens.
    let beckett = fixture("speech/beckett.wav");
    let question = fixture("speech/hours-question.wav");
    let browser = Browser::start(&BrowserOptions {
        fake_audio: Some(recording(&[
            Sound::Silence(Duration::from_millis(500)),
            Sound::Wav(&beckett),
            Sound::Silence(Duration::from_secs(2)),
            Sound::Wav(&question),
            Sound::Silence(Duration::from_secs(10)),
        ])?),
        play_once: true,
    })
    .await?;
    sign_in(&browser, &gw, TOKEN).await?;
    let started = Instant::now();
    let sid = call(&browser, "front-desk").await?;
    println!("in call {sid} after {:?}", started.elapsed());

    // The call is among the live calls while it lasts.
    browser
        .wait_until(
            "#live-calls to list the call",
            Duration::from_secs(15),
            &format!("return !!document.querySelector('#live-calls [data-call-sid=\"{sid}\"]');"),
        )
        .await?;

    // beckett.wav: "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
    let expected = [
        "ever", "tried", "failed", "matter", "try", "again", "fail", "better",
    ];
    let transcript = browser
        .wait_until(
            "a caller line with beckett.wav's words and an agent line in #phone-transcript",
            Duration::from_secs(60),
            "const t = document.querySelector('#phone-transcript');
             const caller = [...t.querySelectorAll('.turn.caller:not(.partial)')]
                 .map(e => e.textContent.trim()).filter(s => s);
             const agent = [...t.querySelectorAll('.turn.agent')]
                 .map(e => e.textContent.trim()).filter(s => s);
             const words = ['tried', 'failed', 'matter', 'again', 'better'];
             const heard = caller.some(s => words.some(w => s.toLowerCase().includes(w)));
             return heard && agent.length > 0 ? { caller, agent } : null;",
        )
        .await;
    let transcript = match transcript {
        Ok(t) => t,
        Err(e) => {
            dump(&browser).await;
            let html = browser
                .eval(
                    "return document.querySelector('#phone-transcript').outerHTML;",
                    vec![],
                )
                .await;
            eprintln!("#phone-transcript: {html:?}");
            return Err(e);
        }
    };
    println!("transcript after {:?}: {transcript:#}", started.elapsed());
    let caller: Vec<String> = transcript["caller"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .flat_map(words)
        .collect();
    let found: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|w| caller.iter().any(|c| c == w))
        .collect();
    assert!(
        found.len() >= 2,
        "the caller's lines {caller:?} have only {found:?} of beckett.wav's words"
    );

    // Then the question, and the scripted answer from the agent.
    let answered = browser
        .wait_until(
            "the opening hours asked and answered in #phone-transcript",
            Duration::from_secs(60),
            "const t = document.querySelector('#phone-transcript');
             const text = sel => [...t.querySelectorAll(sel)].map(e => e.textContent.toLowerCase());
             const asked = text('.turn.caller:not(.partial)').some(s => s.includes('hours'));
             const answer = text('.turn.agent:not(.partial)').find(s => s.includes('open from'));
             return asked && answer ? answer : null;",
        )
        .await;
    let answered = match answered {
        Ok(a) => a,
        Err(e) => {
            dump(&browser).await;
            return Err(e);
        }
    };
    println!("answered after {:?}: {answered}", started.elapsed());
    assert_eq!(
        browser
            .eval("return window.switchboardPhone.state;", vec![])
            .await?,
        json!("in call"),
        "the call did not last"
    );

    let shots = screenshots();
    if let Some(dir) = &shots {
        // A call in progress with its transcript.
        browser.screenshot(&dir.join("console.png")).await?;
    }
    hang_up(&browser).await?;
    wait_recent(&browser, &sid).await?;

    // The call's detail: transcript and the per-turn latency chart (an SVG).
    let row = format!("#recent-calls [data-call-sid=\"{sid}\"]");
    browser
        .find(&row, Duration::from_secs(1))
        .await?
        .click()
        .await?;
    let detail = browser
        .wait_until(
            "#call-detail to show the call's transcript and latency chart",
            Duration::from_secs(15),
            "const d = document.querySelector('#call-detail');
             return !!d && !d.hidden && d.querySelector('.turn.caller')
                 && d.querySelector('svg') ? d.innerText : null;",
        )
        .await?;
    println!("#call-detail: {detail}");
    if let Some(dir) = &shots {
        // The whole detail (facts, transcript, latency chart) in one picture: a viewport as
        // tall as it is.
        let height = browser
            .eval(
                "const d = document.querySelector('#call-detail');
                 d.scrollIntoView({ block: 'start' });
                 return Math.ceil(d.getBoundingClientRect().height) + 40;",
                vec![],
            )
            .await?;
        let height = height
            .as_u64()
            .and_then(|h| u32::try_from(h).ok())
            .unwrap_or(800);
        browser
            .set_viewport(WINDOW.0, height.clamp(400, 1600))
            .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        browser
            .screenshot_element("#call-detail", &dir.join("call-detail.png"))
            .await?;
        println!("screenshots saved in {}", dir.display());
    }
    Ok(())
}

/// The harness itself: Chromium's fake microphone plays the WAV it was given (beckett.wav at
/// speech level, measured by an AnalyserNode in a page of the gateway's), with no prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_hears_the_fake_microphone() -> anyhow::Result<()> {
    let _one = ONE_BROWSER.lock().await;
    let gw = Gateway::start(&write_config(&echo_config())?).await?;
    let started = Instant::now();
    let browser = browser().await?;
    println!("browser started in {:?}", started.elapsed());
    // A page of the gateway's: loopback HTTP is a secure context, as getUserMedia needs.
    browser.goto(&format!("{}/healthz", gw.url)).await?;
    let viewport = browser
        .eval("return [innerWidth, innerHeight];", vec![])
        .await?;
    assert_eq!(viewport, json!([WINDOW.0, WINDOW.1]), "the page's viewport");
    let measured = browser.eval(MEASURE_MICROPHONE, vec![]).await?;
    println!("{measured}");
    let levels: Vec<f64> = measured["levels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    // beckett.wav: 0.34 s of silence, then speech with pauses (not the default device's
    // steady beep).
    let loud = levels.iter().filter(|l| **l > 0.05).count();
    let quiet = levels.iter().filter(|l| **l < 0.01).count();
    assert!(
        loud >= 10 && quiet >= 10,
        "the microphone's levels are not speech with pauses: {levels:?}"
    );
    Ok(())
}

/// Opens the microphone and returns its level (RMS, full scale 1) every 50 ms for 3 s.
const MEASURE_MICROPHONE: &str = "
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 2048;
    context.createMediaStreamSource(stream).connect(analyser);
    const buffer = new Float32Array(analyser.fftSize);
    const levels = [];
    for (let i = 0; i < 60; i++) {
        await new Promise(r => setTimeout(r, 50));
        analyser.getFloatTimeDomainData(buffer);
        let sum = 0;
        for (const x of buffer) sum += x * x;
        levels.push(Math.round(Math.sqrt(sum / buffer.length) * 1000) / 1000);
    }
    const track = stream.getAudioTracks()[0];
    const label = track.label, settings = track.getSettings();
    stream.getTracks().forEach(t => t.stop());
    const rate = context.sampleRate;
    await context.close();
    return { label, rate, settings, levels };
";
