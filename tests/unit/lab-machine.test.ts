/**
 * The pure parts of the machines lab (lab/machine.ts, lab/machines.ts, the lab
 * plan): what a machine is booted with. The boot itself is proved by
 * `npm run test:lab` and `npm run test:lab:boot`.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { gunzipSync } from "node:zlib";
import { after, describe, test } from "node:test";
import * as yaml from "js-yaml";
import { renderUserData, USER_DATA_LIMIT_BYTES } from "../../cloud-init/user-data";
import type { MirrorInfo } from "../../lab/images";
import { labConfig, labPlan } from "../../lab/lab";
import { hostLayout, labLayout } from "../../lab/layout";
import { cgroupWords, labVolumeId, nitroByIdPath, nspawnArgv } from "../../lab/machine";
import { machineUserData } from "../../lab/machines";

const HYBRID_MOUNTS = "tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
const UNIFIED_MOUNTS = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n";

const ARMOURED = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZlab\n-----END PGP PUBLIC KEY BLOCK-----\n";

const mirrorDirs: string[] = [];
after(() => {
  for (const dir of mirrorDirs) fs.rmSync(dir, { recursive: true, force: true });
});

function fakeMirror(): MirrorInfo {
  const dir = fs.mkdtempSync("/tmp/pgha-mirror-test-");
  mirrorDirs.push(dir);
  fs.writeFileSync(path.join(dir, "archive.asc"), ARMOURED);
  return {
    dir,
    debianSuite: "trixie",
    pgdgSuite: "trixie-pgdg",
    archiveKey: path.join(dir, "archive.asc"),
    etcd: { version: "3.5.16", sha256: "a".repeat(64), path: "etcd" },
    versions: {},
  };
}

describe("lab machines: what each node is booted with", () => {
  test("cgroup layout: no legacy words on a cgroup v2 only host, the two words on a hybrid one", () => {
    assert.deepEqual(cgroupWords(UNIFIED_MOUNTS), []);
    assert.deepEqual(cgroupWords(HYBRID_MOUNTS), ["systemd.unified_cgroup_hierarchy=0", "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1"]);
  });

  test("the volume's by-id path is the one pgha-prepare-data-volume computes (bash runs the script's own line)", () => {
    const script = fs.readFileSync(path.join(__dirname, "..", "..", "cloud-init", "scripts", "pgha-prepare-data-volume.sh"), "utf8");
    const line = script.split("\n").find((l) => l.startsWith("device="));
    assert.ok(line, "the script sets device=");
    const volumeId = labVolumeId("pg-seoul-1");
    assert.match(volumeId, /^vol-0[0-9a-f]{16}$/);
    const fromScript = execFileSync("bash", ["-c", `volume_id=$1; ${line}; printf %s "$device"`, "bash", volumeId], { encoding: "utf8" });
    assert.equal(nitroByIdPath(volumeId), fromScript);
  });

  test("user-data in the seed is EC2's bytes: gzip of the rendered document, with the volume id on database nodes only", () => {
    const plan = labPlan(fakeMirror());
    for (const node of plan.nodes) {
      const { bytes, dataVolumeId } = machineUserData(plan, node.name);
      assert.ok(bytes.length <= USER_DATA_LIMIT_BYTES, `${node.name}: ${bytes.length} bytes`);
      assert.equal(dataVolumeId !== undefined, node.roles.has("postgres"), node.name);
      assert.equal(gunzipSync(bytes).toString("utf8"), renderUserData(plan, node.name, dataVolumeId ? { dataVolumeId } : {}));
    }
  });

  test("the lab plan installs from the mirror: its pgdg suite with the lab key, its etcd archive and checksum, Debian 13", () => {
    const mirror = fakeMirror();
    const plan = labPlan(mirror);
    assert.equal(plan.config.instances.os, "debian-13");
    const node = plan.nodes.find((n) => n.roles.has("postgres") && n.roles.has("etcd"));
    assert.ok(node);
    const document = yaml.load(renderUserData(plan, node.name, { dataVolumeId: labVolumeId(node.name) })) as {
      apt: { sources: Record<string, { source: string; key: string }> };
      runcmd: (string | string[])[];
    };
    const pgdg = document.apt.sources["pgdg.list"];
    assert.ok(pgdg);
    assert.equal(pgdg.source, "deb [signed-by=$KEY_FILE] http://10.254.0.10/pgdg $RELEASE-pgdg main");
    assert.equal(pgdg.key, ARMOURED);
    const install = document.runcmd.find((step) => Array.isArray(step) && step[0] === "/usr/local/sbin/pgha-install-etcd");
    assert.deepEqual(install, ["/usr/local/sbin/pgha-install-etcd", "3.5.16", "a".repeat(64), "amd64", "http://10.254.0.10/etcd"]);
    assert.deepEqual(labConfig(mirror).versions, { patroni: "4.0.*", etcd: "3.5.16", etcdSha256: { amd64: "a".repeat(64) } });
  });

  test("nspawn: the node's namespace, its seed read-only, its volume at the by-id path, the cgroup words last", () => {
    const plan = labPlan();
    const host = hostLayout(labLayout(plan, "/var/lib/pgha-lab-test"), "pg-seoul-1");
    const volumePath = nitroByIdPath(labVolumeId("pg-seoul-1"));
    const argv = nspawnArgv({ host, seedDir: "/seed", volume: { device: "/dev/loop7", path: volumePath } }, ["w1", "w2"]);
    assert.equal(argv[0], "systemd-nspawn");
    for (const arg of [
      `--network-namespace-path=/run/netns/${host.ns}`,
      "--private-network",
      "--bind-ro=/seed:/var/lib/cloud/seed/nocloud",
      `--bind=/dev/loop7:${volumePath}`,
      "--register=no",
    ])
      assert.ok(argv.includes(arg), `${arg} in ${argv.join(" ")}`);
    assert.deepEqual(argv.slice(-3), ["--boot", "w1", "w2"]);
    assert.ok(!nspawnArgv({ host, seedDir: "/seed" }, []).some((arg) => arg.startsWith("--bind=")), "no volume, no device");
  });
});
