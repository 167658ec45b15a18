/**
 * The program (index.ts) as `pulumi up` runs it: config comes from the
 * runtime (what the CLI passes in PULUMI_CONFIG), the stack is "dev".
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { load } from "js-yaml";
import { buildClusterPlan } from "../../plan";
import { installMocks, prepareRenderer, valueOf } from "./mocks";

const world = installMocks("dev");
prepareRenderer(() => {
  const { renderUserData } = require("../../cloud-init/user-data") as typeof import("../../cloud-init/user-data");
  renderUserData(buildClusterPlan({}, { stack: "dev" }), "pg-seoul-1", { dataVolumeId: "vol-0123456789abcdef0" });
});

type Program = typeof import("../../index");
/** Runs index.ts (a failed run leaves nothing in the require cache, so it can run again). */
const runProgram = () => require("../../index") as Program;

/** A stack file's `config:` as the CLI hands it to the program: scalars as text, structures as JSON. */
function stackConfig(file: string): Record<string, string> {
  const doc = load(readFileSync(join(__dirname, "..", "..", file), "utf8")) as { config: Record<string, unknown> };
  return Object.fromEntries(Object.entries(doc.config).map(([key, value]) => [key, typeof value === "string" ? value : JSON.stringify(value)]));
}

describe("index.ts", () => {
  it("rejects patroni.ttl 15 with the plan's ConfigError line, before registering any resource", async () => {
    pulumi.runtime.setAllConfig({ "pgha:patroni": JSON.stringify({ ttl: 15 }) });
    assert.throws(runProgram, (error: Error) => {
      assert.ok(error.message.split("\n").includes("pgha:patroni.ttl = 15: Patroni requires ttl >= 20"), error.message);
      assert.ok(!/\n\s+at /.test(error.message), "the message carries a stack trace");
      return true;
    });
    await world.settle();
    assert.equal(world.resources.length, 0);
  });

  it("rejects an unknown pgha: key instead of ignoring it", async () => {
    pulumi.runtime.setAllConfig({ "pgha:patrnoi": JSON.stringify({ ttl: 30 }), "aws:region": "ap-northeast-2" });
    assert.throws(runProgram, (error: Error) => error.message.startsWith('pgha:patrnoi = {"ttl":30}: unknown key; expected one of regions,'));
    await world.settle();
    assert.equal(world.resources.length, 0);
  });

  it("deploys the shipped Pulumi.dev.yaml: three regions, endpoints and secret outputs", async () => {
    const config = stackConfig("Pulumi.dev.yaml");
    assert.equal(config["aws:region"], "ap-northeast-2");
    pulumi.runtime.setAllConfig(config);
    const program = runProgram();
    const endpoints = await valueOf(program.haproxyEndpoints);
    await world.settle();

    assert.deepEqual(
      endpoints.map((e) => e.writer),
      ["10.1.0.20:5000", "10.2.0.20:5000", "10.3.0.20:5000"],
    );
    assert.deepEqual(
      world
        .ofType("pulumi:providers:aws")
        .map((p) => p.inputs.region)
        .sort(),
      ["ap-northeast-1", "ap-northeast-2", "ap-southeast-1"],
    );
    assert.equal(world.ofType("aws:ec2/instance:Instance").length, 6);
    assert.equal(world.ofType("aws:ec2/vpcPeeringConnection:VpcPeeringConnection").length, 3);
    const appRules = world.ofType("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule").filter((r) => r.inputs.fromPort === 5000);
    assert.deepEqual([...new Set(appRules.map((r) => r.inputs.cidrIpv4))].sort(), ["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"]);
    assert.ok(world.ofType("aws:ssm/parameter:Parameter").every((p) => p.inputs.name.startsWith("/pgha/dev/")));
    assert.deepEqual(await valueOf(program.patroniRestUrls), {
      "pg-seoul-1": "https://10.1.0.10:8008",
      "pg-tokyo-1": "https://10.2.0.10:8008",
      "pg-singapore-1": "https://10.3.0.10:8008",
    });
    assert.equal(await pulumi.isSecret(program.superuserPassword), true);
    assert.match(await valueOf(program.caCertificatePem), /BEGIN CERTIFICATE/);
    assert.deepEqual(Object.keys(await valueOf(program.nodePrivateIps)), ["seoul", "tokyo", "singapore"]);
  });
});
