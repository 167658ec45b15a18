/**
 * The npm package as a consumer gets it (docs/packaging.md): built with the
 * real build (build-package.mjs, tsconfig.build.json) into a temporary copy,
 * packed with `npm pack` (so package.json "files" decides what ships),
 * unpacked as node_modules/pgha-multiregion of a temporary copy of
 * examples/basic. Then:
 *
 * - examples/basic and the example in docs/packaging.md type-check against
 *   the packed declarations, resolving the bare name through "exports" (the
 *   example's moduleResolution is node16): a missing export or a changed
 *   type fails here;
 * - plain node (no tsx) loads the packed entry without a Pulumi engine (so
 *   importing creates no resource) and renders every node's user-data of
 *   Pulumi.dev.yaml byte for byte as the sources do — which needs the boot
 *   scripts and the PGDG key the code reads via __dirname;
 * - the example runs under Pulumi mocks (tests/unit/mocks.ts) with its own
 *   Pulumi.dev.yaml: its db: keys make a valid plan and the packed
 *   PgHaCluster registers the cluster.
 *
 * Nothing is written to the working tree; the repository's node_modules
 * serves the dependencies (@pulumi/*, js-yaml, @types/node) through a
 * symlink beside the example copy.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { load } from "js-yaml";
import { TYPE_PREFIX } from "../../components/naming";
import { buildClusterPlan, renderUserData } from "../../library";

const ROOT = join(__dirname, "..", "..");
const PACKAGE = "pgha-multiregion";
const DATA_VOLUME = "vol-0123456789abcdef0";

/** A stack file's `config:`. */
function stackFile(file: string): Record<string, unknown> {
  return (load(readFileSync(file, "utf8")) as { config: Record<string, unknown> }).config;
}

/** `pgha:` keys of a stack file, as index.ts passes them to the plan. */
function stackPlanInput(file: string): Record<string, unknown> {
  return Object.fromEntries(Object.entries(stackFile(file)).flatMap(([key, value]) => (key.startsWith("pgha:") ? [[key.slice("pgha:".length), value]] : [])));
}

/** Runs a command without this test's NODE_OPTIONS: the loader the test runs under (tsx) must not reach the children. */
function run(file: string, args: string[], cwd: string): string {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  try {
    return execFileSync(file, args, { cwd, env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${[file, ...args].join(" ")} failed:\n${failed.stdout ?? ""}${failed.stderr ?? failed.message}`, { cause: error });
  }
}

/**
 * Compiled with the example: the names must resolve to real types (a
 * declaration that lost its import would turn them into `any`, which
 * skipLibCheck hides), and names that are not the API must not resolve.
 */
const API_GUARD = `import type { ClusterConfigInput, ClusterPlan, PgHaClusterArgs, PlanOptions } from "${PACKAGE}";
import { buildClusterPlan, PgHaCluster } from "${PACKAGE}";
type IsAny<T> = 0 extends 1 & T ? true : false;
export const typed: [IsAny<ClusterPlan>, IsAny<ClusterConfigInput>, IsAny<PgHaClusterArgs["plan"]>, IsAny<PlanOptions>, IsAny<typeof buildClusterPlan>, IsAny<PgHaCluster["haproxyEndpoints"]>] = [false, false, false, false, false, false];
// @ts-expect-error not exported: the API is library.ts
export { nodeKind } from "${PACKAGE}";
// @ts-expect-error deep imports are closed by package.json "exports"
export { buildClusterPlan as deep } from "${PACKAGE}/dist/plan";
`;

/** Run by plain node in the consumer: load the package by name, plan and render the sample stack. */
const RENDER_SCRIPT = `"use strict";
if (".ts" in require.extensions || process.execArgv.length > 0) throw new Error("not plain node: " + process.execArgv.join(" "));
const pkg = require("${PACKAGE}");
const [input, stack, volume] = JSON.parse(process.argv[2]);
const plan = pkg.buildClusterPlan(input, { stack });
const userData = Object.fromEntries(plan.nodes.map((node) => [node.name, pkg.renderUserData(plan, node.name, { dataVolumeId: volume })]));
for (const text of Object.values(userData)) pkg.encodeUserData(text);
process.stdout.write(JSON.stringify({ entry: require.resolve("${PACKAGE}"), exported: Object.keys(pkg).sort(), userData }));
`;

/** Run with tsx in the consumer (the example is TypeScript; the package it loads is not). */
const MOCK_RUN_SCRIPT = `import * as pulumi from "@pulumi/pulumi";
import { installMocks, valueOf } from ${JSON.stringify(join(ROOT, "tests", "unit", "mocks"))};
const world = installMocks("dev");
pulumi.runtime.setAllConfig(JSON.parse(process.argv[2]));
const program = require("./index") as { writerEndpoints: pulumi.Output<string[]> };
void (async () => {
  const writers = await valueOf(program.writerEndpoints);
  await world.settle();
  const gate = world.resources.find((resource) => resource.type === "command:local:Command" && resource.name.endsWith("-gate"));
  process.stdout.write(JSON.stringify({ writers, types: world.resources.map((resource) => resource.type), gateCommand: gate?.inputs.create, gateEnvironment: gate?.inputs.environment }));
})();
`;

describe(`the ${PACKAGE} package, consumed by examples/basic`, () => {
  let tmp = "";
  let consumer = "";
  let packed: string[] = [];

  before(() => {
    tmp = mkdtempSync(join(tmpdir(), "pgha-package-"));
    // The package's own directory: package.json and the build, nothing else of the working tree.
    const stage = join(tmp, "stage");
    mkdirSync(stage);
    cpSync(join(ROOT, "package.json"), join(stage, "package.json"));
    run(process.execPath, [join(ROOT, "build-package.mjs"), join(stage, "dist")], ROOT);
    const [report] = JSON.parse(run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", tmp], stage)) as { filename: string; files: { path: string }[] }[];
    if (!report) throw new Error("npm pack reported no tarball");
    packed = report.files.map((file) => file.path).sort();

    consumer = join(tmp, "consumer");
    cpSync(join(ROOT, "examples", "basic"), consumer, { recursive: true, filter: (source) => !source.split(/[\\/]/).includes("node_modules") });
    const installed = join(consumer, "node_modules", PACKAGE);
    mkdirSync(installed, { recursive: true });
    run("tar", ["-xzf", join(tmp, report.filename), "-C", installed, "--strip-components=1"], tmp);
    // Found by Node's and TypeScript's lookup from the consumer and from the package, one copy of each.
    symlinkSync(join(ROOT, "node_modules"), join(tmp, "node_modules"), "dir");
  });

  after(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("names one declaration entry for every resolver: top-level types (node10) and the exports condition", () => {
    const manifest = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { main: string; types: string; exports: Record<string, { types: string; default: string }> };
    assert.equal(manifest.exports["."]?.types, manifest.types);
    assert.ok(packed.includes(manifest.types.replace(/^\.\//, "")), `${manifest.types} is not in the tarball`);
    assert.ok(packed.includes((manifest.exports["."]?.default ?? "").replace(/^\.\//, "")), "the exports entry is not in the tarball");
    // Pulumi runs the project's own program through Pulumi.yaml's main, never through "exports" (tsconfig.build.json).
    assert.match(readFileSync(join(ROOT, "Pulumi.yaml"), "utf8"), /^main: index\.ts$/m);
    assert.equal(manifest.main, "index.ts");
  });

  it("ships the compiled library, its declarations and the files it reads at run time, and not the program", () => {
    for (const file of ["package.json", "dist/library.js", "dist/library.d.ts", "dist/components/cluster.d.ts", "dist/ops/readiness.js"])
      assert.ok(packed.includes(file), `${file} is not in the tarball`);
    for (const dir of ["cloud-init/scripts", "cloud-init/keys"]) {
      for (const name of readdirSync(join(ROOT, dir))) assert.ok(packed.includes(`dist/${dir}/${name}`), `dist/${dir}/${name} is not in the tarball`);
    }
    // index.ts would create resources and read stack config on import; the library never imports it.
    assert.ok(!packed.includes("dist/index.js"), "the build compiled index.ts: something reachable from library.ts imports it");
    const outside = packed.filter((file) => !file.startsWith("dist/") && file !== "package.json");
    assert.deepEqual(outside, [], "only dist/ and package.json ship");
    assert.deepEqual(
      packed.filter((file) => /^dist\/(lab|tests|policy)\//.test(file)),
      [],
      "the lab, the tests and the policy pack stay out of the package",
    );
  });

  it("type-checks examples/basic and the docs' example against the packed declarations", () => {
    writeFileSync(join(consumer, "package-api.ts"), API_GUARD);
    // The usage shown in docs/packaging.md compiles too.
    const blocks = [...readFileSync(join(ROOT, "docs", "packaging.md"), "utf8").matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((match) => match[1] ?? "");
    const snippet = blocks.find((block) => block.includes(`from "${PACKAGE}"`));
    assert.ok(snippet, "docs/packaging.md has no TypeScript example importing the package");
    writeFileSync(join(consumer, "docs-example.ts"), snippet);
    writeFileSync(join(consumer, "tsconfig.check.json"), JSON.stringify({ extends: "./tsconfig.json", files: ["index.ts", "package-api.ts", "docs-example.ts"] }));
    run(process.execPath, [join(ROOT, "node_modules", "typescript", "bin", "tsc"), "--noEmit", "-p", join(consumer, "tsconfig.check.json")], consumer);
  });

  it("loads with plain node, no engine, and renders Pulumi.dev.yaml's user-data exactly as the sources do", () => {
    const input = stackPlanInput(join(ROOT, "Pulumi.dev.yaml"));
    writeFileSync(join(consumer, "render.js"), RENDER_SCRIPT);
    const out = JSON.parse(run(process.execPath, [join(consumer, "render.js"), JSON.stringify([input, "dev", DATA_VOLUME])], consumer)) as {
      entry: string;
      exported: string[];
      userData: Record<string, string>;
    };
    assert.equal(out.entry, join(consumer, "node_modules", PACKAGE, "dist", "library.js"), "the bare name resolves through exports to dist/library.js");
    for (const name of ["PgHaCluster", "buildClusterPlan", "ConfigError", "DEFAULT_CONFIG", "renderUserData"]) assert.ok(out.exported.includes(name), `${name} is not exported`);

    const plan = buildClusterPlan(input, { stack: "dev" });
    assert.deepEqual(
      Object.keys(out.userData),
      plan.nodes.map((node) => node.name),
    );
    for (const node of plan.nodes)
      assert.equal(out.userData[node.name], renderUserData(plan, node.name, { dataVolumeId: DATA_VOLUME }), `${node.name}: the package renders other user-data`);
  });

  it("runs examples/basic under Pulumi mocks with its own Pulumi.dev.yaml", () => {
    const config = Object.fromEntries(
      Object.entries(stackFile(join(consumer, "Pulumi.dev.yaml"))).map(([key, value]) => [key, typeof value === "string" ? value : JSON.stringify(value)]),
    );
    writeFileSync(join(consumer, "mock-run.ts"), MOCK_RUN_SCRIPT);
    const out = JSON.parse(run(process.execPath, ["--import", "tsx", join(consumer, "mock-run.ts"), JSON.stringify(config)], consumer)) as {
      writers: string[];
      types: string[];
      gateCommand?: string;
      gateEnvironment?: Record<string, string>;
    };
    assert.deepEqual(out.writers, ["10.1.0.20:5000", "10.2.0.20:5000", "10.3.0.20:5000"]);
    assert.equal(out.types.filter((type) => type === "aws:ec2/instance:Instance").length, 6);
    assert.ok(out.types.includes(`${TYPE_PREFIX}:PgHaCluster`), "no PgHaCluster registered");
    // The readiness gate runs the package's compiled script with plain node, by a path relative to the
    // program's directory (the same on every machine, so `pulumi preview` shows no diff between checkouts).
    const gate = out.gateCommand ?? "";
    assert.match(gate, new RegExp(`^node node_modules/${PACKAGE}/dist/ops/readiness\\.js gate --stack `), gate);
    // Run for real from the consumer's directory, as the Command provider runs it: the script loads and
    // parses its arguments; PGHA_SKIP_READINESS=1 stops it before AWS.
    const skipped = spawnSync("/bin/sh", ["-c", gate], {
      cwd: consumer,
      encoding: "utf8",
      env: { ...process.env, ...out.gateEnvironment, PGHA_SKIP_READINESS: "1" },
      timeout: 60_000,
    });
    assert.equal(skipped.status, 0, skipped.stderr);
    assert.match(skipped.stdout, /\[pgha gate\] SKIPPED: PGHA_SKIP_READINESS=1/);
  });
});
