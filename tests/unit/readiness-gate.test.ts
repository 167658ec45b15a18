/**
 * The readiness gate and rollout Commands (components/readiness-gate.ts)
 * under Pulumi mocks: what `pulumi up` would run, after what, and what a
 * config change does to them — plus the command line itself, run for real.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import { buildClusterPlan, type ClusterPlan } from "../../plan";
import { installMocks, prepareRenderer, valueOf, type Registered } from "./mocks";

const world = installMocks("test");
const ROOT = join(__dirname, "..", "..");
const basePlan = buildClusterPlan(undefined, { stack: "test" });
prepareRenderer(() => {
  const { renderUserData } = require("../../cloud-init/user-data") as typeof import("../../cloud-init/user-data");
  renderUserData(basePlan, "pg-seoul-1", { dataVolumeId: "vol-0123456789abcdef0" });
});
const { PgHaCluster } = require("../../components/cluster") as typeof import("../../components/cluster");
const { READINESS_SCRIPT, ReadinessGate } = require("../../components/readiness-gate") as typeof import("../../components/readiness-gate");
const { certificatesHash } = require("../../ops/node-secrets") as typeof import("../../ops/node-secrets");
const { dynamicSettingsHash } = require("../../ops/dynamic-config") as typeof import("../../ops/dynamic-config");
const { nodeFilesHash } = require("../../ops/node-files") as typeof import("../../ops/node-files");

const COMMAND = "command:local:Command";
const variants: Record<string, ClusterPlan> = {
  base: basePlan,
  same: buildClusterPlan(undefined, { stack: "test" }),
  ttl: buildClusterPlan({ patroni: { ttl: 25 } }, { stack: "test" }),
  haproxy: buildClusterPlan({ haproxy: { checkIntervalMs: 2000 } }, { stack: "test" }),
};

/** Certificate PEMs as a stack holds them; `renewed` re-issues one leaf (same key, new certificate). */
const pemsOf = (plan: ClusterPlan, renewed?: string): Record<string, string> =>
  Object.fromEntries([["ca", "CA PEM"], ...plan.certificates.map((c) => [c.id, `PEM ${c.id}${c.id === renewed ? " renewed" : ""}`])]);
const gateIds = Object.fromEntries(basePlan.nodes.map((n, i) => [n.name, `i-0${String(i).padStart(16, "0")}`]));
const standaloneGates = {
  first: new ReadinessGate("standalone-first", { plan: basePlan, instanceIds: gateIds, nodes: [], secrets: [], certificatePems: pemsOf(basePlan) }),
  again: new ReadinessGate("standalone-again", { plan: basePlan, instanceIds: gateIds, nodes: [], secrets: [], certificatePems: pemsOf(basePlan) }),
  renewed: new ReadinessGate("standalone-renewed", {
    plan: basePlan,
    instanceIds: gateIds,
    nodes: [],
    secrets: [],
    certificatePems: pemsOf(basePlan, "pg-tokyo-1-postgres-server"),
  }),
};

before(async () => {
  for (const gate of Object.values(standaloneGates)) await valueOf(gate.certificatesHash);
  for (const [name, plan] of Object.entries(variants)) await valueOf(new PgHaCluster(name, { plan }).haproxyEndpoints);
  await valueOf(new PgHaCluster("nogate", { plan: basePlan, readinessGate: false }).haproxyEndpoints);
  await world.settle();
});

const commandOf = (cluster: string, which: "gate" | "rollout"): Registered => {
  const found = world.ofType(COMMAND).find((r) => r.name === `${cluster}-readiness-${which}`);
  assert.ok(found, `no ${which} command for ${cluster}`);
  return found;
};
const childrenOf = (cluster: string, type: string) => world.ofType(type).filter((r) => r.name.startsWith(`${cluster}-`));

describe("what pulumi up runs", () => {
  it("registers a gate and a rollout Command under a ReadinessGate component of the cluster", () => {
    const gates = world.ofType("pgha:aws:ReadinessGate").filter((r) => r.name === "base-readiness");
    assert.equal(gates.length, 1);
    for (const which of ["gate", "rollout"] as const) assert.equal(commandOf("base", which).parent, gates[0]?.urn);
    assert.equal(world.ofType(COMMAND).filter((r) => r.name.startsWith("base-")).length, 2);
  });

  it("runs ops/readiness.ts for this stack with every instance, grouped by region", () => {
    const create = commandOf("base", "gate").inputs.create as string;
    const match = /^node --import tsx ops\/readiness\.ts gate --stack 'test' --region-instances '(\{.*\})' --timeout 1200$/.exec(create);
    assert.ok(match, create);
    const byRegion = JSON.parse(match[1]) as Record<string, Record<string, string>>;
    const instances = childrenOf("base", "aws:ec2/instance:Instance");
    assert.equal(instances.length, basePlan.nodes.length);
    for (const node of basePlan.nodes) {
      const instance = instances.find((i) => i.inputs.privateIp === node.privateIp) as Registered;
      assert.equal(byRegion[node.awsRegion]?.[node.name], instance.id, node.name);
    }
    assert.match(commandOf("base", "rollout").inputs.create, /^node --import tsx ops\/readiness\.ts rollout --stack 'test' --region-instances '.*' --timeout 600$/);
    assert.ok(existsSync(join(ROOT, READINESS_SCRIPT)));
  });

  it("hands the script the validated config (no secret in it) and runs the same on update, nothing on delete", () => {
    for (const which of ["gate", "rollout"] as const) {
      const command = commandOf("base", which);
      assert.deepEqual(JSON.parse(command.inputs.environment.PGHA_CONFIG), JSON.parse(JSON.stringify(basePlan.config)));
      assert.equal(command.inputs.update, command.inputs.create, "update runs the same: a change is an update, not a replacement");
      assert.equal(command.inputs.delete, undefined);
      assert.equal(command.inputs.addPreviousOutputInEnv, false);
      assert.deepEqual(command.secretInputs, []);
    }
    const inputs = JSON.stringify(world.ofType(COMMAND).map((c) => c.inputs));
    for (const secret of world.secretValues()) assert.ok(!inputs.includes(secret), "a generated secret reached a Command's inputs");
  });

  it("waits for every node (instances and data volume attachments) before the gate, and for the gate before the rollout", () => {
    const gate = commandOf("base", "gate");
    const nodes = [...childrenOf("base", "aws:ec2/instance:Instance"), ...childrenOf("base", "aws:ec2/volumeAttachment:VolumeAttachment")];
    assert.equal(nodes.length, basePlan.nodes.length + 3);
    for (const r of nodes) assert.ok(gate.dependencies.includes(r.urn), `gate does not wait for ${r.name}`);
    assert.ok(commandOf("base", "rollout").dependencies.includes(gate.urn));
  });

  it("can be left out (readinessGate: false)", () => {
    assert.equal(world.ofType(COMMAND).filter((r) => r.name.startsWith("nogate-")).length, 0);
  });
});

describe("what a config change shows in pulumi preview", () => {
  const inputsOf = (cluster: string, which: "gate" | "rollout") => commandOf(cluster, which).inputs;

  /** The PEMs the mocks issued for one cluster: the CA and every leaf by the plan's certificate id. */
  const issuedPems = (cluster: string): Record<string, string> => {
    const pems: Record<string, string> = {};
    for (const r of world.ofType("tls:index/selfSignedCert:SelfSignedCert")) if (r.name === `${cluster}-pki-ca`) pems.ca = r.state.certPem;
    for (const r of world.ofType("tls:index/locallySignedCert:LocallySignedCert"))
      if (r.name.startsWith(`${cluster}-pki-`)) pems[r.name.slice(`${cluster}-pki-`.length)] = r.state.certPem;
    return pems;
  };

  it("the rollout's triggers are the dynamic-settings hash, the node-files hash and the hash of every certificate the stack issued", () => {
    const pems = issuedPems("base");
    assert.deepEqual(Object.keys(pems).sort(), ["ca", ...basePlan.certificates.map((c) => c.id)].sort());
    assert.deepEqual(inputsOf("base", "rollout").triggers, [dynamicSettingsHash(basePlan), nodeFilesHash(basePlan), certificatesHash(pems)]);
  });

  it("the rollout runs only after every node's SSM parameters are written (it fetches the new values)", () => {
    const rollout = commandOf("base", "rollout");
    const parameters = world.ofType("aws:ssm/parameter:Parameter").filter((r) => r.name.startsWith("base-"));
    assert.equal(
      parameters.length,
      basePlan.secrets.reduce((n, s) => n + s.parameters.length, 0),
    );
    for (const p of parameters) assert.ok(rollout.dependencies.includes(p.urn), `rollout does not wait for ${p.name}`);
  });

  it("nothing changes for the same config (the mocks name certificates after the cluster, so the certificate hash is compared on its own below)", () => {
    for (const which of ["gate", "rollout"] as const) {
      const strip = (inputs: Record<string, unknown>) =>
        JSON.stringify({ ...inputs, create: undefined, update: undefined, triggers: (inputs.triggers as string[] | undefined)?.slice(0, 2) });
      assert.equal(strip(inputsOf("same", which)), strip(inputsOf("base", which)));
    }
  });

  it("a renewed certificate changes only the certificate trigger; the same certificates give the same trigger", async () => {
    const triggers = async (gate: InstanceType<typeof ReadinessGate>) => [gate.dynamicSettingsHash, gate.nodeFilesHash, await valueOf(gate.certificatesHash)];
    const [first, again, renewed] = await Promise.all([triggers(standaloneGates.first), triggers(standaloneGates.again), triggers(standaloneGates.renewed)]);
    assert.deepEqual(again, first);
    assert.deepEqual(renewed.slice(0, 2), first.slice(0, 2));
    assert.notEqual(renewed[2], first[2]);
    const registered = (name: string) => world.ofType(COMMAND).find((r) => r.name === `standalone-${name}-rollout`)?.inputs.triggers as string[];
    assert.deepEqual(registered("again"), registered("first"));
    assert.notDeepEqual(registered("renewed"), registered("first"));
  });

  it("the certificate trigger holds certificates only: no key or password, and not secret", () => {
    const rollout = commandOf("base", "rollout");
    assert.deepEqual(rollout.secretInputs, []);
    assert.equal(certificatesHash({ ca: "A", x: "B" }), certificatesHash({ x: "B", ca: "A" }), "order of ids does not matter");
  });

  it("a new ttl changes both triggers (patroni.yml carries it too) and the config the gate checks with", () => {
    const [settings, files] = inputsOf("ttl", "rollout").triggers as string[];
    const [baseSettings, baseFiles] = inputsOf("base", "rollout").triggers as string[];
    assert.notEqual(settings, baseSettings);
    assert.notEqual(files, baseFiles);
    assert.notEqual(inputsOf("ttl", "gate").environment.PGHA_CONFIG, inputsOf("base", "gate").environment.PGHA_CONFIG);
  });

  it("a HAProxy timing change is a node-file change only", () => {
    const [settings, files] = inputsOf("haproxy", "rollout").triggers as string[];
    assert.equal(settings, (inputsOf("base", "rollout").triggers as string[])[0]);
    assert.notEqual(files, (inputsOf("base", "rollout").triggers as string[])[1]);
  });

  it("the program runs nothing itself: no local.run invoke, only resources the engine runs on create/update", () => {
    assert.ok(!world.invocations.some((call) => call.token.startsWith("command:")), world.invocations.map((c) => c.token).join(", "));
  });
});

describe("the command line, run for real", () => {
  const config = JSON.stringify(basePlan.config);
  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync("node", ["--import", "tsx", READINESS_SCRIPT, ...args], { cwd: ROOT, encoding: "utf8", env: { ...process.env, ...env }, timeout: 60_000 });

  it("the gate's exact command line parses and finds its script (PGHA_SKIP_READINESS=1 stops before AWS)", () => {
    const create = commandOf("base", "gate").inputs.create as string;
    const out = execFileSync("/bin/sh", ["-c", create], { cwd: ROOT, encoding: "utf8", env: { ...process.env, PGHA_CONFIG: config, PGHA_SKIP_READINESS: "1" }, timeout: 60_000 });
    assert.match(out, /\[pgha gate\] SKIPPED: PGHA_SKIP_READINESS=1/);
  });

  it("fails, naming the node, when an instance is missing or in the wrong region — before calling AWS", () => {
    const ids = { "ap-northeast-2": { "pg-seoul-1": "i-0123456789abcdef0", "haproxy-1": "i-0123456789abcdef1" }, "ap-southeast-1": { "pg-tokyo-1": "i-0123456789abcdef2" } };
    const result = run(["gate", "--stack", "test", "--region-instances", JSON.stringify(ids), "--timeout", "5"], { PGHA_CONFIG: config });
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, /pgha readiness FAILED: --region-instances does not match the plan/);
    assert.match(result.stderr, /pg-tokyo-1: listed under ap-southeast-1, planned in ap-northeast-1/);
    assert.match(result.stderr, /pg-singapore-1: no instance given/);
  });

  it("restore and backup refuse a bad --target-time or --type in one line, before reading the configuration or calling AWS", () => {
    const restore = run(["restore", "--stack", "test", "--region-instances", "{}", "--target-time", "2026-12-02 10:15:00"], { PGHA_CONFIG: "" });
    assert.equal(restore.status, 1, restore.stderr);
    assert.match(restore.stderr, /--target-time = "2026-12-02 10:15:00": must be a timestamp with a time zone/);
    assert.equal(restore.stderr.trim().split("\n").length, 1, restore.stderr);
    const backup = run(["backup", "--stack", "test", "--region-instances", "{}", "--type", "weekly"], { PGHA_CONFIG: "" });
    assert.equal(backup.status, 1, backup.stderr);
    assert.match(backup.stderr, /--type = "weekly": must be full or diff/);
    const rebuild = run(["rebuild-replica", "--stack", "test", "--region-instances", "{}"], { PGHA_CONFIG: config });
    assert.equal(rebuild.status, 1);
    assert.match(rebuild.stderr, /missing required argument 'member'/);
  });

  it("fails without the stack's configuration", () => {
    const result = run(["rollout", "--stack", "test", "--region-instances", "{}"], { PGHA_CONFIG: "" });
    assert.equal(result.status, 1);
    assert.match(result.stderr, /PGHA_CONFIG .* is not set/);
  });
});
