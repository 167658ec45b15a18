import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { PORTS, type ClusterPlan, type NodePlan } from "../plan";
import { BackupRepository } from "./backup-repository";
import { ClusterPki } from "./cluster-pki";
import { HaproxyNode } from "./haproxy-node";
import { MeshPeering } from "./mesh-peering";
import { TYPE_PREFIX } from "./naming";
import { NodeSecrets } from "./node-secrets";
import { regionAmi } from "./node-instance";
import { PatroniNode } from "./patroni-node";
import { ReadinessGate } from "./readiness-gate";
import { RegionNetwork } from "./region-network";
import { NodeSecurity } from "./security";

/** Arguments of {@link PgHaCluster}. */
export interface PgHaClusterArgs {
  /**
   * The validated cluster plan (`buildClusterPlan`). Everything — regions,
   * nodes, addresses, certificates, parameters — comes from it; the
   * component adds no defaults of its own.
   */
  plan: ClusterPlan;
  /**
   * Run the {@link ReadinessGate} after the nodes exist (default true): the
   * update waits until the cluster is ready and rolls day-2 changes out.
   */
  readinessGate?: boolean;
}

/** HAProxy listeners of one HAProxy node, as `<ip>:<port>`. */
export interface HaproxyEndpoint {
  node: string;
  region: string;
  /** Read-write: always the current primary. */
  writer: string;
  /** Read-only: the replicas. */
  reader: string;
  /** The synchronous standby (zero-lag reads). */
  sync: string;
  /** HAProxy stats page (reachable from `access.adminCidrs` only). */
  stats: string;
}

/** Whether a node is launched as a {@link PatroniNode} (database tier) or a {@link HaproxyNode}. */
export function nodeKind(node: NodePlan): "patroni" | "haproxy" {
  return node.roles.has("postgres") || node.roles.has("etcd") ? "patroni" : "haproxy";
}

/** One pgBackRest repository as the stack outputs it. */
export interface BackupRepositoryOutput {
  /** pgBackRest's `repo<index>`, the same on every node. */
  index: number;
  awsRegion: string;
  bucket: string;
  bucketArn: string;
  kmsKeyArn: string;
  /** pgBackRest's `repo<index>-path`, `/<stack>`: the stack's objects are the keys under `<stack>/`. */
  path: string;
}

/** Checks the plan holds what the component composes; throws on the first problem. */
export function validatePgHaClusterArgs(args: PgHaClusterArgs): void {
  const { plan } = args;
  if (plan.regions.length === 0) throw new Error("PgHaCluster: the plan has no regions");
  for (const region of plan.regions) {
    if (plan.backup.repositories.filter((repo) => repo.region === region.name).length !== 1)
      throw new Error(`PgHaCluster: region ${region.name} needs exactly one backup repository`);
  }
  for (const repo of plan.backup.repositories) {
    const region = plan.regions.find((r) => r.name === repo.region);
    if (!region) throw new Error(`PgHaCluster: backup repository ${repo.index} names unknown region ${repo.region}`);
    if (region.awsRegion !== repo.awsRegion)
      throw new Error(`PgHaCluster: backup repository ${repo.index} is planned in ${repo.awsRegion}, region ${region.name} is ${region.awsRegion}`);
  }
  for (const node of plan.nodes) {
    if (!plan.regions.some((region) => region.name === node.region)) throw new Error(`PgHaCluster: node ${node.name} names unknown region ${node.region}`);
    if (!plan.secrets.some((secrets) => secrets.node === node.name)) throw new Error(`PgHaCluster: node ${node.name} has no secrets plan`);
  }
}

/**
 * The whole multi-region PostgreSQL cluster from one {@link ClusterPlan}:
 *
 * - one explicit `aws.Provider` per region — the only multi-region idiom
 *   used; every regional resource below is created through its region's
 *   provider, never the default one;
 * - a {@link RegionNetwork} per region and a {@link MeshPeering} between all;
 * - a {@link BackupRepository} per region (pgBackRest's S3 bucket and its
 *   KMS key), created before any database node;
 * - the {@link ClusterPki} (CA, leaf certificates, passwords);
 * - per node: {@link NodeSecurity}, {@link NodeSecrets}, and a
 *   {@link PatroniNode} or {@link HaproxyNode}. Database nodes (the postgres
 *   role, where pgBackRest runs) get the `backup-repositories` policy on
 *   every region's repository, and their instances wait for the
 *   repositories.
 *
 * Outputs are plain connection facts plus the CA certificate; the only
 * secret exposed (the superuser password) is a secret output.
 */
export class PgHaCluster extends pulumi.ComponentResource {
  /** The provider of each region, keyed by region name. */
  public readonly providers: Readonly<Record<string, aws.Provider>>;
  /** HAProxy endpoints, one entry per HAProxy node. */
  public readonly haproxyEndpoints: pulumi.Output<HaproxyEndpoint[]>;
  /** Private IPs of every node: region name → node name → IP. */
  public readonly nodePrivateIps: pulumi.Output<Record<string, Record<string, string>>>;
  /** Patroni REST API of each postgres node (`https://<ip>:8008`, mutual TLS, reachable from cluster nodes). */
  public readonly patroniRestUrls: pulumi.Output<Record<string, string>>;
  /** The cluster CA certificate: clients verify PostgreSQL and Patroni against it. */
  public readonly caCertificatePem: pulumi.Output<string>;
  /** The PostgreSQL superuser password (secret). */
  public readonly superuserPassword: pulumi.Output<string>;
  /** NAT gateway public IPs per region (what package mirrors see). */
  public readonly natPublicIps: pulumi.Output<Record<string, string>>;
  /** The pgBackRest repositories: region name → bucket, its ARN and KMS key. */
  public readonly backupRepositories: pulumi.Output<Record<string, BackupRepositoryOutput>>;
  /** The {@link BackupRepository} of each region, keyed by region name. */
  public readonly repositories: Readonly<Record<string, BackupRepository>>;
  /** The readiness gate and rolling changes (absent when `readinessGate: false`). */
  public readonly readiness?: ReadinessGate;

  constructor(name: string, args: PgHaClusterArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super(`${TYPE_PREFIX}:PgHaCluster`, name, {}, opts);
    validatePgHaClusterArgs(args);
    const { plan } = args;
    const stack = plan.stack;

    const providers: Record<string, aws.Provider> = {};
    const networks: Record<string, RegionNetwork> = {};
    const amis: Record<string, pulumi.Output<string>> = {};
    for (const region of plan.regions) {
      const provider = new aws.Provider(
        `${name}-${region.name}`,
        // pgha:tags reach every taggable resource as the provider's default tags.
        { region: region.awsRegion as aws.Region, defaultTags: { tags: plan.config.tags } },
        { parent: this },
      );
      providers[region.name] = provider;
      networks[region.name] = new RegionNetwork(`${name}-${region.name}`, { region, stack, provider }, { parent: this });
      amis[region.name] = regionAmi(plan, region.awsRegion, provider, this);
    }

    const mesh = new MeshPeering(
      `${name}-mesh`,
      {
        stack,
        regions: plan.regions.map((region) => ({
          name: region.name,
          awsRegion: region.awsRegion,
          vpcCidr: region.vpcCidr,
          vpcId: networks[region.name].vpcId,
          privateRouteTableIds: networks[region.name].privateRouteTableIds,
          provider: providers[region.name],
        })),
      },
      { parent: this },
    );

    // IAM policies need the account id and partition; any region's provider answers for the account.
    const firstProvider = providers[plan.regions[0].name];
    const identity = aws.getCallerIdentityOutput({}, { parent: this, provider: firstProvider });
    const partition = aws.getPartitionOutput({}, { parent: this, provider: firstProvider });

    // The repositories exist before any database node boots: its first stanza-create writes to every one.
    const repositories: Record<string, BackupRepository> = {};
    for (const repository of plan.backup.repositories) {
      repositories[repository.region] = new BackupRepository(
        `${name}-${repository.region}-backups`,
        { repository, backup: plan.backup, stack, partition: partition.partition, provider: providers[repository.region] },
        { parent: this },
      );
    }
    const repositoryList = plan.backup.repositories.map((repository) => repositories[repository.region]);
    const repositoriesReady = repositoryList.flatMap((repository) => repository.ready);

    const pki = new ClusterPki(`${name}-pki`, { certificates: plan.certificates, passwords: plan.passwords }, { parent: this });

    const privateIps: pulumi.Output<string>[] = [];
    const instanceIds: Record<string, pulumi.Output<string>> = {};
    const launchedNodes: pulumi.Resource[] = [];
    const nodeSecrets: pulumi.Resource[] = [];
    for (const node of plan.nodes) {
      const provider = providers[node.region];
      const network = networks[node.region];
      const secretsPlan = plan.secrets.find((secrets) => secrets.node === node.name);
      if (!secretsPlan) throw new Error(`PgHaCluster: node ${node.name} has no secrets plan`);

      const security = new NodeSecurity(`${name}-${node.name}-security`, { plan, node, vpcId: network.vpcId, stack, provider }, { parent: this });
      const secrets = new NodeSecrets(
        `${name}-${node.name}-secrets`,
        {
          node,
          secrets: secretsPlan,
          values: pki,
          stack,
          accountId: identity.accountId,
          partition: partition.partition,
          provider,
          permissionsBoundary: plan.config.iam.nodePermissionsBoundaryArn,
          // The region's Alertmanager runs on its HAProxy node (cloud-init/monitoring.ts).
          alertTopicArn: node.roles.has("haproxy") ? plan.config.monitoring.alertTopicArn : undefined,
          // pgBackRest runs where PostgreSQL does (cloud-init/pgbackrest.ts), and each segment goes to every repository.
          backupRepositories: node.roles.has("postgres")
            ? repositoryList.map((repository) => ({
                index: repository.repository.index,
                bucket: repository.repository.bucket,
                awsRegion: repository.repository.awsRegion,
                path: repository.repository.path,
                kmsKeyArn: repository.kmsKeyArn,
              }))
            : undefined,
        },
        { parent: this },
      );
      nodeSecrets.push(secrets);
      const nodeArgs = {
        plan,
        node,
        ami: amis[node.region],
        subnetId: network.subnetIds[node.subnetCidr],
        securityGroupIds: [security.securityGroupId],
        instanceProfileName: secrets.instanceProfileName,
        bootDependencies: node.roles.has("postgres") ? [...secrets.bootDependencies, ...repositoriesReady] : secrets.bootDependencies,
        networkDependencies: [...network.egressReady, ...mesh.routesFor(node.region)],
        provider,
      };
      const launched =
        nodeKind(node) === "patroni" ? new PatroniNode(`${name}-${node.name}`, nodeArgs, { parent: this }) : new HaproxyNode(`${name}-${node.name}`, nodeArgs, { parent: this });
      privateIps.push(launched.privateIp);
      instanceIds[node.name] = launched.instanceId;
      launchedNodes.push(launched);
    }

    // After every node (instance and data volume attachment) exists: wait until the cluster works, then roll changes out.
    if (args.readinessGate !== false) {
      const certificatePems = { ca: pki.caCertPem, ...Object.fromEntries(Object.entries(pki.certificates).map(([id, issued]) => [id, issued.certPem])) };
      this.readiness = new ReadinessGate(`${name}-readiness`, { plan, instanceIds, nodes: launchedNodes, certificatePems, secrets: nodeSecrets }, { parent: this });
    }

    // Outputs resolve from the launched instances, so they only appear once the nodes exist.
    const ips = pulumi.all(privateIps).apply((values) => new Map(plan.nodes.map((node, index) => [node.name, values[index]])));
    const { haproxy } = plan.config;
    this.haproxyEndpoints = ips.apply((byNode) =>
      plan.nodes
        .filter((node) => node.roles.has("haproxy"))
        .map((node) => {
          const ip = byNode.get(node.name) as string;
          return {
            node: node.name,
            region: node.region,
            writer: `${ip}:${haproxy.primaryPort}`,
            reader: `${ip}:${haproxy.replicaPort}`,
            sync: `${ip}:${haproxy.synchronousPort}`,
            stats: `${ip}:${haproxy.statsPort}`,
          };
        }),
    );
    this.nodePrivateIps = ips.apply((byNode) =>
      Object.fromEntries(plan.regions.map((region) => [region.name, Object.fromEntries(region.nodes.map((node) => [node.name, byNode.get(node.name) as string]))])),
    );
    this.patroniRestUrls = ips.apply((byNode) =>
      Object.fromEntries(plan.nodes.filter((node) => node.roles.has("postgres")).map((node) => [node.name, `https://${byNode.get(node.name)}:${PORTS.patroniRest}`])),
    );
    this.caCertificatePem = pki.caCertPem;
    const superuser = pki.passwords.superuser;
    if (!superuser) throw new Error("PgHaCluster: the plan has no superuser password");
    this.superuserPassword = pulumi.secret(superuser);
    this.natPublicIps = pulumi.output(Object.fromEntries(plan.regions.map((region) => [region.name, networks[region.name].natPublicIp])));
    this.repositories = repositories;
    this.backupRepositories = pulumi.all(repositoryList.map((repository) => pulumi.all([repository.bucketName, repository.bucketArn, repository.kmsKeyArn]))).apply((values) =>
      Object.fromEntries(
        repositoryList.map((repository, i) => {
          const [bucket, bucketArn, kmsKeyArn] = values[i];
          const { index, awsRegion, path } = repository.repository;
          return [repository.repository.region, { index, awsRegion, bucket, bucketArn, kmsKeyArn, path }];
        }),
      ),
    );
    this.providers = providers;

    this.registerOutputs({
      haproxyEndpoints: this.haproxyEndpoints,
      nodePrivateIps: this.nodePrivateIps,
      patroniRestUrls: this.patroniRestUrls,
      caCertificatePem: this.caCertificatePem,
      superuserPassword: this.superuserPassword,
      natPublicIps: this.natPublicIps,
      backupRepositories: this.backupRepositories,
    });
  }
}
