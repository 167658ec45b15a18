import type { ClusterConfig, NodeRole } from "./config";
import { parseIpv4, parseIpv4Cidr, blockContains, type Ipv4Block } from "./net";
import { deriveEtcdTiming, type EtcdTiming } from "./etcd-timing";
import { planCertificates, type CertificatePlan } from "./pki";
import { planNodeSecrets, planPasswords, type NodeSecretsPlan, type PasswordPlan } from "./secrets";
import { validateConfig } from "./validate";

/** Fixed ports of the cluster (the security-group allowlist). */
export const PORTS = {
  postgres: 5432,
  patroniRest: 8008,
  etcdClient: 2379,
  etcdPeer: 2380,
  /** etcd's /metrics (and /health) on its own listener, so scrapers need no access to the client port. */
  etcdMetrics: 2381,
  nodeExporter: 9100,
  postgresExporter: 9187,
  /** HAProxy's built-in Prometheus exporter (a TLS frontend of its own). */
  haproxyMetrics: 8405,
  prometheus: 9090,
  alertmanager: 9093,
  /** Alertmanager's cluster gossip (TCP and UDP) between the regions' Alertmanagers. */
  alertmanagerCluster: 9094,
} as const;

/** Service accounts on a node; the rendered units run as these. */
export const SERVICE_USERS = { postgres: "postgres", etcd: "etcd", haproxy: "haproxy", prometheus: "prometheus" } as const;

/** Database and REST API user names (not secret; their passwords are). */
export const CLUSTER_USERS = {
  superuser: "postgres",
  replication: "replicator",
  rewind: "rewind_user",
  restApi: "patroni",
  /** postgres_exporter's role (pg_monitor), logging in by peer authentication as the OS user of the same name. */
  monitoring: "prometheus",
} as const;

export interface NodePlan {
  /** Node name; also its hostname and its Patroni member name. */
  name: string;
  /** The region entry the node belongs to (its `name`). */
  region: string;
  awsRegion: string;
  availabilityZone: string;
  subnetCidr: string;
  privateIp: string;
  roles: ReadonlySet<NodeRole>;
  instanceType: string;
  /** Patroni failover_priority tag (postgres nodes). */
  failoverPriority: number;
  /** SSM path under which every secret of this node lives (no trailing slash). */
  parameterPath: string;
}

export interface RegionPlan {
  name: string;
  awsRegion: string;
  vpcCidr: string;
  subnets: { cidr: string; availabilityZone: string }[];
  natSubnetCidr: string;
  nodes: NodePlan[];
}

/** One pgBackRest repository: an S3 bucket in one region of the plan (`repo<index>` in pgbackrest.conf). */
export interface BackupRepositoryPlan {
  /** pgBackRest's repository number, 1-based, in region order: the same on every node. */
  index: number;
  /** The region entry it serves (its `name`): that region's nodes restore from it. */
  region: string;
  awsRegion: string;
  bucket: string;
  /** S3's regional endpoint; pgBackRest addresses the bucket as `<bucket>.<endpoint>` (virtual-hosted style). */
  endpoint: string;
  /** Key prefix of the stack's repository in the bucket (pgBackRest's repo-path); the nodes' role reaches only it. */
  path: string;
}

export interface BackupPlan {
  /** pgBackRest stanza: the Patroni scope. */
  stanza: string;
  repositories: BackupRepositoryPlan[];
  retentionDays: number;
  fullSchedule: string;
  differentialSchedule: string;
  archiveTimeoutSeconds: number;
  protectRepositories: boolean;
}

/** S3's limit on a bucket name's length. */
export const BUCKET_NAME_MAX = 63;

/** The repository a node restores and clones from: its own region's. */
export function repositoryOf(plan: ClusterPlan, node: NodePlan): BackupRepositoryPlan {
  const repository = plan.backup.repositories.find((repo) => repo.region === node.region);
  if (!repository) throw new Error(`internal: no backup repository for region ${node.region}`);
  return repository;
}

export interface EtcdMemberPlan {
  name: string;
  node: string;
  peerUrl: string;
  clientUrl: string;
}

/** The validated, fully resolved description every consumer renders from. */
export interface ClusterPlan {
  /** Pulumi stack (or lab) name: part of every SSM path and the etcd cluster token. */
  stack: string;
  config: ClusterConfig;
  regions: RegionPlan[];
  nodes: NodePlan[];
  /** The VPC CIDRs of all regions: the only networks pg_hba admits. */
  clusterCidrs: string[];
  etcd: {
    members: EtcdMemberPlan[];
    timing: EtcdTiming;
    initialClusterToken: string;
  };
  certificates: CertificatePlan[];
  passwords: PasswordPlan[];
  secrets: NodeSecretsPlan[];
  backup: BackupPlan;
}

export interface PlanOptions {
  /** Stack name: lower-case letters, digits and dashes. */
  stack: string;
}

/** config → validated plan. Throws ConfigError with one line per problem. */
export function buildClusterPlan(input: unknown, options: PlanOptions): ClusterPlan {
  const config = validateConfig(input);
  if (!/^[a-z0-9][a-z0-9-]{0,39}$/.test(options.stack)) {
    // The stack name is not a pgha: key but reaches every path; report it the same way.
    throw new Error(`stack name = ${JSON.stringify(options.stack)}: must be 1-40 lower-case letters, digits or dashes (it is part of SSM paths and IAM names)`);
  }
  const parameterRoot = `${config.parameterPrefix}/${options.stack}`;
  const regions: RegionPlan[] = config.regions.map((region) => {
    const subnetBlocks = region.subnets.map((subnet) => ({ ...subnet, block: parseIpv4Cidr(subnet.cidr) as Ipv4Block }));
    return {
      name: region.name,
      awsRegion: region.awsRegion,
      vpcCidr: region.vpcCidr,
      subnets: region.subnets.map((subnet) => ({ ...subnet })),
      natSubnetCidr: region.natSubnetCidr,
      nodes: region.nodes.map((node): NodePlan => {
        const subnet = subnetBlocks.find((s) => blockContains(s.block, parseIpv4(node.privateIp) as number));
        if (!subnet) throw new Error(`internal: ${node.name} has no subnet after validation`);
        const roles = new Set(node.roles);
        return {
          name: node.name,
          region: region.name,
          awsRegion: region.awsRegion,
          availabilityZone: subnet.availabilityZone,
          subnetCidr: subnet.cidr,
          privateIp: node.privateIp,
          roles,
          instanceType: node.instanceType ?? (roles.has("postgres") || roles.has("etcd") ? config.instances.postgresType : config.instances.haproxyType),
          failoverPriority: node.failoverPriority ?? 1,
          parameterPath: `${parameterRoot}/${node.name}`,
        };
      }),
    };
  });
  const nodes = regions.flatMap((region) => region.nodes);
  const members = nodes
    .filter((node) => node.roles.has("etcd"))
    .map((node) => ({
      name: node.name,
      node: node.name,
      peerUrl: `https://${node.privateIp}:${PORTS.etcdPeer}`,
      clientUrl: `https://${node.privateIp}:${PORTS.etcdClient}`,
    }));
  const { backup } = config;
  const repositories = regions.map((region, i): BackupRepositoryPlan => {
    const bucket = `${backup.bucketPrefix}-${options.stack}-${region.awsRegion}`;
    if (bucket.length > BUCKET_NAME_MAX) {
      throw new Error(
        `pgha:backup.bucketPrefix = ${JSON.stringify(backup.bucketPrefix)}: with stack ${JSON.stringify(options.stack)} the bucket name ${bucket} is ${bucket.length} characters; S3 allows ${BUCKET_NAME_MAX} (shorten the prefix or the stack name)`,
      );
    }
    return { index: i + 1, region: region.name, awsRegion: region.awsRegion, bucket, endpoint: `s3.${region.awsRegion}.amazonaws.com`, path: `/${options.stack}` };
  });
  const passwords = planPasswords();
  const certificates = planCertificates(nodes);
  return {
    stack: options.stack,
    config,
    regions,
    nodes,
    clusterCidrs: regions.map((region) => region.vpcCidr),
    etcd: { members, timing: deriveEtcdTiming(config), initialClusterToken: `${config.patroni.scope}-${options.stack}` },
    certificates,
    passwords,
    secrets: nodes.map((node) =>
      planNodeSecrets(
        node,
        passwords,
        certificates,
        repositories.map((repo) => repo.index),
      ),
    ),
    backup: {
      stanza: config.patroni.scope,
      repositories,
      retentionDays: backup.retentionDays,
      fullSchedule: backup.fullSchedule,
      differentialSchedule: backup.differentialSchedule,
      archiveTimeoutSeconds: backup.archiveTimeoutSeconds,
      protectRepositories: backup.protectRepositories,
    },
  };
}

/** Nodes carrying a role, in plan order. */
export function nodesWithRole(plan: ClusterPlan, role: NodeRole): NodePlan[] {
  return plan.nodes.filter((node) => node.roles.has(role));
}

export function findNode(plan: ClusterPlan, name: string): NodePlan {
  const node = plan.nodes.find((candidate) => candidate.name === name);
  if (!node) throw new Error(`no node named ${JSON.stringify(name)} in the plan (nodes: ${plan.nodes.map((n) => n.name).join(", ")})`);
  return node;
}
