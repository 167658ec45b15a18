/**
 * The components' plain functions, and a cluster that is not the reference
 * layout: HAProxy co-located on a database node, an etcd-only witness in
 * the third region, Debian 13 with an AMI override, unprotected data volumes
 * and no admin networks.
 */
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { buildClusterPlan, OS_PROFILES, type ClusterPlan } from "../../plan";
import { installMocks, witnessRegions, prepareRenderer, valueOf } from "./mocks";

const world = installMocks("alt");
const OVERRIDE_AMI = "ami-0123456789abcdef0";
const ALERT_TOPIC = "arn:aws:sns:ap-northeast-2:123456789012:pgha-alerts";
const altPlan = buildClusterPlan(
  {
    regions: witnessRegions(["c", "a", "b"]),
    access: { applicationCidrs: ["10.9.0.0/16"], adminCidrs: [] },
    instances: { protectDataVolumes: false, os: "debian-13", amiOverrides: { "ap-southeast-1": OVERRIDE_AMI } },
    tags: { "pgha:created-by": "octocat", team: "dba" },
    monitoring: { alertTopicArn: ALERT_TOPIC },
  },
  { stack: "alt" },
);
const renderer = prepareRenderer(() => {
  const { renderUserData } = require("../../cloud-init/user-data") as typeof import("../../cloud-init/user-data");
  renderUserData(altPlan, "pg-seoul-1", { dataVolumeId: "vol-0123456789abcdef0" });
});
const { PgHaCluster, nodeKind } = require("../../components/cluster") as typeof import("../../components/cluster");
const { nodeIngressRules } = require("../../components/security") as typeof import("../../components/security");
const { iamName, slug } = require("../../components/naming") as typeof import("../../components/naming");
const { peeringPairs, validateMeshPeeringArgs } = require("../../components/mesh-peering") as typeof import("../../components/mesh-peering");
const { nodeParameterPolicy, validateNodeSecretsArgs } = require("../../components/node-secrets") as typeof import("../../components/node-secrets");
const { validatePatroniNodeArgs } = require("../../components/patroni-node") as typeof import("../../components/patroni-node");
const { validateHaproxyNodeArgs } = require("../../components/haproxy-node") as typeof import("../../components/haproxy-node");
const { validateRegionNetworkArgs } = require("../../components/region-network") as typeof import("../../components/region-network");

const referencePlan = buildClusterPlan({ access: { applicationCidrs: ["10.1.0.0/16"], adminCidrs: ["10.1.100.0/24"] } }, { stack: "dev" });
const node = (plan: ClusterPlan, name: string) => plan.nodes.find((n) => n.name === name)!;
const rulesOf = (plan: ClusterPlan, name: string) =>
  nodeIngressRules(plan, name)
    .map((r) => `${r.port} ${r.cidr}`)
    .sort();

describe("naming", () => {
  it("names IAM roles pgha-<stack>-<node>, cut to 64 characters with a hash when longer", () => {
    assert.equal(iamName("dev", "pg-seoul-1"), "pgha-dev-pg-seoul-1");
    const stack = "a".repeat(40);
    const long1 = iamName(stack, `n${"x".repeat(30)}1`);
    const long2 = iamName(stack, `n${"x".repeat(30)}2`);
    assert.equal(long1.length, 64);
    assert.notEqual(long1, long2);
    assert.equal(iamName(stack, `n${"x".repeat(30)}1`), long1, "deterministic");
    assert.match(long1, /^pgha-a+-/);
  });

  it("derives child names from CIDRs and paths", () => {
    assert.equal(slug("10.1.0.0/24"), "10-1-0-0-24");
    assert.equal(slug("/tls/etcd-member.key"), "tls-etcd-member-key");
  });
});

describe("security allowlist (nodeIngressRules)", () => {
  it("reference layout: a database node admits its peers and the HAProxies (whose Prometheus scrapes it), nothing else", () => {
    const others = ["10.2.0.10/32", "10.3.0.10/32"];
    const haproxies = ["10.1.0.20/32", "10.2.0.20/32", "10.3.0.20/32"];
    const expected = [
      ...[...others, ...haproxies].flatMap((cidr) => [`5432 ${cidr}`, `8008 ${cidr}`]),
      ...others.flatMap((cidr) => [`2379 ${cidr}`, `2380 ${cidr}`]),
      // node_exporter, postgres_exporter, etcd's metrics listener: from the monitoring tier only.
      ...haproxies.flatMap((cidr) => [`9100 ${cidr}`, `9187 ${cidr}`, `2381 ${cidr}`]),
    ].sort();
    assert.deepEqual(rulesOf(referencePlan, "pg-seoul-1"), expected);
  });

  it("reference layout: a HAProxy admits applications on 5000-5002, admins on 7000, 9090 and 9093, and the other regions' monitoring", () => {
    const peers = ["10.1.0.20/32", "10.3.0.20/32"];
    const expected = [
      "5000 10.1.0.0/16",
      "5001 10.1.0.0/16",
      "5002 10.1.0.0/16",
      "7000 10.1.100.0/24",
      "9090 10.1.100.0/24",
      "9093 10.1.100.0/24",
      ...peers.flatMap((cidr) => [`9100 ${cidr}`, `8405 ${cidr}`, `9090 ${cidr}`, `9093 ${cidr}`, `9094 ${cidr}`]),
    ].sort();
    assert.deepEqual(rulesOf(referencePlan, "haproxy-2"), expected);
  });

  it("an etcd-only witness admits etcd traffic, and the scrapes of the one HAProxy node", () => {
    assert.deepEqual(rulesOf(altPlan, "witness-1"), ["2379 10.1.0.10/32", "2379 10.2.0.10/32", "2380 10.1.0.10/32", "2380 10.2.0.10/32", "2381 10.1.0.10/32", "9100 10.1.0.10/32"]);
  });

  it("a node with several roles gets the union, without its own IP", () => {
    assert.deepEqual(rulesOf(altPlan, "pg-seoul-1"), [
      "2379 10.2.0.10/32",
      "2379 10.3.0.10/32",
      "2380 10.2.0.10/32",
      "2380 10.3.0.10/32",
      "5000 10.9.0.0/16",
      "5001 10.9.0.0/16",
      "5002 10.9.0.0/16",
      "5432 10.2.0.10/32",
      "8008 10.2.0.10/32",
    ]);
  });

  it("with no access networks, HAProxy is unreachable from outside the cluster", () => {
    const closed = buildClusterPlan({}, { stack: "dev" });
    const nodeCidrs = new Set(closed.nodes.map((n) => `${n.privateIp}/32`));
    assert.deepEqual(
      nodeIngressRules(closed, "haproxy-1").filter((rule) => !nodeCidrs.has(rule.cidr)),
      [],
    );
  });

  it("refuses 0.0.0.0/0 even if a plan carried it", () => {
    const open = buildClusterPlan({}, { stack: "dev" });
    open.config.access.applicationCidrs = ["0.0.0.0/0"];
    assert.throws(() => nodeIngressRules(open, "haproxy-1"), /refusing 0\.0\.0\.0\/0/);
  });
});

describe("mesh pairs", () => {
  it("pairs every region with every other exactly once", () => {
    const pairs = peeringPairs(["a", "b", "c", "d"]).map((p) => p.join(""));
    assert.deepEqual(pairs, ["ab", "ac", "ad", "bc", "bd", "cd"]);
    assert.deepEqual(peeringPairs(["a"]), []);
  });

  it("rejects two VPCs in one AWS region", () => {
    const side = { vpcCidr: "10.0.0.0/16", vpcId: "vpc-1", privateRouteTableIds: [], provider: undefined as never };
    assert.throws(() => {
      validateMeshPeeringArgs({
        stack: "dev",
        regions: [
          { ...side, name: "a", awsRegion: "eu-west-1" },
          { ...side, name: "b", awsRegion: "eu-west-1" },
        ],
      });
    }, /appears twice/);
  });
});

describe("node secrets policy", () => {
  const scope = { partition: "aws", awsRegion: "ap-northeast-1", accountId: "111122223333", parameterPath: "/pgha/dev/pg-tokyo-1" };

  it("allows reading and decrypting only the node's own parameters, and denies decrypting any other", () => {
    const policy = nodeParameterPolicy(scope) as { Statement: any[] };
    const own = "arn:aws:ssm:ap-northeast-1:111122223333:parameter/pgha/dev/pg-tokyo-1/*";
    assert.deepEqual(
      policy.Statement.map((s) => [s.Sid, s.Effect]),
      [
        ["ReadOwnParameters", "Allow"],
        ["DecryptOwnParameters", "Allow"],
        ["DenyDecryptOtherParameters", "Deny"],
      ],
    );
    assert.deepEqual(policy.Statement[0].Resource, [own, own.slice(0, -2)]);
    assert.equal(policy.Statement[1].Resource, "arn:aws:kms:ap-northeast-1:111122223333:key/*");
    assert.deepEqual(policy.Statement[1].Condition, {
      StringEquals: { "kms:ViaService": "ssm.ap-northeast-1.amazonaws.com" },
      StringLike: { "kms:EncryptionContext:PARAMETER_ARN": own },
    });
    // Only decryptions that name a parameter: S3's of the backup repositories carry the bucket's ARN instead.
    assert.deepEqual(policy.Statement[2].Condition, { StringNotLike: { "kms:EncryptionContext:PARAMETER_ARN": own }, Null: { "kms:EncryptionContext:PARAMETER_ARN": "false" } });
  });

  it("rejects a secrets plan that strays from the node's path or stores a key as plain String", () => {
    const n = node(referencePlan, "pg-tokyo-1");
    const secrets = referencePlan.secrets.find((s) => s.node === n.name)!;
    assert.doesNotThrow(() => {
      validateNodeSecretsArgs({ node: n, secrets });
    });
    const stray = { ...secrets, parameters: [...secrets.parameters, { name: "/pgha/dev/pg-seoul-1/tls/x.key", secure: true, value: secrets.parameters[0].value }] };
    assert.throws(() => {
      validateNodeSecretsArgs({ node: n, secrets: stray });
    }, /outside \/pgha\/dev\/pg-tokyo-1\//);
    const plain = { ...secrets, parameters: secrets.parameters.map((p) => ({ ...p, secure: false })) };
    assert.throws(() => {
      validateNodeSecretsArgs({ node: n, secrets: plain });
    }, /must be a SecureString/);
    const other = referencePlan.secrets.find((s) => s.node === "pg-seoul-1")!;
    assert.throws(() => {
      validateNodeSecretsArgs({ node: n, secrets: other });
    }, /got the secrets plan of pg-seoul-1/);
  });
});

describe("component argument checks", () => {
  const args = (plan: ClusterPlan, name: string) => ({ plan, node: node(plan, name) }) as Parameters<typeof validatePatroniNodeArgs>[0];

  it("sends database-tier nodes to PatroniNode and HAProxy-only nodes to HaproxyNode", () => {
    assert.equal(nodeKind(node(referencePlan, "pg-seoul-1")), "patroni");
    assert.equal(nodeKind(node(referencePlan, "haproxy-1")), "haproxy");
    assert.equal(nodeKind(node(altPlan, "pg-seoul-1")), "patroni");
    assert.equal(nodeKind(node(altPlan, "witness-1")), "patroni");
    assert.throws(() => {
      validatePatroniNodeArgs(args(referencePlan, "haproxy-1"));
    }, /use HaproxyNode/);
    assert.throws(() => {
      validateHaproxyNodeArgs(args(referencePlan, "pg-seoul-1"));
    }, /haproxy role/);
    assert.throws(() => {
      validateHaproxyNodeArgs(args(altPlan, "pg-seoul-1"));
    }, /use PatroniNode/);
  });

  it("rejects a region whose node sits outside its subnets", () => {
    const region = { ...referencePlan.regions[0], nodes: [{ ...referencePlan.regions[0].nodes[0], subnetCidr: "10.1.7.0/24" }] };
    assert.throws(() => {
      validateRegionNetworkArgs({ region, stack: "dev", provider: undefined as never });
    }, /not a subnet of this region/);
  });

  it("knows each OS's AMI parameter for an architecture: Canonical's Ubuntu 24.04 gp3 image, the Debian cloud team's Debian 13", () => {
    assert.equal(OS_PROFILES["ubuntu-24.04"].amiParameter("arm64"), "/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/ebs-gp3/ami-id");
    assert.equal(OS_PROFILES["debian-13"].amiParameter("arm64"), "/aws/service/debian/release/13/latest/arm64");
    assert.deepEqual(
      Object.values(OS_PROFILES).map((os) => os.codename),
      ["noble", "trixie"],
    );
  });
});

describe("a non-reference cluster under mocks", () => {
  let cluster: InstanceType<typeof PgHaCluster>;
  before(async () => {
    cluster = new PgHaCluster("alt", { plan: altPlan });
    await valueOf(cluster.haproxyEndpoints);
    await world.settle();
  });
  const instanceOf = (name: string) => world.ofType("aws:ec2/instance:Instance").find((i) => i.inputs.privateIp === node(altPlan, name).privateIp)!;

  it("puts pgha:tags on every resource through each region's provider default tags", () => {
    const providers = world.ofType("pulumi:providers:aws");
    assert.equal(providers.length, altPlan.regions.length);
    for (const provider of providers) {
      const defaultTags = typeof provider.inputs.defaultTags === "string" ? JSON.parse(provider.inputs.defaultTags) : provider.inputs.defaultTags;
      assert.deepEqual(defaultTags.tags, { "pgha:created-by": "octocat", team: "dba" });
    }
  });

  it("launches every node as a PatroniNode, with data volumes only where postgres runs", () => {
    assert.equal(world.ofType("pgha:aws:PatroniNode").length, 3);
    assert.equal(world.ofType("pgha:aws:HaproxyNode").length, 0);
    const volumes = world.ofType("aws:ebs/volume:Volume");
    assert.deepEqual(volumes.map((v) => v.inputs.tags["pgha:node"]).sort(), ["pg-seoul-1", "pg-tokyo-1"]);
    assert.equal(volumes.find((v) => v.inputs.tags["pgha:node"] === "pg-seoul-1")!.inputs.availabilityZone, "ap-northeast-2c");
  });

  it("leaves data volumes unprotected when instances.protectDataVolumes is false", () => {
    for (const v of world.ofType("aws:ebs/volume:Volume")) assert.equal(v.protect, false);
  });

  it("uses the AMI override and skips the lookup in that region only", () => {
    const lookups = world.invocations.filter((c) => c.token === "aws:ssm/getParameter:getParameter");
    assert.deepEqual(lookups.map((c) => world.regionOf(c)).sort(), ["ap-northeast-1", "ap-northeast-2"]);
    assert.equal(instanceOf("witness-1").inputs.ami, OVERRIDE_AMI);
    assert.notEqual(instanceOf("pg-tokyo-1").inputs.ami, OVERRIDE_AMI);
  });

  it("looks up the Debian 13 AMI parameter where instances.os is debian-13 (no override)", () => {
    const names = world.invocations.filter((c) => c.token === "aws:ssm/getParameter:getParameter").map((c) => c.inputs.name);
    assert.deepEqual(names, ["/aws/service/debian/release/13/latest/amd64", "/aws/service/debian/release/13/latest/amd64"]);
  });

  it("stores only the witness's etcd and metrics material under its path", () => {
    const names = world
      .ofType("aws:ssm/parameter:Parameter")
      .filter((p) => p.inputs.name.startsWith("/pgha/alt/witness-1/"))
      .map((p) => p.inputs.name)
      .sort();
    assert.deepEqual(names, [
      "/pgha/alt/witness-1/tls/ca.crt",
      "/pgha/alt/witness-1/tls/etcd-member.crt",
      "/pgha/alt/witness-1/tls/etcd-member.key",
      "/pgha/alt/witness-1/tls/metrics.crt",
      "/pgha/alt/witness-1/tls/metrics.key",
    ]);
  });

  it("lets only the node that runs an Alertmanager publish, and only to the stack's alert topic", () => {
    const policies = world.ofType("aws:iam/rolePolicy:RolePolicy").filter((p) => p.inputs.name === "publish-alerts");
    assert.deepEqual(
      policies.map((p) => p.name),
      ["alt-pg-seoul-1-secrets-publish-alerts"],
    );
    assert.deepEqual(JSON.parse(policies[0]?.inputs.policy as string), {
      Version: "2012-10-17",
      Statement: [{ Sid: "PublishAlerts", Effect: "Allow", Action: "sns:Publish", Resource: ALERT_TOPIC }],
    });
  });

  it("opens no stats port when there are no admin networks", () => {
    assert.ok(!world.ofType("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule").some((r) => r.inputs.fromPort === 7000));
  });

  it("reports the co-located HAProxy's endpoints and Patroni URLs of postgres nodes only", async () => {
    assert.deepEqual(await valueOf(cluster.haproxyEndpoints), [
      { node: "pg-seoul-1", region: "seoul", writer: "10.1.0.10:5000", reader: "10.1.0.10:5001", sync: "10.1.0.10:5002", stats: "10.1.0.10:7000" },
    ]);
    assert.deepEqual(await valueOf(cluster.patroniRestUrls), { "pg-seoul-1": "https://10.1.0.10:8008", "pg-tokyo-1": "https://10.2.0.10:8008" });
  });

  it(`renders user-data through the ${renderer} renderer for every node`, () => {
    assert.equal(world.ofType("aws:ec2/instance:Instance").length, 3);
    for (const i of world.ofType("aws:ec2/instance:Instance")) assert.ok(i.inputs.userDataBase64.length > 0);
  });
});
