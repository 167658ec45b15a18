/**
 * What haproxy.cfg routes where, beyond what `haproxy -c` checks
 * (tests/render/real-programs.test.ts): reads stay in the HAProxy's region
 * and within the lag bound, writes and sync reads go to any region.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { haproxySections } from "../../cloud-init/haproxy";
import type { HaproxySection } from "../../cloud-init/haproxy-emitter";
import { readReplicasFor } from "../../checks/readiness";
import { buildClusterPlan, findNode, nodesWithRole } from "../../plan";

function listen(sections: HaproxySection[], name: string): HaproxySection {
  const section = sections.find((s) => s.header[0] === "listen" && s.header[1] === name);
  assert.ok(section, `listen ${name}`);
  return section;
}

function servers(section: HaproxySection): { name: string; backup: boolean }[] {
  return section.directives.filter((d) => d[0] === "server").map((d) => ({ name: String(d[1]), backup: d.includes("backup") }));
}

describe("haproxy.cfg", () => {
  const plan = buildClusterPlan(undefined, { stack: "t" });

  test("the read port serves its own region's replica and keeps the other regions' as backups, all of them at once", () => {
    for (const haproxy of nodesWithRole(plan, "haproxy")) {
      const replicas = listen(haproxySections(plan, haproxy), "pg_replicas");
      const local = nodesWithRole(plan, "postgres").filter((n) => n.region === haproxy.region);
      assert.ok(local.length > 0, `${haproxy.name}'s region has a database node`);
      assert.deepEqual(
        servers(replicas),
        nodesWithRole(plan, "postgres").map((n) => ({ name: n.name, backup: n.region !== haproxy.region })),
        haproxy.name,
      );
      assert.ok(
        replicas.directives.some((d) => d.join(" ") === "option allbackups"),
        `${haproxy.name}: every backup serves once the local one is out`,
      );
    }
  });

  test("the read port admits only replicas within replicaMaxLagBytes of replay, and the stack's value wins", () => {
    const check = (p: typeof plan) => listen(haproxySections(p, findNode(p, "haproxy-1")), "pg_replicas").directives.find((d) => d[0] === "http-check" && d[1] === "send");
    assert.deepEqual(check(plan), ["http-check", "send", "meth", "OPTIONS", "uri", "/replica?lag=16777216"]);
    assert.equal(check(buildClusterPlan({ haproxy: { replicaMaxLagBytes: 1024 } }, { stack: "t" }))?.at(-1), "/replica?lag=1024");
  });

  test("one health check waits haproxy.checkTimeoutMs for Patroni (2 s unless the stack says otherwise)", () => {
    const timeout = (p: typeof plan) =>
      haproxySections(p, findNode(p, "haproxy-1"))
        .find((s) => s.header[0] === "defaults")
        ?.directives.find((d) => d[0] === "timeout" && d[1] === "check");
    assert.deepEqual(timeout(plan), ["timeout", "check", "2000ms"]);
    assert.deepEqual(timeout(buildClusterPlan({ haproxy: { checkTimeoutMs: 3500 } }, { stack: "t" })), ["timeout", "check", "3500ms"]);
  });

  test("the write port and the sync port have no backups: the primary and the sync standby are wherever Patroni put them", () => {
    const sections = haproxySections(plan, findNode(plan, "haproxy-2"));
    for (const name of ["pg_primary", "pg_sync_replicas"]) {
      assert.ok(
        servers(listen(sections, name)).every((s) => !s.backup),
        name,
      );
      assert.ok(!listen(sections, name).directives.some((d) => d.join(" ") === "option allbackups"), name);
    }
  });

  test("the readiness check expects a region's reads on its own replica while it has one, else on any replica", () => {
    const seoul = nodesWithRole(plan, "postgres").find((n) => n.region === "seoul")?.name as string;
    const others = nodesWithRole(plan, "postgres")
      .filter((n) => n.region !== "seoul")
      .map((n) => n.name);
    assert.deepEqual(readReplicasFor(plan, "seoul", [seoul, ...others]), [seoul]);
    assert.deepEqual(readReplicasFor(plan, "seoul", others), others);
  });
});
