/**
 * What patroni.yml promises beyond what Patroni and PostgreSQL check
 * themselves (tests/render/real-programs.test.ts starts PostgreSQL 17 on it):
 * the WAL a lost member's slot may hold follows the data volume, and the
 * stack's own parameters win.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { patroniConfig, pgHba } from "../../cloud-init/patroni";
import { dynamicSettings, dynamicSettingsHash } from "../../ops/dynamic-config";
import { buildClusterPlan, findNode, nodesWithRole, type ClusterPlan } from "../../plan";

function dcsParameters(plan: ClusterPlan): Record<string, unknown> {
  const config = patroniConfig(plan, findNode(plan, "pg-seoul-1")) as { bootstrap: { dcs: { postgresql: { parameters: Record<string, unknown> } } } };
  return config.bootstrap.dcs.postgresql.parameters;
}

describe("patroni.yml", () => {
  test("a lost member's slot may hold a tenth of PGDATA's volume in pg_wal, and the stack's parameters override it", () => {
    assert.equal(dcsParameters(buildClusterPlan(undefined, { stack: "t" })).max_slot_wal_keep_size, "10240MB");
    assert.equal(dcsParameters(buildClusterPlan({ instances: { dataVolumeGiB: 500 } }, { stack: "t" })).max_slot_wal_keep_size, "51200MB");
    // Never below 64 MB (four 16 MB segments) on a tiny volume.
    assert.equal(dcsParameters(buildClusterPlan({ instances: { dataVolumeGiB: 1 } }, { stack: "t" })).max_slot_wal_keep_size, "102MB");
    const overridden = buildClusterPlan({ patroni: { parameters: { max_slot_wal_keep_size: "-1" } } }, { stack: "t" });
    assert.equal(dcsParameters(overridden).max_slot_wal_keep_size, "-1");
  });

  test("failsafe_mode is on unless the stack turns it off, and it is dynamic configuration (a rollout patches it)", () => {
    const dcs = (plan: ClusterPlan) => (patroniConfig(plan, findNode(plan, "pg-seoul-1")) as { bootstrap: { dcs: Record<string, unknown> } }).bootstrap.dcs;
    assert.equal(dcs(buildClusterPlan(undefined, { stack: "t" })).failsafe_mode, true);
    const off = buildClusterPlan({ patroni: { failsafeMode: false } }, { stack: "t" });
    assert.equal(dcs(off).failsafe_mode, false);
    assert.equal(dynamicSettings(off).failsafe_mode, false);
    assert.notEqual(dynamicSettingsHash(off), dynamicSettingsHash(buildClusterPlan(undefined, { stack: "t" })));
  });

  test("pg_hba admits replication from the database nodes' own addresses only", () => {
    const plan = buildClusterPlan(undefined, { stack: "t" });
    const replication = pgHba(plan).filter((line) => line.includes(" replication "));
    const members = nodesWithRole(plan, "postgres").map((n) => `${n.privateIp}/32`);
    assert.deepEqual(replication.map((line) => line.split(/\s+/)[3]).sort(), ["127.0.0.1/32", ...members].sort());
  });
});
