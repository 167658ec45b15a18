/**
 * The shape of the `pgha:` configuration, as one zod schema.
 *
 * Why zod 4 (and not TypeBox + ajv): it is one dependency with no runtime
 * companions; the parsed type is inferred from the schema itself (checked
 * below against plan/config.ts, so the two cannot drift); custom messages,
 * defaults and refinements live next to the field they belong to; and
 * `z.toJSONSchema` turns the same schema into the editor schema
 * (plan/json-schema.ts), so there is no second description of the keys to keep
 * in step. TypeBox would give JSON Schema first and types second, but needs
 * ajv (plus ajv-formats and ajv-errors for our wording) to validate, and its
 * error objects carry JSON pointers that we would remap anyway.
 *
 * Every message is a rule in the wording `formatProblem` prints after
 * `pgha:<key> = <value>: `. Rules that relate fields of one object (a subnet
 * inside its VPC, a zone of its region) are refinements here; they only run
 * once the object's own fields parse, as the hand-written checks did. Rules
 * across sections (overlaps, quorum, timing) stay in plan/validate.ts.
 */
import { z } from "zod";
import { AWS_REGIONS, zoneBelongsToRegion } from "./aws-regions";
import type { ClusterConfig } from "./config";
import { DEFAULT_CONFIG } from "./defaults";
import { blockWithin, parseIpv4, parseIpv4Cidr, type Ipv4Block } from "./net";
import { OS_NAMES } from "./os";

export const NODE_ROLES = ["postgres", "etcd", "haproxy"] as const;
export const ARCHITECTURES = ["amd64", "arm64"] as const;
/** zod's enum wants a non-empty tuple; plan/aws-regions.ts keeps a plain list. */
const AWS_REGION_NAMES = AWS_REGIONS as readonly [string, ...string[]];

const NAME_PATTERN = /^[a-z][a-z0-9-]{0,30}[a-z0-9]$/;
const SHA256_PATTERN = /^[0-9a-f]{64}$/;
const INSTANCE_TYPE_PATTERN = /^[a-z0-9-]+\.[a-z0-9]+$/;
/** `arn:<partition>:iam::<12-digit account>:policy/<path/name>` (IAM's path and name characters). */
const IAM_POLICY_ARN = /^arn:aws(-[a-z]+)*:iam::\d{12}:policy\/([\w+=,.@-]+\/)*[\w+=,.@-]{1,128}$/;
/** http(s), a host name or IPv4 address (no credentials: user-data is not secret), an optional port and path, no query or fragment. */
const HTTP_URL = /^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?(\/[^\s?#]*)?$/;
/** {@link HTTP_URL} without a trailing slash: a path is appended to it. */
const HTTP_BASE_URL = /^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?(\/[^\s?#]*[^\s?#/])?$/;
/** An apt suite; cloud-init replaces `$RELEASE` with the OS codename. */
const APT_SUITE = /^([A-Za-z0-9._-]|\$RELEASE)+$/;
const APT_COMPONENT = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;
const ARMOURED_KEY_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const ARMOURED_KEY_END = "-----END PGP PUBLIC KEY BLOCK-----";
/** Written without the `i` flag: JSON Schema patterns carry no flags, so the editor schema must mean the same. */
const NOT_AWS_PREFIXED = /^(?![aA][wW][sS]:)/;

/** Parameters the renderers own; letting users set them would break TLS, archiving or replication. */
export const MANAGED_PARAMETERS: readonly string[] = [
  "ssl",
  "ssl_cert_file",
  "ssl_key_file",
  "ssl_ca_file",
  "archive_mode",
  "archive_command",
  "archive_timeout",
  "wal_level",
  "hot_standby",
  "wal_log_hints",
  "listen_addresses",
  "port",
  "password_encryption",
  "synchronous_standby_names",
];

type Path = (string | number)[];

/**
 * A rule broken by a value the user may not have written (a default, or a
 * count), so the problem line carries it instead of the input at `path`.
 */
function fail(ctx: z.RefinementCtx, path: Path, value: unknown, rule: string): void {
  ctx.addIssue({ code: "custom", path, message: rule, params: { value }, continue: false });
}

/**
 * A broken field rule. `continue: false` marks the field as failed, so the
 * enclosing object's refinements (which read it as valid) are skipped: zod
 * runs them after a refinement's issue unless told otherwise.
 */
function reject(ctx: z.RefinementCtx, rule: string): void {
  ctx.addIssue({ code: "custom", message: rule, continue: false });
}

const NON_EMPTY = "must be a non-empty string";

/** A non-empty string; the pattern is only tried on one. */
function text(pattern?: RegExp, rule?: string) {
  const base = z.string({ error: NON_EMPTY }).min(1, { error: NON_EMPTY, abort: true });
  return pattern ? base.regex(pattern, rule ?? `must match ${pattern.source}`) : base;
}

function whole(min: number, max: number) {
  const range = `must be between ${min} and ${max}`;
  // z.int() refuses whole numbers beyond 2^53 as too big: that is a range problem, not a fraction.
  const notWhole = (issue: { code: string }) => (issue.code === "too_big" || issue.code === "too_small" ? range : "must be a whole number");
  return z.int({ error: notWhole }).min(min, range).max(max, range);
}

const flag = () => z.boolean({ error: "must be true or false" });

function list<T extends z.ZodType>(item: T, minLength = 0) {
  return z.array(item, { error: "must be a list" }).min(minLength, `must hold at least ${minLength} item(s)`);
}

/** An object whose keys must all be known: a typo is reported, never ignored. */
function section<Shape extends z.ZodRawShape>(shape: Shape, notAnObject: string) {
  const unknownKey = `unknown key; expected one of ${Object.keys(shape).join(", ")}`;
  return z.strictObject(shape, { error: (issue) => (issue.code === "unrecognized_keys" ? unknownKey : notAnObject) });
}

/** One of a fixed list, saying "non-empty string" first when it is not even that. */
function oneOf<const T extends readonly [string, ...string[]]>(values: T, rule: string) {
  return z.enum(values, { error: (issue) => (typeof issue.input === "string" && issue.input !== "" ? rule : NON_EMPTY) });
}

/** An IPv4 CIDR with no host bits; `prefixRule` adds a rule on the prefix length. */
function cidr(prefixRule?: (block: Ipv4Block) => string | undefined) {
  return text().superRefine((value, ctx) => {
    const parsed = parseIpv4Cidr(value);
    if (parsed === "syntax") reject(ctx, "must be an IPv4 CIDR such as 10.1.0.0/16");
    else if (parsed === "host-bits") reject(ctx, "has host bits set; give the network address of the block");
    else {
      const rule = prefixRule?.(parsed);
      if (rule) reject(ctx, rule);
    }
  });
}

/** A CIDR the field schema has already accepted. */
const block = (cidrText: string): Ipv4Block => parseIpv4Cidr(cidrText) as Ipv4Block;

const instanceType = () => text(INSTANCE_TYPE_PATTERN, "must be an EC2 instance type such as m6i.large");

const subnetSchema = section(
  { cidr: cidr(), availabilityZone: text().describe("Availability zone of the region, e.g. ap-northeast-2a.") },
  "must be an object with cidr and availabilityZone",
);

const rolesSchema = list(oneOf(NODE_ROLES, `must be one of ${NODE_ROLES.join(", ")}`), 1).superRefine((roles, ctx) => {
  if (new Set(roles).size !== roles.length) fail(ctx, [], roles, "lists a role twice");
});

const nodeSchema = section(
  {
    name: text(NAME_PATTERN, "must be 2-32 lower-case letters, digits or dashes (it becomes the hostname)"),
    privateIp: text()
      .refine((ip) => parseIpv4(ip) !== undefined, { error: "must be an IPv4 address such as 10.1.0.10", abort: true })
      .meta({ format: "ipv4", description: "Fixed private address inside one of the region's subnets." }),
    roles: rolesSchema.describe("What runs on the node."),
    instanceType: instanceType().optional().describe("EC2 instance type; defaults to instances.postgresType or instances.haproxyType by role."),
    failoverPriority: whole(0, 100).optional().describe("Patroni failover_priority: the highest healthy candidate wins; 0 never promotes."),
  },
  "must be an object with name, privateIp and roles",
).superRefine((node, ctx) => {
  if (node.failoverPriority !== undefined && !node.roles.includes("postgres")) {
    fail(ctx, ["failoverPriority"], node.failoverPriority, "only applies to nodes with the postgres role");
  }
});

const regionSchema = section(
  {
    name: text(NAME_PATTERN, "must be 2-32 lower-case letters, digits or dashes, starting with a letter"),
    awsRegion: oneOf(AWS_REGION_NAMES, "is not an AWS region this program knows (e.g. ap-northeast-2)"),
    vpcCidr: cidr((vpc) => (vpc.prefixLength < 16 || vpc.prefixLength > 28 ? "AWS allows VPC CIDRs from /16 to /28" : undefined)),
    subnets: list(subnetSchema, 1),
    natSubnetCidr: cidr((nat) => (nat.prefixLength > 28 ? "AWS subnets must be /28 or larger" : undefined)),
    nodes: list(nodeSchema, 1),
  },
  "must be an object with name, awsRegion, vpcCidr, subnets, natSubnetCidr and nodes",
).superRefine((region, ctx) => {
  const vpc = block(region.vpcCidr);
  const inside = `must lie inside the region's vpcCidr ${vpc.cidr}`;
  region.subnets.forEach((subnet, s) => {
    if (!blockWithin(block(subnet.cidr), vpc)) fail(ctx, ["subnets", s, "cidr"], subnet.cidr, inside);
    if (!zoneBelongsToRegion(subnet.availabilityZone, region.awsRegion)) {
      fail(ctx, ["subnets", s, "availabilityZone"], subnet.availabilityZone, `must be a zone of ${region.awsRegion} (e.g. ${region.awsRegion}a)`);
    }
  });
  if (!blockWithin(block(region.natSubnetCidr), vpc)) fail(ctx, ["natSubnetCidr"], region.natSubnetCidr, inside);
});

const defaults = DEFAULT_CONFIG;

const versionsSchema = section(
  {
    postgresMajor: whole(13, 99).default(defaults.versions.postgresMajor),
    patroni: text(/^4\.\d+(\.(\d+|\*))?(-[0-9A-Za-z.+~]+)?$|^4\.\d+\.\*$/, "must be a Patroni 4 apt version or pattern such as 4.1.* (Patroni 4 vocabulary is rendered)").default(
      defaults.versions.patroni,
    ),
    postgresPackage: text().default(defaults.versions.postgresPackage),
    etcd: text(/^3\.5\.\d+$/, "must be an etcd 3.5.x release such as 3.5.21 (the product is built and tested on 3.5)").default(defaults.versions.etcd),
    etcdSha256: z
      .partialRecord(z.enum(ARCHITECTURES), text(SHA256_PATTERN, "must be 64 lower-case hex digits (sha256sum of the release archive)"), {
        // zod's typings leave out the unrecognized_keys issue an enum-keyed record raises for a key outside the enum.
        error: (issue) =>
          (issue.code as string) === "unrecognized_keys" ? `architecture must be one of ${ARCHITECTURES.join(", ")}` : "must map an architecture (amd64, arm64) to a SHA-256",
      })
      .default(defaults.versions.etcdSha256)
      .describe("sha256sum of etcd-v<etcd>-linux-<arch>.tar.gz per architecture; given, it replaces the default map."),
  },
  "must be an object",
)
  .superRefine((versions, ctx) => {
    const major = versions.postgresMajor;
    if (!versions.postgresPackage.startsWith(`${major}.`)) {
      fail(ctx, ["postgresPackage"], versions.postgresPackage, `must be a version of PostgreSQL ${major} (versions.postgresMajor), such as ${major}.*`);
    }
  })
  .prefault({});

const ARMOURED_KEY_RULE = `must be an armoured OpenPGP public key, from ${ARMOURED_KEY_BEGIN} to ${ARMOURED_KEY_END}`;

const repositorySchema = section(
  {
    uri: text(HTTP_URL, "must be an http(s) URL without credentials, query or fragment, such as https://apt.postgresql.org/pub/repos/apt")
      .meta({ format: "uri" })
      .default(defaults.packages.repository.uri)
      .describe("URL of the apt repository that provides PostgreSQL and Patroni."),
    suite: text(APT_SUITE, "must be letters, digits, dots, dashes, underscores and $RELEASE (the OS codename), such as $RELEASE-pgdg")
      .default(defaults.packages.repository.suite)
      .describe("Suite; cloud-init replaces $RELEASE with the OS codename (noble on Ubuntu 24.04, trixie on Debian 13)."),
    components: list(text(APT_COMPONENT, "must be an apt component (letters, digits, dots, dashes, underscores), such as main"), 1)
      .default(defaults.packages.repository.components)
      .describe("Components of the suite."),
    key: z
      .string({ error: ARMOURED_KEY_RULE })
      .regex(new RegExp(`^${ARMOURED_KEY_BEGIN}`), { error: ARMOURED_KEY_RULE, abort: true })
      .refine((key) => key.trimEnd().endsWith(ARMOURED_KEY_END), ARMOURED_KEY_RULE)
      .optional()
      .describe("Armoured OpenPGP public key the repository is signed with; unset, the PGDG key (cloud-init/keys/pgdg.asc)."),
  },
  "must be an object with uri, suite, components and key",
).prefault({});

const packagesSchema = section(
  {
    repository: repositorySchema.describe("The apt repository of PostgreSQL and Patroni, one deb line (pgdg.list) on postgres nodes."),
    etcdReleaseUrl: text(
      HTTP_BASE_URL,
      "must be an http(s) URL without credentials, query, fragment or trailing slash, such as https://github.com/etcd-io/etcd/releases/download (the archive is <url>/v<version>/etcd-v<version>-linux-<arch>.tar.gz)",
    )
      .meta({ format: "uri" })
      .default(defaults.packages.etcdReleaseUrl)
      .describe("Base URL of the etcd release archives: <url>/v<version>/etcd-v<version>-linux-<arch>.tar.gz."),
  },
  "must be an object",
).prefault({});

const seconds = () => whole(1, 3600);

const patroniSchema = section(
  {
    scope: text(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, "must be letters, digits, dots, dashes or underscores").default(defaults.patroni.scope),
    namespace: text(/^\/([A-Za-z0-9_.-]+\/)*$/, "must start and end with / (an etcd key prefix such as /db/)").default(defaults.patroni.namespace),
    ttl: seconds().default(defaults.patroni.ttl).describe("Leader lock TTL in seconds (Patroni requires >= 20)."),
    loopWait: seconds().default(defaults.patroni.loopWait),
    retryTimeout: seconds().default(defaults.patroni.retryTimeout),
    synchronousMode: flag().default(defaults.patroni.synchronousMode),
    synchronousModeStrict: flag().default(defaults.patroni.synchronousModeStrict),
    synchronousNodeCount: whole(1, 64).default(defaults.patroni.synchronousNodeCount),
    failsafeMode: flag()
      .default(defaults.patroni.failsafeMode)
      .describe("Patroni failsafe_mode: while etcd has no quorum the primary stays primary as long as every member answers it."),
    maximumLagOnFailover: whole(0, Number.MAX_SAFE_INTEGER).default(defaults.patroni.maximumLagOnFailover),
    parameters: z
      .record(
        z.string().regex(/^[a-z_][a-z0-9_.]*$/, "is not a PostgreSQL parameter name"),
        z.union([z.string(), z.number(), z.boolean()], { error: "must be a string, number or boolean" }),
        { error: "must map PostgreSQL parameter names to values" },
      )
      .superRefine((parameters, ctx) => {
        for (const [name, setting] of Object.entries(parameters)) {
          if (MANAGED_PARAMETERS.includes(name)) {
            fail(ctx, [name], setting, "is managed by this program (TLS, archiving and replication settings are rendered from the plan)");
          }
        }
      })
      .default(defaults.patroni.parameters)
      .describe("Extra PostgreSQL parameters (Patroni dynamic configuration); TLS, archiving and replication ones are refused."),
  },
  "must be an object",
).prefault({});

const rttRule = "must be a round-trip time in milliseconds between 0 and 1000";

const etcdSchema = section(
  {
    rttMs: z
      .record(z.string(), z.number({ error: rttRule }).gt(0, rttRule).max(1000, rttRule), {
        error: "must map region pairs such as seoul-tokyo to milliseconds",
      })
      .default(defaults.etcd.rttMs)
      .describe("Measured round trips between regions in ms, keyed <region>-<region>; heartbeat and election timeout follow."),
    autoCompactionRetention: whole(1, 10_000_000).default(defaults.etcd.autoCompactionRetention),
    quotaBackendBytes: whole(16 * 1024 * 1024, 8 * 1024 * 1024 * 1024).default(defaults.etcd.quotaBackendBytes),
    heartbeatIntervalMs: whole(10, 10_000).optional().describe("Set with electionTimeoutMs to override the RTT derivation."),
    electionTimeoutMs: whole(50, 1_000_000).optional().describe("Set with heartbeatIntervalMs; at least 5 x heartbeat, at most 50000."),
  },
  "must be an object",
).prefault({});

const port = () => whole(1024, 65535);
const checkMs = () => whole(100, 60_000);
const checkCount = () => whole(1, 10);

const haproxySchema = section(
  {
    primaryPort: port().default(defaults.haproxy.primaryPort),
    replicaPort: port().default(defaults.haproxy.replicaPort),
    synchronousPort: port().default(defaults.haproxy.synchronousPort),
    statsPort: port().default(defaults.haproxy.statsPort),
    checkIntervalMs: checkMs().default(defaults.haproxy.checkIntervalMs),
    checkFastIntervalMs: checkMs().default(defaults.haproxy.checkFastIntervalMs),
    checkFall: checkCount().default(defaults.haproxy.checkFall),
    checkRise: checkCount().default(defaults.haproxy.checkRise),
    checkTimeoutMs: checkMs().default(defaults.haproxy.checkTimeoutMs).describe("How long one health check may wait for Patroni's answer (HAProxy timeout check)."),
    replicaMaxLagBytes: whole(0, Number.MAX_SAFE_INTEGER)
      .default(defaults.haproxy.replicaMaxLagBytes)
      .describe("Replay lag in bytes above which a replica serves no reads on the read port."),
    maxConnections: whole(10, 1_000_000).default(defaults.haproxy.maxConnections),
  },
  "must be an object",
).prefault({});

const cidrList = () => list(cidr((allowed) => (allowed.prefixLength === 0 ? "0.0.0.0/0 is never allowed; list the networks that need access" : undefined)));

const accessSchema = section(
  {
    applicationCidrs: cidrList().default(defaults.access.applicationCidrs).describe("Networks that may reach HAProxy's PostgreSQL listeners."),
    adminCidrs: cidrList().default(defaults.access.adminCidrs).describe("Networks that may open the HAProxy stats page."),
  },
  "must be an object",
).prefault({});

const instancesSchema = section(
  {
    postgresType: instanceType().default(defaults.instances.postgresType),
    haproxyType: instanceType().default(defaults.instances.haproxyType),
    architecture: oneOf(ARCHITECTURES, `must be one of ${ARCHITECTURES.join(", ")}`)
      .default(defaults.instances.architecture)
      .describe("CPU architecture of every instance type (selects the AMI and the etcd archive)."),
    os: oneOf(OS_NAMES, `must be one of ${OS_NAMES.join(", ")}`)
      .default(defaults.instances.os)
      .describe("Operating system of every node (plan/os.ts): selects the AMI unless amiOverrides names one."),
    rootVolumeGiB: whole(8, 16384).default(defaults.instances.rootVolumeGiB),
    dataVolumeGiB: whole(1, 16384).default(defaults.instances.dataVolumeGiB),
    protectDataVolumes: flag().default(defaults.instances.protectDataVolumes),
    dataVolumeAttachSeconds: whole(10, 3600)
      .default(defaults.instances.dataVolumeAttachSeconds)
      .describe("Seconds the first boot waits for the data volume to be attached before it fails."),
    amiOverrides: z
      .record(
        // A plain string key (not an enum) keeps the parsed type Record<string, string>; the enum is there for editors.
        z
          .string()
          .refine((region) => AWS_REGIONS.includes(region), { error: "key is not an AWS region", abort: true })
          .meta({ enum: [...AWS_REGIONS] }),
        text(/^ami-[0-9a-f]{8,17}$/, "must be an AMI id such as ami-0123456789abcdef0"),
        { error: "must map AWS regions to AMI ids" },
      )
      .default(defaults.instances.amiOverrides)
      .describe("AMI per AWS region (default: the current image of instances.os, from its public SSM parameter)."),
  },
  "must be an object",
).prefault({});

const tagKeyRule = "tag keys are 1-128 characters and may not start with aws:";
const MAX_TAGS = 40;

const tagsSchema = z
  .record(
    z.string().min(1, tagKeyRule).max(128, tagKeyRule).regex(NOT_AWS_PREFIXED, tagKeyRule),
    z.string({ error: "tag values are strings of at most 256 characters" }).max(256, "tag values are strings of at most 256 characters"),
    { error: "must map tag keys to string values" },
  )
  .superRefine((tags, ctx) => {
    const count = Object.keys(tags).length;
    if (count > MAX_TAGS) fail(ctx, [], `${count} tags`, `at most ${MAX_TAGS} tags (AWS allows 50 per resource; the program sets up to 10 itself)`);
  })
  .default(defaults.tags);

const iamSchema = section(
  {
    nodePermissionsBoundaryArn: z
      .string({ error: "must be an IAM managed policy ARN arn:<partition>:iam::<12-digit account>:policy/<path/name>" })
      .regex(IAM_POLICY_ARN, "must be an IAM managed policy ARN arn:<partition>:iam::<12-digit account>:policy/<path/name>")
      .optional()
      .describe("Managed policy set as the permissions boundary of every node role; unset, no boundary."),
  },
  "must be an object such as {nodePermissionsBoundaryArn: ...}",
).prefault({});

/** `arn:<partition>:sns:<region>:<12-digit account>:<topic>` (SNS topic names: letters, digits, - and _, up to 256; .fifo topics excluded). */
const SNS_TOPIC_ARN = /^arn:aws(-[a-z]+)*:sns:[a-z]{2}(-[a-z]+)+-\d:\d{12}:[A-Za-z0-9_-]{1,256}$/;

const monitoringSchema = section(
  {
    scrapeIntervalSeconds: whole(1, 300)
      .default(defaults.monitoring.scrapeIntervalSeconds)
      .describe("Prometheus scrape and rule-evaluation interval; alert durations are multiples of it."),
    retentionDays: whole(1, 3650).default(defaults.monitoring.retentionDays).describe("Days each region's Prometheus keeps samples."),
    alertTopicArn: text(SNS_TOPIC_ARN, "must be a standard SNS topic ARN arn:aws:sns:<region>:<12-digit account>:<name>")
      .optional()
      .describe("SNS topic the Alertmanagers publish to; unset, alerts stay in Prometheus and Alertmanager."),
    groupIntervalSeconds: whole(10, 14_400)
      .default(defaults.monitoring.groupIntervalSeconds)
      .describe("Alertmanager's group_interval: how long a notified group waits before notifying a change (a new or resolved alert); at most the 4 h repeat_interval."),
  },
  "must be an object such as {scrapeIntervalSeconds: 15}",
).prefault({});

/**
 * What systemd.time(7) calendar expressions are made of: weekdays, digits, `*`, ranges and lists, `/` repetitions,
 * `~` (from the month's end), a time zone name. `systemd-analyze calendar` checks the defaults in the render tests;
 * on a node a timer systemd cannot parse fails the first boot.
 */
const ON_CALENDAR = /^[A-Za-z0-9*:.,/~+ _-]{1,100}$/;
/** S3's own rule for the prefix: lower-case letters, digits, dashes, starting with a letter or digit. */
const BUCKET_PREFIX = /^[a-z0-9][a-z0-9-]{0,20}$/;

const onCalendar = () => text(ON_CALENDAR, "must be a systemd OnCalendar expression such as Sun *-*-* 01:00:00 (systemd.time(7))");

const backupSchema = section(
  {
    bucketPrefix: text(BUCKET_PREFIX, "must be 1-21 lower-case letters, digits or dashes starting with a letter or digit (buckets are <bucketPrefix>-<stack>-<awsRegion>)")
      .default(defaults.backup.bucketPrefix)
      .describe("First part of each region's repository bucket name, <bucketPrefix>-<stack>-<awsRegion>; bucket names are global, use one your organisation owns."),
    retentionDays: whole(1, 3650).default(defaults.backup.retentionDays).describe("Days pgBackRest keeps full backups and their WAL; S3 keeps noncurrent versions as long."),
    fullSchedule: onCalendar().default(defaults.backup.fullSchedule).describe("systemd OnCalendar of the full backups, run on the primary."),
    differentialSchedule: onCalendar().default(defaults.backup.differentialSchedule).describe("systemd OnCalendar of the differential backups, run on the primary."),
    archiveTimeoutSeconds: whole(10, 3600)
      .default(defaults.backup.archiveTimeoutSeconds)
      .describe("PostgreSQL archive_timeout: bounds the commits a restore from the repositories alone can lose."),
    protectRepositories: flag().default(defaults.backup.protectRepositories).describe("Pulumi protect on the buckets and no forceDestroy; off for ephemeral stacks."),
  },
  "must be an object such as {retentionDays: 14}",
).prefault({});

/** The whole `pgha:` namespace: every key optional, sections merged key by key over plan/defaults.ts, lists replacing the default. */
export const configSchema = section(
  {
    regions: list(regionSchema, 1).default(defaults.regions).describe("Every region of the cluster (replaces the default three)."),
    versions: versionsSchema.describe("PostgreSQL, Patroni and etcd versions and the etcd archive checksums."),
    packages: packagesSchema.describe("Where nodes get their software: the apt repository of PostgreSQL and Patroni, and the etcd release archives."),
    patroni: patroniSchema.describe("Patroni settings; ttl >= 20 and loopWait + 2 x retryTimeout <= ttl."),
    etcd: etcdSchema.describe("etcd timing (derived from rttMs unless given) and storage."),
    haproxy: haproxySchema.describe("HAProxy listener ports, health checks and connection limit."),
    access: accessSchema.describe("Networks allowed to reach HAProxy; never 0.0.0.0/0."),
    instances: instancesSchema.describe("EC2 instance types, architecture, volumes and AMIs."),
    parameterPrefix: text(/^(\/[A-Za-z0-9_.-]+)+$/, "must be an SSM path such as /pgha (slash-separated, no trailing slash)")
      .default(defaults.parameterPrefix)
      .describe("Root of every SSM parameter path; the stack name is appended."),
    tags: tagsSchema.describe("Extra tags on every AWS resource."),
    iam: iamSchema.describe("IAM settings of the node roles."),
    monitoring: monitoringSchema.describe("Metrics and alerts: Prometheus and Alertmanager on every HAProxy node."),
    backup: backupSchema.describe("Backups: pgBackRest repositories in S3 (one per region), WAL archiving and the backup schedule."),
  },
  "must be an object of pgha:* keys",
).prefault({});

/** The top-level keys the schema knows, in the order users read them. */
export const SCHEMA_KEYS = Object.keys(configSchema.unwrap().shape) as (keyof ClusterConfig)[];

// The parsed type is the documented one (plan/config.ts), both ways: a field
// added to one and not the other fails the typecheck here.
type Parsed = z.output<typeof configSchema>;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
export const SCHEMA_PARSES_TO_CLUSTER_CONFIG: Same<Parsed, ClusterConfig> = true;
