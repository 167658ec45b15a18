import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { checkVersionsCommand, renderUserData } from "../../cloud-init";
import { LAB_PATRONI, labConfig } from "../../lab/lab";
import { exec } from "../../lab/exec";
import { certificateSerial, checkIssued, issuePki, loadIssuedPki, renewLeaves, writeParameterDirs, type IssuedPki } from "../../lab/pki";
import { buildClusterPlan, CLUSTER_USERS, findNode, NODE_PATHS, nodesWithRole, PORTS, postgresPaths, type ClusterPlan } from "../../plan";
import { patroniConfig, pgHba } from "../../cloud-init/patroni";
import { rootfsPath, scratchDir, testNetwork, TestRoot, type TestNetwork } from "./harness";
import { userDataDocument } from "./user-data-files";

const rootfs = rootfsPath();
const plan: ClusterPlan = buildClusterPlan(undefined, { stack: "render" });
const base = scratchDir("render");
let pki: IssuedPki;
let parameterDirs: Map<string, string>;

/** A root holding exactly one node's user-data files, with its secrets fetched by the real boot script. */
async function bootedRoot(nodeName: string): Promise<TestRoot> {
  const root = new TestRoot(rootfs, base, nodeName);
  const userData = userDataDocument(renderUserData(plan, nodeName, {}));
  for (const file of userData.writeFiles) root.write(file.path, file.content, file.owner, file.permissions);
  const params = parameterDirs.get(nodeName) as string;
  fs.cpSync(params, root.hostPath("/var/lib/pgha-params"), { recursive: true });
  // pgha-install-etcd's local equivalent: the rootfs carries Debian's etcd.
  if (nodesWithRole(plan, "etcd").some((n) => n.name === nodeName)) {
    fs.mkdirSync(path.dirname(root.hostPath(NODE_PATHS.etcdBinary)), { recursive: true });
    fs.symlinkSync("/usr/bin/etcd", root.hostPath(NODE_PATHS.etcdBinary));
  }
  const fetched = await root.run([NODE_PATHS.fetchSecrets, "--from-dir", "/var/lib/pgha-params"]);
  assert.equal(fetched.code, 0, `pgha-fetch-secrets on ${nodeName}: ${fetched.stderr}`);
  return root;
}

before(async () => {
  pki = await issuePki(plan, path.join(base, "pki"), "10.1.0.99");
  parameterDirs = writeParameterDirs(plan, pki, path.join(base, "params"));
});

after(() => {
  fs.rmSync(base, { recursive: true, force: true });
});

describe("cloud-init", () => {
  test("`cloud-init schema` accepts every node's user-data", async () => {
    const root = new TestRoot(rootfs, base, "schema");
    for (const node of plan.nodes) {
      root.write(`/srv/${node.name}.yaml`, renderUserData(plan, node.name, { dataVolumeId: "vol-0123456789abcdef0" }));
      const result = await root.run(["cloud-init", "schema", "-c", `/srv/${node.name}.yaml`]);
      assert.equal(result.code, 0, `${node.name}: ${result.stdout}${result.stderr}`);
      assert.match(result.stdout, /Valid schema/);
    }
  });

  test("`cloud-init schema` is strict enough to catch an integer file mode (control)", async () => {
    const root = new TestRoot(rootfs, base, "schema-control");
    root.write("/srv/bad.yaml", "#cloud-config\nwrite_files:\n  - path: /etc/x\n    content: x\n    permissions: 0600\n");
    const result = await root.run(["cloud-init", "schema", "-c", "/srv/bad.yaml"]);
    assert.notEqual(result.code, 0, "a YAML integer mode must be rejected");
  });
});

describe("boot step: secrets from the parameter store", () => {
  test("pgha-fetch-secrets writes every key 0600 for its service user and the passwords as PATRONI_* variables", async () => {
    const root = await bootedRoot("pg-tokyo-1");
    const etcdKey = fs.statSync(root.hostPath("/etc/pgha/tls/etcd-member.key"));
    assert.equal(etcdKey.mode & 0o777, 0o600);
    assert.equal(etcdKey.uid, root.account("etcd").uid);
    const pgKey = fs.statSync(root.hostPath("/etc/pgha/tls/postgres-server.key"));
    assert.equal(pgKey.mode & 0o777, 0o600);
    assert.equal(pgKey.uid, root.account("postgres").uid);
    const env = fs.readFileSync(root.hostPath(NODE_PATHS.patroniEnv), "utf8");
    assert.match(env, new RegExp(`^PATRONI_SUPERUSER_PASSWORD=${pki.passwords.get("superuser")}$`, "m"));
    assert.equal(fs.statSync(root.hostPath(NODE_PATHS.patroniEnv)).mode & 0o777, 0o600);
  });
});

describe("pgha-fetch-secrets on a running node: check mode and renewal", () => {
  const run = async (root: TestRoot, args: string[]): Promise<{ report: { mode: string; files: number; changed: { path: string; differs: string[] }[] }; stdout: string }> => {
    const result = await root.run([NODE_PATHS.fetchSecrets, ...args]);
    assert.equal(result.code, 0, `pgha-fetch-secrets ${args.join(" ")}: ${result.stderr}`);
    const lines = result.stdout.trim().split("\n");
    assert.equal(lines.length, 1, `one JSON line: ${result.stdout}`);
    return { report: JSON.parse(lines[0]), stdout: result.stdout };
  };
  const tls = (kind: string, ext: string) => `${NODE_PATHS.tlsDir}/${kind}.${ext}`;
  const digest = (root: TestRoot, file: string) =>
    createHash("sha256")
      .update(fs.readFileSync(root.hostPath(file)))
      .digest("hex");

  test("check names exactly the files a renewal and a wrong mode changed (no value printed, nothing written); write fixes only those; check is then clean", async () => {
    const root = await bootedRoot("pg-tokyo-1");
    const clean = await run(root, ["--check", "--from-dir", "/var/lib/pgha-params"]);
    assert.equal(clean.report.mode, "check");
    assert.equal(clean.report.files, plan.secrets.find((s) => s.node === "pg-tokyo-1")?.files.length);
    assert.deepEqual(clean.report.changed, []);

    // Renew two of the node's certificates (same keys, same CA, new serials) into a second parameter directory.
    const renewedDir = path.join(base, "pki-renewed");
    fs.cpSync(pki.dir, renewedDir, { recursive: true });
    const renewedPki = loadIssuedPki(plan, renewedDir);
    await renewLeaves(plan, renewedPki, ["pg-tokyo-1-postgres-server", "pg-tokyo-1-etcd-member"]);
    const oldSerial = await certificateSerial(pki.leaves.get("pg-tokyo-1-postgres-server")?.cert as string);
    const newSerial = await certificateSerial(renewedPki.leaves.get("pg-tokyo-1-postgres-server")?.cert as string);
    assert.notEqual(newSerial, oldSerial);
    const renewedParams = writeParameterDirs(plan, renewedPki, path.join(base, "params-renewed")).get("pg-tokyo-1") as string;
    fs.cpSync(renewedParams, root.hostPath("/var/lib/pgha-params-renewed"), { recursive: true });
    // A key whose mode drifted is named too (by mode, not content).
    fs.chmodSync(root.hostPath(tls("etcd-client", "key")), 0o644);

    const before = new Map(
      [tls("postgres-server", "crt"), tls("ca", "crt"), NODE_PATHS.patroniEnv].map((f) => [f, { digest: digest(root, f), inode: fs.statSync(root.hostPath(f)).ino }]),
    );
    const check = await run(root, ["--check", "--from-dir", "/var/lib/pgha-params-renewed"]);
    const expected = [
      { path: tls("etcd-client", "key"), differs: ["mode"] },
      { path: tls("etcd-member", "crt"), differs: ["content"] },
      { path: tls("postgres-server", "crt"), differs: ["content"] },
    ];
    const byPath = (a: { path: string }, b: { path: string }) => (a.path < b.path ? -1 : 1);
    assert.equal(check.report.mode, "check");
    assert.deepEqual([...check.report.changed].sort(byPath), expected);
    for (const [file, was] of before) assert.equal(digest(root, file), was.digest, `--check wrote ${file}`);
    assert.equal(fs.statSync(root.hostPath(tls("etcd-client", "key"))).mode & 0o777, 0o644, "--check fixed a mode");
    for (const value of [...pki.passwords.values(), "PRIVATE KEY", "BEGIN CERTIFICATE"]) assert.ok(!check.stdout.includes(value), "a value reached the output");

    const write = await run(root, ["--from-dir", "/var/lib/pgha-params-renewed"]);
    assert.equal(write.report.mode, "write");
    assert.deepEqual([...write.report.changed].sort(byPath), expected);
    assert.equal(
      fs.readFileSync(root.hostPath(tls("postgres-server", "crt")), "utf8"),
      fs.readFileSync(renewedPki.leaves.get("pg-tokyo-1-postgres-server")?.cert as string, "utf8"),
    );
    const key = fs.statSync(root.hostPath(tls("etcd-client", "key")));
    assert.equal(key.mode & 0o777, 0o600);
    assert.equal(key.uid, root.account("postgres").uid);
    const cert = fs.statSync(root.hostPath(tls("postgres-server", "crt")));
    assert.equal(cert.mode & 0o777, 0o644);
    assert.equal(cert.uid, root.account("postgres").uid);
    // Unchanged files are left alone (same inode: not even rewritten).
    assert.equal(fs.statSync(root.hostPath(tls("ca", "crt"))).ino, before.get(tls("ca", "crt"))?.inode);
    assert.equal(fs.statSync(root.hostPath(NODE_PATHS.patroniEnv)).ino, before.get(NODE_PATHS.patroniEnv)?.inode);
    for (const value of [...pki.passwords.values(), "PRIVATE KEY", "BEGIN CERTIFICATE"]) assert.ok(!write.stdout.includes(value), "a value reached the output");

    assert.deepEqual((await run(root, ["--check", "--from-dir", "/var/lib/pgha-params-renewed"])).report.changed, []);
  });
});

describe("openssl", () => {
  test("every planned certificate chains to the cluster CA with exactly the planned SANs and usages", async () => {
    assert.deepEqual(await checkIssued(plan, pki), []);
  });
});

describe("haproxy", () => {
  test("`haproxy -c` accepts every HAProxy node's haproxy.cfg with its certificates in place", async () => {
    for (const node of nodesWithRole(plan, "haproxy")) {
      const root = await bootedRoot(node.name);
      const result = await root.run(["haproxy", "-c", "-f", NODE_PATHS.haproxyConfig]);
      assert.equal(result.code, 0, `${node.name}: ${result.stdout}${result.stderr}`);
    }
  });

  test("`haproxy -c` rejects the config when the check client certificate is missing (control)", async () => {
    const root = new TestRoot(rootfs, base, "haproxy-control");
    const userData = userDataDocument(renderUserData(plan, "haproxy-1", {}));
    for (const file of userData.writeFiles) root.write(file.path, file.content, file.owner, file.permissions);
    const result = await root.run(["haproxy", "-c", "-f", NODE_PATHS.haproxyConfig]);
    assert.notEqual(result.code, 0);
  });
});

describe("PostgreSQL 17 on the rendered parameters and pg_hba", () => {
  test("it starts with every rendered parameter; replication is accepted from a database node's address and refused from elsewhere in its VPC, ordinary connections from there are not (control)", async () => {
    const member = findNode(plan, "pg-tokyo-1");
    const other = `${member.privateIp.split(".").slice(0, 3).join(".")}.77`;
    assert.ok(!plan.nodes.some((n) => n.privateIp === other), `${other} is no node's address`);
    const root = await bootedRoot(member.name);
    const hba = pgHba(plan);
    root.write("/srv/pg_hba.conf", `${hba.join("\n")}\n`, "postgres", "0600");
    // What Patroni writes into postgresql.conf: the dynamic (bootstrap.dcs) parameters, then the node's local ones.
    const config = patroniConfig(plan, member) as {
      bootstrap: { dcs: { postgresql: { parameters: Record<string, string | number | boolean> } } };
      postgresql: { parameters: Record<string, string | number | boolean> };
    };
    const parameters: Record<string, string | number | boolean> = {
      ...config.bootstrap.dcs.postgresql.parameters,
      ...config.postgresql.parameters,
      unix_socket_directories: "/tmp",
      listen_addresses: "*",
    };
    const conf = Object.entries(parameters).map(([name, value]) => `${name} = '${String(value)}'`);
    root.write("/srv/postgresql.pgha.conf", `${conf.join("\n")}\n`, "postgres", "0600");
    const ns = "pgha-render-hba";
    await exec(["ip", "netns", "delete", ns]);
    assert.equal((await exec(["ip", "netns", "add", ns])).code, 0);
    try {
      for (const argv of [
        ["link", "set", "lo", "up"],
        ["addr", "add", `${member.privateIp}/32`, "dev", "lo"],
        ["addr", "add", `${other}/32`, "dev", "lo"],
      ])
        assert.equal((await exec(["ip", "-n", ns, ...argv])).code, 0, argv.join(" "));
      const bin = postgresPaths(plan.config.versions.postgresMajor).binDir;
      // A connection to one of the host's own addresses leaves from that address: the source pg_hba sees.
      const connect = (host: string, replication: boolean): string =>
        `PGPASSWORD=secret psql "host=${host} port=5432 user=${CLUSTER_USERS.replication} dbname=postgres sslmode=require${replication ? " replication=true" : ""}" -Atc "${replication ? "IDENTIFY_SYSTEM" : "SELECT 'ordinary ok'"}" 2>&1; echo "rc=$?"`;
      const script = [
        "set -e",
        `${bin}/initdb -D /tmp/pgdata -U ${CLUSTER_USERS.superuser} --auth-local=peer >/dev/null`,
        "cp /srv/pg_hba.conf /tmp/pgdata/pg_hba.conf",
        "cat /srv/postgresql.pgha.conf >> /tmp/pgdata/postgresql.conf",
        `${bin}/pg_ctl -D /tmp/pgdata -l /tmp/pg.log -w start >/dev/null || { cat /tmp/pg.log; exit 1; }`,
        `echo "max_slot_wal_keep_size: $(psql -h /tmp -U ${CLUSTER_USERS.superuser} -d postgres -Atc 'SHOW max_slot_wal_keep_size')"`,
        `psql -h /tmp -U ${CLUSTER_USERS.superuser} -d postgres -Atc "CREATE ROLE ${CLUSTER_USERS.replication} LOGIN REPLICATION PASSWORD 'secret'" >/dev/null`,
        `echo "hba errors: $(psql -h /tmp -U ${CLUSTER_USERS.superuser} -d postgres -Atc 'SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL')"`,
        "set +e",
        `echo "== member"; ${connect(member.privateIp, true)}`,
        `echo "== other"; ${connect(other, true)}`,
        `echo "== other ordinary"; ${connect(other, false)}`,
        `${bin}/pg_ctl -D /tmp/pgdata -m immediate stop >/dev/null`,
      ].join("\n");
      const result = await root.run(["sh", "-c", script], { netns: ns, user: "postgres", timeoutMs: 120_000 });
      const out = result.stdout + result.stderr;
      assert.equal(result.code, 0, out);
      const section = (name: string): string => out.split(`== ${name}\n`)[1]?.split("\n== ")[0] ?? "";
      assert.match(out, /^hba errors: 0$/m, out);
      // A tenth of the default 100 GiB volume (cloud-init/patroni.ts): 10240MB, which PostgreSQL shows as 10GB.
      assert.match(out, /^max_slot_wal_keep_size: 10GB$/m, out);
      assert.match(section("member"), /rc=0/, `replication from the member's own address:\n${out}`);
      assert.match(section("other"), new RegExp(`no pg_hba.conf entry for replication connection from host "${other.replace(/\./g, "\\.")}"`), out);
      assert.match(section("other ordinary"), /ordinary ok\nrc=0/, `control: an ordinary connection from ${other}:\n${out}`);
    } finally {
      await exec(["ip", "netns", "delete", ns]);
    }
  });
});

describe("monitoring: the real Prometheus tools accept the rendered files", () => {
  test("`promtool check config` accepts every Prometheus config, its alert rules and its TLS files", async () => {
    for (const node of nodesWithRole(plan, "haproxy")) {
      const root = await bootedRoot(node.name);
      const result = await root.run(["promtool", "check", "config", NODE_PATHS.prometheusConfig]);
      assert.equal(result.code, 0, `${node.name}: ${result.stdout}${result.stderr}`);
      assert.match(result.stdout, /SUCCESS: \d+ rule files? found/, `${node.name}: the alert rules are loaded: ${result.stdout}`);
    }
  });

  test("`promtool check config` rejects a scrape config whose client key is missing (control)", async () => {
    const root = await bootedRoot("haproxy-1");
    fs.rmSync(root.hostPath("/etc/pgha/tls/metrics.key"));
    const result = await root.run(["promtool", "check", "config", NODE_PATHS.prometheusConfig]);
    assert.notEqual(result.code, 0, result.stdout);
  });

  test("`promtool check web-config` accepts every node's metrics TLS config", async () => {
    for (const node of plan.nodes) {
      const root = await bootedRoot(node.name);
      const result = await root.run(["promtool", "check", "web-config", NODE_PATHS.metricsWebConfig]);
      assert.equal(result.code, 0, `${node.name}: ${result.stdout}${result.stderr}`);
    }
  });

  test("`amtool check-config` accepts Alertmanager's config, with and without an SNS topic", async () => {
    const withTopic = buildClusterPlan({ monitoring: { alertTopicArn: "arn:aws:sns:ap-northeast-2:123456789012:pgha-alerts", groupIntervalSeconds: 30 } }, { stack: "render" });
    const root = new TestRoot(rootfs, base, "amtool");
    for (const [name, candidate] of [
      ["no-topic", plan],
      ["topic", withTopic],
    ] as const) {
      const config = userDataDocument(renderUserData(candidate, "haproxy-1", {})).writeFiles.find((f) => f.path === NODE_PATHS.alertmanagerConfig);
      assert.ok(config, "haproxy-1 has an Alertmanager config");
      root.write(`/srv/${name}.yml`, config.content);
      const result = await root.run(["amtool", "check-config", `/srv/${name}.yml`]);
      assert.equal(result.code, 0, `${name}: ${result.stdout}${result.stderr}`);
      if (name === "topic") assert.match(config.content, /topic_arn: arn:aws:sns:ap-northeast-2:123456789012:pgha-alerts/);
      assert.match(config.content, name === "topic" ? /group_interval: 30s/ : /group_interval: 300s/, "group_interval from monitoring.groupIntervalSeconds");
    }
    root.write("/srv/broken.yml", "route:\n  receiver: nowhere\nreceivers: []\n");
    const broken = await root.run(["amtool", "check-config", "/srv/broken.yml"]);
    assert.notEqual(broken.code, 0, "control: a route to an undefined receiver is rejected");
  });

  test("pgha-certificate-metrics writes every certificate's notAfter in the exposition format", async () => {
    const root = await bootedRoot("pg-seoul-1");
    const output = "/srv/pgha-certificates.prom";
    const result = await root.run([NODE_PATHS.certificateMetrics, NODE_PATHS.tlsDir, output]);
    assert.equal(result.code, 0, result.stderr);
    const text = fs.readFileSync(root.hostPath(output), "utf8");
    const lint = await root.run(["sh", "-c", `promtool check metrics < ${output}`]);
    assert.equal(lint.code, 0, `promtool check metrics: ${lint.stdout}${lint.stderr}`);
    const served = await root.run(["openssl", "x509", "-noout", "-enddate", "-in", "/etc/pgha/tls/metrics.crt"]);
    const notAfter = Date.parse(served.stdout.replace("notAfter=", "").trim()) / 1000;
    assert.match(text, new RegExp(`^pgha_certificate_expiry_timestamp_seconds\\{path="/etc/pgha/tls/metrics.crt"\\} ${notAfter}$`, "m"));
    const files = plan.secrets.find((s) => s.node === "pg-seoul-1")?.files.filter((f) => f.path.endsWith(".crt")) ?? [];
    assert.equal((text.match(/^pgha_certificate_expiry_timestamp_seconds/gm) ?? []).length, files.length, text);
  });
});

describe("etcd and Patroni on the rendered configuration", () => {
  const etcdNodes = nodesWithRole(plan, "etcd");
  let network: TestNetwork;
  const roots = new Map<string, TestRoot>();
  const netnsOf = (node: string): string => network.namespaces.get(plan.nodes.find((n) => n.name === node)?.privateIp as string) as string;

  before(async () => {
    network = await testNetwork(
      `pgha-rt${process.pid % 10000}`,
      plan.nodes.map((n) => n.privateIp),
    );
    for (const node of etcdNodes) {
      const root = await bootedRoot(node.name);
      roots.set(node.name, root);
      // Started as the unit runs it; the network's removal kills it.
      void root.run([NODE_PATHS.etcdBinary, `--config-file=${NODE_PATHS.etcdConfig}`], { netns: netnsOf(node.name), user: "etcd", timeoutMs: 300_000 });
    }
  });

  after(async () => network.remove());

  const environmentFile = (root: TestRoot, file: string = NODE_PATHS.patroniEnv): Record<string, string> =>
    Object.fromEntries(
      fs
        .readFileSync(root.hostPath(file), "utf8")
        .split("\n")
        .filter(Boolean)
        .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
    );

  const etcdctl = (args: string[]) => {
    const root = roots.get("pg-seoul-1") as TestRoot;
    return root.run(["etcdctl", "--command-timeout=3s", ...args], { netns: netnsOf("pg-seoul-1"), env: environmentFile(root, NODE_PATHS.etcdctlEnv) });
  };

  test("three members form a cluster over mutual TLS and report healthy", async () => {
    let last = "";
    // A budget, not a speed check: three members start and elect in ≈ 2 s idle; a loaded 2-core machine gets 60 s.
    for (const deadline = Date.now() + 60_000; Date.now() < deadline;) {
      const result = await etcdctl(["endpoint", "health", "--cluster"]);
      last = result.stdout + result.stderr;
      if (result.code === 0 && (last.match(/is healthy/g) ?? []).length === etcdNodes.length) break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    assert.equal((last.match(/is healthy/g) ?? []).length, etcdNodes.length, last);
    const members = await etcdctl(["member", "list"]);
    for (const node of etcdNodes) assert.match(members.stdout, new RegExp(`${node.name}, https://${node.privateIp.replace(/\./g, "\\.")}:${PORTS.etcdPeer}`));
  });

  test("etcd refuses a plain-text client, a client without a certificate and a certificate from another CA", async () => {
    const root = roots.get("pg-seoul-1") as TestRoot;
    const url = `${plan.etcd.members[0]?.clientUrl}/health`;
    const plain = await root.run(["curl", "-sS", "--max-time", "3", url.replace("https://", "http://")], { netns: netnsOf("pg-seoul-1") });
    assert.doesNotMatch(plain.stdout, /"health":"true"/);
    const noCert = await root.run(["curl", "-sS", "--max-time", "3", "--cacert", NODE_PATHS.caCert, url], { netns: netnsOf("pg-seoul-1") });
    assert.notEqual(noCert.code, 0, `no client certificate must fail: ${noCert.stdout}`);
    root.write("/srv/foreign.crt", fs.readFileSync(pki.foreign.cert, "utf8"));
    root.write("/srv/foreign.key", fs.readFileSync(pki.foreign.key, "utf8"), "root", "0600");
    const foreign = await root.run(["curl", "-sS", "--max-time", "3", "--cacert", NODE_PATHS.caCert, "--cert", "/srv/foreign.crt", "--key", "/srv/foreign.key", url], {
      netns: netnsOf("pg-seoul-1"),
    });
    assert.notEqual(foreign.code, 0, `a foreign CA's certificate must fail: ${foreign.stdout}`);
    const good = await root.run(
      ["curl", "-sS", "--max-time", "3", "--cacert", NODE_PATHS.caCert, "--cert", "/etc/pgha/tls/etcd-client.crt", "--key", "/etc/pgha/tls/etcd-client.key", url],
      { netns: netnsOf("pg-seoul-1") },
    );
    assert.match(good.stdout, /"health":"true"/, `control: the cluster's own client certificate must pass: ${good.stderr}`);
  });

  test("etcd serves /metrics on its own listener, to cluster certificates only", async () => {
    const root = roots.get("pg-seoul-1") as TestRoot;
    const url = `https://${findNode(plan, "pg-tokyo-1").privateIp}:${PORTS.etcdMetrics}/metrics`;
    const curl = (extra: string[]) => root.run(["curl", "-sS", "--max-time", "3", "--cacert", NODE_PATHS.caCert, ...extra, url], { netns: netnsOf("pg-seoul-1") });
    const scraped = await curl(["--cert", "/etc/pgha/tls/metrics.crt", "--key", "/etc/pgha/tls/metrics.key"]);
    assert.match(scraped.stdout, /^etcd_server_has_leader 1$/m, `the metrics certificate must be served the metrics: ${scraped.stderr}`);
    const noCert = await curl([]);
    assert.notEqual(noCert.code, 0, `the metrics listener answered without a client certificate: ${noCert.stdout.slice(0, 200)}`);
  });

  test("the etcd peer port demands a client certificate (the reference design's peer-client-cert-auth key is ignored by etcd)", async () => {
    const root = roots.get("pg-seoul-1") as TestRoot;
    const peerUrl = `${plan.etcd.members[1]?.peerUrl}/members`;
    const noCert = await root.run(["curl", "-sS", "--max-time", "3", "--cacert", NODE_PATHS.caCert, peerUrl], { netns: netnsOf("pg-seoul-1") });
    assert.notEqual(noCert.code, 0, `peer port answered without a client certificate: ${noCert.stdout}`);
  });

  test("`patroni --validate-config` accepts patroni.yml with etcd reachable", async () => {
    for (const node of nodesWithRole(plan, "postgres")) {
      const root = roots.get(node.name) ?? (await bootedRoot(node.name));
      // As the unit runs it: the passwords come from its EnvironmentFile.
      const result = await root.run(["patroni", "--validate-config", NODE_PATHS.patroniConfig], { netns: netnsOf(node.name), user: "postgres", env: environmentFile(root) });
      assert.equal(result.code, 0, `${node.name}: ${result.stdout}${result.stderr}`);
    }
  });

  test("`patroni --validate-config` rejects a config whose etcd hosts are unreachable (control)", async () => {
    const root = roots.get("pg-seoul-1") as TestRoot;
    const broken = fs
      .readFileSync(root.hostPath(NODE_PATHS.patroniConfig), "utf8")
      .replace(/10\.1\.0\.10:2379/, "10.1.0.99:2379")
      .replace(/10\.2\.0\.10:2379/, "10.2.0.99:2379")
      .replace(/10\.3\.0\.10:2379/, "10.3.0.99:2379");
    root.write("/srv/broken.yml", broken, "postgres", "0640");
    const result = await root.run(["patroni", "--validate-config", "/srv/broken.yml"], {
      netns: netnsOf("pg-seoul-1"),
      user: "postgres",
      env: environmentFile(root),
      timeoutMs: 60_000,
    });
    assert.notEqual(result.code, 0);
  });
});

describe("boot step: etcd install", () => {
  test("pgha-install-etcd installs a release whose SHA-256 matches and refuses one that does not", async () => {
    const root = await bootedRoot("pg-singapore-1");
    fs.rmSync(root.hostPath(NODE_PATHS.etcdBinary));
    const version = plan.config.versions.etcd;
    const name = `etcd-v${version}-linux-amd64`;
    const stage = path.join(base, "release-stage");
    fs.mkdirSync(path.join(stage, name), { recursive: true });
    for (const tool of ["etcd", "etcdctl", "etcdutl"]) {
      fs.writeFileSync(path.join(stage, name, tool), `#!/bin/sh\necho "etcd Version: ${version}"\n`, { mode: 0o755 });
    }
    const archive = root.hostPath(`/srv/release/v${version}/${name}.tar.gz`);
    fs.mkdirSync(path.dirname(archive), { recursive: true });
    assert.equal((await exec(["tar", "-czf", archive, "-C", stage, name])).code, 0);
    const sha = createHash("sha256").update(fs.readFileSync(archive)).digest("hex");
    // The 4th argument is packages.etcdReleaseUrl; curl reads a file: URL just as well.
    const releaseUrl = "file:///srv/release";

    const tampered = await root.run([NODE_PATHS.installEtcd, version, "0".repeat(64), "amd64", releaseUrl]);
    assert.notEqual(tampered.code, 0, "a checksum mismatch must stop the install");
    assert.ok(!fs.existsSync(root.hostPath(NODE_PATHS.etcdBinary)), "nothing may be installed from an unverified archive");

    const verified = await root.run([NODE_PATHS.installEtcd, version, sha, "amd64", releaseUrl]);
    assert.equal(verified.code, 0, verified.stderr);
    assert.ok(fs.existsSync(root.hostPath(NODE_PATHS.etcdBinary)));
  });
});

describe("boot step: version check", () => {
  /** A root with the node's rendered files and Debian's etcd where pgha-install-etcd puts the release. */
  const rootWithFiles = (nodeName: string): TestRoot => {
    const root = new TestRoot(rootfs, base, `versions-${nodeName}`);
    for (const file of userDataDocument(renderUserData(plan, nodeName, {})).writeFiles) root.write(file.path, file.content, file.owner, file.permissions);
    fs.mkdirSync(path.dirname(root.hostPath(NODE_PATHS.etcdBinary)), { recursive: true });
    fs.symlinkSync("/usr/bin/etcd", root.hostPath(NODE_PATHS.etcdBinary));
    return root;
  };
  const argv = checkVersionsCommand(plan, findNode(plan, "pg-tokyo-1")) as string[];

  test("with the stack's pins it refuses Debian 13's Patroni 4.0 and etcd 3.5.16, names each, and holds every unit of the node", async () => {
    const root = rootWithFiles("pg-tokyo-1");
    const result = await root.run(argv);
    assert.equal(result.code, 1, result.stderr);
    const lines = result.stderr.trim().split("\n");
    assert.match(lines[0], /^pgha-check-versions: patroni 4\.0\.\S+ is installed; versions\.patroni pins 4\.1\.\*$/);
    assert.match(lines[1], /^pgha-check-versions: etcd \(\/usr\/local\/bin\/etcd\) 3\.5\.\d+ is installed; versions\.etcd is 3\.5\.21$/);
    assert.equal(lines.length, 3, `PostgreSQL 17 matches 17.*; got:\n${result.stderr}`);
    const held = argv.filter((_, i) => argv[i - 1] === "--hold");
    assert.ok(held.includes("etcd.service") && held.includes("patroni.service"), `holds ${held.join(", ")}`);
    assert.match(lines[2], new RegExp(`holding ${held.join(" ")} until ${NODE_PATHS.versionsRefused} is removed`));
    assert.equal(
      fs.readFileSync(root.hostPath(NODE_PATHS.versionsRefused), "utf8"),
      lines
        .slice(0, 2)
        .map((l) => l.replace("pgha-check-versions: ", ""))
        .join("\n") + "\n",
    );
    for (const unit of held) {
      const dropIn = fs.readFileSync(root.hostPath(`/etc/systemd/system/${unit}.d/50-pgha-versions.conf`), "utf8");
      assert.match(dropIn, new RegExp(`^\\[Unit\\]\nAssertPathExists=!${NODE_PATHS.versionsRefused}$`, "m"));
    }
  });

  test("with the lab's pins (its plan: Debian 13's Patroni series, the mirror's Debian etcd) it passes and holds nothing", async () => {
    const root = rootWithFiles("pg-tokyo-1");
    const etcd = /etcd Version: (\S+)/.exec((await root.run([NODE_PATHS.etcdBinary, "--version"])).stdout)?.[1];
    assert.ok(etcd, "the rootfs's etcd reports its version");
    // As labPlan(mirror) pins them; the checksum is not what this step checks.
    const lab = buildClusterPlan({ ...labConfig(), versions: { patroni: LAB_PATRONI, etcd, etcdSha256: { amd64: "0".repeat(64) } } }, { stack: "render" });
    const result = await root.run(checkVersionsCommand(lab, findNode(lab, "pg-tokyo-1")) as string[]);
    assert.equal(result.code, 0, result.stderr);
    assert.ok(!fs.existsSync(root.hostPath(NODE_PATHS.versionsRefused)));
    assert.ok(!fs.existsSync(root.hostPath("/etc/systemd/system/patroni.service.d")));
  });

  test("a PostgreSQL major that is not installed is refused too (control)", async () => {
    const root = rootWithFiles("pg-tokyo-1");
    const result = await root.run([NODE_PATHS.checkVersions, "--postgres", "16", "16.*"]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /postgresql-16 is not installed; versions\.postgresPackage pins 16\.\*/);
    assert.match(result.stderr, /\/usr\/lib\/postgresql\/16\/bin\/postgres reports 'nothing'; versions\.postgresMajor is 16/);
  });
});
