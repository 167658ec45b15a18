/**
 * A replacement Pulumi would decide by itself: the plan moves a node to
 * another private IP. The node's launch record (a Stash) still holds the IP
 * it was launched with; the program must refuse before that instance is
 * registered, naming the node, the change and the way out.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { describe, it } from "node:test";
import { buildClusterPlan } from "../../plan";
import { launchIdentityChange } from "../../components/node-instance";

const program = path.join(__dirname, "programs", "moved-node.ts");
/** The program's report (its first stdout line; Pulumi's leak notice on exit is not ours to judge). */
function run(mode: "moved" | "same"): { errors: string[]; instances: string[] } {
  const child = spawnSync(process.execPath, ["--import", "tsx", program, mode], { encoding: "utf8", timeout: 60_000 });
  const report = child.stdout.split("\n")[0];
  assert.ok(report.startsWith("{"), `no report from ${program} ${mode}:\n${child.stdout}${child.stderr}`);
  return JSON.parse(report);
}
const planned = buildClusterPlan(undefined, { stack: "test" })
  .nodes.map((n) => n.privateIp)
  .sort();
const URN = "urn:pulumi:test::pgha-multiregion::pgha:aws:PatroniNode$pulumi:index:Stash::pgha-pg-seoul-1-instance-launch";

describe("a node whose launch identity changed", () => {
  it("is refused before its instance is registered, with the node, the change, the reason and the deliberate rebuild", () => {
    const { errors, instances } = run("moved");
    assert.equal(errors.length, 1, errors.join("\n"));
    assert.match(errors[0], /pgha: refusing to replace pg-seoul-1: privateIp "10\.1\.0\.11" → "10\.1\.0\.10" can only be applied by a new instance/);
    assert.match(errors[0], /user-data and AMI recorded at launch \(ignoreChanges\)/);
    assert.ok(errors[0].includes(`pulumi destroy --target '${URN}' --target-dependents, then pulumi up`), errors[0]);
    assert.ok(!instances.includes("10.1.0.10"), "the moved node's instance must not be registered");
    assert.deepEqual(
      instances,
      planned.filter((ip) => ip !== "10.1.0.10"),
    );
  });

  it("goes through when the record matches the plan (control)", () => {
    const { errors, instances } = run("same");
    assert.deepEqual(errors, []);
    assert.deepEqual(instances, planned);
  });

  it("names every identity field that changed, and nothing on first launch", () => {
    const launched = { privateIp: "10.1.0.10", subnetId: "subnet-a" };
    assert.equal(launchIdentityChange("n", undefined, launched, URN), undefined);
    assert.equal(launchIdentityChange("n", launched, { ...launched }, URN), undefined);
    const both = launchIdentityChange("n", launched, { privateIp: "10.1.1.10", subnetId: "subnet-b" }, URN) ?? "";
    assert.match(both, /^pgha: refusing to replace n: privateIp "10\.1\.0\.10" → "10\.1\.1\.10", subnetId "subnet-a" → "subnet-b" can only/);
    assert.equal(both.split("\n").length, 1);
  });
});
