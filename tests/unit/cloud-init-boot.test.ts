/**
 * What the first boot needs that is not a rendered service file: the PGDG
 * apt key shipped in user-data (checked with the real gpg), and the
 * version check among the boot steps.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import * as yaml from "js-yaml";
import {
  APT_RETRY_CONF,
  bootCommands,
  checkVersionsCommand,
  encodeUserData,
  nodeUnits,
  PGDG_KEY_FILE,
  PGDG_KEY_FINGERPRINT,
  pgdgKey,
  renderUserData,
  USER_DATA_LIMIT_BYTES,
} from "../../cloud-init";
import { buildClusterPlan, findNode, NODE_PATHS, nodesWithRole } from "../../plan";

const plan = buildClusterPlan(undefined, { stack: "test" });
const gnupgHome = fs.mkdtempSync(path.join(os.tmpdir(), "pgha-gpg-"));
after(() => {
  fs.rmSync(gnupgHome, { recursive: true, force: true });
});

const gpg = (args: string[]): string => execFileSync("gpg", ["--batch", "--quiet", ...args], { encoding: "utf8", env: { ...process.env, GNUPGHOME: gnupgHome } });

/** Fingerprints of the primary keys in an armoured or binary key file, as gpg reads them (nothing imported). */
function primaryFingerprints(file: string): string[] {
  const records = gpg(["--show-keys", "--with-colons", file])
    .split("\n")
    .map((line) => line.split(":"));
  // A `fpr` record belongs to the `pub` or `sub` record just before it; only the primary key's counts.
  return records.flatMap((record, index) => (record[0] === "fpr" && records[index - 1]?.[0] === "pub" ? [record[9]] : []));
}

interface Document {
  apt?: { sources?: Record<string, { source?: string; key?: string; keyid?: string }> };
}
const documentOf = (node: string): Document => yaml.load(renderUserData(plan, node, { dataVolumeId: "vol-0123456789abcdef0" })) as Document;

describe("PGDG apt key", () => {
  test("the shipped key file holds exactly one primary key, the pinned PGDG_KEY_FINGERPRINT", () => {
    assert.deepEqual(primaryFingerprints(PGDG_KEY_FILE), [PGDG_KEY_FINGERPRINT]);
  });

  test("the check tells another key apart (control: a throwaway key generated here)", () => {
    gpg(["--passphrase", "", "--quick-gen-key", "pgha control <control@example.invalid>", "ed25519", "sign", "never"]);
    const other = path.join(gnupgHome, "other.asc");
    fs.writeFileSync(other, gpg(["--armor", "--export", "control@example.invalid"]));
    const [fingerprint] = primaryFingerprints(other);
    assert.match(fingerprint, /^[0-9A-F]{40}$/);
    assert.notEqual(fingerprint, PGDG_KEY_FINGERPRINT);
  });

  test("postgres nodes get the armoured key inline (no keyserver at boot), signed-by the file cloud-init writes it to", () => {
    for (const node of nodesWithRole(plan, "postgres")) {
      const source = documentOf(node.name).apt?.sources?.["pgdg.list"];
      assert.ok(source, `${node.name} has no pgdg.list source`);
      assert.equal(source.keyid, undefined, `${node.name} would still ask a keyserver`);
      assert.equal(source.key, pgdgKey());
      assert.match(source.key ?? "", /^-----BEGIN PGP PUBLIC KEY BLOCK-----\n[\s\S]+\n-----END PGP PUBLIC KEY BLOCK-----\n$/);
      assert.match(source.source ?? "", /^deb \[signed-by=\$KEY_FILE\] https:\/\/apt\.postgresql\.org\/pub\/repos\/apt \$RELEASE-pgdg main$/);
    }
  });

  test("nodes without PostgreSQL carry no PGDG source, only the apt retries every node has", () => {
    for (const node of plan.nodes.filter((n) => !n.roles.has("postgres"))) assert.deepEqual(documentOf(node.name).apt, { conf: APT_RETRY_CONF }, node.name);
  });

  test("every node's user-data stays within EC2's 16 KB compressed with the key inline", (t) => {
    for (const node of plan.nodes) {
      const text = renderUserData(plan, node.name, { dataVolumeId: "vol-0123456789abcdef0" });
      const compressed = gzipSync(Buffer.from(text, "utf8"), { level: 9 }).length;
      // Printed, so the headroom under EC2's limit is a figure anyone can rerun (docs/architecture.md).
      t.diagnostic(`${node.name}: ${Buffer.byteLength(text)} bytes plain, ${compressed} compressed (limit ${USER_DATA_LIMIT_BYTES})`);
      assert.ok(compressed <= USER_DATA_LIMIT_BYTES, `${node.name}: ${compressed} bytes compressed`);
      assert.equal(Buffer.from(encodeUserData(text), "base64").length, compressed);
    }
  });
});

describe("version check at boot", () => {
  test("database nodes check the pinned Patroni, PostgreSQL and etcd after installing etcd and before touching the data volume", () => {
    const node = findNode(plan, "pg-seoul-1");
    const commands = bootCommands(plan, node, { dataVolumeId: "vol-0123456789abcdef0" });
    const names = commands.map((argv) => argv[0]);
    // First the removal of the first boot's policy-rc.d (cloud-init/user-data.ts).
    assert.deepEqual(names.slice(0, 5), ["rm", NODE_PATHS.installEtcd, NODE_PATHS.checkVersions, NODE_PATHS.prepareDataVolume, NODE_PATHS.fetchSecrets]);
    const pins = [NODE_PATHS.checkVersions, "--patroni", "4.1.*", "--postgres", "17", "17.*", "--etcd", "3.5.21"];
    assert.deepEqual(commands[2].slice(0, pins.length), pins);
    const holds = commands[2].slice(pins.length);
    assert.deepEqual(
      holds.filter((_, i) => i % 2 === 0),
      Array(holds.length / 2).fill("--hold"),
    );
    const held = holds.filter((_, i) => i % 2 === 1);
    assert.ok(held.includes("patroni.service") && held.includes("etcd.service"), `holds ${held.join(", ")}`);
    const units = nodeUnits(plan, node).map((unit) => unit.name);
    for (const unit of held) assert.ok(units.includes(unit), `${unit} is not a unit of ${node.name}`);
    const userData = yaml.load(renderUserData(plan, node.name, {})) as { write_files: { path: string; permissions: string }[] };
    assert.equal(userData.write_files.find((f) => f.path === NODE_PATHS.checkVersions)?.permissions, "0755");
  });

  test("HAProxy-only nodes install nothing pinned and run no check", () => {
    for (const node of plan.nodes.filter((n) => !n.roles.has("postgres") && !n.roles.has("etcd"))) {
      assert.equal(checkVersionsCommand(plan, node), undefined);
      assert.ok(!bootCommands(plan, node, {}).some((argv) => argv[0] === NODE_PATHS.checkVersions));
      assert.ok(!renderUserData(plan, node.name, {}).includes(NODE_PATHS.checkVersions));
    }
  });
});
