import { certificateFor, NODE_PATHS, nodesWithRole, type CertificateKind, type ClusterPlan, type NodePlan } from "../plan";
import { parseEnvironmentFile } from "./env-file";
import type { NodeTransport, RunResult } from "./transport";

/**
 * Everything verification and drills ask the cluster, through a
 * NodeTransport only (so it runs against the lab or, later, a real stack).
 */
export interface ClusterAccess {
  plan: ClusterPlan;
  transport: NodeTransport;
  /** Where application-side commands run (the lab's client namespace). */
  client: string;
  superuserPassword: string;
  /** Files on the client: the cluster CA and a client certificate from a foreign CA. */
  clientFiles: { caCert: string; foreignCert: string; foreignKey: string };
  /** Nodes currently cut off: never chosen as observers. */
  isolated: Set<string>;
  /**
   * How HAProxy's ports are probed: "sql" (default) logs in as the superuser
   * from `client`; "certificate" needs no password: it reads which member's
   * PostgreSQL server certificate answers behind each port (a real stack,
   * where no node outside the database tier holds the superuser password).
   */
  haproxyProbe?: "sql" | "certificate";
  /** The node to probe a given HAProxy node from (default `client`); on AWS the HAProxy node itself. */
  clientFor?: (haproxyNode: string) => string;
  /**
   * Where `pgha-fetch-secrets` on the nodes gets the values from: `args` are
   * added to its command line (none on AWS: SSM; the lab: `--from-dir` of a
   * staged parameter directory). Absent: the rollout does not compare node
   * secrets (a lab context with nothing staged).
   */
  secretSource?: { args: string[] };
}

export interface MemberView {
  name: string;
  role: string;
  state: string;
  host: string;
  timeline?: number;
  lag?: number | string;
  /** Patroni reports a PostgreSQL restart pending (a parameter that needs one changed). */
  pendingRestart?: boolean;
}

export function postgresNodes(plan: ClusterPlan): NodePlan[] {
  return nodesWithRole(plan, "postgres");
}

export function nodeByIp(plan: ClusterPlan, ip: string): NodePlan | undefined {
  return plan.nodes.find((n) => n.privateIp === ip);
}

/** Connected postgres nodes, preferring `prefer`. */
export function observers(access: ClusterAccess, prefer?: string): string[] {
  const names = postgresNodes(access.plan)
    .map((n) => n.name)
    .filter((n) => !access.isolated.has(n));
  return prefer && names.includes(prefer) ? [prefer, ...names.filter((n) => n !== prefer)] : names;
}

const envCache = new Map<string, Record<string, string>>();

async function nodeEnvFile(access: ClusterAccess, node: string, file: string): Promise<Record<string, string>> {
  const key = `${node}:${file}`;
  const cached = envCache.get(key);
  if (cached) return cached;
  const env = parseEnvironmentFile(await access.transport.readFile(node, file));
  envCache.set(key, env);
  return env;
}

export function clearEnvCache(): void {
  envCache.clear();
}

/**
 * patronictl on a node, as postgres, with the unit's EnvironmentFile (REST
 * API password for unsafe calls), which the transport reads on the node.
 */
export async function patronictl(access: ClusterAccess, node: string, args: string[], timeoutMs = 30_000, input?: string): Promise<RunResult> {
  return access.transport.run(node, ["patronictl", "-c", NODE_PATHS.patroniConfig, ...args], { user: "postgres", envFiles: [NODE_PATHS.patroniEnv], timeoutMs, input });
}

function normaliseRole(role: string): string {
  const r = role.toLowerCase().replace(/[\s-]+/g, "_");
  if (r === "master" || r === "primary") return "leader";
  if (r === "sync_standby" || r === "synchronous_standby") return "sync_standby";
  return r;
}

/** `patronictl list -f json`, normalised. */
export async function patronictlList(access: ClusterAccess, node: string): Promise<MemberView[]> {
  const result = await patronictl(access, node, ["list", "-f", "json"]);
  if (result.code !== 0) throw new Error(`patronictl list on ${node} failed: ${result.stderr.trim() || result.stdout.trim()}`);
  const rows = JSON.parse(result.stdout) as Record<string, unknown>[];
  return rows.map((row) => ({
    name: String(row.Member),
    role: normaliseRole(String(row.Role)),
    state: String(row.State),
    host: String(row.Host),
    timeline: typeof row.TL === "number" ? row.TL : undefined,
    lag: (row["Lag in MB"] ?? row["Receive Lag in MB"]) as number | string | undefined,
    pendingRestart: !!row["Pending restart"],
  }));
}

/** GET on the local Patroni REST API with the node's own certificate (verify_client: required). */
export async function patroniRest(access: ClusterAccess, node: string, urlPath: string, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  return httpsOnNode(access, node, "patroni-rest", `https://127.0.0.1:8008${urlPath}`, timeoutMs);
}

/** GET `url` with curl on `node`, as the owner of the node's `kind` certificate, presenting it; status 0 when no answer. */
export async function httpsOnNode(access: ClusterAccess, node: string, kind: CertificateKind, url: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  const cert = certificateFor(access.plan.certificates, node, kind);
  const result = await access.transport.run(
    node,
    [
      "curl",
      "-sS",
      "-m",
      String(Math.ceil(timeoutMs / 1000)),
      "-o",
      "-",
      "-w",
      "\n%{http_code}",
      "--cacert",
      NODE_PATHS.caCert,
      "--cert",
      cert.certPath,
      "--key",
      cert.keyPath,
      url,
    ],
    { user: cert.owner, timeoutMs: timeoutMs + 2000 },
  );
  const lines = result.stdout.split("\n");
  const status = Number(lines.pop());
  return { status: Number.isFinite(status) ? status : 0, body: lines.join("\n") };
}

/** The cluster as one connected member's Patroni sees it (REST /cluster): quick enough to poll. */
export async function clusterView(access: ClusterAccess, prefer?: string): Promise<{ observer: string; members: MemberView[] }> {
  let lastError = "";
  for (const node of observers(access, prefer)) {
    try {
      const reply = await patroniRest(access, node, "/cluster", 3000);
      if (reply.status !== 200) {
        lastError = `${node}: HTTP ${reply.status}`;
        continue;
      }
      const body = JSON.parse(reply.body) as { members?: Record<string, unknown>[] };
      const members = (body.members ?? []).map((m) => ({
        name: String(m.name),
        role: normaliseRole(String(m.role)),
        state: String(m.state),
        host: String(m.host),
        timeline: typeof m.timeline === "number" ? m.timeline : undefined,
        lag: m.lag as number | string | undefined,
        pendingRestart: m.pending_restart === true,
      }));
      return { observer: node, members };
    } catch (error) {
      lastError = `${node}: ${(error as Error).message}`;
    }
  }
  throw new Error(`no connected member answered /cluster (${lastError})`);
}

export function leaderOf(members: MemberView[]): MemberView | undefined {
  const leaders = members.filter((m) => m.role === "leader" && m.state === "running");
  return leaders.length === 1 ? leaders[0] : undefined;
}

/** SQL on a node over its local socket as postgres (peer auth). Rows as arrays of fields. */
export async function sqlOnNode(access: ClusterAccess, node: string, sql: string, timeoutMs = 15_000): Promise<string[][]> {
  const result = await access.transport.run(
    node,
    ["psql", "-h", NODE_PATHS.postgresSocketDir, "-U", "postgres", "-d", "postgres", "-AtqX", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
    { user: "postgres", timeoutMs },
  );
  if (result.code !== 0) throw new Error(`psql on ${node} failed: ${result.stderr.trim()}`);
  return result.stdout
    .split("\n")
    .filter((line) => line.length > 0)
    .map((line) => line.split("\t"));
}

/** SQL from the application side over TCP as the superuser (TLS). */
export async function sqlFromClient(access: ClusterAccess, host: string, port: number, sql: string, options: { sslmode?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const sslmode = options.sslmode ?? "require";
  const conninfo = `host=${host} port=${port} user=postgres dbname=postgres sslmode=${sslmode} connect_timeout=3 application_name=pgha-lab${sslmode === "verify-ca" ? ` sslrootcert=${access.clientFiles.caCert}` : ""}`;
  return access.transport.run(access.client, ["psql", conninfo, "-AtqX", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql], {
    env: { PGPASSWORD: access.superuserPassword, PGCONNECT_TIMEOUT: "3" },
    timeoutMs: options.timeoutMs ?? 15_000,
  });
}

/** etcdctl on a node with its rendered environment (/etc/pgha/etcdctl.env), as the owner of the client key. */
export async function etcdctl(access: ClusterAccess, node: string, args: string[], options: { endpoint?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const env = { ...(await nodeEnvFile(access, node, NODE_PATHS.etcdctlEnv)) };
  const owner = access.plan.certificates.find((c) => c.node === node && c.certPath === env.ETCDCTL_CERT)?.owner ?? "root";
  // etcdctl refuses a flag that an ETCDCTL_* variable also sets.
  const extra: string[] = [];
  if (options.endpoint) {
    delete env.ETCDCTL_ENDPOINTS;
    extra.push(`--endpoints=${options.endpoint}`);
  }
  return access.transport.run(node, ["etcdctl", ...extra, ...args], { user: owner, env, timeoutMs: options.timeoutMs ?? 15_000 });
}

export interface EtcdEndpoint {
  member: string;
  endpoint: string;
  healthy: boolean;
  isLeader?: boolean;
  error?: string;
}

/** `etcdctl endpoint health` and `endpoint status` per member, over mTLS, from `observer`. */
export async function etcdEndpoints(access: ClusterAccess, observer: string): Promise<EtcdEndpoint[]> {
  const out: EtcdEndpoint[] = [];
  for (const member of access.plan.etcd.members) {
    const health = await etcdctl(access, observer, ["endpoint", "health", "-w", "json", "--command-timeout=3s", "--dial-timeout=2s"], { endpoint: member.clientUrl });
    let healthy = false;
    let error: string | undefined;
    try {
      const rows = JSON.parse(health.stdout) as { health: boolean; error?: string }[];
      healthy = rows.length === 1 && rows[0]?.health;
      error = rows[0]?.error;
    } catch {
      error = (health.stderr || health.stdout).trim().split("\n").at(-1);
    }
    let isLeader: boolean | undefined;
    if (healthy) {
      const status = await etcdctl(access, observer, ["endpoint", "status", "-w", "json", "--command-timeout=3s", "--dial-timeout=2s"], { endpoint: member.clientUrl });
      // Member ids are 64-bit: compare them as text, JSON.parse would round them.
      const id = /"member_id":(\d+)/.exec(status.stdout)?.[1];
      const leader = /"leader":(\d+)/.exec(status.stdout)?.[1];
      isLeader = id !== undefined && leader !== undefined ? id === leader : undefined;
    }
    out.push({ member: member.name, endpoint: member.clientUrl, healthy, isLeader, error });
  }
  return out;
}
