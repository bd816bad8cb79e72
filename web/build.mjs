// Bundle the web client to static files: src/app.ts -> <out>/app.js, plus index.html and styles.css.
// Usage: node build.mjs [--out DIR | --outdir=DIR] [--dev]   (default: ../signalling/static, served by the token service)
import { build } from 'esbuild';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);

/** The value of `--name DIR` or `--name=DIR`. */
function option(...names) {
  for (const [i, arg] of args.entries()) {
    for (const name of names) {
      if (arg === name && i + 1 < args.length) return args[i + 1];
      if (arg.startsWith(`${name}=`)) return arg.slice(name.length + 1);
    }
  }
  return undefined;
}

const out = resolve(here, option('--out', '--outdir') ?? '../signalling/static');
const dev = args.includes('--dev');

// Replace only this build's own files: the output directory may hold other things.
await mkdir(out, { recursive: true });
for (const name of ['app.js', 'app.js.map', 'app.js.LEGAL.txt', 'index.html', 'styles.css']) {
  await rm(resolve(out, name), { force: true });
}
const result = await build({
  entryPoints: [resolve(here, 'src/app.ts')],
  outfile: resolve(out, 'app.js'),
  bundle: true,
  format: 'esm',
  target: ['es2022', 'chrome110', 'firefox110', 'safari16'],
  minify: !dev,
  sourcemap: true,
  legalComments: 'linked',
  metafile: true,
  logLevel: 'warning',
});
await copyFile(resolve(here, 'src/index.html'), resolve(out, 'index.html'));
await copyFile(resolve(here, 'src/styles.css'), resolve(out, 'styles.css'));
const js = Object.entries(result.metafile.outputs).find(([path]) => path.endsWith('app.js'));
console.log(`web client built to ${out} (app.js ${((js?.[1].bytes ?? 0) / 1024).toFixed(0)} KiB)`);
