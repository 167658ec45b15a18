import { certificateFor, NODE_PATHS, PORTS, type ClusterPlan, type NodePlan } from "../plan";
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
