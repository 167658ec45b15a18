import { AWS_REGIONS, zoneBelongsToRegion } from "./aws-regions";
import {
  CONFIG_KEYS,
  type ClusterConfig,
  type CpuArchitecture,
  type NodeConfig,
  type NodeRole,
  type RegionConfig,
  type SubnetConfig,
} from "./config";
import { DEFAULT_CONFIG } from "./defaults";
import { awsReservedAddresses, blockContains, blocksOverlap, blockWithin, parseIpv4, parseIpv4Cidr, type Ipv4Block } from "./net";

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

const NODE_ROLES: readonly NodeRole[] = ["postgres", "etcd", "haproxy"];
const ARCHITECTURES: readonly CpuArchitecture[] = ["amd64", "arm64"];
const NAME_PATTERN = /^[a-z][a-z0-9-]{0,30}[a-z0-9]$/;
const SHA256_PATTERN = /^[0-9a-f]{64}$/;
const ETCD_MAX_ELECTION_MS = 50000;

type Json = unknown;

function isRecord(value: Json): value is Record<string, Json> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Reads and checks one config document, collecting every problem it finds. */
class Checker {
  readonly problems: ConfigProblem[] = [];

  fail(key: string, value: unknown, rule: string): void {
    this.problems.push({ key, value, rule });
  }

  string(key: string, value: Json, pattern?: RegExp, patternRule?: string): string {
    if (typeof value !== "string" || value.length === 0) {
      this.fail(key, value, "must be a non-empty string");
      return "";
    }
    if (pattern && !pattern.test(value)) this.fail(key, value, patternRule ?? `must match ${pattern}`);
    return value;
  }

  integer(key: string, value: Json, min: number, max: number): number {
    if (typeof value !== "number" || !Number.isInteger(value)) {
      this.fail(key, value, "must be a whole number");
      return min;
    }
    if (value < min || value > max) this.fail(key, value, `must be between ${min} and ${max}`);
    return value;
  }

  boolean(key: string, value: Json): boolean {
    if (typeof value !== "boolean") {
      this.fail(key, value, "must be true or false");
      return false;
    }
    return value;
  }

  array(key: string, value: Json, minLength = 0): Json[] {
    if (!Array.isArray(value)) {
      this.fail(key, value, "must be a list");
      return [];
    }
    if (value.length < minLength) this.fail(key, value, `must hold at least ${minLength} item(s)`);
    return value;
  }

  /** An object whose keys must all be known; returns it merged over `defaults`. */
  object<T extends object>(key: string, value: Json, defaults: T): Record<string, Json> {
    if (value === undefined) return { ...defaults } as Record<string, Json>;
    if (!isRecord(value)) {
      this.fail(key, value, "must be an object");
      return { ...defaults } as Record<string, Json>;
    }
    this.knownKeys(key, value, Object.keys(defaults));
    return { ...defaults, ...value };
  }

  knownKeys(key: string, value: Record<string, Json>, known: readonly string[], optional: readonly string[] = []): void {
    for (const name of Object.keys(value)) {
      if (!known.includes(name) && !optional.includes(name)) {
        this.fail(`${key}.${name}`, value[name], `unknown key; expected one of ${[...known, ...optional].join(", ")}`);
      }
    }
  }

  cidr(key: string, value: Json): Ipv4Block | undefined {
    const text = this.string(key, value);
    if (!text) return undefined;
    const parsed = parseIpv4Cidr(text);
    if (parsed === "syntax") {
      this.fail(key, value, "must be an IPv4 CIDR such as 10.1.0.0/16");
      return undefined;
    }
    if (parsed === "host-bits") {
      this.fail(key, value, "has host bits set; give the network address of the block");
      return undefined;
    }
    return parsed;
  }

  cidrList(key: string, value: Json): string[] {
    return this.array(key, value)
      .map((item, index) => {
        const block = this.cidr(`${key}[${index}]`, item);
        if (block && block.prefixLength === 0) {
          this.fail(`${key}[${index}]`, item, "0.0.0.0/0 is never allowed; list the networks that need access");
        }
        return block?.cidr;
      })
      .filter((cidr): cidr is string => cidr !== undefined);
  }
}

/**
 * Validates a user's `pgha:` configuration and fills in the defaults.
 * Throws {@link ConfigError} listing every problem, one line each. Rules
 * that span keys (overlaps, quorum, timing) run once every key on its own
 * is well-formed, so a second run may report more.
 */
export function validateConfig(input: Json): ClusterConfig {
  const check = new Checker();
  const root = isRecord(input) ? input : {};
  if (input !== undefined && !isRecord(input)) check.fail("(root)", input, "must be an object of pgha:* keys");
  check.knownKeys("", root, CONFIG_KEYS);
  // Unknown top-level keys are reported as `pgha:name`, not `pgha:.name`.
  for (const problem of check.problems) problem.key = problem.key.replace(/^\./, "");

  const config: ClusterConfig = {
    regions: readRegions(check, root.regions),
    versions: readVersions(check, root.versions),
    patroni: readPatroni(check, root.patroni),
    etcd: readEtcd(check, root.etcd),
    haproxy: readHaproxy(check, root.haproxy),
    access: readAccess(check, root.access),
    instances: readInstances(check, root.instances),
    parameterPrefix:
      root.parameterPrefix === undefined
        ? DEFAULT_CONFIG.parameterPrefix
        : check.string("parameterPrefix", root.parameterPrefix, /^(\/[A-Za-z0-9_.-]+)+$/, "must be an SSM path such as /pgha (slash-separated, no trailing slash)"),
    tags: readTags(check, root.tags),
    iam: readIam(check, root.iam),
  };
  if (check.problems.length === 0) checkCluster(check, config);
  if (check.problems.length > 0) throw new ConfigError(check.problems);
  return config;
}

function readRegions(check: Checker, value: Json): RegionConfig[] {
  if (value === undefined) return DEFAULT_CONFIG.regions;
  return check.array("regions", value, 1).map((item, index) => readRegion(check, `regions[${index}]`, item));
}

function readRegion(check: Checker, key: string, value: Json): RegionConfig {
  const empty: RegionConfig = { name: "", awsRegion: "", vpcCidr: "", subnets: [], natSubnetCidr: "", nodes: [] };
  if (!isRecord(value)) {
    check.fail(key, value, "must be an object with name, awsRegion, vpcCidr, subnets, natSubnetCidr and nodes");
    return empty;
  }
  check.knownKeys(key, value, Object.keys(empty));
  const awsRegion = check.string(`${key}.awsRegion`, value.awsRegion);
  if (awsRegion && !AWS_REGIONS.includes(awsRegion)) {
    check.fail(`${key}.awsRegion`, awsRegion, "is not an AWS region this program knows (e.g. ap-northeast-2)");
  }
  const vpc = check.cidr(`${key}.vpcCidr`, value.vpcCidr);
  if (vpc && (vpc.prefixLength < 16 || vpc.prefixLength > 28)) {
    check.fail(`${key}.vpcCidr`, value.vpcCidr, "AWS allows VPC CIDRs from /16 to /28");
  }
  const subnets = check.array(`${key}.subnets`, value.subnets, 1).map((item, index): SubnetConfig => {
    const subnetKey = `${key}.subnets[${index}]`;
    if (!isRecord(item)) {
      check.fail(subnetKey, item, "must be an object with cidr and availabilityZone");
      return { cidr: "", availabilityZone: "" };
    }
    check.knownKeys(subnetKey, item, ["cidr", "availabilityZone"]);
    const block = check.cidr(`${subnetKey}.cidr`, item.cidr);
    if (block && vpc && !blockWithin(block, vpc)) check.fail(`${subnetKey}.cidr`, item.cidr, `must lie inside the region's vpcCidr ${vpc.cidr}`);
    const zone = check.string(`${subnetKey}.availabilityZone`, item.availabilityZone);
    if (zone && AWS_REGIONS.includes(awsRegion) && !zoneBelongsToRegion(zone, awsRegion)) {
      check.fail(`${subnetKey}.availabilityZone`, zone, `must be a zone of ${awsRegion} (e.g. ${awsRegion}a)`);
    }
    return { cidr: block?.cidr ?? "", availabilityZone: zone };
  });
  const nat = check.cidr(`${key}.natSubnetCidr`, value.natSubnetCidr);
  if (nat && vpc && !blockWithin(nat, vpc)) check.fail(`${key}.natSubnetCidr`, value.natSubnetCidr, `must lie inside the region's vpcCidr ${vpc.cidr}`);
  if (nat && nat.prefixLength > 28) check.fail(`${key}.natSubnetCidr`, value.natSubnetCidr, "AWS subnets must be /28 or larger");
  const nodes = check.array(`${key}.nodes`, value.nodes, 1).map((item, index) => readNode(check, `${key}.nodes[${index}]`, item));
  return {
    name: check.string(`${key}.name`, value.name, NAME_PATTERN, "must be 2-32 lower-case letters, digits or dashes, starting with a letter"),
    awsRegion,
    vpcCidr: vpc?.cidr ?? "",
    subnets,
    natSubnetCidr: nat?.cidr ?? "",
    nodes,
  };
}

function readNode(check: Checker, key: string, value: Json): NodeConfig {
  if (!isRecord(value)) {
    check.fail(key, value, "must be an object with name, privateIp and roles");
    return { name: "", privateIp: "", roles: [] };
  }
  check.knownKeys(key, value, ["name", "privateIp", "roles"], ["instanceType", "failoverPriority"]);
  const roles = check.array(`${key}.roles`, value.roles, 1).map((role, index) => {
    if (!NODE_ROLES.includes(role as NodeRole)) check.fail(`${key}.roles[${index}]`, role, `must be one of ${NODE_ROLES.join(", ")}`);
    return role as NodeRole;
  });
  if (new Set(roles).size !== roles.length) check.fail(`${key}.roles`, value.roles, "lists a role twice");
  const node: NodeConfig = {
    name: check.string(`${key}.name`, value.name, NAME_PATTERN, "must be 2-32 lower-case letters, digits or dashes (it becomes the hostname)"),
    privateIp: check.string(`${key}.privateIp`, value.privateIp),
    roles,
  };
  if (node.privateIp && parseIpv4(node.privateIp) === undefined) check.fail(`${key}.privateIp`, value.privateIp, "must be an IPv4 address such as 10.1.0.10");
  if (value.instanceType !== undefined) node.instanceType = check.string(`${key}.instanceType`, value.instanceType, /^[a-z0-9-]+\.[a-z0-9]+$/, "must be an EC2 instance type such as m6i.large");
  if (value.failoverPriority !== undefined) {
    node.failoverPriority = check.integer(`${key}.failoverPriority`, value.failoverPriority, 0, 100);
    if (!roles.includes("postgres")) check.fail(`${key}.failoverPriority`, value.failoverPriority, "only applies to nodes with the postgres role");
  }
  return node;
}

function readVersions(check: Checker, value: Json): ClusterConfig["versions"] {
  const merged = check.object("versions", value, DEFAULT_CONFIG.versions);
  const sha = isRecord(merged.etcdSha256) ? merged.etcdSha256 : {};
  if (!isRecord(merged.etcdSha256)) check.fail("versions.etcdSha256", merged.etcdSha256, "must map an architecture (amd64, arm64) to a SHA-256");
  const etcdSha256: Partial<Record<CpuArchitecture, string>> = {};
  for (const [arch, digest] of Object.entries(sha)) {
    if (!ARCHITECTURES.includes(arch as CpuArchitecture)) check.fail(`versions.etcdSha256.${arch}`, digest, `architecture must be one of ${ARCHITECTURES.join(", ")}`);
    etcdSha256[arch as CpuArchitecture] = check.string(`versions.etcdSha256.${arch}`, digest, SHA256_PATTERN, "must be 64 lower-case hex digits (sha256sum of the release archive)");
  }
  const postgresMajor = check.integer("versions.postgresMajor", merged.postgresMajor, 13, 99);
  const etcd = check.string("versions.etcd", merged.etcd, /^3\.5\.\d+$/, "must be an etcd 3.5.x release such as 3.5.21 (the product is built and tested on 3.5)");
  const patroni = check.string("versions.patroni", merged.patroni, /^4\.\d+(\.(\d+|\*))?(-[0-9A-Za-z.+~]+)?$|^4\.\d+\.\*$/, "must be a Patroni 4 apt version or pattern such as 4.1.* (Patroni 4 vocabulary is rendered)");
  const postgresPackage = check.string("versions.postgresPackage", merged.postgresPackage);
  if (postgresPackage && !postgresPackage.startsWith(`${postgresMajor}.`)) {
    check.fail("versions.postgresPackage", postgresPackage, `must be a version of PostgreSQL ${postgresMajor} (versions.postgresMajor), such as ${postgresMajor}.*`);
  }
  return { postgresMajor, patroni, postgresPackage, etcd, etcdSha256 };
}

function readPatroni(check: Checker, value: Json): ClusterConfig["patroni"] {
  const m = check.object("patroni", value, DEFAULT_CONFIG.patroni);
  const parameters = isRecord(m.parameters) ? m.parameters : {};
  if (!isRecord(m.parameters)) check.fail("patroni.parameters", m.parameters, "must map PostgreSQL parameter names to values");
  const cleanParameters: Record<string, string | number | boolean> = {};
  for (const [name, setting] of Object.entries(parameters)) {
    if (!/^[a-z_][a-z0-9_.]*$/.test(name)) check.fail(`patroni.parameters.${name}`, setting, "is not a PostgreSQL parameter name");
    else if (!["string", "number", "boolean"].includes(typeof setting)) check.fail(`patroni.parameters.${name}`, setting, "must be a string, number or boolean");
    else if (MANAGED_PARAMETERS.includes(name)) check.fail(`patroni.parameters.${name}`, setting, "is managed by this program (TLS, archiving and replication settings are rendered from the plan)");
    else cleanParameters[name] = setting as string | number | boolean;
  }
  return {
    scope: check.string("patroni.scope", m.scope, /^[A-Za-z0-9][A-Za-z0-9_.-]*$/, "must be letters, digits, dots, dashes or underscores"),
    namespace: check.string("patroni.namespace", m.namespace, /^\/([A-Za-z0-9_.-]+\/)*$/, "must start and end with / (an etcd key prefix such as /db/)"),
    ttl: check.integer("patroni.ttl", m.ttl, 1, 3600),
    loopWait: check.integer("patroni.loopWait", m.loopWait, 1, 3600),
    retryTimeout: check.integer("patroni.retryTimeout", m.retryTimeout, 1, 3600),
    synchronousMode: check.boolean("patroni.synchronousMode", m.synchronousMode),
    synchronousModeStrict: check.boolean("patroni.synchronousModeStrict", m.synchronousModeStrict),
    synchronousNodeCount: check.integer("patroni.synchronousNodeCount", m.synchronousNodeCount, 1, 64),
    maximumLagOnFailover: check.integer("patroni.maximumLagOnFailover", m.maximumLagOnFailover, 0, Number.MAX_SAFE_INTEGER),
    parameters: cleanParameters,
  };
}

/** Parameters the renderers own; letting users set them would break TLS, archiving or replication. */
export const MANAGED_PARAMETERS: readonly string[] = [
  "ssl",
  "ssl_cert_file",
  "ssl_key_file",
  "ssl_ca_file",
  "archive_mode",
  "archive_command",
  "wal_level",
  "hot_standby",
  "wal_log_hints",
  "listen_addresses",
  "port",
  "password_encryption",
  "synchronous_standby_names",
];

function readEtcd(check: Checker, value: Json): ClusterConfig["etcd"] {
  const m = check.object("etcd", value, { ...DEFAULT_CONFIG.etcd, heartbeatIntervalMs: undefined, electionTimeoutMs: undefined });
  const rttMs: Record<string, number> = {};
  if (!isRecord(m.rttMs)) check.fail("etcd.rttMs", m.rttMs, "must map region pairs such as seoul-tokyo to milliseconds");
  else for (const [pair, ms] of Object.entries(m.rttMs)) {
    if (typeof ms !== "number" || !(ms > 0) || ms > 1000) check.fail(`etcd.rttMs.${pair}`, ms, "must be a round-trip time in milliseconds between 0 and 1000");
    else rttMs[pair] = ms;
  }
  const result: ClusterConfig["etcd"] = {
    rttMs,
    autoCompactionRetention: check.integer("etcd.autoCompactionRetention", m.autoCompactionRetention, 1, 10_000_000),
    quotaBackendBytes: check.integer("etcd.quotaBackendBytes", m.quotaBackendBytes, 16 * 1024 * 1024, 8 * 1024 * 1024 * 1024),
  };
  if (m.heartbeatIntervalMs !== undefined) result.heartbeatIntervalMs = check.integer("etcd.heartbeatIntervalMs", m.heartbeatIntervalMs, 10, 10_000);
  if (m.electionTimeoutMs !== undefined) result.electionTimeoutMs = check.integer("etcd.electionTimeoutMs", m.electionTimeoutMs, 50, 1_000_000);
  return result;
}

function readHaproxy(check: Checker, value: Json): ClusterConfig["haproxy"] {
  const m = check.object("haproxy", value, DEFAULT_CONFIG.haproxy);
  const port = (name: string) => check.integer(`haproxy.${name}`, m[name], 1024, 65535);
  return {
    primaryPort: port("primaryPort"),
    replicaPort: port("replicaPort"),
    synchronousPort: port("synchronousPort"),
    statsPort: port("statsPort"),
    checkIntervalMs: check.integer("haproxy.checkIntervalMs", m.checkIntervalMs, 100, 60_000),
    checkFastIntervalMs: check.integer("haproxy.checkFastIntervalMs", m.checkFastIntervalMs, 100, 60_000),
    checkFall: check.integer("haproxy.checkFall", m.checkFall, 1, 10),
    checkRise: check.integer("haproxy.checkRise", m.checkRise, 1, 10),
    maxConnections: check.integer("haproxy.maxConnections", m.maxConnections, 10, 1_000_000),
  };
}

function readAccess(check: Checker, value: Json): ClusterConfig["access"] {
  const m = check.object("access", value, DEFAULT_CONFIG.access);
  return { applicationCidrs: check.cidrList("access.applicationCidrs", m.applicationCidrs), adminCidrs: check.cidrList("access.adminCidrs", m.adminCidrs) };
}

/** AWS tag rules: 50 tags per resource (we keep 10 for our own), keys ≤ 128, values ≤ 256, no `aws:` prefix. */
function readTags(check: Checker, value: Json): Record<string, string> {
  if (value === undefined) return { ...DEFAULT_CONFIG.tags };
  if (!isRecord(value)) {
    check.fail("tags", value, "must map tag keys to string values");
    return {};
  }
  if (Object.keys(value).length > 40) check.fail("tags", `${Object.keys(value).length} tags`, "at most 40 tags (AWS allows 50 per resource; the program sets up to 10 itself)");
  const tags: Record<string, string> = {};
  for (const [key, tag] of Object.entries(value)) {
    if (key.length < 1 || key.length > 128 || /^aws:/i.test(key)) check.fail(`tags.${key}`, tag, "tag keys are 1-128 characters and may not start with aws:");
    else if (typeof tag !== "string" || tag.length > 256) check.fail(`tags.${key}`, tag, "tag values are strings of at most 256 characters");
    else tags[key] = tag;
  }
  return tags;
}

/** `arn:<partition>:iam::<12-digit account>:policy/<path/name>` (IAM's path and name characters). */
const IAM_POLICY_ARN = /^arn:aws(-[a-z]+)*:iam::\d{12}:policy\/([\w+=,.@-]+\/)*[\w+=,.@-]{1,128}$/;

function readIam(check: Checker, value: Json): ClusterConfig["iam"] {
  if (value === undefined) return { ...DEFAULT_CONFIG.iam };
  if (!isRecord(value)) {
    check.fail("iam", value, "must be an object such as {nodePermissionsBoundaryArn: ...}");
    return {};
  }
  check.knownKeys("iam", value, [], ["nodePermissionsBoundaryArn"]);
  const boundary = value.nodePermissionsBoundaryArn;
  if (boundary === undefined) return {};
  if (typeof boundary !== "string" || !IAM_POLICY_ARN.test(boundary)) {
    check.fail("iam.nodePermissionsBoundaryArn", boundary, "must be an IAM managed policy ARN arn:<partition>:iam::<12-digit account>:policy/<path/name>");
    return {};
  }
  return { nodePermissionsBoundaryArn: boundary };
}

function readInstances(check: Checker, value: Json): ClusterConfig["instances"] {
  const m = check.object("instances", value, DEFAULT_CONFIG.instances);
  const instanceType = (name: string) => check.string(`instances.${name}`, m[name], /^[a-z0-9-]+\.[a-z0-9]+$/, "must be an EC2 instance type such as m6i.large");
  const architecture = check.string("instances.architecture", m.architecture) as CpuArchitecture;
  if (architecture && !ARCHITECTURES.includes(architecture)) check.fail("instances.architecture", architecture, `must be one of ${ARCHITECTURES.join(", ")}`);
  const amiOverrides: Record<string, string> = {};
  if (!isRecord(m.amiOverrides)) check.fail("instances.amiOverrides", m.amiOverrides, "must map AWS regions to AMI ids");
  else for (const [region, ami] of Object.entries(m.amiOverrides)) {
    if (!AWS_REGIONS.includes(region)) check.fail(`instances.amiOverrides.${region}`, ami, "key is not an AWS region");
    amiOverrides[region] = check.string(`instances.amiOverrides.${region}`, ami, /^ami-[0-9a-f]{8,17}$/, "must be an AMI id such as ami-0123456789abcdef0");
  }
  return {
    postgresType: instanceType("postgresType"),
    haproxyType: instanceType("haproxyType"),
    architecture,
    rootVolumeGiB: check.integer("instances.rootVolumeGiB", m.rootVolumeGiB, 8, 16384),
    dataVolumeGiB: check.integer("instances.dataVolumeGiB", m.dataVolumeGiB, 1, 16384),
    protectDataVolumes: check.boolean("instances.protectDataVolumes", m.protectDataVolumes),
    amiOverrides,
  };
}

/** Rules that span several keys: uniqueness, address plans, quorum, timing. */
function checkCluster(check: Checker, config: ClusterConfig): void {
  const seenRegionNames = new Map<string, string>();
  const seenAwsRegions = new Map<string, string>();
  const vpcs: { key: string; block: Ipv4Block }[] = [];
  const nodeNames = new Map<string, string>();
  const nodeIps = new Map<string, string>();

  config.regions.forEach((region, r) => {
    const key = `regions[${r}]`;
    const firstName = seenRegionNames.get(region.name);
    if (firstName) check.fail(`${key}.name`, region.name, `duplicates ${firstName}.name; region names must be unique`);
    seenRegionNames.set(region.name, key);
    const firstRegion = seenAwsRegions.get(region.awsRegion);
    if (firstRegion) check.fail(`${key}.awsRegion`, region.awsRegion, `duplicates ${firstRegion}.awsRegion; put each AWS region in one entry`);
    seenAwsRegions.set(region.awsRegion, key);

    const vpc = parseIpv4Cidr(region.vpcCidr) as Ipv4Block;
    for (const other of vpcs) {
      if (blocksOverlap(vpc, other.block)) check.fail(`${key}.vpcCidr`, region.vpcCidr, `overlaps ${other.key}.vpcCidr ${other.block.cidr}; peered VPCs need disjoint CIDRs`);
    }
    vpcs.push({ key, block: vpc });

    const subnetBlocks = region.subnets.map((subnet) => parseIpv4Cidr(subnet.cidr) as Ipv4Block);
    const natBlock = parseIpv4Cidr(region.natSubnetCidr) as Ipv4Block;
    subnetBlocks.forEach((block, s) => {
      subnetBlocks.slice(0, s).forEach((earlier, e) => {
        if (blocksOverlap(block, earlier)) check.fail(`${key}.subnets[${s}].cidr`, block.cidr, `overlaps ${key}.subnets[${e}].cidr ${earlier.cidr}`);
      });
      if (blocksOverlap(block, natBlock)) check.fail(`${key}.natSubnetCidr`, region.natSubnetCidr, `overlaps ${key}.subnets[${s}].cidr ${block.cidr}`);
    });

    region.nodes.forEach((node, n) => {
      const nodeKey = `${key}.nodes[${n}]`;
      const firstNode = nodeNames.get(node.name);
      if (firstNode) check.fail(`${nodeKey}.name`, node.name, `duplicates ${firstNode}.name; node names must be unique across regions`);
      nodeNames.set(node.name, nodeKey);
      const firstIp = nodeIps.get(node.privateIp);
      if (firstIp) check.fail(`${nodeKey}.privateIp`, node.privateIp, `duplicates ${firstIp}.privateIp`);
      nodeIps.set(node.privateIp, nodeKey);
      const address = parseIpv4(node.privateIp) as number;
      const subnet = subnetBlocks.find((block) => blockContains(block, address));
      if (!subnet) {
        check.fail(`${nodeKey}.privateIp`, node.privateIp, `is in none of the region's subnets (${region.subnets.map((s) => s.cidr).join(", ")})`);
      } else if (awsReservedAddresses(subnet).includes(node.privateIp)) {
        check.fail(`${nodeKey}.privateIp`, node.privateIp, `is reserved by AWS in subnet ${subnet.cidr} (the first four and the last address)`);
      }
    });
  });

  const allNodes = config.regions.flatMap((region) => region.nodes);
  const etcdCount = allNodes.filter((node) => node.roles.includes("etcd")).length;
  if (etcdCount < 3 || etcdCount % 2 === 0) {
    check.fail("regions[*].nodes[*].roles", `${etcdCount} etcd member${etcdCount === 1 ? "" : "s"}`, "needs an odd number of etcd members, at least 3, so a majority survives the loss of any one region");
  }
  const postgresCount = allNodes.filter((node) => node.roles.includes("postgres")).length;
  if (postgresCount < 2) check.fail("regions[*].nodes[*].roles", `${postgresCount} postgres node${postgresCount === 1 ? "" : "s"}`, "needs at least 2 nodes with the postgres role");
  if (allNodes.filter((node) => node.roles.includes("haproxy")).length < 1) {
    check.fail("regions[*].nodes[*].roles", "0 haproxy nodes", "needs at least one node with the haproxy role (the application endpoint)");
  }
  const candidates = allNodes.filter((node) => node.roles.includes("postgres") && node.failoverPriority !== 0).length;
  if (postgresCount >= 2 && candidates < 1) check.fail("regions[*].nodes[*].failoverPriority", 0, "at least one postgres node must be allowed to become primary");

  const { patroni, etcd, haproxy, versions, instances } = config;
  if (patroni.ttl < 20) check.fail("patroni.ttl", patroni.ttl, "Patroni requires ttl >= 20");
  else if (patroni.loopWait + 2 * patroni.retryTimeout > patroni.ttl) {
    check.fail(
      "patroni.ttl",
      patroni.ttl,
      `must be at least loopWait + 2 × retryTimeout = ${patroni.loopWait} + 2 × ${patroni.retryTimeout} = ${patroni.loopWait + 2 * patroni.retryTimeout}, or an isolated primary may still accept writes after a replica is promoted`,
    );
  }
  if (patroni.synchronousMode && patroni.synchronousNodeCount >= postgresCount) {
    check.fail("patroni.synchronousNodeCount", patroni.synchronousNodeCount, `must be less than the number of postgres nodes (${postgresCount}); the primary cannot be its own standby`);
  }

  const regionNames = config.regions.map((region) => region.name);
  for (const [pair, ms] of Object.entries(etcd.rttMs)) {
    const [a, b] = splitRegionPair(pair, regionNames);
    if (!a || !b) check.fail(`etcd.rttMs.${pair}`, ms, `key must be <region>-<region> naming two regions of this stack (${regionNames.join(", ")})`);
  }
  if (etcd.heartbeatIntervalMs === undefined && etcd.electionTimeoutMs === undefined) {
    const missing = missingRttPairs(config);
    if (missing.length > 0) {
      check.fail("etcd.rttMs", etcd.rttMs, `gives no round-trip time for ${missing.join(", ")}; give every pair of regions or set heartbeatIntervalMs and electionTimeoutMs`);
    }
  } else if (etcd.heartbeatIntervalMs === undefined || etcd.electionTimeoutMs === undefined) {
    const given = etcd.heartbeatIntervalMs === undefined ? "electionTimeoutMs" : "heartbeatIntervalMs";
    check.fail(`etcd.${given}`, etcd[given], "set heartbeatIntervalMs and electionTimeoutMs together, or neither (they are then derived from rttMs)");
  } else {
    if (etcd.electionTimeoutMs < 5 * etcd.heartbeatIntervalMs) {
      check.fail("etcd.electionTimeoutMs", etcd.electionTimeoutMs, `must be at least 5 × heartbeatIntervalMs = ${5 * etcd.heartbeatIntervalMs} (etcd tuning guide)`);
    }
    if (etcd.electionTimeoutMs > ETCD_MAX_ELECTION_MS) check.fail("etcd.electionTimeoutMs", etcd.electionTimeoutMs, `must be at most ${ETCD_MAX_ELECTION_MS} (etcd's limit)`);
  }

  const ports: [string, number][] = [
    ["primaryPort", haproxy.primaryPort],
    ["replicaPort", haproxy.replicaPort],
    ["synchronousPort", haproxy.synchronousPort],
    ["statsPort", haproxy.statsPort],
  ];
  const clusterPorts = [5432, 8008, 2379, 2380];
  ports.forEach(([name, port], index) => {
    if (ports.slice(0, index).some(([, other]) => other === port)) check.fail(`haproxy.${name}`, port, "is used by another HAProxy listener");
    if (clusterPorts.includes(port)) check.fail(`haproxy.${name}`, port, "collides with a cluster port (5432, 8008, 2379, 2380)");
  });
  if (haproxy.checkFastIntervalMs > haproxy.checkIntervalMs) {
    check.fail("haproxy.checkFastIntervalMs", haproxy.checkFastIntervalMs, `must not exceed checkIntervalMs (${haproxy.checkIntervalMs})`);
  }

  if (!versions.etcdSha256[instances.architecture]) {
    check.fail(`versions.etcdSha256.${instances.architecture}`, undefined, `needs the SHA-256 of etcd-v${versions.etcd}-linux-${instances.architecture}.tar.gz (instances.architecture is ${instances.architecture})`);
  }
  for (const region of Object.keys(instances.amiOverrides)) {
    if (!seenAwsRegions.has(region)) check.fail(`instances.amiOverrides.${region}`, instances.amiOverrides[region], "names an AWS region this stack does not use");
  }
  checkInstanceArchitectures(check, config);
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
function checkInstanceArchitectures(check: Checker, config: ClusterConfig): void {
  const { architecture } = config.instances;
  const reported = new Set<string>();
  config.regions.forEach((region, r) =>
    region.nodes.forEach((node, n) => {
      const byRole = node.roles.includes("postgres") || node.roles.includes("etcd") ? "postgresType" : "haproxyType";
      const key = node.instanceType === undefined ? `instances.${byRole}` : `regions[${r}].nodes[${n}].instanceType`;
      const instanceType = node.instanceType ?? config.instances[byRole];
      const typeArchitecture = instanceTypeArchitecture(instanceType);
      if (typeArchitecture === architecture || reported.has(key)) return;
      reported.add(key);
      const fix = architecture === "arm64" ? "a Graviton type such as m7g.large" : "an x86 type such as m6i.large";
      check.fail(key, instanceType, `is an ${typeArchitecture} instance type but instances.architecture is ${architecture} (AMI and etcd archive follow it); use ${fix} or set instances.architecture to ${typeArchitecture}`);
    }),
  );
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
  etcdRegions.forEach((a, i) => etcdRegions.slice(i + 1).forEach((b) => given.has(`${a}|${b}`) || missing.push(`${a}-${b}`)));
  return missing;
}
