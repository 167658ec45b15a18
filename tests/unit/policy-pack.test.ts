/**
 * The whole policy pack over the resource graph the program registers under
 * mocks: Pulumi.dev.yaml (the main stack) must pass every policy; the
 * ephemeral template, deployed as two parallel branch stacks, must pass the
 * pack with policy/ephemeral.json and share no account-wide name with each
 * other or with dev. Controls: the same graph, broken on purpose, fails the
 * policy that guards the break.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { before, describe, it } from "node:test";
import { ACCOUNT_SCOPED_NAMES, decodeBase64UserData, PACK_ENFORCEMENT_LEVEL, policies, TYPES } from "../../policy/policies";
import { runPack, type PackConfig, type Violation } from "../../policy/testing/harness";
import { programGraph, PROJECT_ROOT, type GraphResource, type ProgramGraph } from "../../policy/testing/program-graph";
import { ephemeralStackName } from "../../.github/scripts/ephemeral-stack";

const EPHEMERAL_CONFIG = JSON.parse(readFileSync(join(PROJECT_ROOT, "policy", "ephemeral.json"), "utf8")) as PackConfig;
const STACK_A = ephemeralStackName("feature/login-page");
const STACK_B = ephemeralStackName("fix/login-page");

let dev: ProgramGraph;
let branchA: ProgramGraph;
let branchB: ProgramGraph;

before(async () => {
  [dev, branchA, branchB] = await Promise.all([
    programGraph({ stackFile: "Pulumi.dev.yaml", stack: "dev" }),
    programGraph({ stackFile: "Pulumi.ephemeral.yaml", stack: STACK_A }),
    programGraph({ stackFile: "Pulumi.ephemeral.yaml", stack: STACK_B }),
  ]);
});

const pack = (graph: ProgramGraph, config?: PackConfig) => runPack(policies, PACK_ENFORCEMENT_LEVEL, graph, config);
const summary = (violations: Violation[]) => violations.map((v) => `${v.policy}: ${v.message}`).join("\n");
const clone = (graph: ProgramGraph): ProgramGraph => JSON.parse(JSON.stringify(graph));
const of = (graph: ProgramGraph, type: string) => graph.resources.filter((r) => r.type === type);

/** Sets a property on a resource's inputs and outputs, as a changed program would. */
function set(resource: GraphResource, key: string, value: unknown): void {
  resource.inputs[key] = value;
  resource.state[key] = value;
}

describe("the pack over Pulumi.dev.yaml", () => {
  it("runs the real user-data renderer and registers the full graph", () => {
    assert.equal(dev.renderer, "real");
    assert.equal(of(dev, TYPES.instance).length, 6);
    assert.equal(of(dev, TYPES.peering).length, 3);
    assert.ok(of(dev, TYPES.securityGroupIngressRule).length > 20);
  });

  it("passes every policy", async () => {
    const violations = await pack(dev);
    assert.deepEqual(violations, [], summary(violations));
  });

  it("holds one backup bucket per region, each with its versioning, encryption, public access block and policy, for the S3 policies to judge", () => {
    assert.deepEqual(
      of(dev, TYPES.bucket)
        .map((b) => b.inputs.bucket)
        .sort(),
      ["pgha-dev-ap-northeast-1", "pgha-dev-ap-northeast-2", "pgha-dev-ap-southeast-1"],
    );
    for (const type of [TYPES.bucketVersioning, TYPES.bucketEncryption, TYPES.bucketPublicAccessBlock, TYPES.bucketPolicy]) assert.equal(of(dev, type).length, 3, type);
  });

  it("fails the ephemeral profile's limits (the main stack is not cheap, and its data volumes are protected)", async () => {
    const violations = await pack(dev, EPHEMERAL_CONFIG);
    assert.ok(violations.length > 0);
    assert.ok(
      violations.every((v) => v.policy === "ephemeral-stack-destroyable" && v.enforcementLevel === "mandatory"),
      summary(violations),
    );
    assert.ok(violations.some((v) => v.message.includes("m6i.large")));
    assert.ok(violations.some((v) => v.message.includes("protected")));
  });
});

describe("the pack over two ephemeral branch stacks", () => {
  it("derives different, valid stack names for the two branches", () => {
    assert.notEqual(STACK_A, STACK_B);
    assert.deepEqual([branchA.stack, branchB.stack], [STACK_A, STACK_B]);
  });

  it("passes every policy, the ephemeral one enforced", async () => {
    for (const graph of [branchA, branchB]) {
      const violations = await pack(graph, EPHEMERAL_CONFIG);
      assert.deepEqual(violations, [], `${graph.stack}:\n${summary(violations)}`);
    }
  });

  it("without policy/ephemeral.json fails only no-force-destroy-buckets: its backup buckets go with the stack", async () => {
    const violations = await pack(branchA);
    assert.deepEqual([...new Set(violations.map((v) => v.policy))], ["no-force-destroy-buckets"], summary(violations));
    assert.equal(violations.length, 3);
  });

  it("protects nothing and uses only small instance types", () => {
    for (const graph of [branchA, branchB]) {
      assert.deepEqual(
        graph.resources.filter((r) => r.protect).map((r) => r.name),
        [],
      );
      assert.deepEqual([...new Set(of(graph, TYPES.instance).map((r) => r.inputs.instanceType))].sort(), ["t3.medium", "t3.micro"]);
    }
  });

  it("shares no account-wide name (IAM roles and profiles, SSM parameter paths) with the other branch or with dev", () => {
    const names = (graph: ProgramGraph) =>
      new Set(
        graph.resources.filter((r) => ACCOUNT_SCOPED_NAMES[r.type] && r.inputs[ACCOUNT_SCOPED_NAMES[r.type]]).map((r) => `${r.type} ${r.inputs[ACCOUNT_SCOPED_NAMES[r.type]]}`),
      );
    const [a, b, d] = [names(branchA), names(branchB), names(dev)];
    assert.ok(a.size > 30, `expected the IAM and SSM names, got ${a.size}`);
    for (const [x, y, what] of [
      [a, b, "A/B"],
      [a, d, "A/dev"],
      [b, d, "B/dev"],
    ] as const) {
      const shared = [...x].filter((name) => y.has(name));
      assert.deepEqual(shared, [], `${what} collide`);
    }
  });

  it("gives every explicitly named resource a physical name or tag that differs per stack (the etcd cluster token too)", () => {
    const instances = (graph: ProgramGraph) => of(graph, TYPES.instance).map((r) => decodeBase64UserData(r.inputs.userDataBase64));
    assert.ok(instances(branchA).some((text) => text.includes(`initial-cluster-token: pg-multiregion-${STACK_A}`)));
    const stackTags = new Set(of(branchA, TYPES.vpc).map((r) => r.inputs.tags["pgha:stack"]));
    assert.deepEqual([...stackTags], [STACK_A]);
  });
});

describe("controls: the dev graph broken on purpose fails the guarding policy", () => {
  const cases: [string, (graph: ProgramGraph) => void, string][] = [
    [
      "a 0.0.0.0/0 rule to PostgreSQL",
      (g) => {
        set(
          of(g, TYPES.securityGroupIngressRule).find((r) => r.inputs.fromPort === 5432)!,
          "cidrIpv4",
          "0.0.0.0/0",
        );
      },
      "no-public-database-ingress",
    ],
    [
      "IMDSv1 on a node",
      (g) => {
        set(of(g, TYPES.instance)[0], "metadataOptions", { httpTokens: "optional" });
      },
      "imdsv2-required",
    ],
    [
      "an unencrypted data volume",
      (g) => {
        set(of(g, TYPES.volume)[0], "encrypted", false);
      },
      "ebs-encrypted",
    ],
    [
      "a public IP on a database node",
      (g) => {
        set(
          of(g, TYPES.instance).find((r) => r.inputs.tags["pgha:role"].includes("postgres"))!,
          "associatePublicIpAddress",
          true,
        );
      },
      "no-public-ip-on-database-nodes",
    ],
    [
      "a password in user-data",
      (g) => {
        const node = of(g, TYPES.instance)[0];
        const password = of(g, TYPES.randomPassword)[0].state.result;
        set(node, "userDataBase64", gzipSync(`${decodeBase64UserData(node.inputs.userDataBase64)}\n# ${password}\n`).toString("base64"));
      },
      "no-generated-secrets-in-user-data",
    ],
    [
      "a peering to a VPC of another stack",
      (g) => {
        const peering = of(g, TYPES.peering)[0];
        peering.propertyDependencies.peerVpcId = [];
        set(peering, "peerVpcId", "vpc-0someoneelse");
      },
      "peering-within-stack",
    ],
    [
      "versioning suspended on a backup bucket",
      (g) => {
        set(of(g, TYPES.bucketVersioning)[0], "versioningConfiguration", { status: "Suspended" });
      },
      "s3-buckets-versioned",
    ],
    [
      "SSE-S3 instead of SSE-KMS on a backup bucket",
      (g) => {
        set(of(g, TYPES.bucketEncryption)[0], "rules", [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "AES256" } }]);
      },
      "s3-buckets-kms-encrypted",
    ],
    [
      "a public access block that lets a public policy through",
      (g) => {
        set(of(g, TYPES.bucketPublicAccessBlock)[0], "blockPublicPolicy", false);
      },
      "s3-buckets-block-public-access",
    ],
    [
      "a bucket policy that no longer denies plain HTTP",
      (g) => {
        const policy = of(g, TYPES.bucketPolicy)[0];
        set(policy, "policy", (policy.inputs.policy as string).replace('"aws:SecureTransport":"false"', '"aws:SecureTransport":"true"'));
      },
      "s3-buckets-tls-only",
    ],
    [
      "forceDestroy on a kept backup bucket",
      (g) => {
        set(of(g, TYPES.bucket)[0], "forceDestroy", true);
      },
      "no-force-destroy-buckets",
    ],
    [
      "an IAM role name without the stack",
      (g) => {
        set(of(g, TYPES.iamRole)[0], "name", "pgha-pg-seoul-1");
      },
      "stack-scoped-names",
    ],
  ];
  for (const [what, breakIt, policy] of cases) {
    it(`${what} → ${policy}`, async () => {
      const broken = clone(dev);
      breakIt(broken);
      const violations = await pack(broken);
      assert.ok(violations.length > 0, "no violation");
      assert.deepEqual([...new Set(violations.map((v) => v.policy))], [policy], summary(violations));
    });
  }
});
