import type { ClusterConfig } from "./config";

/**
 * Every default of the product, documented where it is set. Left alone, they
 * reproduce the reference layout: one PostgreSQL + etcd node in each of
 * Seoul, Tokyo and Singapore, and one HAProxy per region (the reference
 * design's single HAProxy in Seoul would die with Seoul).
 */
export const DEFAULT_CONFIG: ClusterConfig = {
  regions: [
    {
      name: "seoul",
      awsRegion: "ap-northeast-2",
      vpcCidr: "10.1.0.0/16",
      subnets: [{ cidr: "10.1.0.0/24", availabilityZone: "ap-northeast-2a" }],
      natSubnetCidr: "10.1.255.0/28",
      nodes: [
        // Highest failover priority: Seoul is the preferred primary, as in the reference.
        { name: "pg-seoul-1", privateIp: "10.1.0.10", roles: ["postgres", "etcd"], failoverPriority: 2 },
        { name: "haproxy-1", privateIp: "10.1.0.20", roles: ["haproxy"] },
      ],
    },
    {
      name: "tokyo",
      awsRegion: "ap-northeast-1",
      vpcCidr: "10.2.0.0/16",
      subnets: [{ cidr: "10.2.0.0/24", availabilityZone: "ap-northeast-1a" }],
      natSubnetCidr: "10.2.255.0/28",
      nodes: [
        { name: "pg-tokyo-1", privateIp: "10.2.0.10", roles: ["postgres", "etcd"], failoverPriority: 1 },
        { name: "haproxy-2", privateIp: "10.2.0.20", roles: ["haproxy"] },
      ],
    },
    {
      name: "singapore",
      awsRegion: "ap-southeast-1",
      vpcCidr: "10.3.0.0/16",
      subnets: [{ cidr: "10.3.0.0/24", availabilityZone: "ap-southeast-1a" }],
      natSubnetCidr: "10.3.255.0/28",
      nodes: [
        { name: "pg-singapore-1", privateIp: "10.3.0.10", roles: ["postgres", "etcd"], failoverPriority: 1 },
        { name: "haproxy-3", privateIp: "10.3.0.20", roles: ["haproxy"] },
      ],
    },
  ],
  versions: {
    postgresMajor: 17,
    // PGDG publishes Patroni 4.1.x for Ubuntu 24.04; the pattern pins the minor.
    patroni: "4.1.*",
    postgresPackage: "17.*",
    // Newest 3.5 release whose archive checksum is recorded here; see README
    // "Upgrading etcd" for how to bump both together.
    etcd: "3.5.21",
    etcdSha256: {
      amd64: "adddda4b06718e68671ffabff2f8cee48488ba61ad82900e639d108f2148501c",
      arm64: "95bf6918623a097c0385b96f139d90248614485e781ec9bee4768dbb6c79c53f",
    },
  },
  packages: {
    // PGDG: PostgreSQL 17 and Patroni 4.1 for the node's release ($RELEASE: cloud-init's codename, noble on
    // Ubuntu 24.04). No key given: the PGDG key shipped in cloud-init/keys/pgdg.asc. The lab points this at its mirror.
    repository: { uri: "https://apt.postgresql.org/pub/repos/apt", suite: "$RELEASE-pgdg", components: ["main"] },
    // etcd's own release archives on GitHub, checked against versions.etcdSha256.
    etcdReleaseUrl: "https://github.com/etcd-io/etcd/releases/download",
  },
  patroni: {
    scope: "pg-multiregion",
    namespace: "/db/",
    // Patroni's minimum. A dead primary's leader key expires ttl − loop_wait
    // to ttl seconds after its last refresh; that bounds failover time. The
    // reference's 30/10/10 is safe but slower (lab: README "Failover timing").
    ttl: 20,
    loopWait: 5,
    // Must satisfy loop_wait + 2 × retry_timeout ≤ ttl so an isolated primary
    // demotes itself before its key can expire and a replica is promoted.
    retryTimeout: 7,
    synchronousMode: true,
    // Off: losing the only sync standby must not stop writes (the reference design's choice).
    synchronousModeStrict: false,
    synchronousNodeCount: 1,
    // On: losing etcd's quorum while every PostgreSQL member still reaches the others must not stop writes (lab:
    // drill etcd-quorum-loss). A primary that reaches neither etcd nor every member still demotes.
    failsafeMode: true,
    maximumLagOnFailover: 1048576,
    parameters: {},
  },
  etcd: {
    // Public averages between the three regions (LAB-NOTES.md); re-measure
    // from your own VPCs and set these, and the timeouts follow.
    rttMs: { "seoul-tokyo": 31, "seoul-singapore": 72, "tokyo-singapore": 74 },
    autoCompactionRetention: 1000,
    // etcd's default quota (2 GiB); Patroni's keyspace is tiny.
    quotaBackendBytes: 2 * 1024 * 1024 * 1024,
  },
  haproxy: {
    primaryPort: 5000,
    replicaPort: 5001,
    synchronousPort: 5002,
    statsPort: 7000,
    // 1 s checks, 2 failures to mark down: a demoted primary stops getting
    // writes about 2 s after Patroni demotes it; sessions on it are cut.
    // A server that is down (or changing state) is checked every 500 ms and
    // one passing check brings it up: only the leader-lock holder answers 200
    // on /primary, so a second check would only delay writes (README
    // "Failover timing" has the lab's measurements).
    checkIntervalMs: 1000,
    checkFastIntervalMs: 500,
    checkFall: 2,
    checkRise: 1,
    // A hung REST API (Patroni frozen, PostgreSQL still up) is out after about fall × (timeout + fastinter): 4.5 s
    // with 2 s, 11 s with the 5 s this had before (issue #15). A check over the longest link is a TLS handshake and
    // one request, about three round trips of 74 ms.
    checkTimeoutMs: 2000,
    // 16 MiB of replay: a second or less of a busy primary's WAL. A replica further behind leaves the read port,
    // its region's reads go to the other regions' replicas, and it comes back once it has caught up.
    replicaMaxLagBytes: 16 * 1024 * 1024,
    maxConnections: 1000,
  },
  access: {
    // Nothing is reachable from outside the cluster's VPCs until you list it.
    applicationCidrs: [],
    adminCidrs: [],
  },
  instances: {
    postgresType: "m6i.large",
    haproxyType: "t3.small",
    architecture: "amd64",
    // Production's OS; the lab boots Debian 13 (plan/os.ts holds what differs).
    os: "ubuntu-24.04",
    rootVolumeGiB: 20,
    dataVolumeGiB: 100,
    protectDataVolumes: true,
    // EC2 attaches the volume after the instance starts, usually within a minute.
    dataVolumeAttachSeconds: 600,
    amiOverrides: {},
  },
  parameterPrefix: "/pgha",
  // Every resource already carries pgha:stack (and Name, pgha:region, … where they apply).
  tags: {},
  // No permissions boundary on the node roles (ephemeral stacks get theirs from .github/scripts/ephemeral-stack.ts).
  iam: {},
  monitoring: {
    // Prometheus's own default cadence; "no leader" fires after two evaluations (30 s), beyond a routine failover.
    scrapeIntervalSeconds: 15,
    retentionDays: 15,
    // Alertmanager's own default.
    groupIntervalSeconds: 300,
  },
  backup: {
    bucketPrefix: "pgha",
    // Two weekly fulls always restorable, plus the days between.
    retentionDays: 14,
    fullSchedule: "Sun *-*-* 01:00:00",
    differentialSchedule: "Mon..Sat *-*-* 01:00:00",
    // A minute of commits at most is lost when every database node is lost at once; each forced switch costs one
    // mostly empty 16 MB segment, a few kB once pgBackRest compresses it, per repository.
    archiveTimeoutSeconds: 60,
    protectRepositories: true,
  },
};

/**
 * Largest packet between regions: AWS limits "traffic over an inter-Region
 * VPC peering connection" to 8500 bytes, while m6i and t3 interfaces use
 * 9001 (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/network_mtu.html).
 * Nodes route the other regions' VPC CIDRs at this MTU (pgha-path-mtu).
 */
export const INTER_REGION_PATH_MTU = 8500;
