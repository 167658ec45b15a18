import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, test } from "node:test";
import ts from "typescript";

/**
 * Which part of the project may import which (docs/architecture.md "Layout"):
 *
 * - lab/ is the local lab: only lab/ itself and tests/ import it (what
 *   `pulumi up` runs must not depend on it);
 * - plan/ and cloud-init/ are pure: no Pulumi, no components/, ops/ or lab/;
 * - checks/ (what "ready" means, ClusterAccess, the NodeTransport interface)
 *   is shared by ops/ and lab/: it imports neither lab/ nor components/;
 * - ops/ imports from the project only checks/, plan/, cloud-init/ and itself.
 */

const ROOT = path.join(__dirname, "..", "..");
/** Not the project's sources: dependencies, git, the lab's state, build output. */
const SKIPPED_DIRS = new Set(["node_modules", ".git", ".lab", "bin"]);

interface SourceFile {
  /** Relative to the project root, with forward slashes. */
  file: string;
  text: string;
}

interface Violation {
  file: string;
  specifier: string;
  rule: string;
}

/** Every .ts file of the project. */
function projectSources(dir = ROOT): SourceFile[] {
  const out: SourceFile[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory() && !SKIPPED_DIRS.has(entry.name)) out.push(...projectSources(full));
    else if (entry.isFile() && entry.name.endsWith(".ts")) out.push({ file: path.relative(ROOT, full).split(path.sep).join("/"), text: fs.readFileSync(full, "utf8") });
  }
  return out;
}

/** Import, export-from, import-equals, require() and import() specifiers, as the TypeScript compiler reads them. */
function importSpecifiers(text: string): string[] {
  return ts.preProcessFile(text, true, true).importedFiles.map((f) => f.fileName);
}

/** A relative specifier as a project-root path ("lab/verify"); a package's name otherwise ("@pulumi/aws"). */
function target(file: string, specifier: string): { local: boolean; path: string } {
  if (!specifier.startsWith(".")) return { local: false, path: specifier };
  return { local: true, path: path.posix.normalize(path.posix.join(path.posix.dirname(file), specifier)) };
}

const topDir = (p: string): string => (p.includes("/") ? p.slice(0, p.indexOf("/")) : "");
const under = (p: string, dir: string): boolean => p === dir || p.startsWith(`${dir}/`);

/** The import rules broken by these files, each naming the file and the import. */
function importViolations(files: SourceFile[]): Violation[] {
  const violations: Violation[] = [];
  for (const { file, text } of files) {
    const from = topDir(file);
    for (const specifier of importSpecifiers(text)) {
      const to = target(file, specifier);
      const broken = (rule: string): void => void violations.push({ file, specifier, rule });
      if (to.local && under(to.path, "lab") && from !== "lab" && from !== "tests") broken("only lab/ and tests/ import lab/");
      if (from === "plan" || from === "cloud-init") {
        if (!to.local && (to.path === "@pulumi" || to.path.startsWith("@pulumi/"))) broken(`${from}/ is pure: no @pulumi/*`);
        for (const dir of ["components", "ops", "lab"]) if (to.local && under(to.path, dir)) broken(`${from}/ is pure: no ${dir}/`);
      }
      if (from === "checks") for (const dir of ["lab", "components"]) if (to.local && under(to.path, dir)) broken(`checks/ imports no ${dir}/`);
      if (from === "ops" && to.local && !["checks", "plan", "cloud-init", "ops"].includes(topDir(`${to.path}/`))) broken("ops/ imports only checks/, plan/ and cloud-init/");
    }
  }
  return violations;
}

const describeViolation = (v: Violation): string => `${v.file}: import ${JSON.stringify(v.specifier)} (${v.rule})`;

describe("import rules", () => {
  test("control: offending imports are reported, naming the file and the import; allowed ones are not", () => {
    const reported = importViolations([
      { file: "ops/readiness.ts", text: 'import type { ClusterAccess } from "../lab/cluster";\nimport { verifyReadiness } from "../checks/readiness";' },
      { file: "index.ts", text: 'export * from "./lab";' },
      { file: "components/readiness-gate.ts", text: 'const { verifyCluster } = require("../lab/verify");' },
      { file: "plan/plan.ts", text: 'import * as pulumi from "@pulumi/pulumi";\nimport { x } from "../components/cluster";\nimport {\n  y,\n} from "./types";' },
      { file: "cloud-init/patroni.ts", text: 'type R = typeof import("../ops/rollout");' },
      { file: "checks/cluster.ts", text: 'import type { LabTransport } from "../lab/transport";\nimport { NODE_PATHS } from "../plan";' },
      { file: "ops/rollout.ts", text: 'import { PgHaCluster } from "../components/cluster";\nimport { PATH_MTU_UNIT } from "../cloud-init/systemd";' },
      { file: "lab/drills.ts", text: 'import { quickHealth } from "./verify";\nimport { clusterView } from "../checks/cluster";' },
      { file: "tests/unit/x.test.ts", text: 'import { acquireLabLock } from "../../lab/lock";' },
      { file: "plan/labels.ts", text: 'import "./lab-names";' },
    ]).map(describeViolation);
    assert.deepEqual(reported, [
      'ops/readiness.ts: import "../lab/cluster" (only lab/ and tests/ import lab/)',
      'ops/readiness.ts: import "../lab/cluster" (ops/ imports only checks/, plan/ and cloud-init/)',
      'index.ts: import "./lab" (only lab/ and tests/ import lab/)',
      'components/readiness-gate.ts: import "../lab/verify" (only lab/ and tests/ import lab/)',
      'plan/plan.ts: import "@pulumi/pulumi" (plan/ is pure: no @pulumi/*)',
      'plan/plan.ts: import "../components/cluster" (plan/ is pure: no components/)',
      'cloud-init/patroni.ts: import "../ops/rollout" (cloud-init/ is pure: no ops/)',
      'checks/cluster.ts: import "../lab/transport" (only lab/ and tests/ import lab/)',
      'checks/cluster.ts: import "../lab/transport" (checks/ imports no lab/)',
      'ops/rollout.ts: import "../components/cluster" (ops/ imports only checks/, plan/ and cloud-init/)',
    ]);
  });

  test("the project's own files keep them", () => {
    const files = projectSources();
    const names = new Set(files.map((f) => f.file));
    // The walk really read the tree (so an empty list proves something).
    for (const file of [
      "index.ts",
      "ops/readiness.ts",
      "ops/rollout.ts",
      "checks/readiness.ts",
      "checks/transport.ts",
      "plan/plan.ts",
      "lab/drills.ts",
      "tests/unit/import-rules.test.ts",
    ])
      assert.ok(names.has(file), `${file} not found by the walk`);
    assert.ok(importSpecifiers(files.find((f) => f.file === "ops/rollout.ts")?.text ?? "").includes("../plan"), "ops/rollout.ts's imports were read");
    assert.deepEqual(importViolations(files).map(describeViolation), []);
  });
});
