/**
 * A node's first boot, checked with the real programs that run it, on the
 * files and commands its user-data carries:
 *
 * - Debian 13's systemd 257 (`systemd-analyze verify`) accepts every unit a
 *   node gets, drop-ins included, with no warning; a misspelt directive
 *   (control) is reported.
 * - runcmd, as cloud-init's own `util.shellify` writes it, stops at the first
 *   failed step: a missing data volume leaves no service enabled or started
 *   (the steps are stubs that log their argv; `systemctl` too). With every
 *   step succeeding (control) the services are started, in order.
 * - apt with the user-data's apt.conf retries a mirror it cannot connect to
 *   ten times with a growing delay (capped at 1 s here instead of 30 s to keep
 *   the test short; the count is what it checks); without it (control) apt
 *   gives up after its default three retries.
 * - The first boot's wait for its package sources (bootcmd) outlasts a
 *   mirror that answers only after 12 s; one apt-get run with those retries
 *   does not outlast one that answers after 5 s (control): apt never connects
 *   again to an address that failed.
 *
 * systemd is not in the lab's rootfs; `npm run setup` downloads it into a
 * cache (lab/setup.sh) and each test unpacks it into its own overlay.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { after, before, describe, test } from "node:test";
import { APT_RETRY_CONF, renderUserData, RUNCMD_FAIL_FAST, waitPackageSourcesCommand } from "../../cloud-init";

import { exec } from "../../lab/exec";
import { buildClusterPlan, NODE_PATHS, type ClusterPlan } from "../../plan";
import { cachedDebs, rootfsPath, scratchDir, TestRoot } from "./harness";
import { userDataDocument } from "./user-data-files";

const rootfs = rootfsPath();
const plan: ClusterPlan = buildClusterPlan(undefined, { stack: "render" });
const base = scratchDir("first-boot");
const BOOT = { dataVolumeId: "vol-0123456789abcdef0" };
/** One node of each kind: etcd + PostgreSQL, and HAProxy. */
const NODES = ["pg-seoul-1", "haproxy-1"];

let systemdDebs: string[];

before(() => {
  // The exporters' packages carry the units the rendered drop-ins change (Prometheus and Alertmanager are in the rootfs).
  systemdDebs = cachedDebs(rootfs, ["systemd", "prometheus-node-exporter", "prometheus-postgres-exporter"]);
});

after(() => {
  fs.rmSync(base, { recursive: true, force: true });
});

const SYSTEMD_DIR = "/etc/systemd/system/";

/** A root with systemd unpacked and the node's write_files in place; returns the units to verify (drop-ins by their unit's name). */
async function rootWithUnits(name: string, nodeName: string, edit: (path: string, content: string) => string = (_, c) => c): Promise<{ root: TestRoot; units: string[] }> {
  const root = new TestRoot(rootfs, base, name);
  for (const deb of systemdDebs) {
    const unpacked = await exec(["dpkg-deb", "-x", deb, root.upper]);
    assert.equal(unpacked.code, 0, `${deb}: ${unpacked.stderr}`);
  }
  const units = new Set<string>();
  for (const file of userDataDocument(renderUserData(plan, nodeName, BOOT)).writeFiles) {
    root.write(file.path, edit(file.path, file.content), file.owner.split(":")[0], file.permissions);
    if (!file.path.startsWith(SYSTEMD_DIR)) continue;
    const rest = file.path.slice(SYSTEMD_DIR.length);
    const dropIn = /^([^/]+)\.d\/[^/]+\.conf$/.exec(rest);
    if (dropIn) units.add(dropIn[1]);
    else if (!rest.includes("/")) units.add(file.path);
  }
  // The etcd release archive's binary, which pgha-install-etcd puts there at boot.
  root.write(NODE_PATHS.etcdBinary, "#!/bin/sh\n", "root", "0755");
  return { root, units: [...units] };
}

describe("first boot: the node's units, runcmd and apt, with the real programs", () => {
  for (const nodeName of NODES) {
    test(`systemd 257 (systemd-analyze verify) accepts ${nodeName}'s units and drop-ins with no warning`, async () => {
      const { root, units } = await rootWithUnits(`verify-${nodeName}`, nodeName);
      assert.ok(units.length >= 2, `units found: ${units.join(", ")}`);
      const result = await root.run(["systemd-analyze", "verify", "--man=no", ...units]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stderr.trim(), "", `warnings for ${units.join(", ")}`);
    });
  }

  test("systemd-analyze verify reports a misspelt directive (control)", async () => {
    const { root, units } = await rootWithUnits("verify-control", "pg-seoul-1", (path, content) =>
      path.endsWith("/patroni.service") ? content.replace("RequiresMountsFor=", "RequiresMountFor=") : content,
    );
    const result = await root.run(["systemd-analyze", "verify", "--man=no", ...units]);
    assert.match(result.stderr, /RequiresMountFor/);
  });

  test("the first boot's policy-rc.d makes maintainer scripts start nothing (deb-systemd-invoke); runcmd's first step removes it", async () => {
    for (const node of plan.nodes) {
      const { writeFiles, runcmd } = userDataDocument(renderUserData(plan, node.name, BOOT));
      const hook = writeFiles.find((f) => f.path === NODE_PATHS.policyRcD);
      assert.ok(hook, `${node.name}: write_files carries ${NODE_PATHS.policyRcD}`);
      assert.equal(hook.permissions, "0755");
      assert.deepEqual(runcmd.slice(0, 2), [RUNCMD_FAIL_FAST, ["rm", "-f", NODE_PATHS.policyRcD]], `${node.name}: runcmd removes it before anything else`);
    }
    const { writeFiles, runcmd } = userDataDocument(renderUserData(plan, "haproxy-1", BOOT));
    const hook = writeFiles.find((f) => f.path === NODE_PATHS.policyRcD);
    const root = new TestRoot(rootfs, base, "policy-rc-d");
    root.write(NODE_PATHS.policyRcD, hook?.content ?? "", "root", "0755");
    // What a package's postinst runs on systemd (debhelper's snippet). invoke-rc.d is no witness here: it refuses
    // every action in a chroot, with or without a policy.
    const probe = 'deb-systemd-invoke start haproxy.service prometheus.service 2>&1; echo "invoke rc=$?"';
    const held = await root.run(["sh", "-c", probe]);
    assert.match(held.stdout, /policy-rc\.d returned 101, not running 'start haproxy\.service prometheus\.service'/, held.stdout);
    assert.match(held.stdout, /^invoke rc=0$/m, "the postinst carries on");
    const removal = runcmd[1] as string[];
    const removed = await root.run(removal);
    assert.equal(removed.code, 0, removed.stderr);
    const after = await root.run(["sh", "-c", probe]);
    // Control: without the hook deb-systemd-invoke goes on to systemctl (which has no systemd to talk to here).
    assert.doesNotMatch(after.stdout, /returned 101/, after.stdout);
    assert.match(after.stdout, /Could not execute systemctl/, after.stdout);
  });

  /** runcmd as cloud-init writes it (its own util.shellify), with every step a stub that logs its argv and exits as `failing` says. */
  async function runRuncmd(name: string, failing: string | undefined): Promise<{ code: number; steps: string[] }> {
    const root = new TestRoot(rootfs, base, name);
    const { runcmd } = userDataDocument(renderUserData(plan, "pg-seoul-1", BOOT));
    root.write("/var/lib/pgha-test/runcmd.json", JSON.stringify(runcmd));
    const stub = (exitCode: number): string => `#!/bin/sh\necho "$0 $*" >> /var/log/pgha-steps\nexit ${exitCode}\n`;
    const commands = new Set(runcmd.filter((item): item is string[] => Array.isArray(item)).map((argv) => argv[0]));
    for (const command of commands) {
      const at = command.startsWith("/") ? command : `/usr/local/bin/${command}`;
      root.write(at, stub(command === failing ? 1 : 0), "root", "0755");
    }
    const script = [
      "set -e",
      // cloud-init's own writer of the runcmd script, from the rootfs's cloud-init.
      `python3 -c 'import json, sys; from cloudinit import util; sys.stdout.write(util.shellify(json.load(open(sys.argv[1]))))' /var/lib/pgha-test/runcmd.json > /tmp/runcmd.sh`,
      "chmod 0755 /tmp/runcmd.sh",
      "touch /var/log/pgha-steps",
      // PATH with /usr/local/bin first, as on a node: `systemctl` resolves to its stub.
      "rc=0; PATH=/usr/local/bin:/usr/bin:/bin /tmp/runcmd.sh || rc=$?",
      'cat /var/log/pgha-steps; echo "exit $rc"',
    ].join("\n");
    const result = await root.run(["sh", "-c", script]);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.trim().split("\n");
    const code = Number(/^exit (\d+)$/.exec(lines.at(-1) ?? "")?.[1] ?? NaN);
    return { code, steps: lines.slice(0, -1).map((line) => line.replace(/^\/usr\/local\/(s?bin)\//, "")) };
  }

  test("runcmd (cloud-init's own script writer) stops at the first failed step: a missing data volume starts nothing", async () => {
    const first = userDataDocument(renderUserData(plan, "pg-seoul-1", BOOT));
    assert.equal(renderUserData(plan, "pg-seoul-1", BOOT).includes(`- ${RUNCMD_FAIL_FAST}\n`), true, "runcmd's first item");
    assert.ok(first.runcmd.some((argv) => Array.isArray(argv) && argv[0] === NODE_PATHS.prepareDataVolume));
    const failed = await runRuncmd("runcmd-fail", NODE_PATHS.prepareDataVolume);
    assert.notEqual(failed.code, 0, "the script fails, so cloud-init reports the error");
    assert.match(failed.steps.at(-1) ?? "", /pgha-prepare-data-volume vol-0123456789abcdef0 /, `stopped at the volume step: ${failed.steps.join(" | ")}`);
    assert.ok(!failed.steps.some((step) => step.startsWith("systemctl")), `nothing enabled or started: ${failed.steps.join(" | ")}`);

    const ok = await runRuncmd("runcmd-ok", undefined);
    assert.equal(ok.code, 0);
    const starts = ok.steps.filter((step) => step.startsWith("systemctl restart"));
    assert.deepEqual(
      starts,
      [
        "systemctl restart pgha-path-mtu.service",
        "systemctl restart etcd.service",
        "systemctl restart patroni.service",
        // Monitoring once the secrets (its certificates) are in place.
        "systemctl restart prometheus-node-exporter.service",
        "systemctl restart prometheus-postgres-exporter.service",
        "systemctl restart pgha-certificate-metrics.service",
        "systemctl restart pgha-certificate-metrics.timer",
        // Backups last: the timers' first run needs Patroni's stanza.
        "systemctl restart pgha-backup-full.timer",
        "systemctl restart pgha-backup-diff.timer",
        "systemctl restart pgha-primary-upkeep.timer",
      ],
      `control: every step runs (${ok.steps.join(" | ")})`,
    );
  });

  /** apt-get update against a loopback port nothing listens on, with or without the user-data's apt.conf (as cloud-init names it). */
  async function aptRetries(name: string, withOurConf: boolean): Promise<number> {
    const root = new TestRoot(rootfs, base, name);
    if (withOurConf) root.write("/etc/apt/apt.conf.d/94cloud-init-config", APT_RETRY_CONF);
    root.write("/etc/apt/sources.list.d/unreachable.list", "deb [trusted=yes] http://127.0.0.1:9/debian trixie main\n");
    const result = await root.run(
      [
        "apt-get",
        "update",
        "-o",
        "Dir::Etc::SourceParts=/etc/apt/sources.list.d",
        "-o",
        "Dir::Etc::SourceList=/dev/null",
        "-o",
        "Acquire::Retries::Delay::Maximum=1",
        "-o",
        "Debug::Acquire::Retries=true",
      ],
      { timeoutMs: 120_000 },
    );
    assert.match(result.stdout + result.stderr, /Could not connect to 127\.0\.0\.1:9/, result.stdout + result.stderr);
    return [...(result.stdout + result.stderr).matchAll(/^Delaying http:\/\/127\.0\.0\.1:9\/debian trixie InRelease by \d+ seconds?$/gm)].length;
  }

  test("apt with the user-data's apt.conf retries an unreachable mirror 10 times (default 3: control)", async () => {
    for (const node of plan.nodes)
      assert.ok(
        renderUserData(plan, node.name, BOOT).includes('Acquire::Retries \\"10\\"') || renderUserData(plan, node.name, BOOT).includes('Acquire::Retries "10"'),
        `${node.name}'s user-data carries it`,
      );
    assert.equal(await aptRetries("apt-ours", true), 10);
    assert.equal(await aptRetries("apt-default", false), 3);
  });

  /**
   * A mirror on a loopback port that starts answering `upAfterSeconds` after
   * `command` starts: an apt source that is unreachable at first (the NAT
   * gateway of a new stack), then fine. Returns the command's exit and output.
   */
  async function againstLateMirror(name: string, command: string[], upAfterSeconds: number): Promise<{ code: number; output: string }> {
    const root = new TestRoot(rootfs, base, name);
    const port = 20000 + Math.floor(Math.random() * 20000);
    root.write(`/etc/apt/apt.conf.d/94cloud-init-config`, APT_RETRY_CONF + 'Acquire::Retries::Delay::Maximum "1";\n');
    // Only the late mirror: the rootfs's own sources would need the network.
    root.write("/etc/apt/sources.list.d/debian.sources", "");
    root.write("/etc/apt/sources.list", "");
    root.write("/etc/apt/sources.list.d/late.list", `deb [trusted=yes] http://127.0.0.1:${String(port)}/debian trixie main\n`);
    root.write("/srv/late/debian/dists/trixie/main/binary-amd64/Packages", "");
    root.write("/srv/late/debian/dists/trixie/Release", "Suite: trixie\nCodename: trixie\nComponents: main\nArchitectures: amd64\n");
    const script = [
      `(sleep ${String(upAfterSeconds)}; exec python3 -m http.server ${String(port)} --bind 127.0.0.1 --directory /srv/late >/dev/null 2>&1) & server=$!`,
      'rc=0; "$@" || rc=$?',
      // The subshell exec'd the server, so $server is its PID.
      'kill "$server" 2>/dev/null || true',
      'echo "exit $rc"',
    ].join("\n");
    const result = await root.run(["sh", "-c", script, "late-mirror", ...command], { timeoutMs: 180_000 });
    const output = result.stdout + result.stderr;
    return { code: Number(/^exit (\d+)$/m.exec(result.stdout)?.[1] ?? NaN), output };
  }

  test("the first boot waits for package sources that answer late (bootcmd, as cloud-init-per runs it); apt's own retries do not (control)", async () => {
    const wait = waitPackageSourcesCommand();
    for (const node of plan.nodes) assert.deepEqual(userDataDocument(renderUserData(plan, node.name, BOOT)).bootcmd, [wait], `${node.name}'s bootcmd`);
    // cloud-init-per instance NAME CMD...: the command after its three words, with a 60 s deadline instead of 900 s.
    const command = [...wait.slice(3, -1), "60"];
    const waited = await againstLateMirror("late-ours", command, 12);
    assert.equal(waited.code, 0, waited.output);
    assert.match(waited.output, /do not answer yet \(try 1\)/, waited.output);
    assert.match(waited.output, /the package sources answer \(try [2-9]\d*\)/, waited.output);
    // Control: one apt-get update with the user-data's retries (10, at most 1 s apart here) and the mirror up after
    // 5 s: apt does not connect again to an address that failed, so every retry fails.
    const single = await againstLateMirror("late-apt", ["apt-get", "update", "--error-on=any"], 5);
    assert.notEqual(single.code, 0, `control: a single apt-get run outlasted the outage:\n${single.output}`);
    assert.match(single.output, /Could not connect to 127\.0\.0\.1/, single.output);
  });
});
