import { load } from "js-yaml";
import { buildClusterPlan, certificateFor, NODE_PATHS, nodesWithRole, type ClusterConfigInput, type ClusterPlan } from "../plan";
import { normaliseSerial, serialOf, SERVED_SERIAL_SCRIPT, TLS_SERVERS } from "../ops/node-secrets";
import { runRollout, type RolloutReport } from "../ops/rollout";
import { canonicalJson, dynamicSettings } from "../ops/dynamic-config";
import { patroniRest, sqlOnNode, type ClusterAccess } from "../checks/cluster";
import { monotonicSeconds, sleep } from "./exec";
import { LAB_STACK, labConfig, type LabContext } from "./lab";
import { analyseWrites, ensureWritesTable, missingAcks, splitBrainAcks, Writer } from "./writer";
import { quickHealth } from "./verify";
import { certificateSerial, loadIssuedPki, parameterRecords, renewLeaves } from "./pki";
import { putParameters } from "./infra";

/**
 * The rolling day-2 change of ops/rollout.ts, in the lab, through the lab's
 * transport: the plan changes (e.g. Patroni's ttl and a PostgreSQL parameter
 * that needs a restart), the rollout runs node by node while the writer keeps
 * writing through HAProxy, and afterwards every node is asked whether the
 * change took effect and the primary whether any acknowledged write is gone.
 */

export interface NodeEffect {
  node: string;
  /** `current_setting(name)` of every PostgreSQL parameter of the change. */
  parameters: Record<string, string>;
  /** Settings PostgreSQL still has pending a restart. */
  pendingRestart: number;
  /** Dynamic settings as the node's own Patroni reports them (GET /config). */
  patroni: Record<string, unknown>;
  /** bootstrap.dcs of the node's patroni.yml (the node-local file). */
  fileDcs: Record<string, unknown>;
}

export interface RolloutDrillResult {
  ok: boolean;
  problems: string[];
  report?: RolloutReport;
  oldPrimary?: string;
  newPrimary?: string;
  writes: {
    acked: number;
    unknownOutcome: number;
    /** Longest gap between consecutive acknowledged writes during the rollout. */
    maxGapSeconds?: number;
    /** Acknowledged writes missing on the primary afterwards. */
    rpoMissing: number;
    splitBrainAcks: number;
    /** Acknowledged writes after the rollout's last step (writes went on). */
    ackedAfterLastStep: number;
    servers: string[];
  };
  effects: NodeEffect[];
}

/**
 * The lab's plan with `change` applied section by section over the lab's own config (same nodes, same stack): the
 * node files depend on it (the lab's scrape interval is in every Prometheus config), so a change planned over the
 * defaults would roll more than the change.
 */
export function changedLabPlan(change: ClusterConfigInput): ClusterPlan {
  const base = labConfig();
  const merged: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(change)) {
    const current = base[key];
    merged[key] = isSection(current) && isSection(value) ? { ...current, ...value } : value;
  }
  return buildClusterPlan(merged, { stack: LAB_STACK });
}

function isSection(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Asks every PostgreSQL node what it runs with. */
export async function nodeEffects(access: ClusterAccess, parameterNames: string[]): Promise<NodeEffect[]> {
  const effects: NodeEffect[] = [];
  for (const node of nodesWithRole(access.plan, "postgres").map((n) => n.name)) {
    const names = parameterNames.map((n) => `'${n.replace(/'/g, "''")}'`).join(",") || "''";
    const rows = await sqlOnNode(access, node, `select name, current_setting(name) from pg_settings where name in (${names})`);
    const pending = await sqlOnNode(access, node, "select count(*) from pg_settings where pending_restart");
    const rest = await patroniRest(access, node, "/config");
    const file = load(await access.transport.readFile(node, NODE_PATHS.patroniConfig)) as { bootstrap?: { dcs?: Record<string, unknown> } };
    effects.push({
      node,
      parameters: Object.fromEntries(rows.map((r) => [r[0], r[1]])),
      pendingRestart: Number(pending[0]?.[0] ?? -1),
      patroni: rest.status === 200 ? (JSON.parse(rest.body) as Record<string, unknown>) : {},
      fileDcs: file.bootstrap?.dcs ?? {},
    });
  }
  return effects;
}

/**
 * Runs the rollout of `desired` with the writer going through the first
 * HAProxy's primary port, then judges writes and effects. `expect` lists what
 * must hold on every node afterwards: Patroni settings and PostgreSQL
 * parameters (compared as text).
 */
export async function rolloutDrill(
  lab: LabContext,
  desired: ClusterPlan,
  expect: { patroni: Record<string, unknown>; parameters: Record<string, string> },
  log: (line: string) => void,
  options: { secretSource?: ClusterAccess["secretSource"] } = {},
): Promise<RolloutDrillResult> {
  const access: ClusterAccess = { ...lab.access, plan: desired, isolated: new Set(), secretSource: options.secretSource };
  const problems: string[] = [];
  const before = await quickHealth(lab.access);
  if (!before.ok || !before.topology.leader) throw new Error(`the lab is not healthy before the rollout: ${before.detail}`);
  const oldPrimary = before.topology.leader;
  await ensureWritesTable(access, oldPrimary);
  const haproxy = nodesWithRole(desired, "haproxy")[0];
  if (!haproxy) throw new Error("no HAProxy node for the writer");
  const writer = Writer.start(access, { host: haproxy.privateIp, port: desired.config.haproxy.primaryPort }, `rollout-${Date.now()}`);
  let report: RolloutReport | undefined;
  let start = 0;
  let lastStepAt = 0;
  try {
    await writer.warmUp(20);
    log(`writer acknowledged ${writer.acks().length} writes via ${haproxy.name}; rollout starts (primary ${oldPrimary})`);
    start = monotonicSeconds();
    report = await runRollout({
      access,
      log,
      healthBudgetMs: 150_000,
      pollMs: 1000,
      onStep: () => void (lastStepAt = monotonicSeconds()),
    });
    lastStepAt ||= monotonicSeconds();
    // Writes must go on after the last step, not just resume somewhere in between.
    const acksAtEnd = writer.acks().length;
    const wentOn = await writer.waitUntil((records) => records.filter((r) => r.ok).length >= acksAtEnd + 20, 20_000);
    if (!wentOn) problems.push("writes did not continue after the rollout");
    await sleep(1000);
  } catch (error) {
    problems.push((error as Error).message);
  } finally {
    await writer.stop();
  }

  const after = await quickHealth(lab.access).catch(() => undefined);
  const newPrimary = after?.topology.leader;
  const analysis = analyseWrites(writer.records, start || monotonicSeconds());
  const missing = newPrimary ? await missingAcks(access, newPrimary, writer) : writer.acks().map((r) => r.seq as number);
  if (!newPrimary) problems.push("no leader after the rollout");
  const split =
    newPrimary && newPrimary !== oldPrimary ? splitBrainAcks(writer.records, (desired.nodes.find((n) => n.name === oldPrimary) as { privateIp: string }).privateIp, start) : [];
  if (missing.length) problems.push(`RPO: ${missing.length} acknowledged writes missing on ${newPrimary} (seq ${missing.slice(0, 10).join(", ")})`);
  if (split.length) problems.push(`split brain: ${split.length} writes acknowledged by ${oldPrimary} after ${newPrimary} took over`);
  if (analysis.unsafe) problems.push(`${analysis.unsafe} writes acknowledged with a cancelled synchronous-replication wait`);

  const effects = await nodeEffects(access, Object.keys(expect.parameters)).catch((error: unknown) => {
    problems.push(`could not read the nodes' settings: ${(error as Error).message}`);
    return [] as NodeEffect[];
  });
  const wanted = dynamicSettings(desired);
  for (const effect of effects) {
    for (const [name, value] of Object.entries(expect.parameters)) {
      if (effect.parameters[name] !== value) problems.push(`${effect.node}: ${name} = ${effect.parameters[name]}, expected ${value}`);
    }
    for (const [key, value] of Object.entries(expect.patroni)) {
      if (JSON.stringify(effect.patroni[key]) !== JSON.stringify(value))
        problems.push(`${effect.node}: Patroni reports ${key} = ${JSON.stringify(effect.patroni[key])}, expected ${JSON.stringify(value)}`);
      if (JSON.stringify(effect.fileDcs[key]) !== JSON.stringify(value))
        problems.push(`${effect.node}: patroni.yml bootstrap.dcs.${key} = ${JSON.stringify(effect.fileDcs[key])}, expected ${JSON.stringify(value)}`);
    }
    if (effect.pendingRestart !== 0) problems.push(`${effect.node}: ${effect.pendingRestart} setting(s) still pending a restart`);
    if (canonicalJson(effect.fileDcs) !== canonicalJson(wanted)) problems.push(`${effect.node}: patroni.yml bootstrap.dcs differs from the plan`);
  }
  const acked = writer.acks();
  return {
    ok: problems.length === 0,
    problems,
    report,
    oldPrimary,
    newPrimary,
    writes: {
      acked: acked.length,
      unknownOutcome: analysis.unknown,
      maxGapSeconds: analysis.rtoSeconds,
      rpoMissing: missing.length,
      splitBrainAcks: split.length,
      ackedAfterLastStep: acked.filter((r) => r.t > lastStepAt).length,
      servers: analysis.servers.map((ip) => desired.nodes.find((n) => n.privateIp === ip)?.name ?? ip),
    },
    effects,
  };
}

/** HAProxy's runtime API: the certificate it has loaded for a file (its check client certificate), not the file on disk. */
const HAPROXY_LOADED_CERT_SCRIPT =
  'import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect("/run/haproxy/admin.sock")\ns.sendall(("show ssl cert %s\\n" % sys.argv[1]).encode())\nprint(b"".join(iter(lambda: s.recv(65536), b"")).decode())';

export interface ServedCertificate {
  node: string;
  what: string;
  port: number;
  /** The certificate id (`<node>-<kind>`) it must be. */
  certificate: string;
  serial?: string;
  error?: string;
}

/** What every TLS server of the cluster serves on a fresh connection (from the node itself, presenting its own certificate). */
export async function servedCertificates(lab: LabContext): Promise<ServedCertificate[]> {
  const probes = lab.plan.nodes.flatMap((node) =>
    TLS_SERVERS.filter((server) => lab.plan.certificates.some((c) => c.node === node.name && c.kind === server.serves)).map(async (server): Promise<ServedCertificate> => {
      const certificate = certificateFor(lab.plan.certificates, node.name, server.serves).id;
      const client = server.client ? certificateFor(lab.plan.certificates, node.name, server.client) : undefined;
      const extra = [...(client ? ["-cert", client.certPath, "-key", client.keyPath] : []), ...(server.starttls ? ["-starttls", server.starttls] : [])];
      const result = await lab.transport.run(node.name, ["sh", "-c", SERVED_SERIAL_SCRIPT, "probe", `${node.privateIp}:${server.port}`, NODE_PATHS.caCert, ...extra], {
        timeoutMs: 20_000,
      });
      const serial = serialOf(result.stdout);
      return {
        node: node.name,
        what: server.what,
        port: server.port,
        certificate,
        ...(serial ? { serial } : { error: `exit ${result.code}: ${result.stderr.trim().slice(-200)}` }),
      };
    }),
  );
  return Promise.all(probes);
}

/** The serial of the check client certificate each HAProxy has loaded. */
export async function haproxyLoadedSerials(lab: LabContext): Promise<{ node: string; certificate: string; serial?: string; error?: string }[]> {
  return Promise.all(
    nodesWithRole(lab.plan, "haproxy").map(async (node) => {
      const cert = certificateFor(lab.plan.certificates, node.name, "haproxy-check");
      const result = await lab.transport.run(node.name, ["python3", "-c", HAPROXY_LOADED_CERT_SCRIPT, cert.bundlePath as string], { timeoutMs: 10_000 });
      const serial = /^Serial:\s*(\S+)/m.exec(result.stdout)?.[1];
      return {
        node: node.name,
        certificate: cert.id,
        ...(serial ? { serial: normaliseSerial(serial) } : { error: `exit ${result.code}: ${(result.stderr || result.stdout).trim().slice(-200)}` }),
      };
    }),
  );
}

export interface RenewalDrillResult {
  ok: boolean;
  problems: string[];
  renewed: string[];
  /** Certificate id → serial before and after the renewal (from the lab PKI's files). */
  serials: Record<string, { before: string; after: string }>;
  servedBefore: ServedCertificate[];
  servedAfter: ServedCertificate[];
  haproxyBefore: Awaited<ReturnType<typeof haproxyLoadedSerials>>;
  haproxyAfter: Awaited<ReturnType<typeof haproxyLoadedSerials>>;
  topologyAfter?: { leader?: string; syncStandbys: string[]; replicas: string[] };
  drill?: RolloutDrillResult;
}

/**
 * Certificate renewal as `pulumi up` does it in a leaf's last 30 days: every
 * leaf re-issued by the same CA with the same key and a new serial, written
 * to the lab's SSM endpoint, then the rollout of the
 * plan the cluster runs (`deployed`: nothing else changes) with the writer
 * going through HAProxy. Afterwards every TLS
 * server must serve its new serial on a fresh connection and every HAProxy
 * must have loaded its new check certificate.
 */
export async function renewalDrill(lab: LabContext, deployed: ClusterPlan, log: (line: string) => void): Promise<RenewalDrillResult> {
  const problems: string[] = [];
  const pki = loadIssuedPki(lab.plan, lab.layout.pkiDir);
  const serialsOf = async (): Promise<Record<string, string>> =>
    Object.fromEntries(await Promise.all(lab.plan.certificates.map(async (c) => [c.id, normaliseSerial(await certificateSerial(pki.leaves.get(c.id)?.cert as string))] as const)));
  const before = await serialsOf();
  const servedBefore = await servedCertificates(lab);
  const haproxyBefore = await haproxyLoadedSerials(lab);
  for (const served of servedBefore)
    if (served.serial !== before[served.certificate])
      problems.push(`before: ${served.node} ${served.what} serves ${served.serial ?? served.error}, its file has ${before[served.certificate]}`);

  const renewed = await renewLeaves(lab.plan, pki);
  // What NodeSecrets does on `pulumi up`: the renewed parameters overwrite the old ones in SSM.
  const written = await putParameters(lab.layout, parameterRecords(lab.plan, pki, LAB_STACK));
  const after = await serialsOf();
  const serials = Object.fromEntries(lab.plan.certificates.map((c) => [c.id, { before: before[c.id], after: after[c.id] }]));
  for (const [id, s] of Object.entries(serials)) if (s.before === s.after) problems.push(`${id}: renewal kept serial ${s.before}`);
  log(`renewed ${renewed.length} leaf certificates (same CA, same keys, new serials); SSM parameters overwritten (${written})`);

  // The rollout's pgha-fetch-secrets reads SSM with the node's instance role, as on AWS.
  const drill = await rolloutDrill(lab, deployed, { patroni: {}, parameters: {} }, log, { secretSource: { args: [] } });
  problems.push(...drill.problems);

  const servedAfter = await servedCertificates(lab);
  for (const served of servedAfter) {
    const want = after[served.certificate];
    if (served.serial !== want) problems.push(`${served.node} ${served.what} (${served.port}) serves ${served.serial ?? served.error}, expected the renewed ${want}`);
  }
  const haproxyAfter = await haproxyLoadedSerials(lab);
  for (const h of haproxyAfter)
    if (h.serial !== after[h.certificate]) problems.push(`${h.node}: HAProxy has ${h.serial ?? h.error} loaded, expected the renewed ${after[h.certificate]}`);
  const health = await quickHealth(lab.access).catch((error: unknown) => ({ ok: false, detail: (error as Error).message, topology: undefined }));
  if (!health.ok) problems.push(`not healthy after the renewal: ${health.detail}`);
  const t = health.topology;
  if (t && (!t.leader || t.syncStandbys.length !== 1)) problems.push(`topology after the renewal: leader ${t.leader ?? "none"}, sync ${t.syncStandbys.join(",") || "none"}`);
  return {
    ok: problems.length === 0,
    problems,
    renewed,
    serials,
    servedBefore,
    servedAfter,
    haproxyBefore,
    haproxyAfter,
    topologyAfter: t ? { leader: t.leader, syncStandbys: t.syncStandbys, replicas: t.replicas } : undefined,
    drill,
  };
}
