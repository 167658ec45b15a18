import { certificateFor, findNode, NODE_PATHS, PORTS, type ClusterPlan, type NodePlan } from "../plan";
import { dumpYaml } from "./yaml";

/**
 * /etc/etcd/etcd.conf.yml for one member. Both listeners demand a client
 * certificate from the cluster CA. Note for readers of the reference design:
 * in etcd's config file the peer section's switch is also called
 * `client-cert-auth`; the `peer-client-cert-auth` key it uses there is
 * ignored by etcd, which leaves the peer port open to any TLS client.
 */
export function etcdConfig(plan: ClusterPlan, node: NodePlan): Record<string, unknown> {
  const member = plan.etcd.members.find((m) => m.node === node.name);
  if (!member) throw new Error(`${node.name} is not an etcd member`);
  const cert = certificateFor(plan.certificates, node.name, "etcd-member");
  const tls = {
    "cert-file": cert.certPath,
    "key-file": cert.keyPath,
    "trusted-ca-file": NODE_PATHS.caCert,
    "client-cert-auth": true,
  };
  return {
    name: member.name,
    "data-dir": `${NODE_PATHS.etcdDataDir}/data`,
    "listen-client-urls": [member.clientUrl, `https://127.0.0.1:${PORTS.etcdClient}`].join(","),
    // /metrics and /health on a listener of their own (same TLS and client-certificate rule as the client port), so a
    // scraper needs no route to the port that serves the keys.
    "listen-metrics-urls": `https://${node.privateIp}:${PORTS.etcdMetrics}`,
    "advertise-client-urls": member.clientUrl,
    "listen-peer-urls": member.peerUrl,
    "initial-advertise-peer-urls": member.peerUrl,
    "initial-cluster": plan.etcd.members.map((m) => `${m.name}=${m.peerUrl}`).join(","),
    // Every member boots with `new`; etcd waits for a quorum of them, so the
    // boot order across regions does not matter.
    "initial-cluster-state": "new",
    "initial-cluster-token": plan.etcd.initialClusterToken,
    "client-transport-security": tls,
    "peer-transport-security": tls,
    "heartbeat-interval": plan.etcd.timing.heartbeatIntervalMs,
    "election-timeout": plan.etcd.timing.electionTimeoutMs,
    "auto-compaction-mode": "revision",
    "auto-compaction-retention": String(plan.config.etcd.autoCompactionRetention),
    "quota-backend-bytes": plan.config.etcd.quotaBackendBytes,
    "enable-v2": false,
    logger: "zap",
    "log-outputs": ["stderr"],
  };
}

export function renderEtcdConfig(plan: ClusterPlan, node: NodePlan): string {
  return dumpYaml(etcdConfig(plan, node));
}

/** etcdctl's environment on a node: every member, mTLS with the node's client certificate. */
export function renderEtcdctlEnv(plan: ClusterPlan, node: NodePlan): string {
  const client = node.roles.has("postgres") ? certificateFor(plan.certificates, node.name, "etcd-client") : certificateFor(plan.certificates, node.name, "etcd-member");
  const lines = [
    `ETCDCTL_API=3`,
    `ETCDCTL_ENDPOINTS=${plan.etcd.members.map((m) => m.clientUrl).join(",")}`,
    `ETCDCTL_CACERT=${NODE_PATHS.caCert}`,
    `ETCDCTL_CERT=${client.certPath}`,
    `ETCDCTL_KEY=${client.keyPath}`,
  ];
  return `${lines.join("\n")}\n`;
}

/** The round trip between two regions from `etcd.rttMs` (either key order), or Infinity when it is not given. */
function regionRtt(plan: ClusterPlan, a: string, b: string): number {
  if (a === b) return 0;
  return plan.config.etcd.rttMs[`${a}-${b}`] ?? plan.config.etcd.rttMs[`${b}-${a}`] ?? Number.POSITIVE_INFINITY;
}

/**
 * The members `node` hands etcd's leadership to, best first: the raft leader
 * commits once its nearest follower has the entry, so the member with the
 * shortest round trip to its nearest other member commits fastest (Seoul or
 * Tokyo, 31 ms, before Singapore, 72 ms, with the default RTTs). Ties keep
 * plan order.
 */
export function etcdLeaderCandidates(plan: ClusterPlan, node: NodePlan): string[] {
  const region = (name: string) => findNode(plan, name).region;
  const others = plan.etcd.members.filter((m) => m.node !== node.name);
  const nearest = (member: (typeof others)[number]) =>
    Math.min(...plan.etcd.members.filter((m) => m.name !== member.name).map((m) => regionRtt(plan, region(member.node), region(m.node))));
  return others
    .map((member, index) => ({ member, index, rtt: nearest(member) }))
    .sort((a, b) => a.rtt - b.rtt || a.index - b.index)
    .map(({ member }) => member.name);
}

/**
 * On a database node that is also an etcd member, the command the primary's
 * upkeep runs every few seconds (cloud-init/pgbackrest.ts): if this host runs
 * the PostgreSQL primary and leads etcd's raft, hand the raft leadership to
 * another member (cloud-init/scripts/pgha-etcd-leader-away.sh), so that
 * losing this host does not lose both at once. Undefined elsewhere.
 */
export function etcdLeaderAwayCommand(plan: ClusterPlan, node: NodePlan): string | undefined {
  if (!node.roles.has("postgres") || !plan.etcd.members.some((m) => m.node === node.name)) return undefined;
  const clientUrl = (name: string) => plan.etcd.members.find((m) => m.name === name)?.clientUrl ?? name;
  return [NODE_PATHS.etcdLeaderAway, `https://127.0.0.1:${PORTS.etcdClient}`, ...etcdLeaderCandidates(plan, node).map(clientUrl)].join(" ");
}
