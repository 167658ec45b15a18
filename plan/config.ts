/**
 * The stack configuration a user writes under the `pgha:` namespace of a
 * Pulumi stack file, as plain data. Every field is optional: what is left out
 * comes from `plan/defaults.ts`, which documents each knob where it is set.
 *
 * Arrays replace the default wholesale (giving `regions` means giving all of
 * them); objects are merged key by key.
 */

import type { OsName } from "./os";

/** Roles a node can carry. A node holds any non-empty set of them. */
export type NodeRole = "postgres" | "etcd" | "haproxy";

export interface NodeConfig {
  /** Unique node name; also its hostname. Lower-case letters, digits, dashes. */
  name: string;
  /** Fixed private IPv4 address inside one of the region's subnets. */
  privateIp: string;
  /** What runs on the node. */
  roles: NodeRole[];
  /** EC2 instance type; defaults to `instances.postgresType`/`instances.haproxyType` by role. */
  instanceType?: string;
  /**
   * Patroni `failover_priority` tag: among equally healthy candidates, the
   * highest wins a failover. 0 means "never promote" (nofailover).
   */
  failoverPriority?: number;
}

export interface SubnetConfig {
  /** Private subnet CIDR, inside the region's VPC CIDR. */
  cidr: string;
  /** Availability zone, which must belong to the region (e.g. ap-northeast-2a). */
  availabilityZone: string;
}

export interface RegionConfig {
  /** Short name used in resource names and tags, e.g. `seoul`. */
  name: string;
  /** AWS region code, e.g. `ap-northeast-2`. */
  awsRegion: string;
  /** VPC CIDR; must not overlap any other region's (peering requires it). */
  vpcCidr: string;
  /** Private subnets that hold the nodes. */
  subnets: SubnetConfig[];
  /** Public subnet for the NAT gateway that gives nodes outbound package access. */
  natSubnetCidr: string;
  nodes: NodeConfig[];
}

export interface VersionsConfig {
  /** PostgreSQL major version, installed from the PGDG apt repository. */
  postgresMajor: number;
  /** Patroni version pattern pinned for apt (PGDG), e.g. `4.1.*`. */
  patroni: string;
  /** PostgreSQL package version pattern pinned for apt (PGDG), e.g. `17.*`. */
  postgresPackage: string;
  /** etcd release, installed from the official release archive. */
  etcd: string;
  /** SHA-256 of `etcd-v<etcd>-linux-<arch>.tar.gz`, per architecture. */
  etcdSha256: Partial<Record<CpuArchitecture, string>>;
}

export type CpuArchitecture = "amd64" | "arm64";

/** An apt repository, written as one `deb` line in /etc/apt/sources.list.d/pgdg.list. */
export interface AptRepositoryConfig {
  /** http(s) URL of the repository. */
  uri: string;
  /** Suite; cloud-init replaces `$RELEASE` with the OS codename (noble, trixie). */
  suite: string;
  /** Components of the suite, e.g. `main`. */
  components: string[];
  /** Armoured OpenPGP public key the repository is signed with; unset, the PGDG key (cloud-init/keys/pgdg.asc). */
  key?: string;
}

/** Where nodes get their software from. */
export interface PackagesConfig {
  /** The apt repository that provides PostgreSQL and Patroni (PGDG by default). */
  repository: AptRepositoryConfig;
  /** Base URL of the etcd release archives: `<url>/v<version>/etcd-v<version>-linux-<arch>.tar.gz`. */
  etcdReleaseUrl: string;
}

export interface PatroniConfig {
  /** Patroni `scope`: the cluster name, the same on every member. */
  scope: string;
  /** Patroni `namespace`: the etcd key prefix. */
  namespace: string;
  /** Leader lock TTL in seconds (Patroni requires ≥ 20). */
  ttl: number;
  /** Seconds between HA loop runs. */
  loopWait: number;
  /** Seconds Patroni retries DCS and PostgreSQL operations before giving up. */
  retryTimeout: number;
  synchronousMode: boolean;
  synchronousModeStrict: boolean;
  synchronousNodeCount: number;
  /**
   * Patroni `failsafe_mode`: while etcd has no quorum, the primary keeps its
   * role for as long as every member it last listed answers its
   * `POST /failsafe`, instead of demoting itself.
   */
  failsafeMode: boolean;
  /** Bytes a replica may lag and still be promoted. */
  maximumLagOnFailover: number;
  /** Extra PostgreSQL parameters (Patroni dynamic configuration). */
  parameters: Record<string, string | number | boolean>;
}

export interface EtcdConfig {
  /**
   * Measured average round-trip times between regions in milliseconds, keyed
   * `<region>-<region>` by region name. When every pair is given, heartbeat
   * and election timeout are derived from them (etcd's tuning guide).
   */
  rttMs: Record<string, number>;
  /** Explicit heartbeat interval (ms); overrides the RTT derivation. */
  heartbeatIntervalMs?: number;
  /** Explicit election timeout (ms); overrides the RTT derivation. */
  electionTimeoutMs?: number;
  /** Revisions kept by auto-compaction (mode `revision`). */
  autoCompactionRetention: number;
  /** Backend quota in bytes. */
  quotaBackendBytes: number;
}

export interface HaproxyConfig {
  /** Listener ports. */
  primaryPort: number;
  replicaPort: number;
  synchronousPort: number;
  statsPort: number;
  /** Health-check interval against the Patroni REST API, in milliseconds. */
  checkIntervalMs: number;
  /** Interval while a server is changing state, in milliseconds. */
  checkFastIntervalMs: number;
  /** Failed checks before a server is marked down. */
  checkFall: number;
  /** Passed checks before a server is marked up. */
  checkRise: number;
  /** How long one health check may wait for Patroni's answer, in milliseconds (HAProxy `timeout check`). */
  checkTimeoutMs: number;
  /**
   * Replay lag in bytes above which a replica leaves the read port (`/replica?lag=`):
   * a replica further behind than this serves no reads.
   */
  replicaMaxLagBytes: number;
  maxConnections: number;
}

export interface AccessConfig {
  /** CIDRs allowed to reach HAProxy's PostgreSQL listeners. */
  applicationCidrs: string[];
  /** CIDRs allowed to reach the HAProxy stats page. */
  adminCidrs: string[];
}

export interface InstancesConfig {
  postgresType: string;
  haproxyType: string;
  /** CPU architecture of the instance types (selects AMI and etcd archive). */
  architecture: CpuArchitecture;
  rootVolumeGiB: number;
  /** Size of the separate encrypted gp3 volume holding PGDATA. */
  dataVolumeGiB: number;
  /** Pulumi `protect` on data volumes: on for real stacks, off for ephemeral ones. */
  protectDataVolumes: boolean;
  /**
   * How long the first boot waits for the data volume's attachment before it
   * fails (cloud-init reports the error and no database service starts).
   */
  dataVolumeAttachSeconds: number;
  /** Operating system of every node (plan/os.ts): its AMI, and the codename apt sources use. */
  os: OsName;
  /** Override the AMI per AWS region (default: the current image of `os`, from its public SSM parameter). */
  amiOverrides: Record<string, string>;
}

export interface IamConfig {
  /**
   * Managed policy set as the permissions boundary of every node role
   * (`arn:<partition>:iam::<account>:policy/<path/name>`). Unset: no
   * boundary. Ephemeral stacks set it to `pgha-ephemeral-node-boundary`,
   * without which their deploy role refuses to create the roles.
   */
  nodePermissionsBoundaryArn?: string;
}

/** Metrics and alerts: a Prometheus and an Alertmanager on every HAProxy node (docs/monitoring.md). */
export interface MonitoringConfig {
  /** Prometheus scrape and rule-evaluation interval in seconds; alert `for` durations are multiples of it. */
  scrapeIntervalSeconds: number;
  /** How long each region's Prometheus keeps samples, in days. */
  retentionDays: number;
  /**
   * SNS topic the Alertmanagers publish alerts to (its ARN; the topic and its
   * subscriptions belong to whoever is on call). Unset: alerts are visible in
   * Prometheus and Alertmanager only.
   */
  alertTopicArn?: string;
  /**
   * Alertmanager's `group_interval`: once a group has been notified, how long
   * it waits before it notifies again of a change in it (a new alert, or a
   * resolved one: the "RESOLVED" message arrives up to this long after the
   * fault cleared).
   */
  groupIntervalSeconds: number;
}

/**
 * Backups and point-in-time recovery with pgBackRest (docs/backups.md): one
 * S3 repository per region, every WAL segment and every backup in each.
 */
export interface BackupConfig {
  /**
   * First part of every repository bucket's name, `<bucketPrefix>-<stack>-<awsRegion>`.
   * Bucket names are global across AWS accounts: use one your organisation owns (e.g. `acme-pgha`).
   */
  bucketPrefix: string;
  /** Days pgBackRest keeps full backups (repo-retention-full-type=time), and the WAL they need; S3 keeps noncurrent object versions as long. */
  retentionDays: number;
  /** systemd OnCalendar expression of the full backups (on the primary). */
  fullSchedule: string;
  /** systemd OnCalendar expression of the differential backups (on the primary). */
  differentialSchedule: string;
  /**
   * PostgreSQL's `archive_timeout`: the longest a committed transaction waits
   * before its WAL segment is switched and archived, so the bound on what a
   * restore from the repositories alone (every database node lost) can lose.
   */
  archiveTimeoutSeconds: number;
  /** Pulumi `protect` on the buckets, and no `forceDestroy`: on for real stacks, off for ephemeral ones (destroyed with the stack). */
  protectRepositories: boolean;
}

export interface ClusterConfig {
  regions: RegionConfig[];
  versions: VersionsConfig;
  packages: PackagesConfig;
  patroni: PatroniConfig;
  etcd: EtcdConfig;
  haproxy: HaproxyConfig;
  access: AccessConfig;
  instances: InstancesConfig;
  /** Root of every SSM parameter path; the stack name is appended. */
  parameterPrefix: string;
  /**
   * Extra tags on every AWS resource (the providers' default tags), e.g. who
   * created an ephemeral stack and for which pull request.
   */
  tags: Record<string, string>;
  /** IAM settings of the node roles. */
  iam: IamConfig;
  /** Metrics and alerts. */
  monitoring: MonitoringConfig;
  /** Backups: pgBackRest repositories in S3, WAL archiving and the backup schedule. */
  backup: BackupConfig;
}

/** What a user may write: every part optional, merged over the defaults. */
export type ClusterConfigInput = {
  [K in keyof ClusterConfig]?: ClusterConfig[K] extends unknown[] ? ClusterConfig[K] : Partial<ClusterConfig[K]>;
};

/** The keys a user may set under `pgha:`. */
export const CONFIG_KEYS: readonly (keyof ClusterConfig)[] = [
  "regions",
  "versions",
  "packages",
  "patroni",
  "etcd",
  "haproxy",
  "access",
  "instances",
  "parameterPrefix",
  "tags",
  "iam",
  "monitoring",
  "backup",
];
