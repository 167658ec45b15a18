// @ts-check
/**
 * The package build (`npm run build`): compile library.ts and what it imports
 * with tsconfig.build.json, then copy the files that code reads at run time.
 *
 *   node build-package.mjs [outDir]     (default: dist)
 *
 * The out dir is an argument so tests/unit/package-example.test.ts can build
 * into a temporary directory instead of the shared working tree.
 *
 * Plain JavaScript on purpose: it must run with plain node, before anything is
 * compiled and without tsx.
 */
import { execFileSync } from "node:child_process";
import { cpSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = dirname(fileURLToPath(import.meta.url));

/**
 * What the compiled code reads via __dirname: cloud-init/scripts.ts reads the
 * boot scripts from `scripts/`, cloud-init/user-data.ts the PGDG key from
 * `keys/`. They must sit at the same place relative to the compiled modules
 * as to the sources, or rendering user-data throws ENOENT.
 */
export const RUNTIME_ASSETS = ["cloud-init/scripts", "cloud-init/keys"];

const outDir = resolve(process.argv[2] ?? join(ROOT, "dist"));
// A clean build: a module removed from the sources must not linger in the package.
rmSync(outDir, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
execFileSync(process.execPath, [tsc, "-p", join(ROOT, "tsconfig.build.json"), "--outDir", outDir], { stdio: "inherit" });
for (const asset of RUNTIME_ASSETS) cpSync(join(ROOT, asset), join(outDir, asset), { recursive: true });
