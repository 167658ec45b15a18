/**
 * The rendered path-MTU routes, run for real: the node's own pgha-path-mtu
 * script with the arguments of its rendered pgha-path-mtu.service, in a
 * network namespace laid out like an EC2 node (a 9001-byte interface, the
 * VPC router as default gateway), checked with `ip route`. Also the rendered
 * sysctl file read by the real sysctl (procps) in that namespace.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { renderNodeFiles } from "../../cloud-init/node-files";
import { PATH_MTU_UNIT } from "../../cloud-init/systemd";
import { buildClusterPlan, findNode, INTER_REGION_PATH_MTU, NODE_PATHS } from "../../plan";
import { exec } from "../../lab/exec";
import { scratchDir } from "./harness";
import * as fs from "node:fs";
import * as path from "node:path";

const plan = buildClusterPlan(undefined, { stack: "render" });
const NS = `pgha-mtu${process.pid % 10000}`;

async function inNs(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return exec(["ip", "netns", "exec", NS, ...argv]);
}

async function must(argv: string[]): Promise<string> {
  const result = await exec(argv);
  if (result.code !== 0) throw new Error(`${argv.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

function rendered(node: string): { script: string; execStart: string[]; sysctl: string } {
  const files = renderNodeFiles(plan, findNode(plan, node));
  const script = files.find((f) => f.path === NODE_PATHS.pathMtu)?.content;
  const unit = files.find((f) => f.path === `${NODE_PATHS.systemdDir}/${PATH_MTU_UNIT}`)?.content;
  const sysctl = files.find((f) => f.path === NODE_PATHS.sysctl)?.content;
  const execStart = /^ExecStart=(.*)$/m.exec(unit ?? "")?.[1]?.split(" ");
  if (!script || !execStart || !sysctl) throw new Error(`${node}: no rendered ${PATH_MTU_UNIT}, script or sysctl file`);
  return { script, execStart, sysctl };
}

interface Route {
  dst: string;
  gateway?: string;
  dev: string;
  metrics?: { mtu?: number }[];
}

async function routes(): Promise<Route[]> {
  return JSON.parse((await inNs(["ip", "-j", "-d", "route", "show"])).stdout) as Route[];
}

const mtuOf = (route: Route | undefined): number | undefined => route?.metrics?.find((m) => m.mtu !== undefined)?.mtu;

describe("path-MTU routes (pgha-path-mtu, real ip and sysctl)", () => {
  let dir = "";
  before(async () => {
    if (process.getuid?.() !== 0) throw new Error("the path-MTU render test creates a network namespace: run it as root");
    dir = scratchDir("mtu");
    await exec(["ip", "netns", "delete", NS]);
    await must(["ip", "netns", "add", NS]);
    // pg-seoul-1 as EC2 lays it out: one jumbo-frame interface, the VPC router at .1 as default gateway.
    // (A veth pair inside the namespace: this kernel has no dummy driver.)
    await must(["ip", "-n", NS, "link", "add", "ens5", "mtu", "9001", "type", "veth", "peer", "name", "vpc0", "mtu", "9001"]);
    await must(["ip", "-n", NS, "addr", "add", "10.1.0.10/24", "dev", "ens5"]);
    await must(["ip", "-n", NS, "link", "set", "vpc0", "up"]);
    await must(["ip", "-n", NS, "link", "set", "ens5", "up"]);
    await must(["ip", "-n", NS, "route", "add", "default", "via", "10.1.0.1", "dev", "ens5"]);
  });
  after(async () => {
    await exec(["ip", "netns", "delete", NS]);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test("the unit routes exactly the other regions' VPCs at 8500 via the node's gateway, and its own region keeps 9001", async () => {
    const { script, execStart } = rendered("pg-seoul-1");
    assert.deepEqual(execStart, [NODE_PATHS.pathMtu, String(INTER_REGION_PATH_MTU), "10.2.0.0/16", "10.3.0.0/16"]);
    const file = path.join(dir, "pgha-path-mtu");
    fs.writeFileSync(file, script, { mode: 0o755 });
    // Control: before it runs, nothing caps the path to Tokyo (the interface's 9001 applies).
    assert.equal(mtuOf((await routes()).find((r) => r.dst === "10.2.0.0/16")), undefined);
    for (let run = 1; run <= 2; run++) {
      const result = await inNs(["sh", file, ...execStart.slice(1)]);
      assert.equal(result.code, 0, `run ${run}: ${result.stderr}`);
    }
    const table = await routes();
    for (const cidr of ["10.2.0.0/16", "10.3.0.0/16"]) {
      const route = table.find((r) => r.dst === cidr);
      assert.equal(route?.gateway, "10.1.0.1", `${cidr} via the VPC router`);
      assert.equal(route?.dev, "ens5");
      assert.equal(mtuOf(route), INTER_REGION_PATH_MTU, `${cidr} at the peering MTU`);
    }
    assert.equal(table.filter((r) => r.dst === "10.2.0.0/16").length, 1, "idempotent: one route after two runs");
    const local = await inNs(["ip", "-4", "-o", "route", "get", "10.1.0.20"]);
    assert.doesNotMatch(local.stdout, /mtu/, "inside the region the interface's jumbo frames stay");
    const remote = await inNs(["ip", "-4", "-o", "route", "get", "10.3.0.10"]);
    assert.match(remote.stdout, new RegExp(`mtu ${INTER_REGION_PATH_MTU}`));
  });

  test("bad input: one line and exit 2, nothing routed", async () => {
    const { script } = rendered("pg-seoul-1");
    const file = path.join(dir, "pgha-path-mtu-bad");
    fs.writeFileSync(file, script, { mode: 0o755 });
    const before = JSON.stringify(await routes());
    const bad = await inNs(["sh", file, "85OO", "10.9.0.0/16"]);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr.trim(), "pgha-path-mtu: MTU must be a number, got '85OO'");
    assert.equal((await inNs(["sh", file, "8500"])).code, 2);
    assert.equal(JSON.stringify(await routes()), before);
  });

  test("the rendered sysctl file turns on TCP's blackhole probing, read by the real sysctl", async () => {
    const { sysctl } = rendered("haproxy-2");
    const file = path.join(dir, "90-pgha.conf");
    fs.writeFileSync(file, sysctl);
    assert.equal((await inNs(["sysctl", "-n", "net.ipv4.tcp_mtu_probing"])).stdout.trim(), "0", "control: off in a fresh namespace");
    const applied = await inNs(["sysctl", "-p", file]);
    assert.equal(applied.code, 0, applied.stderr);
    assert.equal((await inNs(["sysctl", "-n", "net.ipv4.tcp_mtu_probing"])).stdout.trim(), "1");
  });
});
