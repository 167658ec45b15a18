import { certificateFor, NODE_PATHS, PORTS, type ClusterPlan, type NodePlan } from "../plan";
import { emitHaproxyConfig, type HaproxyDirective, type HaproxySection } from "./haproxy-emitter";
import { patroniMembers } from "./patroni";

export interface HaproxyListener {
  name: string;
  port: number;
  /** The Patroni REST API path whose 200 puts a member in this listener's rotation. */
  check: string;
  balance: string;
  /** Members outside the HAProxy's own region serve only when no member of its region can (`backup`). */
  localFirst: boolean;
}

/** The three PostgreSQL listeners and the Patroni endpoint each one health-checks. */
export function haproxyListeners(plan: ClusterPlan): HaproxyListener[] {
  const { haproxy } = plan.config;
  return [
    // Writes: only the member holding the leader lock answers 200 on /primary.
    { name: "pg_primary", port: haproxy.primaryPort, check: "/primary", balance: "first", localFirst: false },
    // Reads from a streaming replica within replicaMaxLagBytes of replay (Patroni compares its replay position with
    // the leader's last position in etcd), in this HAProxy's region while one there qualifies, else in any region.
    { name: "pg_replicas", port: haproxy.replicaPort, check: `/replica?lag=${haproxy.replicaMaxLagBytes}`, balance: "roundrobin", localFirst: true },
    // Reads from the synchronous standby. Under synchronous_commit=on it has flushed every acknowledged commit,
    // not necessarily applied it: a read here right after a commit may miss it. A session that needs to read its
    // own writes here commits with `SET synchronous_commit = remote_apply` (README "Endpoints").
    { name: "pg_sync_replicas", port: haproxy.synchronousPort, check: "/synchronous", balance: "roundrobin", localFirst: false },
  ];
}

export function haproxySections(plan: ClusterPlan, node: NodePlan): HaproxySection[] {
  if (!node.roles.has("haproxy")) throw new Error(`${node.name} has no haproxy role`);
  const { haproxy } = plan.config;
  const client = certificateFor(plan.certificates, node.name, "haproxy-check");
  if (!client.bundlePath) throw new Error("internal: the HAProxy check certificate must be planned as a bundle");
  const members = patroniMembers(plan);
  const metrics = certificateFor(plan.certificates, node.name, "metrics");
  const checkTiming: HaproxyDirective = [
    "default-server",
    "inter",
    `${haproxy.checkIntervalMs}ms`,
    "fastinter",
    `${haproxy.checkFastIntervalMs}ms`,
    "downinter",
    `${haproxy.checkFastIntervalMs}ms`,
    "fall",
    haproxy.checkFall,
    "rise",
    haproxy.checkRise,
    // A member that stops being primary must not keep its sessions: clients
    // reconnect and land on the new primary.
    "on-marked-down",
    "shutdown-sessions",
  ];
  const listeners = haproxyListeners(plan).map((listener): HaproxySection => ({
    header: ["listen", listener.name],
    directives: [
      ["bind", `*:${listener.port}`],
      ["balance", listener.balance],
      ["option", "httpchk"],
      // OPTIONS: Patroni answers with the status line only. With GET it writes
      // a JSON body that HAProxy cuts off with a reset, and Patroni logs a
      // traceback for every check.
      ["http-check", "send", "meth", "OPTIONS", "uri", listener.check],
      ["http-check", "expect", "status", "200"],
      checkTiming,
      // With no member of this region in rotation, every other region's member serves, not only the first.
      ...(listener.localFirst ? [["option", "allbackups"] as HaproxyDirective] : []),
      // Traffic is plain TCP (PostgreSQL negotiates its own TLS end to end);
      // the check goes to the REST API over TLS, verifies the member's
      // certificate and name, and presents HAProxy's client certificate.
      ...members.map((member): HaproxyDirective => [
        "server",
        member.name,
        `${member.privateIp}:${PORTS.postgres}`,
        "check",
        "port",
        PORTS.patroniRest,
        "check-ssl",
        "verify",
        "required",
        "ca-file",
        NODE_PATHS.caCert,
        "verifyhost",
        member.name,
        "crt",
        client.bundlePath as string,
        ...(listener.localFirst && member.region !== node.region ? ["backup"] : []),
      ]),
    ],
  }));
  return [
    {
      header: ["global"],
      directives: [
        ["maxconn", haproxy.maxConnections],
        ["log", "stdout", "format", "raw", "local0"],
        ["user", "haproxy"],
        ["group", "haproxy"],
        ["stats", "socket", "/run/haproxy/admin.sock", "mode", "660", "level", "admin"],
        ["ssl-default-server-options", "ssl-min-ver", "TLSv1.2"],
      ],
    },
    {
      header: ["defaults"],
      directives: [
        ["log", "global"],
        ["mode", "tcp"],
        ["option", "tcplog"],
        ["option", "dontlognull"],
        // No retries. A retried connection waits HAProxy's 1 s turn-around
        // per retry, and during a switchover it was retried against the
        // demoted primary (still marked up until its checks fail): the
        // client hung exactly 2 s with `retries 2`. Failing at once lets the
        // client reconnect and land on the new primary (lab, drill 3:
        // 2.1 s median, 2.1–4.1 → 1.7 s, 1.5–2.2 on the LAN; 4.5 s, 2.2–5.0
        // → 2.8 s, 2.2–3.9 over the WAN).
        ["retries", 0],
        ["timeout", "connect", "4s"],
        ["timeout", "client", "30m"],
        ["timeout", "server", "30m"],
        ["timeout", "check", `${haproxy.checkTimeoutMs}ms`],
      ],
    },
    {
      header: ["listen", "stats"],
      directives: [
        ["bind", `*:${haproxy.statsPort}`],
        ["mode", "http"],
        ["option", "httplog"],
        ["stats", "enable"],
        ["stats", "uri", "/"],
        ["stats", "refresh", "10s"],
      ],
    },
    {
      // HAProxy's built-in Prometheus exporter, behind TLS and a cluster client certificate like every metrics
      // endpoint (cloud-init/monitoring.ts). HAProxy reads the key as root at start-up, before it drops privileges.
      header: ["frontend", "metrics"],
      directives: [
        [
          "bind",
          `*:${PORTS.haproxyMetrics}`,
          "ssl",
          "crt",
          metrics.bundlePath ?? "(no bundle planned)",
          "ca-file",
          NODE_PATHS.caCert,
          "verify",
          "required",
          "ssl-min-ver",
          "TLSv1.2",
        ],
        ["mode", "http"],
        ["no", "log"],
        ["http-request", "use-service", "prometheus-exporter", "if", "{", "path", "/metrics", "}"],
        ["http-request", "deny"],
      ],
    },
    ...listeners,
  ];
}

export function renderHaproxyConfig(plan: ClusterPlan, node: NodePlan): string {
  return emitHaproxyConfig(haproxySections(plan, node), [`HAProxy for ${plan.config.patroni.scope} on ${node.name}; rendered by pgha, do not edit on the node.`]);
}
