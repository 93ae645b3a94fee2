//! Python plugins: the Python SDK's template (echo), the Python realtime bridge and a misbehaving
//! Python plugin, each built from source in this test run with componentize-py
//! (`plugin-api/python/build.sh`, see `switchboard_tests::python`) into components the host's
//! limits admit; the plugins' own `unittest` suites (the Python test kit,
//! `switchboard_plugin.testing`) run here too, so CI exercises them.

use switchboard_tests::python::{python_plugins, run_unittest};

/// The Python author's test kit works: the template's and the bridge's `unittest` suites pass
/// under plain CPython (no gateway, no build).
#[test]
fn python_unittests_pass() -> anyhow::Result<()> {
    for dir in [
        "plugin-api/python/template",
        "plugins/python-realtime-bridge",
    ] {
        let report = run_unittest(dir)?;
        assert!(report.contains("OK"), "{dir}: {report}");
        println!("{dir}:\n{report}");
    }
    Ok(())
}

/// The Python plugins build from source with the pinned componentize-py (once per process) into
/// components the host can instantiate: each has at most 16 core modules (the per-session core
/// instance limit; componentize-py's runtime has 14), and is a few tens of MB at most.
#[test]
fn python_plugins_build_from_source() -> anyhow::Result<()> {
    let built = python_plugins()?;
    for (file, size, took) in &built.built {
        let bytes = std::fs::read(built.dir.join(file))?;
        let modules = core_modules(&bytes)?;
        println!(
            "{file}: {:.1} MB, {modules} core modules, built in {:.1} s",
            *size as f64 / 1e6,
            took.as_secs_f64()
        );
        assert!(
            (1..=16).contains(&modules),
            "{file}: {modules} core modules"
        );
        assert!(*size < 40_000_000, "{file}: {size} bytes");
    }
    Ok(())
}

/// The number of core modules at the top level of a component (sections with id 1).
fn core_modules(bytes: &[u8]) -> anyhow::Result<usize> {
    anyhow::ensure!(
        bytes.len() > 8 && bytes[..4] == *b"\0asm",
        "not a wasm file"
    );
    let leb = |at: &mut usize| -> anyhow::Result<usize> {
        let (mut value, mut shift) = (0usize, 0);
        loop {
            let byte = *bytes.get(*at).ok_or_else(|| anyhow::anyhow!("truncated"))?;
            *at += 1;
            value |= usize::from(byte & 0x7F) << shift;
            shift += 7;
            if byte < 0x80 || shift > 63 {
                return Ok(value);
            }
        }
    };
    let (mut at, mut modules) = (8, 0);
    while at < bytes.len() {
        let id = bytes[at];
        at += 1;
        let size = leb(&mut at)?;
        if id == 1 {
            modules += 1;
        }
        at += size;
    }
    Ok(modules)
}
