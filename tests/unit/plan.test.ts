import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  buildClusterPlan,
  certificateFor,
  ConfigError,
  DEFAULT_CONFIG,
  deriveEtcdTiming,
  findNode,
  instanceTypeArchitecture,
  nodesWithRole,
  type ClusterPlan,
  type RegionConfig,
} from "../../plan";

const STACK = { stack: "dev" };

/** A deep copy of the default regions, changed by `edit`: the way a user writes a full `regions` list. */
function regionsWith(edit: (regions: RegionConfig[]) => void): RegionConfig[] {
  const regions = structuredClone(DEFAULT_CONFIG.regions);
  edit(regions);
  return regions;
}

/** The rule in plan/etcd-timing.ts, restated: heartbeat = 1.5 × max RTT rounded up to 10 ms (≥ 100), election = 10 × heartbeat (≥ 1000). */
function expectedTiming(maxRttMs: number): { heartbeatIntervalMs: number; electionTimeoutMs: number } {
  const heartbeatIntervalMs = Math.max(100, Math.ceil((1.5 * maxRttMs) / 10) * 10);
  return { heartbeatIntervalMs, electionTimeoutMs: Math.max(1000, 10 * heartbeatIntervalMs) };
}

/** Runs buildClusterPlan and returns the ConfigError it must throw. */
function configErrorOf(input: unknown): ConfigError {
  let caught: unknown;
  try {
    buildClusterPlan(input, STACK);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught !== undefined, "expected buildClusterPlan to reject the input, but it built a plan");
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${caught instanceof Error ? caught.message : JSON.stringify(caught)}`);
  return caught;
}

describe("defaults reproduce the reference layout", () => {
  const plan: ClusterPlan = buildClusterPlan(undefined, STACK);

  test("PostgreSQL + etcd nodes in Seoul, Tokyo and Singapore at the reference addresses", () => {
    const pg = nodesWithRole(plan, "postgres").map((n) => ({ name: n.name, ip: n.privateIp, region: n.awsRegion, roles: [...n.roles].sort() }));
    assert.deepEqual(pg, [
      { name: "pg-seoul-1", ip: "10.1.0.10", region: "ap-northeast-2", roles: ["etcd", "postgres"] },
      { name: "pg-tokyo-1", ip: "10.2.0.10", region: "ap-northeast-1", roles: ["etcd", "postgres"] },
      { name: "pg-singapore-1", ip: "10.3.0.10", region: "ap-southeast-1", roles: ["etcd", "postgres"] },
    ]);
  });

  test("one HAProxy per region, haproxy-1 at 10.1.0.20 in Seoul", () => {
    const haproxies = nodesWithRole(plan, "haproxy").map((n) => ({ name: n.name, ip: n.privateIp, region: n.awsRegion, roles: [...n.roles] }));
    assert.deepEqual(haproxies, [
      { name: "haproxy-1", ip: "10.1.0.20", region: "ap-northeast-2", roles: ["haproxy"] },
      { name: "haproxy-2", ip: "10.2.0.20", region: "ap-northeast-1", roles: ["haproxy"] },
      { name: "haproxy-3", ip: "10.3.0.20", region: "ap-southeast-1", roles: ["haproxy"] },
    ]);
    assert.equal(plan.nodes.length, 6);
    assert.equal(findNode(plan, "haproxy-1").region, "seoul");
  });

  test("Seoul is the preferred primary and instance types follow the roles", () => {
    assert.equal(findNode(plan, "pg-seoul-1").failoverPriority, 2);
    assert.equal(findNode(plan, "pg-tokyo-1").failoverPriority, 1);
    assert.equal(findNode(plan, "pg-seoul-1").instanceType, "m6i.large");
    assert.equal(findNode(plan, "haproxy-1").instanceType, "t3.small");
  });

  test("the cluster CIDRs are the three disjoint VPCs", () => {
    assert.deepEqual(plan.clusterCidrs, ["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"]);
  });

  test("Patroni settings of the reference design", () => {
    const p = plan.config.patroni;
    assert.equal(p.scope, "pg-multiregion");
    assert.equal(p.namespace, "/db/");
    assert.equal(p.synchronousMode, true);
    assert.equal(p.synchronousModeStrict, false);
    assert.equal(p.synchronousNodeCount, 1);
    assert.equal(p.maximumLagOnFailover, 1048576);
    assert.ok(p.loopWait + 2 * p.retryTimeout <= p.ttl, "default timing must let an isolated primary demote before its key expires");
    assert.ok(p.ttl >= 20);
  });

  test("three etcd members speaking TLS on 2380 (peer) and 2379 (client)", () => {
    assert.deepEqual(
      plan.etcd.members.map((m) => [m.name, m.peerUrl, m.clientUrl]),
      [
        ["pg-seoul-1", "https://10.1.0.10:2380", "https://10.1.0.10:2379"],
        ["pg-tokyo-1", "https://10.2.0.10:2380", "https://10.2.0.10:2379"],
        ["pg-singapore-1", "https://10.3.0.10:2380", "https://10.3.0.10:2379"],
      ],
    );
    assert.equal(plan.etcd.initialClusterToken, "pg-multiregion-dev");
  });

  test("etcd timing is derived from the largest RTT (74 ms → 120/1200)", () => {
    assert.deepEqual(expectedTiming(74), { heartbeatIntervalMs: 120, electionTimeoutMs: 1200 });
    assert.deepEqual(plan.etcd.timing, { ...expectedTiming(74), source: "rtt", maxRttMs: 74 });
  });

  test("every SSM parameter sits under /pgha/dev/<node>/", () => {
    assert.equal(plan.secrets.length, plan.nodes.length);
    for (const secrets of plan.secrets) {
      const node = findNode(plan, secrets.node);
      assert.equal(secrets.parameterPath, `/pgha/dev/${node.name}`);
      assert.equal(secrets.awsRegion, node.awsRegion, `${node.name}'s parameters must live in its own region`);
      assert.ok(secrets.parameters.length > 0);
      for (const parameter of secrets.parameters) {
        assert.ok(parameter.name.startsWith(`/pgha/dev/${node.name}/`), `${parameter.name} is outside /pgha/dev/${node.name}/`);
      }
    }
    const names = plan.secrets.flatMap((s) => s.parameters.map((p) => p.name));
    assert.equal(new Set(names).size, names.length, "parameter names must be unique");
  });

  test("keys and passwords are SecureString; certificates are plain String", () => {
    let keys = 0;
    let passwords = 0;
    let certificates = 0;
    for (const parameter of plan.secrets.flatMap((s) => s.parameters)) {
      switch (parameter.value.kind) {
        case "private-key":
          keys++;
          assert.equal(parameter.secure, true, `${parameter.name} must be secure`);
          break;
        case "password":
          passwords++;
          assert.equal(parameter.secure, true, `${parameter.name} must be secure`);
          break;
        case "certificate":
        case "ca-certificate":
          certificates++;
          assert.equal(parameter.secure, false, `${parameter.name} must not be secure`);
          break;
      }
    }
    // 3 postgres nodes × 4 certs + 3 haproxy × 1 cert (etcd-member counted once per postgres+etcd node).
    assert.equal(keys, plan.certificates.length);
    // 3 postgres nodes × (4 database and REST API passwords + pgBackRest's cipher passphrase).
    assert.equal(passwords, 3 * 5);
    assert.equal(certificates, plan.certificates.length + plan.nodes.length);
  });

  test("only PostgreSQL nodes receive the database passwords", () => {
    for (const secrets of plan.secrets) {
      const hasPasswords = secrets.parameters.some((p) => p.value.kind === "password");
      assert.equal(hasPasswords, findNode(plan, secrets.node).roles.has("postgres"), secrets.node);
    }
  });

  test("certificate SANs name the node IP, 127.0.0.1, the hostname and localhost", () => {
    assert.ok(plan.certificates.length > 0);
    const haproxies = nodesWithRole(plan, "haproxy");
    for (const cert of plan.certificates) {
      const node = findNode(plan, cert.node);
      // PostgreSQL is reached through HAProxy's TCP passthrough, so its server
      // certificate also names every HAProxy endpoint (sslmode=verify-full).
      const extra = cert.kind === "postgres-server" ? haproxies : [];
      assert.deepEqual([...cert.ipAddresses].sort(), [node.privateIp, "127.0.0.1", ...extra.map((h) => h.privateIp)].sort(), cert.id);
      assert.deepEqual([...cert.dnsNames].sort(), [node.name, "localhost", ...extra.map((h) => h.name)].sort(), cert.id);
    }
  });

  test("postgres+etcd nodes get etcd, Patroni and PostgreSQL certificates", () => {
    const kinds = plan.certificates
      .filter((c) => c.node === "pg-tokyo-1")
      .map((c) => c.kind)
      .sort();
    assert.deepEqual(kinds, ["etcd-client", "etcd-member", "metrics", "patroni-rest", "postgres-server"]);
  });

  test("HAProxy nodes get a client-only check certificate and a metrics certificate, also as HAProxy's bundle", () => {
    for (const node of nodesWithRole(plan, "haproxy")) {
      const certs = plan.certificates.filter((c) => c.node === node.name);
      assert.deepEqual(certs.map((c) => c.kind).sort(), ["haproxy-check", "metrics"], node.name);
      const check = certificateFor(plan.certificates, node.name, "haproxy-check");
      assert.ok(check.allowedUses.includes("client_auth"));
      assert.ok(!check.allowedUses.includes("server_auth"), "the check key must not be able to serve as a server");
      assert.equal(check.separateFiles, false, "the check certificate travels as the bundle only");
      const metrics = certificateFor(plan.certificates, node.name, "metrics");
      assert.ok(metrics.bundlePath && metrics.separateFiles, "the metrics certificate: a bundle for HAProxy's exporter and the pair for Prometheus");
      assert.equal(metrics.owner, "prometheus");
    }
    const database = plan.certificates.find((c) => c.node === "pg-tokyo-1" && c.kind === "metrics");
    assert.equal(database?.bundlePath, undefined, "no HAProxy on a database node, so no bundle");
  });
});

describe("etcd timing", () => {
  test("a slow link raises heartbeat and election (200 ms → 300/3000)", () => {
    const plan = buildClusterPlan({ etcd: { rttMs: { "seoul-tokyo": 200, "seoul-singapore": 50, "tokyo-singapore": 60 } } }, STACK);
    assert.deepEqual(expectedTiming(200), { heartbeatIntervalMs: 300, electionTimeoutMs: 3000 });
    assert.deepEqual(plan.etcd.timing, { ...expectedTiming(200), source: "rtt", maxRttMs: 200 });
  });

  test("all etcd members in one region get etcd's LAN defaults (100/1000)", () => {
    const seoul = structuredClone(DEFAULT_CONFIG.regions[0]);
    seoul.nodes = [
      { name: "pg-seoul-1", privateIp: "10.1.0.10", roles: ["postgres", "etcd"] },
      { name: "pg-seoul-2", privateIp: "10.1.0.11", roles: ["postgres", "etcd"] },
      { name: "pg-seoul-3", privateIp: "10.1.0.12", roles: ["postgres", "etcd"] },
      { name: "haproxy-1", privateIp: "10.1.0.20", roles: ["haproxy"] },
    ];
    const plan = buildClusterPlan({ regions: [seoul], etcd: { rttMs: {} } }, STACK);
    assert.equal(plan.etcd.members.length, 3);
    assert.deepEqual(plan.etcd.timing, { heartbeatIntervalMs: 100, electionTimeoutMs: 1000, source: "rtt", maxRttMs: 0 });
  });

  test("the RTT to a region without etcd members does not slow etcd down", () => {
    const regions = regionsWith((r) =>
      r.push({
        name: "osaka",
        awsRegion: "ap-northeast-3",
        vpcCidr: "10.4.0.0/16",
        subnets: [{ cidr: "10.4.0.0/24", availabilityZone: "ap-northeast-3a" }],
        natSubnetCidr: "10.4.255.0/28",
        nodes: [{ name: "haproxy-4", privateIp: "10.4.0.20", roles: ["haproxy"] }],
      }),
    );
    const plan = buildClusterPlan({ regions, etcd: { rttMs: { ...DEFAULT_CONFIG.etcd.rttMs, "seoul-osaka": 400 } } }, STACK);
    assert.deepEqual(plan.etcd.timing, { ...expectedTiming(74), source: "rtt", maxRttMs: 74 });
  });

  test("explicit heartbeat and election override the derivation", () => {
    const plan = buildClusterPlan({ etcd: { heartbeatIntervalMs: 250, electionTimeoutMs: 2500 } }, STACK);
    assert.deepEqual(plan.etcd.timing, { heartbeatIntervalMs: 250, electionTimeoutMs: 2500, source: "explicit" });
    assert.equal(deriveEtcdTiming(plan.config).source, "explicit");
  });
});

describe("instance type architecture", () => {
  const table: [string, "amd64" | "arm64"][] = [
    ["m6i.large", "amd64"],
    ["t3.small", "amd64"],
    ["m7a.large", "amd64"],
    ["g4dn.xlarge", "amd64"],
    ["r7iz.large", "amd64"],
    ["m7g.large", "arm64"],
    ["t4g.small", "arm64"],
    ["c7g.xlarge", "arm64"],
    ["m6gd.large", "arm64"],
    ["c6gn.large", "arm64"],
    ["x2gd.large", "arm64"],
    ["im4gn.large", "arm64"],
    ["g5g.xlarge", "arm64"],
    ["a1.large", "arm64"],
  ];
  for (const [instanceType, architecture] of table) {
    test(`${instanceType} is ${architecture}`, () => {
      assert.equal(instanceTypeArchitecture(instanceType), architecture);
    });
  }

  test("an arm64 stack with Graviton types for both roles builds", () => {
    const plan = buildClusterPlan({ instances: { architecture: "arm64", postgresType: "m7g.large", haproxyType: "t4g.small" } }, STACK);
    assert.deepEqual([...new Set(plan.nodes.map((n) => n.instanceType))].sort(), ["m7g.large", "t4g.small"]);
  });
});

describe("rejections", () => {
  interface Case {
    name: string;
    input: unknown;
    /** The `pgha:<key>` the problem is reported under. */
    key: string;
    /** The offending value as the user wrote it (JSON-encoded in the message). */
    value: unknown;
    /** What the rest of the line must say. */
    rule: RegExp;
  }

  const cases: Case[] = [
    // Address plan
    {
      name: "overlapping VPC CIDRs",
      // Singapore's whole address plan moved into Tokyo's range, so the overlap is the only problem.
      input: {
        regions: regionsWith((r) => {
          r[2].vpcCidr = "10.2.0.0/16";
          r[2].subnets[0].cidr = "10.2.1.0/24";
          r[2].natSubnetCidr = "10.2.254.0/28";
          r[2].nodes[0].privateIp = "10.2.1.10";
          r[2].nodes[1].privateIp = "10.2.1.20";
        }),
      },
      key: "regions[2].vpcCidr",
      value: "10.2.0.0/16",
      rule: /overlaps regions\[1\]\.vpcCidr 10\.2\.0\.0\/16; peered VPCs need disjoint CIDRs/,
    },
    {
      name: "subnet outside the VPC",
      input: { regions: regionsWith((r) => (r[0].subnets[0].cidr = "10.9.0.0/24")) },
      key: "regions[0].subnets[0].cidr",
      value: "10.9.0.0/24",
      rule: /must lie inside the region's vpcCidr 10\.1\.0\.0\/16/,
    },
    {
      name: "CIDR with host bits",
      input: { regions: regionsWith((r) => (r[0].subnets[0].cidr = "10.1.0.5/24")) },
      key: "regions[0].subnets[0].cidr",
      value: "10.1.0.5/24",
      rule: /host bits set/,
    },
    {
      name: "private IP outside every subnet",
      input: { regions: regionsWith((r) => (r[0].nodes[1].privateIp = "10.1.1.20")) },
      key: "regions[0].nodes[1].privateIp",
      value: "10.1.1.20",
      rule: /is in none of the region's subnets \(10\.1\.0\.0\/24\)/,
    },
    ...["10.1.0.0", "10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.255"].map((ip): Case => ({
      name: `AWS-reserved address ${ip}`,
      input: { regions: regionsWith((r) => (r[0].nodes[1].privateIp = ip)) },
      key: "regions[0].nodes[1].privateIp",
      value: ip,
      rule: /is reserved by AWS in subnet 10\.1\.0\.0\/24/,
    })),
    {
      name: "duplicate node name across regions",
      input: { regions: regionsWith((r) => (r[1].nodes[1].name = "haproxy-1")) },
      key: "regions[1].nodes[1].name",
      value: "haproxy-1",
      rule: /duplicates regions\[0\]\.nodes\[1\]\.name; node names must be unique/,
    },
    {
      name: "duplicate private IP",
      input: { regions: regionsWith((r) => (r[0].nodes[1].privateIp = "10.1.0.10")) },
      key: "regions[0].nodes[1].privateIp",
      value: "10.1.0.10",
      rule: /duplicates regions\[0\]\.nodes\[0\]\.privateIp/,
    },
    // Quorum
    {
      name: "even number of etcd members (4)",
      input: { regions: regionsWith((r) => r[0].nodes[1].roles.push("etcd")) },
      key: "regions[*].nodes[*].roles",
      value: "4 etcd members",
      rule: /odd number of etcd members, at least 3/,
    },
    {
      name: "fewer than 3 etcd members (1)",
      input: {
        regions: regionsWith((r) => {
          r[1].nodes[0].roles = ["postgres"];
          r[2].nodes[0].roles = ["postgres"];
        }),
      },
      key: "regions[*].nodes[*].roles",
      value: "1 etcd member",
      rule: /odd number of etcd members, at least 3/,
    },
    // Patroni
    {
      name: "loop_wait + 2 × retry_timeout > ttl",
      input: { patroni: { ttl: 20, loopWait: 5, retryTimeout: 8 } },
      key: "patroni.ttl",
      value: 20,
      rule: /must be at least loopWait \+ 2 × retryTimeout = 5 \+ 2 × 8 = 21/,
    },
    {
      name: "ttl below Patroni's minimum of 20",
      input: { patroni: { ttl: 19, loopWait: 5, retryTimeout: 7 } },
      key: "patroni.ttl",
      value: 19,
      rule: /Patroni requires ttl >= 20/,
    },
    {
      name: "synchronousNodeCount not below the postgres node count",
      input: { patroni: { synchronousNodeCount: 3 } },
      key: "patroni.synchronousNodeCount",
      value: 3,
      rule: /must be less than the number of postgres nodes \(3\)/,
    },
    {
      name: "failsafeMode not a boolean",
      input: { patroni: { failsafeMode: "yes" } },
      key: "patroni.failsafeMode",
      value: "yes",
      rule: /must be true or false/,
    },
    {
      name: "a negative read lag bound",
      input: { haproxy: { replicaMaxLagBytes: -1 } },
      key: "haproxy.replicaMaxLagBytes",
      value: -1,
      rule: /must be between 0 and/,
    },
    {
      name: "managed PostgreSQL parameter",
      input: { patroni: { parameters: { archive_command: "/bin/true" } } },
      key: "patroni.parameters.archive_command",
      value: "/bin/true",
      rule: /is managed by this program/,
    },
    // etcd timing
    {
      name: "election timeout below 5 × heartbeat",
      input: { etcd: { heartbeatIntervalMs: 100, electionTimeoutMs: 400 } },
      key: "etcd.electionTimeoutMs",
      value: 400,
      rule: /must be at least 5 × heartbeatIntervalMs = 500/,
    },
    {
      name: "election timeout above etcd's 50000 ms limit",
      input: { etcd: { heartbeatIntervalMs: 1000, electionTimeoutMs: 60000 } },
      key: "etcd.electionTimeoutMs",
      value: 60000,
      rule: /must be at most 50000/,
    },
    {
      name: "heartbeat without election timeout",
      input: { etcd: { heartbeatIntervalMs: 200 } },
      key: "etcd.heartbeatIntervalMs",
      value: 200,
      rule: /set heartbeatIntervalMs and electionTimeoutMs together, or neither/,
    },
    {
      name: "election timeout without heartbeat",
      input: { etcd: { electionTimeoutMs: 2000 } },
      key: "etcd.electionTimeoutMs",
      value: 2000,
      rule: /set heartbeatIntervalMs and electionTimeoutMs together, or neither/,
    },
    {
      name: "rttMs naming an unknown region",
      input: { etcd: { rttMs: { ...DEFAULT_CONFIG.etcd.rttMs, "seoul-osaka": 10 } } },
      key: "etcd.rttMs.seoul-osaka",
      value: 10,
      rule: /key must be <region>-<region> naming two regions of this stack \(seoul, tokyo, singapore\)/,
    },
    {
      name: "rttMs missing a pair of etcd regions",
      input: { etcd: { rttMs: { "seoul-tokyo": 31, "seoul-singapore": 72 } } },
      key: "etcd.rttMs",
      value: { "seoul-tokyo": 31, "seoul-singapore": 72 },
      rule: /gives no round-trip time for tokyo-singapore/,
    },
    // AWS
    {
      // A typo in awsRegion alone: the AZs are right and must not be reported too.
      name: "unknown AWS region",
      input: { regions: regionsWith((r) => (r[0].awsRegion = "ap-northeast-4")) },
      key: "regions[0].awsRegion",
      value: "ap-northeast-4",
      rule: /is not an AWS region/,
    },
    {
      name: "availability zone of another region",
      input: { regions: regionsWith((r) => (r[0].subnets[0].availabilityZone = "ap-northeast-1a")) },
      key: "regions[0].subnets[0].availabilityZone",
      value: "ap-northeast-1a",
      rule: /must be a zone of ap-northeast-2/,
    },
    // Shape of the document
    {
      name: "unknown top-level key (typo of regions)",
      input: { regoins: DEFAULT_CONFIG.regions },
      key: "regoins",
      value: DEFAULT_CONFIG.regions,
      rule: /unknown key; expected one of regions, /,
    },
    {
      name: "unknown nested key",
      input: { patroni: { loop_wait: 10 } },
      key: "patroni.loop_wait",
      value: 10,
      rule: /unknown key; expected one of .*\bloopWait\b/,
    },
    {
      name: "string where a number is expected",
      input: { patroni: { ttl: "30" } },
      key: "patroni.ttl",
      value: "30",
      rule: /must be a whole number/,
    },
    {
      name: "0.0.0.0/0 in applicationCidrs",
      input: { access: { applicationCidrs: ["0.0.0.0/0"] } },
      key: "access.applicationCidrs[0]",
      value: "0.0.0.0/0",
      rule: /0\.0\.0\.0\/0 is never allowed/,
    },
    // Versions
    {
      name: "malformed etcd SHA-256",
      input: { versions: { etcdSha256: { amd64: "abc123" } } },
      key: "versions.etcdSha256.amd64",
      value: "abc123",
      rule: /must be 64 lower-case hex digits/,
    },
    {
      name: "etcd outside 3.5.x",
      input: { versions: { etcd: "3.6.0" } },
      key: "versions.etcd",
      value: "3.6.0",
      rule: /must be an etcd 3\.5\.x release/,
    },
    // Architecture and instance type
    {
      name: "arm64 with the default m6i.large database type",
      input: { instances: { architecture: "arm64", haproxyType: "t4g.small" } },
      key: "instances.postgresType",
      value: "m6i.large",
      rule: /^is an amd64 instance type but instances\.architecture is arm64 .*use a Graviton type such as m7g\.large or set instances\.architecture to amd64$/,
    },
    {
      name: "amd64 with a Graviton HAProxy type",
      input: { instances: { haproxyType: "t4g.small" } },
      key: "instances.haproxyType",
      value: "t4g.small",
      rule: /^is an arm64 instance type but instances\.architecture is amd64 .*use an x86 type such as m6i\.large or set instances\.architecture to arm64$/,
    },
    {
      name: "amd64 with a node's own Graviton instanceType",
      input: { regions: regionsWith((r) => (r[1].nodes[0].instanceType = "c7g.xlarge")) },
      key: "regions[1].nodes[0].instanceType",
      value: "c7g.xlarge",
      rule: /^is an arm64 instance type but instances\.architecture is amd64/,
    },
    // HAProxy
    {
      name: "HAProxy listener on PostgreSQL's port",
      input: { haproxy: { primaryPort: 5432 } },
      key: "haproxy.primaryPort",
      value: 5432,
      rule: /collides with a cluster port \(5432, /,
    },
    {
      name: "two HAProxy listeners on one port",
      input: { haproxy: { replicaPort: 5000 } },
      key: "haproxy.replicaPort",
      value: 5000,
      rule: /is used by another HAProxy listener/,
    },
    {
      name: "a tag in AWS's reserved aws: namespace",
      input: { tags: { "aws:owner": "me" } },
      key: "tags.aws:owner",
      value: "me",
      rule: /may not start with aws:/,
    },
    // Maps whose keys are checked too, and values the user did not write
    {
      name: "an etcd checksum for an unknown architecture",
      input: { versions: { etcdSha256: { ...DEFAULT_CONFIG.versions.etcdSha256, riscv64: "a".repeat(64) } } },
      key: "versions.etcdSha256.riscv64",
      value: "a".repeat(64),
      rule: /^architecture must be one of amd64, arm64$/,
    },
    {
      name: "a PostgreSQL parameter whose name is not one",
      input: { patroni: { parameters: { Work_Mem: "64MB" } } },
      key: "patroni.parameters.Work_Mem",
      value: "64MB",
      rule: /^is not a PostgreSQL parameter name$/,
    },
    {
      name: "an AMI override keyed by something that is not an AWS region",
      input: { instances: { amiOverrides: { "mars-1": "ami-0123456789abcdef0" } } },
      key: "instances.amiOverrides.mars-1",
      value: "ami-0123456789abcdef0",
      rule: /^key is not an AWS region$/,
    },
    {
      // Below 10 s a first boot would fail before EC2 could attach the volume at all.
      name: "a data-volume wait shorter than 10 s",
      input: { instances: { dataVolumeAttachSeconds: 5 } },
      key: "instances.dataVolumeAttachSeconds",
      value: 5,
      rule: /^must be between 10 and 3600$/,
    },
    {
      name: "more than 40 tags (the value is the count)",
      input: { tags: Object.fromEntries(Array.from({ length: 41 }, (_, i) => [`team-${i}`, "x"])) },
      key: "tags",
      value: "41 tags",
      rule: /^at most 40 tags /,
    },
    {
      // The value on the line is the default the user left in place, not what they wrote.
      name: "postgresMajor 16 with the default postgresPackage 17.*",
      input: { versions: { postgresMajor: 16 } },
      key: "versions.postgresPackage",
      value: "17.*",
      rule: /^must be a version of PostgreSQL 16 \(versions\.postgresMajor\), such as 16\.\*$/,
    },
    {
      name: "a whole number beyond 2^53 is out of range, not a fraction",
      input: { patroni: { maximumLagOnFailover: 1e20 } },
      key: "patroni.maximumLagOnFailover",
      value: 1e20,
      rule: /^must be between 0 and 9007199254740991$/,
    },
    {
      name: "a list where the pgha: keys should be",
      input: [],
      key: "(root)",
      value: [],
      rule: /^must be an object of pgha:\* keys$/,
    },
    // IAM: the node roles' permissions boundary
    ...[
      ["the unfilled ACCOUNT_ID placeholder", "arn:aws:iam::ACCOUNT_ID:policy/pgha-ephemeral-node-boundary"],
      ["a policy name instead of its ARN", "pgha-ephemeral-node-boundary"],
      ["a role ARN", "arn:aws:iam::123456789012:role/pgha-ephemeral-node-boundary"],
      ["an 11-digit account", "arn:aws:iam::12345678901:policy/pgha-ephemeral-node-boundary"],
      ["a trailing slash", "arn:aws:iam::123456789012:policy/boundaries/"],
      ["an empty string", ""],
      ["a number", 123456789012],
    ].map(([what, value]): Case => ({
      name: `permissions boundary: ${what}`,
      input: { iam: { nodePermissionsBoundaryArn: value } },
      key: "iam.nodePermissionsBoundaryArn",
      value,
      rule: /^must be an IAM managed policy ARN arn:<partition>:iam::<12-digit account>:policy\/<path\/name>$/,
    })),
    ...[
      ["a topic name, not its ARN", "pgha-alerts"],
      ["a FIFO topic (SNS cannot deliver Alertmanager's messages to one without a group id)", "arn:aws:sns:ap-northeast-2:123456789012:pgha-alerts.fifo"],
      ["a queue ARN", "arn:aws:sqs:ap-northeast-2:123456789012:pgha-alerts"],
    ].map(([what, value]): Case => ({
      name: `alert topic: ${what}`,
      input: { monitoring: { alertTopicArn: value } },
      key: "monitoring.alertTopicArn",
      value,
      rule: /^must be a standard SNS topic ARN arn:aws:sns:<region>:<12-digit account>:<name>$/,
    })),
    {
      name: "a scrape interval of 0 s",
      input: { monitoring: { scrapeIntervalSeconds: 0 } },
      key: "monitoring.scrapeIntervalSeconds",
      value: 0,
      rule: /between 1 and 300/,
    },
    {
      name: "an alert group interval beyond the 4 h repeat interval",
      input: { monitoring: { groupIntervalSeconds: 14_401 } },
      key: "monitoring.groupIntervalSeconds",
      value: 14_401,
      rule: /between 10 and 14400/,
    },
    {
      name: "an unknown key under iam",
      input: { iam: { permissionsBoundary: "arn:aws:iam::123456789012:policy/b" } },
      key: "iam.permissionsBoundary",
      value: "arn:aws:iam::123456789012:policy/b",
      rule: /^unknown key; expected one of nodePermissionsBoundaryArn$/,
    },
  ];

  for (const c of cases) {
    test(c.name, () => {
      const error = configErrorOf(c.input);
      const lines = error.message.split("\n");
      assert.equal(lines.length, 1, `expected exactly one line, got:\n${error.message}`);
      const prefix = `pgha:${c.key} = ${JSON.stringify(c.value)}: `;
      assert.ok(lines[0].startsWith(prefix), `expected a line starting ${JSON.stringify(prefix)}, got:\n${lines[0]}`);
      assert.match(lines[0].slice(prefix.length), c.rule);
      assert.equal(error.problems.length, 1);
      assert.equal(error.problems[0].key, c.key);
    });
  }

  test("a bad stack name is rejected with a plain Error naming the stack name", () => {
    for (const stack of ["Dev", "dev_stack", "", "-dev", "a".repeat(41)]) {
      assert.throws(
        () => buildClusterPlan(undefined, { stack }),
        (error: unknown) => {
          assert.ok(error instanceof Error);
          assert.ok(!(error instanceof ConfigError), "the stack name is not a pgha: key");
          assert.ok(error.message.startsWith(`stack name = ${JSON.stringify(stack)}: `), error.message);
          assert.doesNotMatch(error.message, /\n/);
          return true;
        },
      );
    }
  });
});

describe("the node roles' permissions boundary (pgha:iam.nodePermissionsBoundaryArn)", () => {
  test("defaults to none", () => {
    assert.deepEqual(buildClusterPlan(undefined, STACK).config.iam, {});
    assert.equal(buildClusterPlan({ iam: {} }, STACK).config.iam.nodePermissionsBoundaryArn, undefined);
  });

  test("accepts managed policy ARNs of any partition, with or without a path", () => {
    for (const arn of [
      "arn:aws:iam::123456789012:policy/pgha-ephemeral-node-boundary",
      "arn:aws-cn:iam::123456789012:policy/pgha-ephemeral-node-boundary",
      "arn:aws-us-gov:iam::123456789012:policy/boundaries/pgha/node_boundary+v2",
    ]) {
      assert.equal(buildClusterPlan({ iam: { nodePermissionsBoundaryArn: arn } }, STACK).config.iam.nodePermissionsBoundaryArn, arn);
    }
  });

  test("rejects anything else with exactly one line naming key, value and rule", () => {
    assert.equal(
      configErrorOf({ iam: { nodePermissionsBoundaryArn: "arn:aws:iam::ACCOUNT_ID:policy/pgha-ephemeral-node-boundary" } }).message,
      'pgha:iam.nodePermissionsBoundaryArn = "arn:aws:iam::ACCOUNT_ID:policy/pgha-ephemeral-node-boundary": must be an IAM managed policy ARN arn:<partition>:iam::<12-digit account>:policy/<path/name>',
    );
    assert.equal(
      configErrorOf({ iam: "arn:aws:iam::123456789012:policy/b" }).message,
      'pgha:iam = "arn:aws:iam::123456789012:policy/b": must be an object such as {nodePermissionsBoundaryArn: ...}',
    );
  });
});

describe("several mistakes at once", () => {
  test("bad ttl and a colliding HAProxy port are reported on two lines", () => {
    const error = configErrorOf({ patroni: { ttl: 19 }, haproxy: { primaryPort: 5432 } });
    const lines = error.message.split("\n");
    assert.equal(lines.length, 2, error.message);
    assert.ok(
      lines.some((l) => l.startsWith("pgha:patroni.ttl = 19: ")),
      error.message,
    );
    assert.ok(
      lines.some((l) => l.startsWith("pgha:haproxy.primaryPort = 5432: ")),
      error.message,
    );
  });

  test("a typo'd key and a wrong type in different sections are both reported", () => {
    const error = configErrorOf({ regoins: [], instances: { dataVolumeGiB: "100" } });
    assert.deepEqual(
      error.message.split("\n").map((line) => line.slice(0, line.indexOf(" = "))),
      ["pgha:regoins", "pgha:instances.dataVolumeGiB"],
    );
  });

  test("an unknown key comes before the other problems of its section", () => {
    const error = configErrorOf({ patroni: { ttl: "20", loop_wait: 5 }, haproxy: { checkFall: 0 } });
    assert.deepEqual(
      error.message.split("\n").map((line) => line.slice(0, line.indexOf(" = "))),
      ["pgha:patroni.loop_wait", "pgha:patroni.ttl", "pgha:haproxy.checkFall"],
    );
  });

  test("three address-plan mistakes in different regions give three lines", () => {
    const regions = regionsWith((r) => {
      r[0].nodes[1].privateIp = "10.1.0.3";
      r[1].nodes[1].name = "haproxy-1";
      r[2].nodes[1].privateIp = "10.3.1.20";
    });
    const error = configErrorOf({ regions });
    assert.equal(error.problems.length, 3, error.message);
    assert.equal(error.message.split("\n").length, 3);
  });
});
