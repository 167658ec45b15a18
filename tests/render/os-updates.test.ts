/**
 * Automatic OS updates leave the cluster alone, proven with the real Debian 13
 * programs on the files a node's user-data carries:
 *
 * - needrestart 3.11, run as apt's hook runs it in automatic mode (`-r a`),
 *   with processes that map a deleted binary inside systemd-named cgroups
 *   (patroni.service, etcd.service, …): with our conf.d file it defers the
 *   cluster's services and still restarts an unrelated one; without it
 *   (control) it restarts them all. `systemctl` is a stub that logs its calls.
 * - unattended-upgrades 2.12 `--dry-run --debug` against a local repository
 *   that offers a newer version of every held package and of curl: with our
 *   apt.conf.d file only curl is upgraded; without it (control) all are.
 *
 * needrestart and unattended-upgrades are not in the lab's rootfs; `npm run
 * setup` downloads them (with their missing dependencies) into a cache, and
 * each test unpacks them into its own overlay.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { renderUserData } from "../../cloud-init";
import { HELD_PACKAGES, OS_UPDATE_PATHS, upgradeSlotHour } from "../../cloud-init/os-updates";
import { exec } from "../../lab/exec";
import { buildClusterPlan, nodesWithRole, type ClusterPlan } from "../../plan";
import { cachedDebs, rootfsPath, scratchDir, TestRoot } from "./harness";
import { userDataDocument } from "./user-data-files";

const rootfs = rootfsPath();
const plan: ClusterPlan = buildClusterPlan(undefined, { stack: "render" });
const base = scratchDir("os-updates");
const TEST_PACKAGES = ["needrestart", "unattended-upgrades"];

let debs: string[];

/** A root with needrestart and unattended-upgrades unpacked, plus the given node's OS-update files when asked. */
async function rootWith(name: string, nodeName: string, withOurFiles: boolean): Promise<TestRoot> {
  const root = new TestRoot(rootfs, base, name);
  // dpkg-deb -x: the packages' files, conffiles included, without maintainer scripts (nothing to start here).
  const unpacked = await Promise.all(debs.map((deb) => exec(["dpkg-deb", "-x", deb, root.upper])));
  unpacked.forEach((result, i) => {
    assert.equal(result.code, 0, `${debs[i]}: ${result.stderr}`);
  });
  const files = userDataDocument(renderUserData(plan, nodeName, { dataVolumeId: "vol-0123456789abcdef0" })).writeFiles;
  const ours = files.filter((f) => (Object.values(OS_UPDATE_PATHS) as string[]).includes(f.path));
  assert.deepEqual(ours.map((f) => f.path).sort(), Object.values(OS_UPDATE_PATHS).sort(), `${nodeName}'s user-data carries every OS-update file`);
  if (withOurFiles) for (const file of ours) root.write(file.path, file.content, file.owner, file.permissions);
  return root;
}

before(() => {
  debs = cachedDebs(rootfs, TEST_PACKAGES);
  for (const name of TEST_PACKAGES)
    assert.ok(
      debs.some((d) => path.basename(d).startsWith(`${name}_`)),
      `${name} missing among ${debs.join(", ")}`,
    );
});

after(() => {
  fs.rmSync(base, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// needrestart
// ---------------------------------------------------------------------------

/** The host's systemd-named cgroup hierarchy, as needrestart reads /proc/<pid>/cgroup. */
function cgroupMount(): string {
  if (fs.existsSync("/sys/fs/cgroup/systemd/cgroup.procs")) return "mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd; cg=/sys/fs/cgroup/systemd";
  if (fs.existsSync("/sys/fs/cgroup/cgroup.controllers")) return "mount -t cgroup2 cgroup2 /sys/fs/cgroup; cg=/sys/fs/cgroup";
  throw new Error("no systemd-named or unified cgroup hierarchy on this host: needrestart maps processes to units through it");
}

/**
 * Inside a fresh PID namespace (so needrestart sees only these processes):
 * one process per unit, each in a cgroup named after the unit and running a
 * binary that is then deleted — what an upgraded library or binary looks like
 * to needrestart — then `needrestart -r a`, as in automatic mode.
 */
const NEEDRESTART_SCRIPT = `
set -e
mkdir -p /run/systemd/system
${cgroupMount()}
top="$cg/pgha-needrestart-$1"; shift
pids=""
for unit in "$@"; do
  mkdir -p "$top/$unit"
  bin="/usr/local/lib/pgha-test/$unit"
  mkdir -p "$(dirname "$bin")"
  cp /usr/bin/sleep "$bin"
  sh -c 'echo $$ > "$1/cgroup.procs"; exec "$2" 300' sh "$top/$unit" "$bin" &
  pids="$pids $!"
done
sleep 0.3
rm -r /usr/local/lib/pgha-test
set +e
needrestart -r a -l -v
code=$?
kill $pids
wait
for unit in "$@"; do rmdir "$top/$unit"; done
rmdir "$top"
echo "needrestart-exit=$code"
echo "--- systemctl calls"
cat /var/log/pgha-systemctl 2>/dev/null
`;

async function needrestart(root: TestRoot, units: string[]): Promise<{ output: string; restarted: string[] }> {
  fs.mkdirSync(root.hostPath("/sys/fs/cgroup/systemd"), { recursive: true });
  // The rootfs has no systemd: a stub records what needrestart asks systemctl to do.
  root.write("/usr/local/bin/systemctl", '#!/bin/sh\necho "$*" >> /var/log/pgha-systemctl\n', "root", "0755");
  const tag = randomBytes(4).toString("hex");
  const result = await root.run(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", NEEDRESTART_SCRIPT, "sh", tag, ...units], { timeoutMs: 60_000 });
  const output = result.stdout + result.stderr;
  assert.equal(result.code, 0, output);
  assert.match(output, /needrestart-exit=0/, output);
  for (const unit of units) assert.match(output, new RegExp(`#\\d+ is ${unit.replace(/[.@]/g, "\\$&")}`), `needrestart did not see ${unit}:\n${output}`);
  const calls = output.split("--- systemctl calls\n")[1] ?? "";
  const restarted = calls
    .split("\n")
    .filter((l) => l.startsWith("restart "))
    .flatMap((l) => l.split(/\s+/).slice(1))
    .sort();
  return { output, restarted };
}

describe("needrestart", () => {
  const database = nodesWithRole(plan, "postgres")[0].name;
  const haproxy = nodesWithRole(plan, "haproxy")[0].name;
  // cron.service stands for any other service: it must still be restarted.
  const cases = [
    { node: database, cluster: ["etcd.service", "patroni.service", "postgresql@17-main.service"] },
    { node: haproxy, cluster: ["haproxy.service"] },
  ];

  for (const { node, cluster } of cases) {
    test(`${node}: the cluster's services are deferred, another service is still restarted`, async () => {
      const root = await rootWith(`needrestart-${node}`, node, true);
      const { output, restarted } = await needrestart(root, [...cluster, "cron.service"]);
      assert.match(output, new RegExp(`eval ${OS_UPDATE_PATHS.needrestart.replace(/\./g, "\\.")}`), "needrestart read our file");
      assert.deepEqual(restarted, ["cron.service"], output);
      const deferred = output.split("Service restarts being deferred:")[1] ?? "";
      for (const unit of cluster) assert.match(deferred, new RegExp(`systemctl restart ${unit.replace(/[.@]/g, "\\$&")}`), output);
    });

    test(`${node} control: without our file needrestart restarts the cluster's services`, async () => {
      const root = await rootWith(`needrestart-control-${node}`, node, false);
      const { output, restarted } = await needrestart(root, [...cluster, "cron.service"]);
      assert.deepEqual(restarted, [...cluster, "cron.service"].sort(), output);
    });
  }
});

// ---------------------------------------------------------------------------
// unattended-upgrades
// ---------------------------------------------------------------------------

/** One installed package of the rootfs for each held pattern, and curl, which nothing holds. */
const HELD_EXAMPLES = ["postgresql-17", "postgresql-client-17", "libpq5", "patroni", "python3-etcd", "python3-psycopg2", "haproxy", "etcd-server"];
const FREE_EXAMPLE = "curl";

/** A file: repository offering version 99:1.0 of each package (empty packages: a dry run installs nothing). */
async function offerUpgrades(root: TestRoot, packages: string[]): Promise<void> {
  const repo = root.hostPath("/srv/pgha-repo");
  const build = path.join(root.upper, "..", "build");
  fs.mkdirSync(repo, { recursive: true });
  const stanzas: string[] = [];
  for (const name of packages) {
    const control = {
      Package: name,
      Version: "99:1.0",
      Architecture: "all",
      Maintainer: "pgha render test <test@invalid>",
      Description: "newer version offered to unattended-upgrades",
    };
    fs.mkdirSync(path.join(build, name, "DEBIAN"), { recursive: true });
    fs.writeFileSync(
      path.join(build, name, "DEBIAN", "control"),
      Object.entries(control)
        .map(([k, v]) => `${k}: ${v}\n`)
        .join(""),
    );
    const deb = path.join(repo, `${name}_99.deb`);
    const built = await exec(["dpkg-deb", "--build", "-Zgzip", path.join(build, name), deb]);
    assert.equal(built.code, 0, built.stderr);
    const bytes = fs.readFileSync(deb);
    const fields = { ...control, Filename: `./${path.basename(deb)}`, Size: String(bytes.length), SHA256: createHash("sha256").update(bytes).digest("hex") };
    stanzas.push(
      Object.entries(fields)
        .map(([k, v]) => `${k}: ${v}\n`)
        .join(""),
    );
  }
  fs.writeFileSync(path.join(repo, "Packages"), stanzas.join("\n"));
  fs.writeFileSync(path.join(repo, "Release"), "Origin: pgha-test\nLabel: pgha-test\nSuite: pgha-test\nCodename: pgha-test\n");
  // Only this repository (no network), and it is the origin unattended-upgrades may take upgrades from.
  root.write("/etc/apt/sources.list", "deb [trusted=yes] file:/srv/pgha-repo ./\n");
  root.write("/etc/apt/apt.conf.d/99pgha-test-origin", 'Unattended-Upgrade::Origins-Pattern { "origin=pgha-test"; };\n');
}

async function dryRun(root: TestRoot): Promise<{ output: string; upgraded: string[] }> {
  await offerUpgrades(root, [...HELD_EXAMPLES, FREE_EXAMPLE]);
  const update = await root.run(["apt-get", "update", "-qq"]);
  assert.equal(update.code, 0, update.stderr);
  const upgradable = await root.run(["apt", "list", "--upgradable"]);
  for (const name of [...HELD_EXAMPLES, FREE_EXAMPLE])
    assert.match(upgradable.stdout, new RegExp(`^${name}/pgha-test 99:1.0`, "m"), `the repository must offer ${name}:\n${upgradable.stdout}`);
  const result = await root.run(["unattended-upgrade", "--dry-run", "--debug"], { timeoutMs: 60_000 });
  const output = result.stdout + result.stderr;
  assert.equal(result.code, 0, output);
  const line = /^Packages that will be upgraded: (.*)$/m.exec(output);
  assert.ok(line, output);
  return { output, upgraded: line[1].trim().split(/\s+/).sort() };
}

describe("unattended-upgrades", () => {
  const node = plan.nodes[0].name;

  test("apt reads our blacklist and no-reboot setting (apt-config dump)", async () => {
    const root = await rootWith("apt-config", node, true);
    const result = await root.run(["apt-config", "dump", "Unattended-Upgrade"]);
    assert.equal(result.code, 0, result.stderr);
    for (const pattern of HELD_PACKAGES) assert.ok(result.stdout.includes(`Unattended-Upgrade::Package-Blacklist:: "${pattern}";`), `${pattern}:\n${result.stdout}`);
    assert.match(result.stdout, /^Unattended-Upgrade::Automatic-Reboot "false";$/m);
  });

  test("a dry run upgrades curl and holds every cluster package", async () => {
    const root = await rootWith("uu", node, true);
    const { output, upgraded } = await dryRun(root);
    assert.deepEqual(upgraded, [FREE_EXAMPLE], output);
  });

  test("control: without our file the same dry run upgrades the cluster's packages too", async () => {
    const root = await rootWith("uu-control", node, false);
    const { output, upgraded } = await dryRun(root);
    assert.deepEqual(upgraded, [...HELD_EXAMPLES, FREE_EXAMPLE].sort(), output);
  });
});

describe("apt-daily-upgrade slots", () => {
  test("every node of the plan has its own hour, and the drop-in clears Ubuntu's OnCalendar first", () => {
    const hours = plan.nodes.map((n) => upgradeSlotHour(plan, n));
    assert.equal(new Set(hours).size, plan.nodes.length, `slots ${hours.join(", ")}`);
    for (const node of plan.nodes) {
      const dropIn = userDataDocument(renderUserData(plan, node.name, { dataVolumeId: "vol-0123456789abcdef0" })).writeFiles.find((f) => f.path === OS_UPDATE_PATHS.timerDropIn);
      const hour = String(upgradeSlotHour(plan, node)).padStart(2, "0");
      assert.match(dropIn?.content ?? "", new RegExp(`^\\[Timer\\]\\nOnCalendar=\\nOnCalendar=\\*-\\*-\\* ${hour}:00:00 UTC\\n`), node.name);
    }
  });
});
