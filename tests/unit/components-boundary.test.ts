/**
 * `pgha:iam.nodePermissionsBoundaryArn` under Pulumi mocks: two whole
 * clusters in one program, one with the key and one without. Every node
 * role of the first is created with the boundary (the ephemeral deploy
 * role refuses CreateRole without it), none of the second has one.
 */
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { buildClusterPlan } from "../../plan";
import { installMocks, prepareRenderer, valueOf, type Registered } from "./mocks";

const world = installMocks("boundary");
const BOUNDARY = "arn:aws:iam::123456789012:policy/pgha-ephemeral-node-boundary";
const withBoundary = buildClusterPlan({ iam: { nodePermissionsBoundaryArn: BOUNDARY } }, { stack: "pr-with-000001" });
const without = buildClusterPlan({}, { stack: "pr-without-000002" });
prepareRenderer(() => {
  const { renderUserData } = require("../../cloud-init/user-data") as typeof import("../../cloud-init/user-data");
  renderUserData(without, "pg-seoul-1", { dataVolumeId: "vol-0123456789abcdef0" });
});
const { PgHaCluster } = require("../../components/cluster") as typeof import("../../components/cluster");
const { iamName } = require("../../components/naming") as typeof import("../../components/naming");

before(async () => {
  const clusters = [new PgHaCluster("with", { plan: withBoundary }), new PgHaCluster("without", { plan: without })];
  await Promise.all(clusters.map((c) => valueOf(c.haproxyEndpoints)));
  await world.settle();
});

/** The roles of one cluster's NodeSecrets, by node; fails if a node has none or two. */
function nodeRoles(plan: typeof without): Map<string, Registered> {
  const roles = world.ofType("aws:iam/role:Role");
  const out = new Map<string, Registered>();
  for (const node of plan.nodes) {
    const mine = roles.filter((r) => r.inputs.name === iamName(plan.stack, node.name));
    assert.equal(mine.length, 1, `${plan.stack} ${node.name}: ${mine.length} roles`);
    out.set(node.name, mine[0]);
  }
  return out;
}

describe("permissions boundary of the node roles", () => {
  it("the program's roles are exactly the two clusters' node roles", () => {
    assert.equal(world.ofType("aws:iam/role:Role").length, withBoundary.nodes.length + without.nodes.length);
    assert.equal(withBoundary.nodes.length, 6);
  });

  it("with pgha:iam.nodePermissionsBoundaryArn, every node role is created with that boundary", () => {
    for (const [node, role] of nodeRoles(withBoundary)) {
      assert.equal(role.inputs.permissionsBoundary, BOUNDARY, `${node}'s role`);
      assert.ok(role.parent.includes("NodeSecrets"), `${node}'s role is not a NodeSecrets child`);
    }
  });

  it("without it, no node role has a boundary", () => {
    for (const [node, role] of nodeRoles(without)) assert.equal(role.inputs.permissionsBoundary, undefined, `${node}'s role`);
  });

  it("the boundary changes nothing else: same policies and attachments with and without it", () => {
    const shape = (plan: typeof without) =>
      [...nodeRoles(plan)].map(([node, role]) => {
        const { name: _name, permissionsBoundary: _boundary, description: _description, tags: _tags, ...rest } = role.inputs;
        const attachments = world
          .ofType("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
          .filter((a) => a.inputs.role === role.inputs.name)
          .map((a) => a.inputs.policyArn);
        return { node, rest, attachments };
      });
    assert.deepEqual(shape(withBoundary), shape(without));
  });
});
