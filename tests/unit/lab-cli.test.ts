/**
 * `npm run lab -- psql | exec | logs` (lab/session.ts), without a lab:
 *
 * - what each command would run: psql's endpoint per role and HAProxy, its
 *   connection (the writer's: superuser, TLS verified against the lab CA),
 *   patronictl and etcdctl run as the drills run them, a unit's logs (the
 *   node machine's journal);
 * - the CLI itself as a child process with an empty state dir: one error
 *   line and exit 1 for an unknown node, HAProxy or role, a missing command,
 *   and a lab that is not up.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import { NODE_PATHS } from "../../plan";
import type { NodeTransport, RunResult } from "../../checks/transport";
import { CLIENT_FILES, labContext, labPlan } from "../../lab/lab";
import { execOptions, psqlCommand, psqlTarget, runAttached, unitLogs, unitName } from "../../lab/session";

const ROOT = path.join(__dirname, "..", "..");
const CLI = path.join(ROOT, "lab", "cli.ts");
const plan = labPlan();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pgha-lab-cli-"));
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Only readFile is asked for (etcdctl's environment file); anything else is a test bug. */
function fakeTransport(files: Record<string, string>): NodeTransport {
  const no = (): never => {
    throw new Error("not in this test");
  };
  return {
    kind: "fake",
    run: async (): Promise<RunResult> => no(),
    spawn: no,
    readFile: async (node, file) => files[`${node}:${file}`] ?? no(),
    startService: no,
    stopService: no,
    serviceActive: no,
    signalProcesses: no,
  };
}

describe("psql: endpoint and connection", () => {
  it("maps writer/reader/sync to the plan's HAProxy ports on the chosen HAProxy node", () => {
    const { haproxy } = plan.config;
    const via = plan.nodes.find((n) => n.name === "haproxy-2");
    assert.ok(via);
    assert.deepEqual(psqlTarget(plan, "writer", "haproxy-2"), { role: "writer", via: "haproxy-2", host: via.privateIp, port: haproxy.primaryPort });
    assert.equal(psqlTarget(plan, "reader", "haproxy-1").port, haproxy.replicaPort);
    assert.equal(psqlTarget(plan, "sync", "haproxy-3").port, haproxy.synchronousPort);
    assert.deepEqual([haproxy.primaryPort, haproxy.replicaPort, haproxy.synchronousPort], [5000, 5001, 5002]);
  });

  it("refuses an unknown role or a node that is no HAProxy, naming the valid ones", () => {
    assert.throws(() => psqlTarget(plan, "admin", "haproxy-1"), /^Error: unknown role "admin" \(roles: writer, reader, sync\)$/);
    assert.throws(() => psqlTarget(plan, "writer", "pg-seoul-1"), /^Error: unknown HAProxy node "pg-seoul-1" \(HAProxy nodes: haproxy-1, haproxy-2, haproxy-3\)$/);
  });

  it("runs psql in the client namespace as the writer connects (superuser, verify-ca with the lab CA), the user's arguments last", () => {
    const stateDir = path.join(tmp, "psql");
    fs.mkdirSync(path.join(stateDir, "pki"), { recursive: true });
    fs.writeFileSync(path.join(stateDir, "pki", "passwords.json"), JSON.stringify({ superuser: "s3cret" }));
    const { access } = labContext(stateDir);
    const command = psqlCommand(access, psqlTarget(plan, "reader", "haproxy-1"), ["-c", "select 1"], "xterm-256color");
    assert.equal(command.node, "client");
    assert.deepEqual(command.argv, ["psql", "-c", "select 1"]);
    const env = command.options.env ?? {};
    assert.equal(env.PGHOST, plan.nodes.find((n) => n.name === "haproxy-1")?.privateIp);
    assert.equal(env.PGPORT, String(plan.config.haproxy.replicaPort));
    assert.equal(env.PGUSER, "postgres");
    assert.equal(env.PGSSLMODE, "verify-ca");
    assert.equal(env.PGSSLROOTCERT, CLIENT_FILES.caCert);
    assert.equal(env.PGPASSWORD, "s3cret");
    assert.equal(env.TERM, "xterm-256color");
    assert.equal(psqlCommand(access, psqlTarget(plan, "writer", "haproxy-1"), [], undefined).options.env?.TERM, undefined);
  });
});

describe("exec: how a command runs on a node", () => {
  const transport = fakeTransport({ "pg-seoul-1:/etc/pgha/etcdctl.env": "ETCDCTL_API=3\nETCDCTL_CERT=/etc/pgha/tls/etcd-client.crt\n" });

  it("patronictl on a database node: as postgres, with patroni.yml and the unit's environment file (as the drills call it)", async () => {
    const options = await execOptions(plan, transport, "pg-seoul-1", ["patronictl", "list"], undefined, undefined);
    assert.equal(options.user, "postgres");
    assert.deepEqual(options.env, { PATRONICTL_CONFIG_FILE: NODE_PATHS.patroniConfig });
    assert.deepEqual(options.envFiles, [NODE_PATHS.patroniEnv]);
  });

  it("etcdctl: the node's etcdctl.env, as the owner of the client certificate it names", async () => {
    const options = await execOptions(plan, transport, "pg-seoul-1", ["/usr/local/bin/etcdctl", "member", "list"], undefined, undefined);
    const cert = plan.certificates.find((c) => c.node === "pg-seoul-1" && c.certPath === "/etc/pgha/tls/etcd-client.crt");
    assert.ok(cert);
    assert.equal(options.user, cert.owner);
    assert.deepEqual(options.envFiles, [NODE_PATHS.etcdctlEnv]);
  });

  it("anything else as root with only the terminal type; --user wins", async () => {
    assert.deepEqual(await execOptions(plan, transport, "haproxy-1", ["patronictl", "list"], undefined, "xterm"), { env: { TERM: "xterm" } });
    assert.deepEqual(await execOptions(plan, transport, "pg-seoul-1", ["hostname"], undefined, undefined), { env: {} });
    assert.equal((await execOptions(plan, transport, "pg-seoul-1", ["patronictl", "list"], "root", undefined)).user, "root");
  });
});

describe("logs: a unit's logs are the machine's journal", () => {
  it("names units as systemd does", () => {
    assert.equal(unitName("patroni"), "patroni.service");
    assert.equal(unitName("patroni.service"), "patroni.service");
    assert.equal(unitName("fstrim.timer"), "fstrim.timer");
  });

  it("lists the node's service units with systemctl, sorted", async () => {
    const asked: string[][] = [];
    const transport: NodeTransport = {
      ...fakeTransport({}),
      run: async (node, argv): Promise<RunResult> => {
        asked.push([node, ...argv]);
        return { code: 0, stdout: "patroni.service loaded active running Patroni\netcd.service loaded active running etcd\n\n", stderr: "" };
      },
    };
    assert.deepEqual(await unitLogs("pg-seoul-1", transport).units(), ["etcd.service", "patroni.service"]);
    assert.deepEqual(asked, [["pg-seoul-1", "systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager", "--type=service"]]);
  });

  it("prints them with journalctl -n N [-u UNIT ...] [-f] on the node", () => {
    const logs = unitLogs("pg-seoul-1", fakeTransport({}));
    assert.deepEqual(logs.command(["patroni.service"], { lines: 20, follow: true }), ["journalctl", "--no-pager", "-n", "20", "-u", "patroni.service", "-f"]);
    assert.deepEqual(logs.command(["etcd.service", "patroni.service"], { lines: 10, follow: false }), [
      "journalctl",
      "--no-pager",
      "-n",
      "10",
      "-u",
      "etcd.service",
      "-u",
      "patroni.service",
    ]);
  });
});

describe("running attached", () => {
  it("passes the exit status through, 128 + the signal when killed", async () => {
    assert.equal(await runAttached(["sh", "-c", "exit 3"]), 3);
    assert.equal(await runAttached(["sh", "-c", "exit 0"]), 0);
    assert.equal(await runAttached(["sh", "-c", "kill -TERM $$"]), 128 + os.constants.signals.SIGTERM);
  });

  it("gives the child this process's stdin (psql and shells read the terminal)", async () => {
    // Where this runs stdin may be a terminal, a pipe or /dev/null: the child must see the same file.
    const mine = fs.statSync("/proc/self/fd/0", { throwIfNoEntry: false });
    if (!mine) return;
    const out = path.join(tmp, "stdin-inode");
    assert.equal(await runAttached(["sh", "-c", `stat -L -c %d:%i /proc/self/fd/0 > ${out}`]), 0);
    assert.equal(fs.readFileSync(out, "utf8").trim(), `${mine.dev}:${mine.ino}`);
  });
});

describe("the CLI (child process, empty state dir)", { timeout: 120_000 }, () => {
  const stateDir = path.join(tmp, "state");
  fs.mkdirSync(stateDir, { recursive: true });
  const root = typeof process.getuid === "function" && process.getuid() === 0;
  const notUp = root ? /^\d\d:\d\d:\d\d error: the lab is not up\b.*run `npm run lab -- up`$/ : /need root/;

  function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile(
        process.execPath,
        ["--import", "tsx", CLI, "--state-dir", stateDir, ...args],
        { cwd: ROOT, env: { ...process.env, PGHA_LAB_DIR: stateDir }, timeout: 90_000 },
        (error, stdout, stderr) => {
          const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
          resolve({ code, stdout, stderr });
        },
      );
    });
  }

  const cases: { args: string[]; error: RegExp }[] = [
    { args: ["exec", "nope", "--", "true"], error: /error: no lab host named "nope" \(hosts: pg-seoul-1, haproxy-1, .*, client\)$/ },
    { args: ["logs", "nope", "patroni"], error: /error: no lab host named "nope" \(hosts: pg-seoul-1, .*\)$/ },
    { args: ["logs", "client"], error: /error: the client runs no units of the cluster: `logs` takes a node name$/ },
    { args: ["psql", "--via", "nope"], error: /error: unknown HAProxy node "nope" \(HAProxy nodes: haproxy-1, haproxy-2, haproxy-3\)$/ },
    { args: ["psql", "--role", "admin"], error: /^error: option '--role <role>' argument 'admin' is invalid\. Allowed choices are writer, reader, sync\.$/ },
    { args: ["exec", "pg-seoul-1"], error: /^error: missing required argument 'command'$/ },
    { args: ["logs", "pg-seoul-1", "--lines", "0"], error: /^error: option '-n, --lines <n>' argument '0' is invalid\. must be a positive integer$/ },
    { args: ["exec", "pg-seoul-1", "--", "patronictl", "list"], error: notUp },
    { args: ["logs", "pg-seoul-1", "patroni", "-f"], error: notUp },
    { args: ["psql", "--role", "sync", "--via", "haproxy-2", "--", "-c", "select 1"], error: notUp },
  ];
  // In parallel: each run loads the whole CLI, seconds on a busy machine.
  const runs = cases.map((c) => cli(c.args));

  for (const [index, { args, error }] of cases.entries()) {
    it(`lab ${args.join(" ")}: one error line, exit 1`, async () => {
      const result = await runs[index];
      assert.equal(result.code, 1, result.stderr);
      assert.equal(result.stdout, "");
      const lines = result.stderr.trim().split("\n");
      assert.equal(lines.length, 1, result.stderr);
      assert.match(lines[0] ?? "", error);
    });
  }
});
