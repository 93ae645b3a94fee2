// Builds a JavaScript Switchboard plugin into a WASM component (one world of
// plugin-api/wit/plugin.wit) with componentize-js, called directly:
//
//   node plugin-api/js/build.mjs [--world realtime|stt|llm|tts] <plugin.js> <out.wasm>
//
// (after `npm ci` in plugin-api/js; offline from then on). <plugin.js> default-exports
// `realtimePlugin({...})`, `sttPlugin`, `llmPlugin` or `ttsPlugin` from this SDK (index.js) and may
// import other modules by relative path.
//
// The world: the build imports the plugin module in Node and reads which declaration it
// default-exports (`realtime-plugin`, `stt-plugin`, `llm-plugin` or `tts-plugin`). `--world`
// states it instead — for a module that cannot be imported in Node; the entry still checks that
// the module declares that world, and as componentize-js runs the entry's top level while it
// builds (wizer), a mismatch fails the build, naming the declaration expected.
//
// Why not `jco componentize`: jco 1.35.0's WASI shim gives its wasm-tools no file access, so it
// fails before building. Features turned off: `http` and `fetch-event` (they import
// `wasi:http/types`, which the gateway does not link: plugins do HTTP through the host's
// `http-send`). `stdio`, `random` and `clocks` stay (the host links wasi:cli, wasi:random and
// wasi:clocks). Prints the build time and the component's size.
import { mkdtemp, writeFile, stat, rm, mkdir } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { componentize } from '@bytecodealliance/componentize-js';
import { WORLDS } from './index.js';

const USAGE = 'usage: node plugin-api/js/build.mjs [--world realtime|stt|llm|tts] <plugin.js> <out.wasm>';
const here = dirname(fileURLToPath(import.meta.url));
let args;
try {
  args = parseArgs({ options: { world: { type: 'string' } }, allowPositionals: true });
} catch (e) {
  console.error(`build: ${/** @type {Error} */ (e).message}\n${USAGE}`);
  process.exit(2);
}
const [pluginArg, outArg] = args.positionals;
if (!pluginArg || !outArg || args.positionals.length > 2) {
  console.error(USAGE);
  process.exit(2);
}
const plugin = resolve(pluginArg);
const out = resolve(outArg);
const started = performance.now();
const kind = args.values.world ?? (await declaredKind(plugin));
if (!Object.prototype.hasOwnProperty.call(WORLDS, kind)) {
  console.error(`build: unknown world ${JSON.stringify(kind)} (known: ${Object.keys(WORLDS).join(', ')})\n${USAGE}`);
  process.exit(2);
}
const { world, exportName } = WORLDS[/** @type {keyof typeof WORLDS} */ (kind)];

// The entry module binds the component's host imports to the SDK, then exports the plugin's
// interface (`realtime`, `stt`, `llm` or `tts`). componentize-js maps its working directory into
// the build as `/`, so the build runs in the deepest directory holding both this SDK and the
// plugin, and the entry (in .build/, git-ignored) imports both by relative path; the plugin's own
// relative imports resolve as they do in Node.
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
    `if (!plugin || typeof plugin.exports !== 'function' || plugin.world !== ${JSON.stringify(world)}) {`,
    `  throw new Error(${JSON.stringify(`the plugin module must default-export ${kind}Plugin({ info, open }) (world ${world})`)});`,
    `}`,
    `export const ${exportName} = plugin.exports();`,
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
    worldName: world,
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
console.error(`built ${out} (${world}): ${(size / 1e6).toFixed(1)} MB in ${seconds} s`);

/**
 * The world the plugin module declares: its default export's `kind` (see index.js `WORLDS`).
 * @param {string} path
 * @returns {Promise<string>}
 */
async function declaredKind(path) {
  let module;
  try {
    module = await import(pathToFileURL(path).href);
  } catch (e) {
    console.error(`build: importing ${path} in Node to learn its world failed (${/** @type {Error} */ (e).message}); pass --world`);
    process.exit(2);
  }
  const kind = module.default?.kind;
  if (typeof kind !== 'string') {
    console.error(`build: ${path} must default-export realtimePlugin, sttPlugin, llmPlugin or ttsPlugin({ info, open }) from the SDK`);
    process.exit(2);
  }
  return kind;
}

/** The deepest directory containing both paths. @param {string} a @param {string} b */
function commonAncestor(a, b) {
  const pa = a.split(sep);
  const pb = b.split(sep);
  let i = 0;
  while (i < pa.length && i < pb.length && pa[i] === pb[i]) i++;
  return pa.slice(0, i).join(sep) || sep;
}
