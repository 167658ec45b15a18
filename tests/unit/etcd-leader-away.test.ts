/**
 * Where the database nodes hand etcd's raft leadership when they run the
 * primary (cloud-init/etcd.ts): the lab's host-loss drill measures why.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { etcdLeaderAwayCommand, etcdLeaderCandidates } from "../../cloud-init/etcd";
import { PRIMARY_UPKEEP_SERVICE, PRIMARY_UPKEEP_TIMER, primaryUpkeepUnits } from "../../cloud-init/pgbackrest";
import { bootCommands } from "../../cloud-init/user-data";
import { buildClusterPlan, findNode, NODE_PATHS } from "../../plan";

describe("etcd's raft leader off the primary's host", () => {
  const plan = buildClusterPlan(undefined, { stack: "t" });

  test("the nearest-committing members come first: Seoul and Tokyo (31 ms apart) before Singapore", () => {
    assert.deepEqual(etcdLeaderCandidates(plan, findNode(plan, "pg-seoul-1")), ["pg-tokyo-1", "pg-singapore-1"]);
    assert.deepEqual(etcdLeaderCandidates(plan, findNode(plan, "pg-tokyo-1")), ["pg-seoul-1", "pg-singapore-1"]);
    assert.deepEqual(etcdLeaderCandidates(plan, findNode(plan, "pg-singapore-1")), ["pg-seoul-1", "pg-tokyo-1"]);
  });

  test("the order follows the stack's measured RTTs", () => {
    const far = buildClusterPlan({ etcd: { rttMs: { "seoul-tokyo": 90, "seoul-singapore": 40, "tokyo-singapore": 95 } } }, { stack: "t" });
    assert.deepEqual(etcdLeaderCandidates(far, findNode(far, "pg-tokyo-1")), ["pg-seoul-1", "pg-singapore-1"]);
    assert.deepEqual(etcdLeaderCandidates(far, findNode(far, "pg-seoul-1")), ["pg-singapore-1", "pg-tokyo-1"]);
  });

  test("every database node that is an etcd member runs it first in the primary's upkeep, which its first boot starts; an HAProxy-only node does not", () => {
    for (const name of ["pg-seoul-1", "pg-tokyo-1", "pg-singapore-1"]) {
      const node = findNode(plan, name);
      const service = primaryUpkeepUnits(plan, node).find((u) => u.name === PRIMARY_UPKEEP_SERVICE)?.unit.Service as Record<string, unknown>;
      const exec = service.ExecStart as string[];
      assert.equal(exec.length, 2, name);
      assert.ok(exec[0]?.startsWith(`${NODE_PATHS.etcdLeaderAway} https://127.0.0.1:2379 `), exec[0]);
      assert.ok(!exec[0]?.includes(name), `${name} never hands the leadership to itself: ${exec[0] ?? ""}`);
      assert.equal(service.EnvironmentFile, NODE_PATHS.etcdctlEnv, "etcdctl's TLS settings");
      const commands = bootCommands(plan, node, {}).map((c) => (Array.isArray(c) ? c.join(" ") : String(c)));
      assert.ok(commands.includes(`systemctl enable ${PRIMARY_UPKEEP_TIMER}`), name);
      assert.ok(commands.includes(`systemctl restart ${PRIMARY_UPKEEP_TIMER}`), name);
    }
    assert.equal(etcdLeaderAwayCommand(plan, findNode(plan, "haproxy-1")), undefined);
  });
});
