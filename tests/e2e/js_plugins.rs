//! JavaScript plugins: the JS SDK's test kit runs the template's and the JS realtime bridge's own
//! tests in Node (`node --test`, fake host functions, no gateway), with the toolchain
//! `scripts/setup` installs (Node.js, `npm ci` in plugin-api/js).

use switchboard_tests::js;
use switchboard_tests::workspace_root;

/// The template's and the bridge's own tests (`node --test`, with the SDK's test kit and fake
/// host functions) pass: what a JS author runs without a gateway.
#[test]
fn js_plugin_tests_pass_in_node() -> anyhow::Result<()> {
    for dir in ["plugin-api/js/template", "plugins/js-realtime-bridge"] {
        let out = js::node_test(&workspace_root().join(dir))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{dir}:\n{stdout}");
        assert!(
            out.status.success(),
            "node --test {dir} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("# fail 0"), "{stdout}");
    }
    Ok(())
}
