/**
 * Runs the project's program (index.ts) under Pulumi mocks for one stack file
 * and one stack name, and returns the resource graph the engine would see:
 * every resource with its inputs, the mock's outputs, its options and its
 * per-property dependencies, plus every invoke and every side effect the
 * program attempted (file writes, processes, network connections).
 *
 * Each run happens in a fresh Node process (`programGraph`), so module-level
 * state of one run cannot hide nondeterminism from the next, and a run can be
 * perturbed (clock, time zone, working directory, user) from outside.
 *
 * Test tooling only: nothing here is loaded by the policy pack itself.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

export const PROJECT_ROOT = resolve(__dirname, "..", "..");
const MARKER = "@@PGHA-GRAPH@@";

export interface GraphResource {
  type: string;
  name: string;
  urn: string;
  custom: boolean;
  inputs: Record<string, any>;
  secretInputs: string[];
  state: Record<string, any>;
  provider: string;
  parent: string;
  protect: boolean;
  ignoreChanges: string[];
  dependencies: string[];
  /** Input property → URNs of the resources its value came from. */
  propertyDependencies: Record<string, string[]>;
  deleteBeforeReplace: boolean;
}

export interface ProgramGraph {
  stack: string;
  preview: boolean;
  renderer: "real" | "stand-in";
  resources: GraphResource[];
  invocations: { token: string; inputs: Record<string, any>; provider: string }[];
  /** `fs.writeFileSync /path`, `child_process.spawn git`, `https.request …` — attempted by the program. */
  sideEffects: string[];
  /** The stack outputs, secret ones included (mock values). */
  outputs: Record<string, unknown>;
}

export interface PerturbOptions {
  /** Milliseconds added to the clock (`Date`, `Date.now`). */
  clockOffsetMs?: number;
  /** Working directory of the run (the program must not depend on it). */
  cwd?: string;
  /** Extra environment (e.g. TZ, USER, HOME). */
  env?: Record<string, string>;
}

export interface GraphRequest {
  /** Stack file relative to the project root, e.g. `Pulumi.dev.yaml`. */
  stackFile: string;
  stack: string;
  /** Run as `pulumi preview` does (`isDryRun()` true). */
  preview?: boolean;
  perturb?: PerturbOptions;
  /** Control: write a temp file and start a process as the program would, to prove the watch sees it. */
  selfTest?: boolean;
}

/** Runs the program in a child process and returns its graph. */
export function programGraph(request: GraphRequest): Promise<ProgramGraph> {
  const env = { ...process.env, ...(request.perturb?.env ?? {}), PGHA_GRAPH_REQUEST: JSON.stringify(request) };
  // tsx by absolute URL: the run's working directory may be outside the project.
  const tsx = pathToFileURL(require.resolve("tsx", { paths: [PROJECT_ROOT] })).href;
  const child = spawn(process.execPath, ["--import", tsx, __filename], {
    cwd: request.perturb?.cwd ?? PROJECT_ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  return new Promise((resolvePromise, reject) => {
    child.on("error", reject);
    child.on("close", (code) => {
      const line = stdout.split("\n").find((l) => l.startsWith(MARKER));
      if (code !== 0 || !line) {
        reject(new Error(`program graph for ${request.stack} (${request.stackFile}) failed with exit code ${code}:\n${stderr}\n${stdout.slice(0, 4000)}`));
        return;
      }
      try {
        resolvePromise(JSON.parse(line.slice(MARKER.length)) as ProgramGraph);
      } catch (error) {
        reject(new Error(`program graph for ${request.stack}: unreadable output (${(error as Error).message})`));
      }
    });
  });
}

/** A stack file's `config:` as the CLI hands it to the program: scalars as text, structures as JSON. */
export function stackFileConfig(stackFile: string): Record<string, string> {
  // js-yaml is a dependency of the project (the program's tests use it too).
  const { load } = require("js-yaml") as typeof import("js-yaml");
  const doc = load(readFileSync(join(PROJECT_ROOT, stackFile), "utf8")) as { config?: Record<string, unknown> };
  return Object.fromEntries(Object.entries(doc.config ?? {}).map(([key, value]) => [key, typeof value === "string" ? value : JSON.stringify(value)]));
}

// ---------------------------------------------------------------------------
// Child side
// ---------------------------------------------------------------------------

/** Wraps every function of `target` named in `names` so calls are recorded first. */
function watch(target: any, label: string, names: string[], sideEffects: string[], ignore: (arg: unknown) => boolean = () => false): void {
  for (const name of names) {
    const original = target?.[name];
    if (typeof original !== "function") continue;
    target[name] = function (this: unknown, ...args: unknown[]) {
      if (!ignore(args[0])) sideEffects.push(`${label}.${name} ${String(args[0]).slice(0, 200)}`);
      return original.apply(this, args);
    };
  }
}

function installWatchers(sideEffects: string[]): void {
  const fs = require("node:fs");
  const tmp = require("node:os").tmpdir();
  // tsx may cache transpiled files in the temp directory; that is the test harness, not the program.
  const harness = (arg: unknown) => typeof arg === "string" && arg.startsWith(join(tmp, "tsx"));
  const fsWrites = [
    "writeFile",
    "writeFileSync",
    "appendFile",
    "appendFileSync",
    "mkdir",
    "mkdirSync",
    "mkdtemp",
    "mkdtempSync",
    "rm",
    "rmSync",
    "rmdir",
    "rmdirSync",
    "unlink",
    "unlinkSync",
    "rename",
    "renameSync",
    "copyFile",
    "copyFileSync",
    "cp",
    "cpSync",
    "symlink",
    "symlinkSync",
    "chmod",
    "chmodSync",
    "chown",
    "chownSync",
    "truncate",
    "truncateSync",
    "createWriteStream",
    "utimes",
    "utimesSync",
  ];
  watch(fs, "fs", fsWrites, sideEffects, harness);
  watch(
    fs.promises,
    "fs.promises",
    ["writeFile", "appendFile", "mkdir", "mkdtemp", "rm", "rmdir", "unlink", "rename", "copyFile", "cp", "symlink", "chmod", "chown", "truncate", "utimes"],
    sideEffects,
    harness,
  );
  const openSync = fs.openSync;
  fs.openSync = function (path: unknown, flags: unknown, ...rest: unknown[]) {
    if (typeof flags === "string" && /[wa+]/.test(flags) && !harness(path)) sideEffects.push(`fs.openSync ${String(path)} ${flags}`);
    return openSync.call(this, path, flags, ...rest);
  };
  watch(require("node:child_process"), "child_process", ["spawn", "spawnSync", "exec", "execSync", "execFile", "execFileSync", "fork"], sideEffects);
  watch(require("node:http"), "http", ["request", "get"], sideEffects);
  watch(require("node:https"), "https", ["request", "get"], sideEffects);
  watch(require("node:net"), "net", ["connect", "createConnection"], sideEffects);
  watch(require("node:tls"), "tls", ["connect"], sideEffects);
  watch(require("node:dgram"), "dgram", ["createSocket"], sideEffects);
  if (typeof (globalThis as any).fetch === "function") watch(globalThis, "globalThis", ["fetch"], sideEffects);
}

function shiftClock(offsetMs: number): void {
  const RealDate = Date;
  const now = () => RealDate.now() + offsetMs;
  class ShiftedDate extends RealDate {
    constructor(...args: any[]) {
      if (args.length === 0) super(now());
      else super(...(args as [any]));
    }
    static now(): number {
      return now();
    }
  }
  (globalThis as any).Date = ShiftedDate;
}

async function childMain(request: GraphRequest): Promise<void> {
  const sideEffects: string[] = [];
  if (request.perturb?.clockOffsetMs) shiftClock(request.perturb.clockOffsetMs);
  installWatchers(sideEffects);

  const pulumi = require("@pulumi/pulumi") as typeof import("@pulumi/pulumi");
  const mocks = require(join(PROJECT_ROOT, "tests", "unit", "mocks")) as typeof import("../../tests/unit/mocks");
  const world = mocks.installMocks(request.stack);
  // `_setIsDryRun` is the SDK's (untyped) test hook behind `setMocks(..., preview)`.
  if (request.preview) (pulumi.runtime as unknown as { _setIsDryRun(value: boolean): void })._setIsDryRun(true);

  // Record per-property dependencies, which mocks.ts does not keep.
  const propertyDependencies = new Map<string, Record<string, string[]>>();
  const monitor = pulumi.runtime.getMonitor() as any;
  const register = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req: any, callback: (err: any, resp: any) => void) => {
    const deps: Record<string, string[]> = {};
    req.getPropertydependenciesMap().forEach((value: any, key: string) => {
      deps[key] = [...value.getUrnsList()].sort();
    });
    propertyDependencies.set(`${req.getType()}::${req.getName()}`, deps);
    return register(req, callback);
  };

  const renderer = mocks.prepareRenderer(() => {
    const { buildClusterPlan } = require(join(PROJECT_ROOT, "plan")) as typeof import("../../plan");
    const { renderUserData } = require(join(PROJECT_ROOT, "cloud-init", "user-data")) as typeof import("../../cloud-init/user-data");
    renderUserData(buildClusterPlan({}, { stack: "probe" }), "pg-seoul-1", { dataVolumeId: "vol-0123456789abcdef0" });
  });
  // The probe above is harness work; only what the program does from here on counts.
  sideEffects.length = 0;
  if (request.selfTest) {
    const file = join(require("node:os").tmpdir(), `pgha-graph-selftest-${process.pid}`);
    require("node:fs").writeFileSync(file, "side effect");
    require("node:child_process").spawnSync("true");
    require("node:fs").unlinkSync(file);
  }

  pulumi.runtime.setAllConfig(stackFileConfig(request.stackFile));
  const program = require(join(PROJECT_ROOT, "index")) as Record<string, unknown>;
  const outputs: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(program)) {
    if (pulumi.Output.isInstance(value)) outputs[key] = await mocks.valueOf(value);
  }
  await world.settle();
  const effects = [...sideEffects];

  const graph: ProgramGraph = {
    stack: request.stack,
    preview: pulumi.runtime.isDryRun(),
    renderer,
    resources: world.resources.map((r) => ({ ...r, propertyDependencies: propertyDependencies.get(`${r.type}::${r.name}`) ?? {} })),
    invocations: world.invocations,
    sideEffects: effects,
    outputs,
  };
  // stdout is a pipe: exit only once the whole graph has been flushed.
  await new Promise<void>((done) =>
    process.stdout.write(`${MARKER}${JSON.stringify(graph)}\n`, () => {
      done();
    }),
  );
}

if (require.main === module) {
  const request = JSON.parse(process.env.PGHA_GRAPH_REQUEST ?? "null") as GraphRequest | null;
  if (!request) {
    console.error("program-graph: set PGHA_GRAPH_REQUEST (this file is run by programGraph())");
    process.exit(2);
  }
  childMain(request).then(
    () => process.exit(0),
    (error: unknown) => {
      console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
      process.exit(1);
    },
  );
}
