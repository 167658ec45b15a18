import * as fs from "node:fs";
import * as path from "node:path";
import { nodePackages } from "../cloud-init/user-data";
import type { ClusterPlan } from "../plan";
import { exec } from "./exec";
import { awsEndpointNames, INFRA_ADDRESS } from "./infra";

/**
 * The lab's two cached artefacts besides the tools rootfs:
 * - the cloud image (lab/build-image.sh): Debian 13 minbase with systemd and
 *   cloud-init, its distribution archive the lab mirror, the lab
 *   infrastructure CA trusted, no database package;
 * - the mirror (lab/build-mirror.sh): a signed `debian` suite with every
 *   dependency the nodes' install step pulls, a signed `pgdg` suite with
 *   what apt.postgresql.org provides in production, and an etcd release
 *   archive laid out as GitHub's.
 * Both are keyed by their inputs, so `npm run setup` builds them once.
 */

/** What the PostgreSQL project's repository provides in production; the lab mirror's pgdg suite holds these and their own dependencies. */
const PGDG_PACKAGE = /^(postgresql-\d+|postgresql-client-\d+|patroni|python3-psycopg2)$/;

export interface MirrorInfo {
  dir: string;
  debianSuite: string;
  pgdgSuite: string;
  /** The armoured public key both suites are signed with. */
  archiveKey: string;
  etcd: { version: string; sha256: string; path: string };
  versions: Record<string, string>;
}

/** The install step's packages over every node of the plan, split as production's sources split them. */
export function mirrorPackages(plan: ClusterPlan): { pgdg: string[]; other: string[] } {
  const all = [...new Set(plan.nodes.flatMap((node) => nodePackages(plan, node)))].sort();
  return { pgdg: all.filter((name) => PGDG_PACKAGE.test(name)), other: all.filter((name) => !PGDG_PACKAGE.test(name)) };
}

function script(name: string): string {
  return path.join(__dirname, name);
}

async function runBuild(argv: string[], what: string, check: boolean): Promise<string> {
  const result = await exec(["bash", ...argv, ...(check ? ["--check"] : [])], { timeoutMs: 60 * 60_000 });
  if (result.code !== 0)
    throw new Error(
      `the lab's ${what} is ${check ? "not built" : "failed to build"}: ${result.stderr.trim().split("\n").slice(-5).join(" / ")}${check ? " (run: npm run setup)" : ""}`,
    );
  return result.stdout.trim().split("\n").at(-1) ?? "";
}

export function imageArgv(plan: ClusterPlan): string[] {
  return [script("build-image.sh"), "--infra-ip", INFRA_ADDRESS, "--host-names", awsEndpointNames(plan).join(" ")];
}

export function mirrorArgv(plan: ClusterPlan, image: string): string[] {
  const packages = mirrorPackages(plan);
  return [script("build-mirror.sh"), "--image", image, "--pgdg-packages", packages.pgdg.join(" "), "--packages", packages.other.join(" ")];
}

/** The image and mirror directories; `check` only looks (the lab), otherwise builds what is missing (setup). */
export async function labImages(plan: ClusterPlan, check: boolean): Promise<{ image: string; mirror: MirrorInfo }> {
  const image = await runBuild(imageArgv(plan), "cloud image", check);
  const mirrorDir = await runBuild(mirrorArgv(plan, image), "package mirror", check);
  return { image, mirror: readMirrorInfo(mirrorDir) };
}

export function readMirrorInfo(dir: string): MirrorInfo {
  const info = JSON.parse(fs.readFileSync(path.join(dir, "pgha-mirror.json"), "utf8")) as Omit<MirrorInfo, "dir">;
  return { ...info, dir };
}
