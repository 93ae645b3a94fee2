// Builds a JavaScript Switchboard plugin into a WASM component (world `realtime-plugin` of
// plugin-api/wit/plugin.wit) with componentize-js, called directly:
//
//   node plugin-api/js/build.mjs <plugin.js> <out.wasm>
//
// (after `npm ci` in plugin-api/js; offline from then on). <plugin.js> default-exports
// `realtimePlugin({...})` from this SDK (index.js) and may import other modules by relative path.
//
// Why not `jco componentize`: jco 1.35.0's WASI shim gives its wasm-tools no file access, so it
// fails before building. Features turned off: `http` and `fetch-event` (they import
// `wasi:http/types`, which the gateway does not link: plugins do HTTP through the host's
// `http-send`). `stdio`, `random` and `clocks` stay (the host links wasi:cli, wasi:random and
// wasi:clocks). Prints the build time and the component's size.
import { mkdtemp, writeFile, stat, rm, mkdir } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { componentize } from '@bytecodealliance/componentize-js';

const here = dirname(fileURLToPath(import.meta.url));
const [pluginArg, outArg] = process.argv.slice(2);
if (!pluginArg || !outArg) {
  console.error('usage: node plugin-api/js/build.mjs <plugin.js> <out.wasm>');
  process.exit(2);
}
const plugin = resolve(pluginArg);
const out = resolve(outArg);
const started = performance.now();

// The entry module binds the component's host imports to the SDK, then exports the plugin's
// `realtime` interface. componentize-js maps its working directory into the build as `/`, so the
// build runs in the deepest directory holding both this SDK and the plugin, and the entry (in
// .build/, git-ignored) imports both by relative path; the plugin's own relative imports resolve
// as they do in Node.
await mkdir(join(here, '.build'), { recursive: true });
const work = await mkdtemp(join(here, '.build', 'entry-'));
const entry = join(work, 'entry.js');
const rel = (/** @type {string} */ target) => {
  const r = relative(work, target).split(sep).join('/');
  return r.startsWith('.') ? r : `./${r}`;
};
const root = commonAncestor(here, dirname(plugin));
if (root === '/') {
  console.error(`build: the plugin (${plugin}) and the SDK (${here}) share no directory but /; move the plugin under a common parent`);
  process.exit(2);
}
await writeFile(
  entry,
  [
    `import * as host from 'switchboard:plugin/host@0.2.0';`,
    `import { bindHost } from ${JSON.stringify(rel(join(here, 'index.js')))};`,
    `import plugin from ${JSON.stringify(rel(plugin))};`,
    `bindHost(host);`,
    `if (!plugin || typeof plugin.exports !== 'function') {`,
    `  throw new Error('the plugin module must default-export realtimePlugin({ info, open })');`,
    `}`,
    `export const realtime = plugin.exports();`,
    '',
  ].join('\n'),
);

const cwd = process.cwd();
process.chdir(root);
let component;
try {
  ({ component } = await componentize({
    sourcePath: entry,
    witPath: join(here, '..', 'wit'),
    worldName: 'realtime-plugin',
    disableFeatures: ['http', 'fetch-event'],
  }));
} finally {
  process.chdir(cwd);
  await rm(work, { recursive: true, force: true });
}
await mkdir(dirname(out), { recursive: true });
await writeFile(out, component);
const { size } = await stat(out);
const seconds = ((performance.now() - started) / 1000).toFixed(1);
console.error(`built ${out}: ${(size / 1e6).toFixed(1)} MB in ${seconds} s`);

/** The deepest directory containing both paths. @param {string} a @param {string} b */
function commonAncestor(a, b) {
  const pa = a.split(sep);
  const pb = b.split(sep);
  let i = 0;
  while (i < pa.length && i < pb.length && pa[i] === pb[i]) i++;
  return pa.slice(0, i).join(sep) || sep;
}
