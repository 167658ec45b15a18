/**
 * Where the database nodes hand etcd's raft leadership when they run the
 * primary (cloud-init/etcd.ts): the lab's host-loss drill measures why.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ETCD_LEADER_AWAY_TIMER, etcdLeaderAwayUnits, etcdLeaderCandidates } from "../../cloud-init/etcd";
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

  test("every database node that is an etcd member runs it from a timer its first boot starts; an HAProxy-only node does not", () => {
    for (const name of ["pg-seoul-1", "pg-tokyo-1", "pg-singapore-1"]) {
      const units = etcdLeaderAwayUnits(plan, findNode(plan, name));
      assert.equal(units.length, 2, name);
      const exec = String((units[0]?.unit.Service as Record<string, unknown>).ExecStart);
      assert.ok(exec.startsWith(`${NODE_PATHS.etcdLeaderAway} https://127.0.0.1:2379 `), exec);
      assert.ok(!exec.includes(name), `${name} never hands the leadership to itself: ${exec}`);
      const commands = bootCommands(plan, findNode(plan, name), {}).map((c) => (Array.isArray(c) ? c.join(" ") : String(c)));
      assert.ok(commands.includes(`systemctl enable ${ETCD_LEADER_AWAY_TIMER}`), name);
      assert.ok(commands.includes(`systemctl restart ${ETCD_LEADER_AWAY_TIMER}`), name);
    }
    assert.deepEqual(etcdLeaderAwayUnits(plan, findNode(plan, "haproxy-1")), []);
  });
});
