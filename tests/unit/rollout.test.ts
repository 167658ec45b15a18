/**
 * Rolling day-2 changes as pure functions (ops/rollout.ts, ops/dynamic-config.ts,
 * ops/node-files.ts): which node is next, when to switch over, when to stop;
 * the Patroni config patch and the triggers' hashes; the node-side file
 * scripts run for real by /bin/sh; and what one step does, over a recording
 * transport.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { buildClusterPlan, NODE_PATHS, type ClusterPlan } from "../../plan";
import type { ClusterAccess } from "../../checks/cluster";
import type { NodeTransport, RunOptions, RunResult, ServiceName } from "../../checks/transport";
import { canonicalJson, dynamicConfigPatch, dynamicSettings, dynamicSettingsHash, sameSetting } from "../../ops/dynamic-config";
import { changedFiles, desiredFiles, FILE_STATE_SCRIPT, fileEffect, nodeFilesHash, parseFileStates, WRITE_FILE_SCRIPT, type DesiredFile } from "../../ops/node-files";
import { certificateFor } from "../../plan";
import { fetchSecretsArgv, parseSecretFetchReport, secretFileEffect, secretWork, type SecretFileWork } from "../../ops/node-secrets";
import {
  applyWork,
  DEFAULT_LIMITS,
  ensureRestCertificateServed,
  expectationsOf,
  isDisruptive,
  nextStep,
  nodeSecretWork,
  rolloutOrder,
  type NodeWork,
  type RolloutProgress,
  type RolloutStep,
  type RolloutView,
} from "../../ops/rollout";

const plan = buildClusterPlan(undefined, { stack: "test" });
const file = (path: string): DesiredFile => ({ path, owner: "root:root", permissions: "0644", content: "x", sha256: "h", effect: fileEffect(path) });
const restart = (node: string): NodeWork => ({ node, files: [], secrets: [], pendingRestart: true });
const reload = (node: string): NodeWork => ({ node, files: [file(NODE_PATHS.patroniConfig)], secrets: [], pendingRestart: false });

function view(partial: Partial<RolloutView> & { work: Record<string, NodeWork | undefined> }): RolloutView {
  return {
    leader: "pg-seoul-1",
    syncStandbys: ["pg-tokyo-1"],
    replicas: ["pg-singapore-1"],
    others: ["haproxy-1", "haproxy-2", "haproxy-3"],
    synchronousMode: true,
    healthy: true,
    healthDetail: "",
    ...partial,
  };
}
const fresh = (): RolloutProgress => ({ attempts: {}, switchovers: 0 });

describe("rolloutOrder", () => {
  it("puts asynchronous replicas first, then sync standbys, nodes without PostgreSQL, the leader last", () => {
    assert.deepEqual(rolloutOrder(view({ work: {} })), ["pg-singapore-1", "pg-tokyo-1", "haproxy-1", "haproxy-2", "haproxy-3", "pg-seoul-1"]);
  });

  it("keeps a node with work that the topology does not place (a member that is down) before the leader", () => {
    const order = rolloutOrder(view({ replicas: [], work: { "pg-singapore-1": restart("pg-singapore-1") } }));
    assert.equal(order.at(-1), "pg-seoul-1");
    assert.ok(order.includes("pg-singapore-1"));
  });
});

describe("nextStep", () => {
  it("is done when no node has work", () => {
    assert.deepEqual(nextStep(view({ work: {} }), fresh()), { kind: "done" });
  });

  it("waits while a readiness check fails, naming it", () => {
    const step = nextStep(view({ healthy: false, healthDetail: "lag: pg-tokyo-1: 9000000 bytes behind", work: { "pg-tokyo-1": restart("pg-tokyo-1") } }), fresh());
    assert.deepEqual(step, { kind: "wait-healthy", reason: "lag: pg-tokyo-1: 9000000 bytes behind" });
  });

  it("waits when there is no leader, even if healthy otherwise", () => {
    assert.equal(nextStep(view({ leader: undefined, work: { "pg-tokyo-1": restart("pg-tokyo-1") } }), fresh()).kind, "wait-healthy");
  });

  it("takes replicas before the leader, whatever order the work was found in", () => {
    const work = { "pg-seoul-1": restart("pg-seoul-1"), "pg-tokyo-1": restart("pg-tokyo-1"), "pg-singapore-1": restart("pg-singapore-1") };
    assert.deepEqual(nextStep(view({ work }), fresh()), { kind: "apply", node: "pg-singapore-1", work: work["pg-singapore-1"] });
    const { ["pg-singapore-1"]: _, ...rest } = work;
    assert.deepEqual(nextStep(view({ work: rest }), fresh()), { kind: "apply", node: "pg-tokyo-1", work: work["pg-tokyo-1"] });
  });

  it("switches over to the done sync standby before restarting PostgreSQL on the leader", () => {
    assert.deepEqual(nextStep(view({ work: { "pg-seoul-1": restart("pg-seoul-1") } }), fresh()), { kind: "switchover", from: "pg-seoul-1", to: "pg-tokyo-1" });
  });

  it("treats a changed patroni.service on the leader as disruptive, a changed patroni.yml (reload) as not", () => {
    const unit: NodeWork = { node: "pg-seoul-1", files: [file(`${NODE_PATHS.systemdDir}/patroni.service`)], secrets: [], pendingRestart: false };
    assert.ok(isDisruptive(unit));
    assert.equal(nextStep(view({ work: { "pg-seoul-1": unit } }), fresh()).kind, "switchover");
    assert.ok(!isDisruptive(reload("pg-seoul-1")));
    assert.deepEqual(nextStep(view({ work: { "pg-seoul-1": reload("pg-seoul-1") } }), fresh()), { kind: "apply", node: "pg-seoul-1", work: reload("pg-seoul-1") });
  });

  it("only switches over to a sync standby in synchronous mode, to any done replica otherwise", () => {
    const work = { "pg-seoul-1": restart("pg-seoul-1") };
    assert.equal(nextStep(view({ syncStandbys: [], replicas: ["pg-tokyo-1", "pg-singapore-1"], work }), fresh()).kind, "stop");
    assert.deepEqual(nextStep(view({ synchronousMode: false, syncStandbys: [], replicas: ["pg-tokyo-1", "pg-singapore-1"], work }), fresh()), {
      kind: "switchover",
      from: "pg-seoul-1",
      to: "pg-tokyo-1",
    });
  });

  it("stops when a node's change does not take effect after the attempts allowed", () => {
    const step = nextStep(view({ work: { "pg-tokyo-1": restart("pg-tokyo-1") } }), { attempts: { "pg-tokyo-1": DEFAULT_LIMITS.maxAttemptsPerNode }, switchovers: 0 });
    assert.deepEqual(step, { kind: "stop", reason: `pg-tokyo-1 still needs pending restart after ${DEFAULT_LIMITS.maxAttemptsPerNode} attempts` });
  });

  it("stops instead of switching over a second time", () => {
    const step = nextStep(view({ work: { "pg-seoul-1": restart("pg-seoul-1") } }), { attempts: {}, switchovers: 1 });
    assert.equal(step.kind, "stop");
    assert.match((step as { reason: string }).reason, /after 1 switchover/);
  });
});

/** A small model of the cluster: steps clear work (unless told not to), switchovers swap roles like Patroni. */
function simulate(initial: { work: Record<string, NodeWork> }, options: { sticky?: string[] } = {}): RolloutStep[] {
  const state = { leader: "pg-seoul-1", sync: ["pg-tokyo-1"], replicas: ["pg-singapore-1"], work: { ...initial.work } as Record<string, NodeWork | undefined> };
  const progress = fresh();
  const steps: RolloutStep[] = [];
  for (let i = 0; i < 30; i++) {
    const step = nextStep(view({ leader: state.leader, syncStandbys: state.sync, replicas: state.replicas, work: state.work }), progress);
    steps.push(step);
    if (step.kind === "done" || step.kind === "stop") return steps;
    if (step.kind === "apply") {
      progress.attempts[step.node] = (progress.attempts[step.node] ?? 0) + 1;
      if (!options.sticky?.includes(step.node)) Reflect.deleteProperty(state.work, step.node);
    } else if (step.kind === "switchover") {
      progress.switchovers++;
      state.sync = [step.from];
      state.leader = step.to;
    }
  }
  throw new Error("did not finish");
}

const brief = (steps: RolloutStep[]): string[] => steps.map((s) => (s.kind === "apply" ? s.node : s.kind === "switchover" ? `switchover ${s.from}→${s.to}` : s.kind));

describe("a whole rollout (simulated cluster)", () => {
  it("a restart on every member: replicas, then a switchover, then the former leader — one node at a time", () => {
    const work = Object.fromEntries(["pg-seoul-1", "pg-tokyo-1", "pg-singapore-1"].map((n) => [n, restart(n)]));
    assert.deepEqual(brief(simulate({ work })), ["pg-singapore-1", "pg-tokyo-1", "switchover pg-seoul-1→pg-tokyo-1", "pg-seoul-1", "done"]);
  });

  it("file changes everywhere (patroni.yml reloads, haproxy.cfg): no switchover needed", () => {
    const work: Record<string, NodeWork> = Object.fromEntries(["pg-seoul-1", "pg-tokyo-1", "pg-singapore-1"].map((n) => [n, reload(n)]));
    for (const h of ["haproxy-1", "haproxy-2", "haproxy-3"]) work[h] = { node: h, files: [file(NODE_PATHS.haproxyConfig)], secrets: [], pendingRestart: false };
    assert.deepEqual(brief(simulate({ work })), ["pg-singapore-1", "pg-tokyo-1", "haproxy-1", "haproxy-2", "haproxy-3", "pg-seoul-1", "done"]);
  });

  it("stops, naming the node, when a replica's pending restart never clears", () => {
    const steps = simulate({ work: { "pg-singapore-1": restart("pg-singapore-1"), "pg-seoul-1": restart("pg-seoul-1") } }, { sticky: ["pg-singapore-1"] });
    assert.deepEqual(brief(steps), ["pg-singapore-1", "pg-singapore-1", "pg-singapore-1", "stop"]);
    assert.match((steps.at(-1) as { reason: string }).reason, /^pg-singapore-1 still needs pending restart/);
  });
});

describe("Patroni dynamic configuration", () => {
  const desired = dynamicSettings(plan);

  it("is the bootstrap.dcs of patroni.yml (one renderer for bootstrap and day 2)", () => {
    assert.equal(desired.ttl, plan.config.patroni.ttl);
    assert.equal(desired.synchronous_node_count, plan.config.patroni.synchronousNodeCount);
    assert.equal(desired.postgresql.parameters.wal_level, "replica");
  });

  it("needs no patch when the cluster runs the plan's settings, even spelled differently", () => {
    const live = JSON.parse(JSON.stringify(desired));
    live.postgresql.parameters.max_wal_senders = "10";
    live.postgresql.parameters.hot_standby = true;
    live.check_timeline = true; // not managed: left alone
    assert.deepEqual(dynamicConfigPatch(live, desired), {});
  });

  it("patches only what changed, and removes parameters the plan dropped with null", () => {
    const live = JSON.parse(JSON.stringify(desired));
    live.ttl = 20;
    live.postgresql.parameters.work_mem = "64MB";
    const wanted = dynamicSettings(buildClusterPlan({ patroni: { ttl: 25, parameters: { max_connections: 150 } } }, { stack: "test" }));
    assert.deepEqual(dynamicConfigPatch(live, wanted), { ttl: 25, postgresql: { parameters: { max_connections: 150, work_mem: null } } });
  });

  it("compares settings the way PostgreSQL and Patroni spell them", () => {
    assert.ok(sameSetting(100, "100") && sameSetting("on", true) && sameSetting("1GB", "1gb") && sameSetting(false, "off"));
    assert.ok(!sameSetting(100, 150) && !sameSetting("on", false) && !sameSetting("128MB", "256MB") && !sameSetting(undefined, 1));
  });

  it("the live settings set what the checks expect until the rollout changes them", () => {
    assert.deepEqual(expectationsOf({ synchronous_mode: true, synchronous_node_count: 2, maximum_lag_on_failover: 42 }, plan), { syncStandbys: 2, maxLagBytes: 42 });
    assert.deepEqual(expectationsOf({ synchronous_mode: false }, plan), { syncStandbys: 0, maxLagBytes: plan.config.patroni.maximumLagOnFailover });
    assert.deepEqual(expectationsOf(undefined, plan), { syncStandbys: 1, maxLagBytes: 1048576 });
  });
});

describe("the triggers' hashes", () => {
  const withConfig = (config: object): ClusterPlan => buildClusterPlan(config, { stack: "test" });

  it("are stable for the same config and independent of key order", () => {
    assert.equal(dynamicSettingsHash(plan), dynamicSettingsHash(buildClusterPlan(undefined, { stack: "test" })));
    assert.equal(canonicalJson({ b: 1, a: { d: 2, c: 3 } }), canonicalJson({ a: { c: 3, d: 2 }, b: 1 }));
    assert.equal(nodeFilesHash(plan), nodeFilesHash(buildClusterPlan(undefined, { stack: "test" })));
  });

  it("the settings hash changes with ttl, a parameter or the sync count, and not with HAProxy's timing", () => {
    const base = dynamicSettingsHash(plan);
    for (const patroni of [{ ttl: 25 }, { parameters: { max_connections: 150 } }, { synchronousNodeCount: 2 }, { loopWait: 4 }]) {
      assert.notEqual(dynamicSettingsHash(withConfig({ patroni })), base, JSON.stringify(patroni));
    }
    assert.equal(dynamicSettingsHash(withConfig({ haproxy: { checkIntervalMs: 2000 } })), base);
  });

  it("the files hash changes with any rendered node file (HAProxy timing, patroni.yml)", () => {
    const base = nodeFilesHash(plan);
    assert.notEqual(nodeFilesHash(withConfig({ haproxy: { checkIntervalMs: 2000 } })), base);
    assert.notEqual(nodeFilesHash(withConfig({ patroni: { ttl: 25 } })), base);
  });
});

describe("node files on the node (scripts run by /bin/sh)", () => {
  const dir = mkdtempSync(join(tmpdir(), "pgha-node-files-"));
  const owner = execFileSync("sh", ["-c", 'echo "$(id -un):$(id -gn)"'], { encoding: "utf8" }).trim();
  const sh = (script: string, args: string[], input?: string): string =>
    execFileSync("/bin/sh", ["-c", script, "pgha", ...args], { encoding: "utf8", input, stdio: ["pipe", "pipe", "pipe"] });

  it("classifies what a changed file needs", () => {
    assert.equal(fileEffect(NODE_PATHS.patroniConfig), "reload-patroni");
    assert.equal(fileEffect(NODE_PATHS.etcdConfig), "restart-etcd");
    assert.equal(fileEffect(NODE_PATHS.haproxyConfig), "reload-haproxy");
    assert.equal(fileEffect(`${NODE_PATHS.systemdDir}/patroni.service`), "restart-patroni");
    assert.equal(fileEffect(NODE_PATHS.fetchSecrets), "none");
    const paths = desiredFiles(plan, plan.nodes[0]).map((f) => f.path);
    assert.ok(paths.includes(NODE_PATHS.patroniConfig) && paths.includes(NODE_PATHS.etcdConfig));
  });

  it("reads content hash, owner and mode in one command, and finds what differs", () => {
    const same = join(dir, "same.conf");
    const changed = join(dir, "changed.conf");
    const mode = join(dir, "mode.conf");
    writeFileSync(same, "a\n", { mode: 0o640 });
    writeFileSync(changed, "old\n", { mode: 0o640 });
    writeFileSync(mode, "m\n", { mode: 0o600 });
    const states = parseFileStates(sh(FILE_STATE_SCRIPT, [same, changed, mode, join(dir, "missing.conf")]));
    assert.equal(states.size, 4);
    assert.equal(states.get(join(dir, "missing.conf")), undefined);
    assert.equal(states.get(same)?.owner, owner);
    const want = (path: string, content: string, permissions = "0640"): DesiredFile => ({
      path,
      owner,
      permissions,
      content,
      sha256: require("node:crypto").createHash("sha256").update(content).digest("hex"),
      effect: "none",
    });
    const desired = [want(same, "a\n"), want(changed, "new\n"), want(mode, "m\n", "0644"), want(join(dir, "missing.conf"), "x")];
    assert.deepEqual(
      changedFiles(desired, states).map((f) => f.path),
      [changed, mode, join(dir, "missing.conf")],
    );
  });

  it("writes a file atomically with its owner and mode, creating its directory", () => {
    const target = join(dir, "etc", "patroni", "patroni.yml");
    sh(WRITE_FILE_SCRIPT, [target, owner, "0640"], "ttl: 25\n");
    assert.equal(readFileSync(target, "utf8"), "ttl: 25\n");
    assert.equal((statSync(target).mode & 0o777).toString(8), "640");
    sh(WRITE_FILE_SCRIPT, [target, owner, "0600"], "ttl: 30\n");
    assert.equal(readFileSync(target, "utf8"), "ttl: 30\n");
    assert.equal((statSync(target).mode & 0o777).toString(8), "600");
  });
});

/** Records every transport call; everything succeeds. */
class RecordingTransport implements NodeTransport {
  readonly kind = "recording";
  readonly calls: string[] = [];
  readonly options: RunOptions[] = [];
  constructor(withReload: boolean) {
    if (withReload) this.reloadService = async (node: string, unit: string) => void this.calls.push(`${node} reload ${unit}`);
  }
  reloadService?: (node: string, unit: string) => Promise<void>;
  /** What the Patroni REST API serves, one answer per probe (then the file's serial). */
  served: string[] = [];
  /** What `pgha-fetch-secrets` reports as changed on each node. */
  secretChanges: Record<string, string[]> = {};
  async run(node: string, argv: string[], options: RunOptions = {}): Promise<RunResult> {
    this.options.push(options);
    if (argv[0] === NODE_PATHS.fetchSecrets) {
      this.calls.push(
        `${node} run pgha-fetch-secrets${argv
          .slice(1)
          .map((a) => ` ${a}`)
          .join("")}`,
      );
      const changed = (this.secretChanges[node] ?? []).map((path) => ({ path, differs: ["content"] }));
      return { code: 0, stdout: `${JSON.stringify({ mode: argv.includes("--check") ? "check" : "write", files: 9, parameters: 9, changed })}\n`, stderr: "" };
    }
    this.calls.push(`${node} run ${argv[0] === "sh" ? argv[3] : argv.filter((a) => !a.startsWith("/")).join(" ")}`);
    if (argv[3] === "pgha-serial") return { code: 0, stdout: "serial=0AB\n", stderr: "" };
    if (argv[3] === "pgha-served") return { code: 0, stdout: `serial=${this.served.shift() ?? "AB"}\n`, stderr: "" };
    return { code: 0, stdout: "", stderr: "" };
  }
  spawn(): never {
    throw new Error("no");
  }
  async readFile(): Promise<string> {
    return "";
  }
  async startService(node: string, unit: string): Promise<void> {
    this.calls.push(`${node} start ${unit}`);
  }
  async stopService(node: string, unit: string): Promise<void> {
    this.calls.push(`${node} stop ${unit}`);
  }
  async serviceActive(): Promise<boolean> {
    return true;
  }
  async signalProcesses(node: string, service: ServiceName, signal: NodeJS.Signals): Promise<number> {
    this.calls.push(`${node} ${signal} ${service}`);
    return 1;
  }
}

/** What the rollout needs of the cluster, over a fake transport (no client files, nothing isolated). */
const access = (transport: NodeTransport, secretSource?: { args: string[] }): ClusterAccess => ({
  plan,
  transport,
  client: "haproxy-1",
  superuserPassword: "",
  clientFiles: { caCert: "", foreignCert: "", foreignKey: "" },
  isolated: new Set(),
  secretSource,
});

describe("applyWork: one step on one node", () => {
  it("patroni.yml: written, then Patroni reloaded (SIGHUP); a pending restart through patronictl with the node's env file", async () => {
    const t = new RecordingTransport(true);
    await applyWork(access(t), { node: "pg-tokyo-1", files: [file(NODE_PATHS.patroniConfig)], secrets: [], pendingRestart: true }, () => undefined);
    assert.deepEqual(t.calls, ["pg-tokyo-1 run pgha-write", "pg-tokyo-1 SIGHUP patroni", `pg-tokyo-1 run patronictl -c restart ${plan.config.patroni.scope} pg-tokyo-1 --force`]);
    assert.equal(t.options[0]?.input, "x", "the file content goes on stdin");
    assert.deepEqual(t.options[1]?.envFiles, [NODE_PATHS.patroniEnv], "the REST password is read on the node");
    assert.equal(t.options[1]?.env, undefined);
  });

  it("etcd and HAProxy: etcd restarted; HAProxy reloaded where the transport can, restarted where not", async () => {
    const files = [file(NODE_PATHS.etcdConfig), file(NODE_PATHS.haproxyConfig)];
    const ssmLike = new RecordingTransport(true);
    await applyWork(access(ssmLike), { node: "pg-seoul-1", files, secrets: [], pendingRestart: false }, () => undefined);
    assert.deepEqual(ssmLike.calls.slice(2), ["pg-seoul-1 stop etcd.service", "pg-seoul-1 start etcd.service", "pg-seoul-1 reload haproxy.service"]);
    const labLike = new RecordingTransport(false);
    await applyWork(access(labLike), { node: "pg-seoul-1", files, secrets: [], pendingRestart: false }, () => undefined);
    assert.deepEqual(labLike.calls.slice(-2), ["pg-seoul-1 stop haproxy.service", "pg-seoul-1 start haproxy.service"]);
  });

  it("patroni.service changed: Patroni restarted (which restarts PostgreSQL), no separate patronictl restart", async () => {
    const t = new RecordingTransport(true);
    await applyWork(access(t), { node: "pg-tokyo-1", files: [file(`${NODE_PATHS.systemdDir}/patroni.service`)], secrets: [], pendingRestart: true }, () => undefined);
    assert.deepEqual(t.calls, ["pg-tokyo-1 run pgha-write", "pg-tokyo-1 stop patroni.service", "pg-tokyo-1 start patroni.service"]);
  });
});

describe("readiness checks: the pure parts (checks/readiness.ts)", () => {
  const { judgeTopology, memberOfCertificate } = require("../../checks/readiness") as typeof import("../../checks/readiness");
  const member = (name: string, role: string, state = "streaming") => ({ name, role, state, host: name, timeline: 3 });
  const members = ["pg-seoul-1", "pg-tokyo-1", "pg-singapore-1"];

  it("judges the sync standby count against the configured one", () => {
    const two = [member("pg-seoul-1", "leader", "running"), member("pg-tokyo-1", "sync_standby"), member("pg-singapore-1", "sync_standby")];
    assert.deepEqual(judgeTopology(two, members, 2).problems, []);
    assert.deepEqual(judgeTopology(two, members, 2).syncStandbys, ["pg-tokyo-1", "pg-singapore-1"]);
    assert.deepEqual(judgeTopology(two, members).problems, ["2 sync standbys (pg-tokyo-1, pg-singapore-1)"]);
    const one = [member("pg-seoul-1", "leader", "running"), member("pg-tokyo-1", "sync_standby"), member("pg-singapore-1", "replica")];
    assert.equal(judgeTopology(one, members).syncStandby, "pg-tokyo-1");
    assert.deepEqual(judgeTopology(one, members, 0).problems, ["1 sync standbys (pg-tokyo-1), expected 0"]);
    assert.deepEqual(judgeTopology(one.slice(0, 2), members).problems, ["missing members: pg-singapore-1"]);
  });

  it("names the member whose PostgreSQL certificate answered, in OpenSSL's subject spellings", () => {
    assert.equal(memberOfCertificate(plan, "subject=CN = pg-tokyo-1 postgres-server"), "pg-tokyo-1");
    assert.equal(memberOfCertificate(plan, "subject=CN=pg-seoul-1 postgres-server"), "pg-seoul-1");
    assert.equal(memberOfCertificate(plan, "subject=O = pgha, CN = pg-singapore-1 postgres-server"), "pg-singapore-1");
    // Another certificate of the node (the REST API's) is not PostgreSQL answering.
    assert.equal(memberOfCertificate(plan, "subject=CN = pg-tokyo-1 patroni-rest"), undefined);
    assert.equal(memberOfCertificate(plan, ""), undefined);
  });
});

describe("node secrets: renewed certificates", () => {
  const cert = (node: string, kind: Parameters<typeof certificateFor>[2]) => certificateFor(plan.certificates, node, kind);
  const secret = (node: string, path: string): SecretFileWork => ({ path, effect: secretFileEffect(plan, node, path) });
  /** Every certificate of a node renewed: what its `pgha-fetch-secrets --check` names. */
  const renewedPaths = (node: string): string[] => plan.certificates.filter((c) => c.node === node).flatMap((c) => (c.bundlePath ? [c.bundlePath] : [c.certPath, c.keyPath]));
  const renewed = (node: string): NodeWork => ({ node, files: [], secrets: renewedPaths(node).map((p) => secret(node, p)), pendingRestart: false });

  it("maps each secret file to the least disruptive effect the reader needs", () => {
    assert.equal(secretFileEffect(plan, "pg-tokyo-1", cert("pg-tokyo-1", "postgres-server").keyPath), "reload-patroni");
    assert.equal(secretFileEffect(plan, "pg-tokyo-1", cert("pg-tokyo-1", "postgres-server").certPath), "reload-patroni");
    assert.equal(secretFileEffect(plan, "pg-tokyo-1", cert("pg-tokyo-1", "patroni-rest").certPath), "reload-patroni");
    assert.equal(secretFileEffect(plan, "pg-tokyo-1", cert("pg-tokyo-1", "etcd-member").certPath), "reread-on-connect");
    assert.equal(secretFileEffect(plan, "pg-tokyo-1", cert("pg-tokyo-1", "etcd-client").keyPath), "reread-on-connect");
    assert.equal(secretFileEffect(plan, "haproxy-2", cert("haproxy-2", "haproxy-check").bundlePath as string), "reload-haproxy");
    assert.equal(secretFileEffect(plan, "pg-tokyo-1", NODE_PATHS.patroniEnv), "not-rolled");
    assert.equal(secretFileEffect(plan, "haproxy-2", NODE_PATHS.caCert), "not-rolled");
  });

  it("a renewal of every certificate is not disruptive anywhere: replicas, HAProxy nodes, the leader last, no switchover", () => {
    for (const node of plan.nodes) assert.ok(!isDisruptive(renewed(node.name)), node.name);
    const work = Object.fromEntries(plan.nodes.map((n) => [n.name, renewed(n.name)]));
    assert.deepEqual(brief(simulate({ work })), ["pg-singapore-1", "pg-tokyo-1", "haproxy-1", "haproxy-2", "haproxy-3", "pg-seoul-1", "done"]);
  });

  it("secret work counts as work; a node whose renewal does not take hold stops the rollout naming the file", () => {
    const steps = simulate({ work: { "pg-tokyo-1": renewed("pg-tokyo-1") } }, { sticky: ["pg-tokyo-1"] });
    assert.deepEqual(brief(steps), ["pg-tokyo-1", "pg-tokyo-1", "pg-tokyo-1", "stop"]);
    assert.match((steps.at(-1) as { reason: string }).reason, /pg-tokyo-1 still needs .*secret \/etc\/pgha\/tls\/postgres-server\.crt \(reload-patroni\)/);
  });

  it("stops before touching any node when a password or the CA differs (not rotated by the rollout)", () => {
    const work = {
      "pg-singapore-1": renewed("pg-singapore-1"),
      "pg-seoul-1": { node: "pg-seoul-1", files: [], secrets: [secret("pg-seoul-1", NODE_PATHS.patroniEnv)], pendingRestart: false },
    };
    const step = nextStep(view({ work }), fresh());
    assert.equal(step.kind, "stop");
    assert.match((step as { reason: string }).reason, /does not rotate.*pg-seoul-1: \/etc\/patroni\/patroni\.env/);
  });

  it("reads pgha-fetch-secrets' report: paths only, the last JSON line, and refuses anything else", () => {
    const report = parseSecretFetchReport(
      'pgha-fetch-secrets: retrying\n{"changed": [{"differs": ["content", "mode"], "path": "/etc/pgha/tls/x.crt"}], "files": 9, "mode": "check", "parameters": 9}\n',
    );
    assert.deepEqual(report, { mode: "check", files: 9, changed: [{ path: "/etc/pgha/tls/x.crt", differs: ["content", "mode"] }] });
    assert.deepEqual(secretWork(plan, "pg-seoul-1", report), [{ path: "/etc/pgha/tls/x.crt", effect: "none" }]);
    assert.throws(() => parseSecretFetchReport(""), /printed no report/);
    assert.throws(() => parseSecretFetchReport('{"wrote": 3}'), /not a pgha-fetch-secrets report/);
    assert.deepEqual(fetchSecretsArgv([], true), [NODE_PATHS.fetchSecrets, "--check"]);
    assert.deepEqual(fetchSecretsArgv(["--from-dir", "/p"], false), [NODE_PATHS.fetchSecrets, "--from-dir", "/p"]);
  });

  it("on AWS the rollout always compares node secrets: each node reads SSM itself (no values, no --from-dir in the command)", () => {
    const { awsAccess } = require("../../ops/readiness") as typeof import("../../ops/readiness");
    assert.deepEqual(awsAccess(plan, new RecordingTransport(true)).secretSource, { args: [] });
  });

  it("observing: the node's own check mode over the transport (SSM: no --from-dir), or nothing without a secret source", async () => {
    const t = new RecordingTransport(true);
    t.secretChanges["pg-tokyo-1"] = renewedPaths("pg-tokyo-1");
    const found = await nodeSecretWork(access(t, { args: [] }), "pg-tokyo-1", []);
    assert.deepEqual(t.calls, ["pg-tokyo-1 run pgha-fetch-secrets --check"]);
    assert.deepEqual(found.map((f) => f.path).sort(), renewedPaths("pg-tokyo-1").sort());
    assert.deepEqual(await nodeSecretWork(access(t), "pg-tokyo-1", []), []);
    // While the node's copy of the script is about to be replaced, it is not asked (it may not know --check).
    const script = desiredFiles(plan, plan.nodes.find((n) => n.name === "pg-tokyo-1") as ClusterPlan["nodes"][number]).filter((f) => f.path === NODE_PATHS.fetchSecrets);
    assert.deepEqual(await nodeSecretWork(access(t, { args: [] }), "pg-tokyo-1", script), []);
    assert.equal(t.calls.length, 1);
  });

  it("a database node: fetch (write mode, with the source's arguments), then one Patroni reload — no etcd restart, no Patroni restart", async () => {
    const t = new RecordingTransport(true);
    t.secretChanges["pg-tokyo-1"] = renewedPaths("pg-tokyo-1");
    const lines: string[] = [];
    await applyWork(access(t, { args: ["--from-dir", "/run/p"] }), renewed("pg-tokyo-1"), (line) => lines.push(line));
    assert.deepEqual(t.calls, ["pg-tokyo-1 run pgha-fetch-secrets --from-dir /run/p", "pg-tokyo-1 SIGHUP patroni", "pg-tokyo-1 run pgha-serial", "pg-tokyo-1 run pgha-served"]);
    assert.ok(
      lines.some((l) => l.includes("pgha-fetch-secrets wrote /etc/pgha/tls/")),
      lines.join("\n"),
    );
  });

  it("Patroni's REST API still serving the old certificate after a loop (patroni.yml changed in the same reload): signalled again until it serves the new one, else the step fails", async () => {
    const t = new RecordingTransport(true);
    t.served = ["OLD", "OLD", "OLD"];
    const lines: string[] = [];
    await ensureRestCertificateServed(access(t, { args: [] }), "pg-tokyo-1", (l) => lines.push(l), { loopMs: 150, pollMs: 100 });
    assert.equal(t.calls.filter((c) => c.endsWith("SIGHUP patroni")).length, 1);
    assert.ok(
      lines.some((l) => l.includes("still serves OLD after 1 reload(s), want AB: SIGHUP again")),
      lines.join("\n"),
    );
    const stuck = new RecordingTransport(true);
    stuck.served = Array(100).fill("OLD");
    await assert.rejects(
      ensureRestCertificateServed(access(stuck, { args: [] }), "pg-tokyo-1", () => undefined, { loopMs: 50, pollMs: 20, signals: 2 }),
      /serves OLD, not the certificate on disk \(AB\)/,
    );
    assert.equal(stuck.calls.filter((c) => c.endsWith("SIGHUP patroni")).length, 2);
  });

  it("an HAProxy node: fetch, then reload HAProxy; etcd certificates alone: fetch only (etcd reads them per handshake)", async () => {
    const t = new RecordingTransport(true);
    await applyWork(access(t, { args: [] }), renewed("haproxy-2"), () => undefined);
    assert.deepEqual(t.calls, ["haproxy-2 run pgha-fetch-secrets", "haproxy-2 reload haproxy.service"]);
    const e = new RecordingTransport(true);
    const etcdOnly: NodeWork = { node: "pg-seoul-1", files: [], secrets: [secret("pg-seoul-1", cert("pg-seoul-1", "etcd-member").certPath)], pendingRestart: false };
    await applyWork(access(e, { args: [] }), etcdOnly, () => undefined);
    assert.deepEqual(e.calls, ["pg-seoul-1 run pgha-fetch-secrets"]);
    await assert.rejects(
      applyWork(access(e), etcdOnly, () => undefined),
      /no secret source/,
    );
  });
});
