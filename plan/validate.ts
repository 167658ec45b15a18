import type { z } from "zod";
import type { ClusterConfig, CpuArchitecture } from "./config";
import { awsReservedAddresses, blockContains, blocksOverlap, parseIpv4, parseIpv4Cidr, type Ipv4Block } from "./net";
import { configSchema, SCHEMA_KEYS } from "./schema";

export { MANAGED_PARAMETERS } from "./schema";

/** The config namespace every key is reported under. */
export const CONFIG_NAMESPACE = "pgha";

/** One rejected input: the key, the offending value and the rule it breaks. */
export interface ConfigProblem {
  key: string;
  value: unknown;
  rule: string;
}

export function formatProblem(problem: ConfigProblem): string {
  return `${CONFIG_NAMESPACE}:${problem.key} = ${JSON.stringify(problem.value)}: ${problem.rule}`;
}

/** Thrown before anything is created; its message has one line per problem. */
export class ConfigError extends Error {
  constructor(readonly problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join("\n"));
    this.name = "ConfigError";
  }
}

const ETCD_MAX_ELECTION_MS = 50000;

type Path = readonly PropertyKey[];

/** `regions[1].nodes[0].name`: the key as users write it in `pulumi config set --path`. */
function keyOf(path: Path): string {
  const key = path.map((part) => (typeof part === "number" ? `[${part}]` : `.${String(part)}`)).join("");
  return key.startsWith(".") ? key.slice(1) : key || "(root)";
}

/** What the user wrote at `path` (undefined where they wrote nothing). */
function valueAt(input: unknown, path: Path): unknown {
  let value = input;
  for (const part of path) {
    if (typeof value !== "object" || value === null) return undefined;
    value = (value as Record<PropertyKey, unknown>)[part];
  }
  return value;
}

/** One zod issue as problem lines: an unrecognized_keys issue names each key on its own line. */
function problemsOf(issue: z.core.$ZodIssue, input: unknown): ConfigProblem[] {
  if (issue.code === "unrecognized_keys") {
    const holder = valueAt(input, issue.path);
    return issue.keys.map((name) => ({ key: keyOf([...issue.path, name]), value: valueAt(holder, [name]), rule: issue.message }));
  }
  // A bad record key: the rule is the key schema's, the value the entry's.
  const rule = issue.code === "invalid_key" ? (issue.issues[0]?.message ?? issue.message) : issue.message;
  // Refinements name the value they judged: it may be a default or a count, not what the user wrote.
  const params = issue.code === "custom" ? issue.params : undefined;
  const value: unknown = params && "value" in params ? (params.value as unknown) : valueAt(input, issue.path);
  return [{ key: keyOf(issue.path), value, rule }];
}

/**
 * The schema's problems, one per key, grouped by section in the order of the
 * `pgha:` keys (unknown top-level keys first) and, within a section, unknown
 * keys before field rules: the order the hand-written checks had (zod lists
 * an object's unknown keys after its fields).
 */
function schemaProblems(issues: readonly z.core.$ZodIssue[], input: unknown): ConfigProblem[] {
  const section = (issue: z.core.$ZodIssue): number => (issue.path.length === 0 ? -1 : SCHEMA_KEYS.indexOf(issue.path[0] as keyof ClusterConfig));
  const unknownFirst = (issue: z.core.$ZodIssue): number => (issue.code === "unrecognized_keys" ? 0 : 1);
  const seen = new Set<string>();
  return [...issues]
    .sort((a, b) => section(a) - section(b) || unknownFirst(a) - unknownFirst(b))
    .flatMap((issue) => problemsOf(issue, input))
    .filter((problem) => {
      // zod may raise two issues for one value (a whole number beyond 2^53 is both); the first says it.
      if (seen.has(problem.key)) return false;
      seen.add(problem.key);
      return true;
    });
}

/**
 * Validates a user's `pgha:` configuration and fills in the defaults.
 * Throws {@link ConfigError} listing every problem, one line each. Rules
 * that span keys (overlaps, quorum, timing) run once every key on its own
 * is well-formed, so a second run may report more.
 */
export function validateConfig(input: unknown): ClusterConfig {
  const parsed = configSchema.safeParse(input);
  if (!parsed.success) throw new ConfigError(schemaProblems(parsed.error.issues, input));
  const problems: ConfigProblem[] = [];
  checkCluster((key, value, rule) => problems.push({ key, value, rule }), parsed.data);
  if (problems.length > 0) throw new ConfigError(problems);
  return parsed.data;
}

/** Records one problem of the cross-section rules. */
type Fail = (key: string, value: unknown, rule: string) => void;

/** Rules that span several keys: uniqueness, address plans, quorum, timing. */
function checkCluster(fail: Fail, config: ClusterConfig): void {
  const seenRegionNames = new Map<string, string>();
  const seenAwsRegions = new Map<string, string>();
  const vpcs: { key: string; block: Ipv4Block }[] = [];
  const nodeNames = new Map<string, string>();
  const nodeIps = new Map<string, string>();

  config.regions.forEach((region, r) => {
    const key = `regions[${r}]`;
    const firstName = seenRegionNames.get(region.name);
    if (firstName) fail(`${key}.name`, region.name, `duplicates ${firstName}.name; region names must be unique`);
    seenRegionNames.set(region.name, key);
    const firstRegion = seenAwsRegions.get(region.awsRegion);
    if (firstRegion) fail(`${key}.awsRegion`, region.awsRegion, `duplicates ${firstRegion}.awsRegion; put each AWS region in one entry`);
    seenAwsRegions.set(region.awsRegion, key);

    const vpc = parseIpv4Cidr(region.vpcCidr) as Ipv4Block;
    for (const other of vpcs) {
      if (blocksOverlap(vpc, other.block)) fail(`${key}.vpcCidr`, region.vpcCidr, `overlaps ${other.key}.vpcCidr ${other.block.cidr}; peered VPCs need disjoint CIDRs`);
    }
    vpcs.push({ key, block: vpc });

    const subnetBlocks = region.subnets.map((subnet) => parseIpv4Cidr(subnet.cidr) as Ipv4Block);
    const natBlock = parseIpv4Cidr(region.natSubnetCidr) as Ipv4Block;
    subnetBlocks.forEach((block, s) => {
      subnetBlocks.slice(0, s).forEach((earlier, e) => {
        if (blocksOverlap(block, earlier)) fail(`${key}.subnets[${s}].cidr`, block.cidr, `overlaps ${key}.subnets[${e}].cidr ${earlier.cidr}`);
      });
      if (blocksOverlap(block, natBlock)) fail(`${key}.natSubnetCidr`, region.natSubnetCidr, `overlaps ${key}.subnets[${s}].cidr ${block.cidr}`);
    });

    region.nodes.forEach((node, n) => {
      const nodeKey = `${key}.nodes[${n}]`;
      const firstNode = nodeNames.get(node.name);
      if (firstNode) fail(`${nodeKey}.name`, node.name, `duplicates ${firstNode}.name; node names must be unique across regions`);
      nodeNames.set(node.name, nodeKey);
      const firstIp = nodeIps.get(node.privateIp);
      if (firstIp) fail(`${nodeKey}.privateIp`, node.privateIp, `duplicates ${firstIp}.privateIp`);
      nodeIps.set(node.privateIp, nodeKey);
      const address = parseIpv4(node.privateIp) as number;
      const subnet = subnetBlocks.find((block) => blockContains(block, address));
      if (!subnet) {
        fail(`${nodeKey}.privateIp`, node.privateIp, `is in none of the region's subnets (${region.subnets.map((s) => s.cidr).join(", ")})`);
      } else if (awsReservedAddresses(subnet).includes(node.privateIp)) {
        fail(`${nodeKey}.privateIp`, node.privateIp, `is reserved by AWS in subnet ${subnet.cidr} (the first four and the last address)`);
      }
    });
  });

  const allNodes = config.regions.flatMap((region) => region.nodes);
  const etcdCount = allNodes.filter((node) => node.roles.includes("etcd")).length;
  if (etcdCount < 3 || etcdCount % 2 === 0) {
    fail(
      "regions[*].nodes[*].roles",
      `${etcdCount} etcd member${etcdCount === 1 ? "" : "s"}`,
      "needs an odd number of etcd members, at least 3, so a majority survives the loss of any one region",
    );
  }
  const postgresCount = allNodes.filter((node) => node.roles.includes("postgres")).length;
  if (postgresCount < 2) fail("regions[*].nodes[*].roles", `${postgresCount} postgres node${postgresCount === 1 ? "" : "s"}`, "needs at least 2 nodes with the postgres role");
  if (allNodes.filter((node) => node.roles.includes("haproxy")).length < 1) {
    fail("regions[*].nodes[*].roles", "0 haproxy nodes", "needs at least one node with the haproxy role (the application endpoint)");
  }
  const candidates = allNodes.filter((node) => node.roles.includes("postgres") && node.failoverPriority !== 0).length;
  if (postgresCount >= 2 && candidates < 1) fail("regions[*].nodes[*].failoverPriority", 0, "at least one postgres node must be allowed to become primary");

  const { patroni, etcd, haproxy, versions, instances } = config;
  if (patroni.ttl < 20) fail("patroni.ttl", patroni.ttl, "Patroni requires ttl >= 20");
  else if (patroni.loopWait + 2 * patroni.retryTimeout > patroni.ttl) {
    fail(
      "patroni.ttl",
      patroni.ttl,
      `must be at least loopWait + 2 × retryTimeout = ${patroni.loopWait} + 2 × ${patroni.retryTimeout} = ${patroni.loopWait + 2 * patroni.retryTimeout}, or an isolated primary may still accept writes after a replica is promoted`,
    );
  }
  if (patroni.synchronousMode && patroni.synchronousNodeCount >= postgresCount) {
    fail("patroni.synchronousNodeCount", patroni.synchronousNodeCount, `must be less than the number of postgres nodes (${postgresCount}); the primary cannot be its own standby`);
  }

  const regionNames = config.regions.map((region) => region.name);
  for (const [pair, ms] of Object.entries(etcd.rttMs)) {
    const [a, b] = splitRegionPair(pair, regionNames);
    if (!a || !b) fail(`etcd.rttMs.${pair}`, ms, `key must be <region>-<region> naming two regions of this stack (${regionNames.join(", ")})`);
  }
  if (etcd.heartbeatIntervalMs === undefined && etcd.electionTimeoutMs === undefined) {
    const missing = missingRttPairs(config);
    if (missing.length > 0) {
      fail("etcd.rttMs", etcd.rttMs, `gives no round-trip time for ${missing.join(", ")}; give every pair of regions or set heartbeatIntervalMs and electionTimeoutMs`);
    }
  } else if (etcd.heartbeatIntervalMs === undefined || etcd.electionTimeoutMs === undefined) {
    const given = etcd.heartbeatIntervalMs === undefined ? "electionTimeoutMs" : "heartbeatIntervalMs";
    fail(`etcd.${given}`, etcd[given], "set heartbeatIntervalMs and electionTimeoutMs together, or neither (they are then derived from rttMs)");
  } else {
    if (etcd.electionTimeoutMs < 5 * etcd.heartbeatIntervalMs) {
      fail("etcd.electionTimeoutMs", etcd.electionTimeoutMs, `must be at least 5 × heartbeatIntervalMs = ${5 * etcd.heartbeatIntervalMs} (etcd tuning guide)`);
    }
    if (etcd.electionTimeoutMs > ETCD_MAX_ELECTION_MS) fail("etcd.electionTimeoutMs", etcd.electionTimeoutMs, `must be at most ${ETCD_MAX_ELECTION_MS} (etcd's limit)`);
  }

  const ports: [string, number][] = [
    ["primaryPort", haproxy.primaryPort],
    ["replicaPort", haproxy.replicaPort],
    ["synchronousPort", haproxy.synchronousPort],
    ["statsPort", haproxy.statsPort],
  ];
  const clusterPorts = [5432, 8008, 2379, 2380];
  ports.forEach(([name, port], index) => {
    if (ports.slice(0, index).some(([, other]) => other === port)) fail(`haproxy.${name}`, port, "is used by another HAProxy listener");
    if (clusterPorts.includes(port)) fail(`haproxy.${name}`, port, "collides with a cluster port (5432, 8008, 2379, 2380)");
  });
  if (haproxy.checkFastIntervalMs > haproxy.checkIntervalMs) {
    fail("haproxy.checkFastIntervalMs", haproxy.checkFastIntervalMs, `must not exceed checkIntervalMs (${haproxy.checkIntervalMs})`);
  }

  if (!versions.etcdSha256[instances.architecture]) {
    fail(
      `versions.etcdSha256.${instances.architecture}`,
      undefined,
      `needs the SHA-256 of etcd-v${versions.etcd}-linux-${instances.architecture}.tar.gz (instances.architecture is ${instances.architecture})`,
    );
  }
  for (const region of Object.keys(instances.amiOverrides)) {
    if (!seenAwsRegions.has(region)) fail(`instances.amiOverrides.${region}`, instances.amiOverrides[region], "names an AWS region this stack does not use");
  }
  checkInstanceArchitectures(fail, config);
}

/**
 * The CPU architecture of an EC2 instance type, from its family (the part
 * before the dot): Graviton families carry a `g` right after the generation
 * digit (m7g, t4g, c6gn, x2gd, im4gn, g5g), and a1 is the first Graviton;
 * every other family this program can run on is x86_64. The AMI and the etcd
 * archive follow `instances.architecture`, so a mismatch would launch an
 * instance that cannot boot its image.
 */
export function instanceTypeArchitecture(instanceType: string): CpuArchitecture {
  const family = instanceType.split(".")[0];
  return family === "a1" || /^[a-z]+\d+g/.test(family) ? "arm64" : "amd64";
}

/** Every instance type a node will run, reported under the key it comes from (a node's override or the role default). */
function checkInstanceArchitectures(fail: Fail, config: ClusterConfig): void {
  const { architecture } = config.instances;
  const reported = new Set<string>();
  config.regions.forEach((region, r) => {
    region.nodes.forEach((node, n) => {
      const byRole = node.roles.includes("postgres") || node.roles.includes("etcd") ? "postgresType" : "haproxyType";
      const key = node.instanceType === undefined ? `instances.${byRole}` : `regions[${r}].nodes[${n}].instanceType`;
      const instanceType = node.instanceType ?? config.instances[byRole];
      const typeArchitecture = instanceTypeArchitecture(instanceType);
      if (typeArchitecture === architecture || reported.has(key)) return;
      reported.add(key);
      const fix = architecture === "arm64" ? "a Graviton type such as m7g.large" : "an x86 type such as m6i.large";
      fail(
        key,
        instanceType,
        `is an ${typeArchitecture} instance type but instances.architecture is ${architecture} (AMI and etcd archive follow it); use ${fix} or set instances.architecture to ${typeArchitecture}`,
      );
    });
  });
}

/** Splits `seoul-tokyo` into two known region names, whatever dashes the names hold. */
export function splitRegionPair(pair: string, regionNames: readonly string[]): [string, string] | [] {
  for (const a of regionNames) {
    if (pair.startsWith(`${a}-`)) {
      const b = pair.slice(a.length + 1);
      if (regionNames.includes(b) && b !== a) return [a, b];
    }
  }
  return [];
}

/** Region pairs holding etcd members on both sides that have no RTT given. */
export function missingRttPairs(config: ClusterConfig): string[] {
  const etcdRegions = config.regions.filter((region) => region.nodes.some((node) => node.roles.includes("etcd"))).map((region) => region.name);
  const names = config.regions.map((region) => region.name);
  const given = new Set(
    Object.keys(config.etcd.rttMs).flatMap((pair) => {
      const [a, b] = splitRegionPair(pair, names);
      return a && b ? [`${a}|${b}`, `${b}|${a}`] : [];
    }),
  );
  const missing: string[] = [];
  etcdRegions.forEach((a, i) => {
    etcdRegions.slice(i + 1).forEach((b) => given.has(`${a}|${b}`) || missing.push(`${a}-${b}`));
  });
  return missing;
}
