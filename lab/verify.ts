/**
 * The lab's own status (`npm run lab -- status`, the drills' baseline): the
 * topology as patronictl lists it, the shared checks of checks/readiness.ts
 * and TLS enforcement probed from the client namespace; and the cheaper
 * health probe the drills poll.
 */
import { checkBackups } from "../checks/backup";
import { checkMonitoring } from "../checks/monitoring";
import { PORTS } from "../plan";
import { clusterView, observers, patroniRest, patronictlList, postgresNodes, sqlFromClient, type ClusterAccess, type MemberView } from "../checks/cluster";
import { checkEtcd, checkHaproxy, checkReplication, judgeTopology, type Check, type Topology, type Verification } from "../checks/readiness";

interface CurlProbe {
  exit: number;
  http: string;
  error: string;
}

async function curlFromClient(access: ClusterAccess, args: string[]): Promise<CurlProbe> {
  const result = await access.transport.run(access.client, ["curl", "-sS", "-m", "4", "-o", "/dev/null", "-w", "%{http_code}", ...args], { timeoutMs: 10_000 });
  return { exit: result.code, http: result.stdout.trim(), error: result.stderr.trim().split("\n")[0] ?? "" };
}

/**
 * Refused = the server ended the exchange: TLS alert or reset (curl 35, 55,
 * 56, 58), empty reply (52), or an HTTP 400/401/403. A timeout (28) or an
 * unreachable host is inconclusive and counts as a failure of the check.
 */
function refused(probe: CurlProbe): boolean {
  return [35, 52, 55, 56, 58].includes(probe.exit) || ["400", "401", "403"].includes(probe.http);
}

/**
 * TLS enforcement from the client namespace: plain text and a certificate
 * from another CA are refused by etcd (client and peer ports), the Patroni
 * REST API (POST /restart, harmless even if accepted: restart_pending only)
 * and PostgreSQL (no TLS → pg_hba reject). Positive controls run on a node
 * with its own certificates.
 */
export async function checkTls(access: ClusterAccess): Promise<Check[]> {
  const { plan, clientFiles } = access;
  const checks: Check[] = [];
  const foreign = ["--cacert", clientFiles.caCert, "--cert", clientFiles.foreignCert, "--key", clientFiles.foreignKey];
  const connected = (node: string): boolean => !access.isolated.has(node);
  for (const etcdMember of plan.etcd.members.filter((m) => connected(m.node))) {
    const host = etcdMember.clientUrl.replace(/^https:\/\//, "");
    const peer = etcdMember.peerUrl.replace(/^https:\/\//, "");
    const probes: [string, string[]][] = [
      [`etcd ${host} plain http`, [`http://${host}/health`]],
      [`etcd ${host} TLS without client cert`, ["--cacert", clientFiles.caCert, `https://${host}/health`]],
      [`etcd ${host} foreign-CA client cert`, [...foreign, `https://${host}/health`]],
      [`etcd peer ${peer} without client cert`, ["--cacert", clientFiles.caCert, `https://${peer}/members`]],
      [`etcd peer ${peer} foreign-CA client cert`, [...foreign, `https://${peer}/members`]],
    ];
    for (const [id, args] of probes) {
      const probe = await curlFromClient(access, args);
      checks.push({ id: `tls: ${id} refused`, ok: refused(probe), detail: `curl exit ${probe.exit}, HTTP ${probe.http} ${probe.error}` });
    }
  }
  for (const pgNode of postgresNodes(plan).filter((n) => connected(n.name))) {
    const rest = `${pgNode.privateIp}:${PORTS.patroniRest}`;
    const body = ["-X", "POST", "-H", "Content-Type: application/json", "-d", '{"restart_pending": true}'];
    const probes: [string, string[]][] = [
      [`patroni ${rest} POST /restart plain http`, [...body, `http://${rest}/restart`]],
      [`patroni ${rest} POST /restart without client cert`, ["--cacert", clientFiles.caCert, ...body, `https://${rest}/restart`]],
      [`patroni ${rest} POST /restart foreign-CA client cert`, [...foreign, ...body, `https://${rest}/restart`]],
    ];
    for (const [id, args] of probes) {
      const probe = await curlFromClient(access, args);
      checks.push({ id: `tls: ${id} refused`, ok: refused(probe), detail: `curl exit ${probe.exit}, HTTP ${probe.http} ${probe.error}` });
    }
    const plain = await sqlFromClient(access, pgNode.privateIp, PORTS.postgres, "select 1", { sslmode: "disable" });
    checks.push({
      id: `tls: postgres ${pgNode.privateIp}:${PORTS.postgres} without TLS refused`,
      ok: plain.code !== 0,
      detail: plain.code !== 0 ? (plain.stderr.trim().split("\n")[0] ?? "") : "plain-text connection accepted",
    });
    const verified = await sqlFromClient(access, pgNode.privateIp, PORTS.postgres, "select 1", { sslmode: "verify-ca" });
    checks.push({
      id: `tls: postgres ${pgNode.privateIp}:${PORTS.postgres} certificate chains to the cluster CA`,
      ok: verified.code === 0,
      detail: verified.code === 0 ? "verify-ca ok" : (verified.stderr.trim().split("\n")[0] ?? ""),
    });
    const positive = await patroniRest(access, pgNode.name, "/patroni");
    checks.push({ id: `tls: patroni REST with the cluster's client cert accepted (control)`, ok: positive.status === 200, detail: `HTTP ${positive.status}` });
  }
  return checks;
}

/** The full `status`: topology (patronictl), replication, etcd, HAProxy routing, monitoring, archiving and backups, and TLS enforcement. */
export async function verifyCluster(access: ClusterAccess, options: { tls?: boolean; haproxies?: string[] } = {}): Promise<Verification> {
  const checks: Check[] = [];
  const expected = postgresNodes(access.plan).map((n) => n.name);
  let members: MemberView[] = [];
  const observer = observers(access)[0];
  try {
    members = observer ? await patronictlList(access, observer) : [];
  } catch (error) {
    checks.push({ id: "patronictl list", ok: false, detail: (error as Error).message });
  }
  const topology = judgeTopology(members, expected);
  checks.push({
    id: "topology (patronictl list)",
    ok: topology.problems.length === 0 && members.length > 0,
    detail: topology.problems.join("; ") || `Leader ${topology.leader}, Sync Standby ${topology.syncStandby}, Replica ${topology.replicas.join(", ")}`,
  });
  if (topology.leader) checks.push(await checkReplication(access, topology).catch((e: unknown) => ({ id: "replication", ok: false, detail: (e as Error).message })));
  checks.push(await checkEtcd(access).catch((e: unknown) => ({ id: "etcd-health", ok: false, detail: (e as Error).message })));
  checks.push(...(await checkHaproxy(access, topology, options.haproxies)));
  checks.push(...(await checkMonitoring(access)));
  checks.push(...(await checkBackups(access, topology.leader).catch((e: unknown) => [{ id: "archiving", ok: false, detail: (e as Error).message }])));
  if (options.tls !== false) checks.push(...(await checkTls(access)));
  return { ok: checks.every((c) => c.ok), topology, checks };
}

/** A cheaper health probe for polling: REST /cluster topology plus pg_stat_replication. */
export async function quickHealth(access: ClusterAccess): Promise<{ ok: boolean; topology: Topology; detail: string }> {
  const view = await clusterView(access);
  const topology = judgeTopology(
    view.members,
    postgresNodes(access.plan).map((n) => n.name),
  );
  if (topology.problems.length) return { ok: false, topology, detail: topology.problems.join("; ") };
  const replication = await checkReplication(access, topology);
  return { ok: replication.ok, topology, detail: replication.detail };
}
