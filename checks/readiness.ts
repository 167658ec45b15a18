/**
 * What "ready" means, for the readiness gate of `pulumi up`, every step of a
 * rolling change (ops/) and the lab (lab/), through a NodeTransport only.
 */
import { checkBackups } from "./backup";
import { checkMonitoring } from "./monitoring";
import { nodesWithRole } from "../plan";
import { clusterView, etcdEndpoints, nodeByIp, observers, postgresNodes, sqlFromClient, sqlOnNode, type ClusterAccess, type MemberView } from "./cluster";

export interface Check {
  id: string;
  ok: boolean;
  detail: string;
}

export interface Topology {
  leader?: string;
  /** The sync standby when there is exactly the expected number of them and that number is one. */
  syncStandby?: string;
  syncStandbys: string[];
  replicas: string[];
  members: MemberView[];
  problems: string[];
}

/**
 * Exactly one running Leader, exactly `expectedSync` streaming Sync Standbys
 * (one unless told: the plan's synchronous_node_count), every other member a
 * streaming Replica.
 */
export function judgeTopology(members: MemberView[], expectedMembers: string[], expectedSync = 1): Topology {
  const problems: string[] = [];
  const leaders = members.filter((m) => m.role === "leader");
  const syncs = members.filter((m) => m.role === "sync_standby");
  const others = members.filter((m) => m.role !== "leader" && m.role !== "sync_standby");
  if (leaders.length !== 1) problems.push(`${leaders.length} leaders (${leaders.map((m) => m.name).join(", ") || "none"})`);
  else if (leaders[0]?.state !== "running") problems.push(`leader ${leaders[0]?.name} is ${leaders[0]?.state}`);
  if (syncs.length !== expectedSync)
    problems.push(`${syncs.length} sync standbys (${syncs.map((m) => m.name).join(", ") || "none"})${expectedSync !== 1 ? `, expected ${expectedSync}` : ""}`);
  for (const m of [...syncs, ...others]) if (m.state !== "streaming") problems.push(`${m.name} (${m.role}) is ${m.state}, not streaming`);
  for (const m of others) if (m.role !== "replica") problems.push(`${m.name} has role ${m.role}`);
  const missing = expectedMembers.filter((name) => !members.some((m) => m.name === name));
  if (missing.length) problems.push(`missing members: ${missing.join(", ")}`);
  const timelines = new Set(members.map((m) => m.timeline).filter((t) => t !== undefined));
  if (timelines.size > 1) problems.push(`members on different timelines: ${members.map((m) => `${m.name}=${m.timeline}`).join(" ")}`);
  return {
    leader: leaders[0]?.name,
    syncStandby: syncs.length === 1 && expectedSync === 1 ? syncs[0]?.name : undefined,
    syncStandbys: syncs.map((m) => m.name),
    replicas: others.map((m) => m.name),
    members,
    problems,
  };
}

/** pg_stat_replication on the leader: one 'sync' row per sync standby, every other member 'async', all streaming. */
export async function checkReplication(access: ClusterAccess, topology: Topology): Promise<Check> {
  if (!topology.leader) return { id: "replication", ok: false, detail: "no leader" };
  const rows = await sqlOnNode(access, topology.leader, "select application_name, state, sync_state from pg_stat_replication order by 1");
  const problems: string[] = [];
  const sync = rows.filter((r) => r[2] === "sync" || r[2] === "quorum");
  const syncNames = sync.map((r) => r[0]).sort();
  if (sync.length !== topology.syncStandbys.length) problems.push(`${sync.length} rows with sync_state sync`);
  else if (JSON.stringify(syncNames) !== JSON.stringify([...topology.syncStandbys].sort()))
    problems.push(`sync_state=sync is ${syncNames.join(",")}, Patroni says ${topology.syncStandbys.join(",")}`);
  const expected = [...topology.syncStandbys, ...topology.replicas].sort();
  const got = rows.map((r) => r[0]).sort();
  if (JSON.stringify(expected) !== JSON.stringify(got)) problems.push(`walsenders for ${got.join(",")}, expected ${expected.join(",")}`);
  for (const r of rows) if (r[1] !== "streaming") problems.push(`${r[0]} is ${r[1]}`);
  return { id: "replication", ok: problems.length === 0, detail: problems.join("; ") || rows.map((r) => `${r[0]}=${r[2]}`).join(" ") };
}

/**
 * Replication lag of every member, in bytes of WAL the leader has written and
 * the member has not flushed: each must be within `maxLagBytes` (Patroni's
 * maximum_lag_on_failover, beyond which the member could not be promoted).
 */
export async function checkLag(access: ClusterAccess, topology: Topology, maxLagBytes: number): Promise<Check> {
  if (!topology.leader) return { id: "lag", ok: false, detail: "no leader" };
  const rows = await sqlOnNode(
    access,
    topology.leader,
    "select application_name, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn), -1)::bigint from pg_stat_replication order by 1",
  );
  const lag = new Map(rows.map((r) => [r[0], Number(r[1])]));
  const problems: string[] = [];
  for (const member of [...topology.syncStandbys, ...topology.replicas]) {
    const bytes = lag.get(member);
    if (bytes === undefined) problems.push(`${member}: no walsender`);
    else if (bytes < 0) problems.push(`${member}: nothing flushed yet`);
    else if (bytes > maxLagBytes) problems.push(`${member}: ${bytes} bytes behind (maximum_lag_on_failover ${maxLagBytes})`);
  }
  return { id: "lag", ok: problems.length === 0, detail: problems.join("; ") || [...lag].map(([name, bytes]) => `${name}=${bytes} B`).join(" ") };
}

export async function checkEtcd(access: ClusterAccess): Promise<Check> {
  const observer = observers(access)[0];
  if (!observer) return { id: "etcd-health", ok: false, detail: "no connected postgres node to run etcdctl on" };
  const endpoints = await etcdEndpoints(access, observer);
  const unhealthy = endpoints.filter((e) => !e.healthy);
  const leaders = endpoints.filter((e) => e.isLeader);
  const ok = unhealthy.length === 0 && leaders.length === 1;
  const detail = ok
    ? `${endpoints.length} members healthy over mTLS; raft leader ${leaders[0]?.member}`
    : [...unhealthy.map((e) => `${e.member}: ${e.error ?? "unhealthy"}`), leaders.length !== 1 ? `${leaders.length} raft leaders` : ""].filter(Boolean).join("; ");
  return { id: "etcd-health", ok, detail };
}

/** Which member answers behind a HAProxy port, as one probe sees it. */
interface PortAnswer {
  ok: boolean;
  /** The answering member (by address or certificate). */
  server?: string;
  /** pg_is_in_recovery() (SQL probe only). */
  recovery?: boolean;
  detail: string;
}

/** SQL as the superuser through the port: pg_is_in_recovery(), inet_server_addr() and TLS. */
async function sqlPortProbe(access: ClusterAccess, host: string, port: number): Promise<PortAnswer> {
  const result = await sqlFromClient(access, host, port, "select pg_is_in_recovery(), host(inet_server_addr()), (select ssl from pg_stat_ssl where pid = pg_backend_pid())");
  if (result.code !== 0) return { ok: false, detail: result.stderr.trim().split("\n")[0] ?? "" };
  const [recovery, ip, ssl] = result.stdout.trim().split("\t");
  const server = nodeByIp(access.plan, ip ?? "")?.name ?? ip;
  return { ok: ssl === "t", server, recovery: recovery === "t", detail: `${server} (in recovery ${recovery}, ssl ${ssl})` };
}

/** The member whose PostgreSQL server certificate a subject line names (`CN = <node> postgres-server`). */
export function memberOfCertificate(plan: ClusterAccess["plan"], subject: string): string | undefined {
  const cn = /CN\s*=\s*([^,\n/]+)/.exec(subject)?.[1]?.trim();
  const cert = plan.certificates.find((c) => c.kind === "postgres-server" && c.commonName === cn);
  return cert?.node;
}

/**
 * No password: TLS through the port (PostgreSQL's SSLRequest), the chain
 * verified against the cluster CA, and the member named by the server
 * certificate that answered. Runs on `from` (on AWS, the HAProxy node itself).
 */
async function certificatePortProbe(access: ClusterAccess, from: string, host: string, port: number): Promise<PortAnswer> {
  const script = 'openssl s_client -starttls postgres -connect "$1" -CAfile "$2" -verify_return_error </dev/null 2>/dev/null | openssl x509 -noout -subject';
  const result = await access.transport.run(from, ["sh", "-c", script, "sh", `${host}:${port}`, access.clientFiles.caCert], { timeoutMs: 15_000 });
  const subject = result.stdout.trim();
  if (result.code !== 0 || !subject) return { ok: false, detail: `no verified TLS answer (exit ${result.code}) ${result.stderr.trim().split("\n")[0] ?? ""}`.trim() };
  const server = memberOfCertificate(access.plan, subject);
  return { ok: server !== undefined, server, detail: server ? `${server} (certificate verified)` : `unknown certificate ${subject}` };
}

/**
 * The replicas an HAProxy in `region` must send reads to: those of its own
 * region while there are any, else every replica (cloud-init/haproxy.ts).
 */
export function readReplicasFor(plan: ClusterAccess["plan"], region: string, replicas: string[]): string[] {
  const local = replicas.filter((name) => plan.nodes.find((n) => n.name === name)?.region === region);
  return local.length ? local : replicas;
}

/** Every HAProxy port from the application side: primary, a replica of its own region first, sync standby. */
export async function checkHaproxy(access: ClusterAccess, topology: Topology, haproxies?: string[]): Promise<Check[]> {
  const { plan } = access;
  const checks: Check[] = [];
  const standbys = topology.syncStandbys.length ? topology.syncStandbys : topology.syncStandby ? [topology.syncStandby] : [];
  const ports = (region: string) => [
    { port: plan.config.haproxy.primaryPort, role: "primary", want: (server: string | undefined, recovery?: boolean) => recovery !== true && server === topology.leader },
    {
      port: plan.config.haproxy.replicaPort,
      role: "replica",
      want: (server: string | undefined, recovery?: boolean) => recovery !== false && readReplicasFor(plan, region, [...standbys, ...topology.replicas]).includes(server ?? ""),
    },
    {
      port: plan.config.haproxy.synchronousPort,
      role: "sync standby",
      want: (server: string | undefined, recovery?: boolean) => recovery !== false && standbys.includes(server ?? ""),
    },
  ];
  const nodes = nodesWithRole(plan, "haproxy").filter((n) => !haproxies || haproxies.includes(n.name));
  await Promise.all(
    nodes.flatMap((node) =>
      ports(node.region).map(async ({ port, role, want }) => {
        const answer =
          access.haproxyProbe === "certificate"
            ? await certificatePortProbe(access, access.clientFor?.(node.name) ?? access.client, node.privateIp, port)
            : await sqlPortProbe(access, node.privateIp, port);
        const ok = answer.ok && want(answer.server, answer.recovery);
        checks.push({ id: `haproxy ${node.name}:${port}`, ok, detail: answer.server ? `${role} → ${answer.detail}` : answer.detail });
      }),
    ),
  );
  return checks.sort((a, b) => a.id.localeCompare(b.id));
}

export interface Verification {
  ok: boolean;
  topology: Topology;
  checks: Check[];
}

/**
 * What "the cluster works" means, for the readiness gate of `pulumi up` and
 * for every step of a rolling change (lab and AWS alike, through the
 * transport only): one running leader; the plan's number of sync standbys;
 * every other member a streaming replica; pg_stat_replication agreeing;
 * every member within maximum_lag_on_failover; every etcd member healthy
 * with one raft leader; every HAProxy port answered by the right member;
 * every region's Prometheus scraping every target, its Alertmanagers in one
 * cluster (checks/monitoring.ts); WAL archived to every backup repository,
 * and each repository's newest backup reported (checks/backup.ts).
 * The topology comes from Patroni's REST API (/cluster) of any connected
 * member. Each failing check names what failed and where. `expect`
 * overrides the plan's sync standby count and maximum lag (a rolling change
 * judges the cluster by the settings it is running with until they change).
 */
export async function verifyReadiness(
  access: ClusterAccess,
  options: { haproxies?: string[]; expect?: { syncStandbys?: number; maxLagBytes?: number } } = {},
): Promise<Verification> {
  const { patroni } = access.plan.config;
  const expectedSync = options.expect?.syncStandbys ?? (patroni.synchronousMode ? patroni.synchronousNodeCount : 0);
  const maxLag = options.expect?.maxLagBytes ?? patroni.maximumLagOnFailover;
  const checks: Check[] = [];
  let members: MemberView[] = [];
  try {
    members = (await clusterView(access)).members;
  } catch (error) {
    checks.push({ id: "patroni /cluster", ok: false, detail: (error as Error).message });
  }
  const topology = judgeTopology(
    members,
    postgresNodes(access.plan).map((n) => n.name),
    expectedSync,
  );
  checks.push({
    id: "topology",
    ok: topology.problems.length === 0 && members.length > 0,
    detail: topology.problems.join("; ") || `leader ${topology.leader}, sync ${topology.syncStandbys.join(", ") || "-"}, replicas ${topology.replicas.join(", ") || "-"}`,
  });
  if (topology.leader) {
    checks.push(await checkReplication(access, topology).catch((e: unknown) => ({ id: "replication", ok: false, detail: (e as Error).message })));
    checks.push(await checkLag(access, topology, maxLag).catch((e: unknown) => ({ id: "lag", ok: false, detail: (e as Error).message })));
  }
  checks.push(await checkEtcd(access).catch((e: unknown) => ({ id: "etcd-health", ok: false, detail: (e as Error).message })));
  checks.push(...(await checkHaproxy(access, topology, options.haproxies).catch((e: unknown) => [{ id: "haproxy", ok: false, detail: (e as Error).message }])));
  checks.push(...(await checkMonitoring(access)));
  checks.push(...(await checkBackups(access, topology.leader).catch((e: unknown) => [{ id: "archiving", ok: false, detail: (e as Error).message }])));
  return { ok: checks.every((c) => c.ok), topology, checks };
}
