/**
 * Preview safety: `pulumi preview` of an unchanged program and config must
 * propose nothing, so every resource input has to be a function of the
 * config alone — no clock, random value, working directory, user or time
 * zone may leak into names, tags, certificates or user-data — and the program
 * must not touch anything outside the engine while it runs.
 *
 * The program (index.ts, Pulumi.dev.yaml) runs twice as a preview under
 * mocks, each time in a fresh Node process; the second run has its clock
 * moved three days ahead, another time zone, another working directory and
 * another user. Every resource's inputs, secret markers and options must be
 * identical. Controls: a run for another stack differs (so the comparison can
 * fail), and a run that writes a file and starts a process has those side
 * effects recorded (so the watch can fail).
 */
import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import { before, describe, it } from "node:test";
import { programGraph, type GraphResource, type ProgramGraph } from "../../policy/testing/program-graph";

const THREE_DAYS_MS = 3 * 24 * 60 * 60 * 1000;

let first: ProgramGraph;
let second: ProgramGraph;
let otherStack: ProgramGraph;

before(async () => {
  [first, second, otherStack] = await Promise.all([
    programGraph({ stackFile: "Pulumi.dev.yaml", stack: "dev", preview: true }),
    programGraph({
      stackFile: "Pulumi.dev.yaml",
      stack: "dev",
      preview: true,
      perturb: {
        clockOffsetMs: THREE_DAYS_MS,
        cwd: tmpdir(),
        env: { TZ: "Pacific/Kiritimati", USER: "someone-else", LOGNAME: "someone-else", HOME: tmpdir(), LANG: "de_DE.UTF-8" },
      },
    }),
    programGraph({ stackFile: "Pulumi.dev.yaml", stack: "other", preview: true, selfTest: true }),
  ]);
});

/** What the engine compares between two previews of a resource. */
function engineView(r: GraphResource) {
  const sorted = (values: string[]) => [...values].sort();
  return {
    type: r.type,
    custom: r.custom,
    inputs: r.inputs,
    secretInputs: sorted(r.secretInputs),
    provider: r.provider,
    parent: r.parent,
    protect: r.protect,
    ignoreChanges: sorted(r.ignoreChanges),
    dependencies: sorted(r.dependencies),
    propertyDependencies: Object.fromEntries(Object.entries(r.propertyDependencies).sort(([a], [b]) => a.localeCompare(b))),
    deleteBeforeReplace: r.deleteBeforeReplace,
  };
}

/** Differences between two runs, one line per resource (URN) that differs or exists in only one. */
function differences(a: ProgramGraph, b: ProgramGraph): string[] {
  const index = (graph: ProgramGraph) => new Map(graph.resources.map((r) => [r.urn, r]));
  const [left, right] = [index(a), index(b)];
  const lines: string[] = [];
  for (const [urn, resource] of left) {
    const other = right.get(urn);
    if (!other) {
      lines.push(`only in the first run: ${urn}`);
      continue;
    }
    const [x, y] = [engineView(resource), engineView(other)];
    const keys = (Object.keys(x) as (keyof typeof x)[]).filter((key) => JSON.stringify(x[key]) !== JSON.stringify(y[key]));
    if (keys.length === 0) continue;
    const inputs = keys.includes("inputs")
      ? Object.keys({ ...resource.inputs, ...other.inputs }).filter((k) => JSON.stringify(resource.inputs[k]) !== JSON.stringify(other.inputs[k]))
      : [];
    lines.push(`${urn}: ${keys.join(", ")}${inputs.length ? ` (inputs ${inputs.join(", ")})` : ""}`);
  }
  for (const urn of right.keys()) if (!left.has(urn)) lines.push(`only in the second run: ${urn}`);
  return lines;
}

describe("two previews of the same config", () => {
  it("register the same resources, in the same order", () => {
    assert.ok(first.resources.length > 250, `expected the full graph, got ${first.resources.length}`);
    assert.deepEqual(
      second.resources.map((r) => r.urn),
      first.resources.map((r) => r.urn),
    );
  });

  it("give every resource identical inputs, secret markers and options (clock +3 days, other TZ, cwd and user)", () => {
    const diff = differences(first, second);
    assert.deepEqual(diff, [], diff.slice(0, 20).join("\n"));
  });

  it("render identical user-data and certificate requests (the parts most likely to drift)", () => {
    const pick = (graph: ProgramGraph, type: string, key: string) => graph.resources.filter((r) => r.type === type).map((r) => JSON.stringify(r.inputs[key]));
    for (const [type, key] of [
      ["aws:ec2/instance:Instance", "userDataBase64"],
      ["tls:index/certRequest:CertRequest", "ipAddresses"],
      ["tls:index/locallySignedCert:LocallySignedCert", "validityPeriodHours"],
      ["tls:index/selfSignedCert:SelfSignedCert", "subject"],
      ["random:index/randomPassword:RandomPassword", "length"],
    ]) {
      const values = pick(first, type, key);
      assert.ok(values.length > 0 && values.every((v) => v !== undefined), `${type}.${key} missing`);
      assert.deepEqual(pick(second, type, key), values, `${type}.${key}`);
    }
  });

  it("call the same read-only data sources with the same arguments", () => {
    assert.deepEqual(second.invocations, first.invocations);
    for (const call of first.invocations) assert.match(call.token.split(":").pop() ?? "", /^get[A-Z]/, `${call.token} is not a read-only lookup`);
  });

  it("have no side effects: no file written, no process started, no connection opened", () => {
    assert.deepEqual(first.sideEffects, []);
    assert.deepEqual(second.sideEffects, []);
  });

  it("run as a preview (isDryRun) and still resolve every output", () => {
    assert.equal(first.preview, true);
    assert.ok(Array.isArray(first.outputs.haproxyEndpoints));
    assert.deepEqual(second.outputs, first.outputs);
  });
});

describe("controls", () => {
  it("a run for another stack differs, and the comparison reports it", () => {
    const diff = differences(first, otherStack);
    assert.ok(diff.length > 100, `expected the stack name to reach most resources, got ${diff.length} differences`);
    assert.ok(diff.some((line) => line.startsWith("only in the first run: urn:pulumi:dev::")));
  });

  it("a changed input of one resource is reported with its name", () => {
    const changed: ProgramGraph = JSON.parse(JSON.stringify(first));
    const instance = changed.resources.find((r) => r.type === "aws:ec2/instance:Instance")!;
    instance.inputs.tags = { ...instance.inputs.tags, "created-at": new Date().toISOString() };
    assert.deepEqual(differences(first, changed), [`${instance.urn}: inputs (inputs tags)`]);
  });

  it("the side-effect watch records a file write and a process start", () => {
    assert.ok(
      otherStack.sideEffects.some((effect) => effect.startsWith("fs.writeFileSync ")),
      otherStack.sideEffects.join("\n"),
    );
    assert.ok(
      otherStack.sideEffects.some((effect) => effect.startsWith("child_process.spawnSync ")),
      otherStack.sideEffects.join("\n"),
    );
  });
});
