// Regenerates types/ — the TypeScript declarations of the plugin contract — from
// plugin-api/wit/plugin.wit, with jco's type generator (pinned in package-lock.json).
//
//   node plugin-api/js/gen-types.mjs        (after `npm ci` in plugin-api/js)
//
// Why not `jco guest-types ../wit`: jco 1.35.0's bundled WASI shim gives its generator no file
// access ("failed to read path for WIT … os error 44"), so this script reads the WIT itself and
// hands the generator its text. The output is committed (types/); rerun this after a WIT change.
import { readFile, writeFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { $init, generateTypes } from './node_modules/@bytecodealliance/jco-transpile/vendor/js-component-bindgen-component.js';

const here = dirname(fileURLToPath(import.meta.url));
const witPath = join(here, '..', 'wit', 'plugin.wit');
const outDir = join(here, 'types');
const worlds = ['realtime-plugin', 'stt-plugin', 'llm-plugin', 'tts-plugin'];

await $init;
const source = await readFile(witPath, 'utf8');
await rm(outDir, { recursive: true, force: true });
for (const world of worlds) {
  const files = generateTypes(world, {
    wit: { tag: 'source', val: source },
    world,
    guest: true,
    tlaCompat: false,
    features: { tag: 'list', val: [] },
  });
  for (const [name, bytes] of files) {
    const path = join(outDir, name);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, bytes);
    console.log(`wrote ${path}`);
  }
}
