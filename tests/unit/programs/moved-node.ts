/**
 * Runs the whole cluster under mocks with the launch record (the Stash) of
 * pg-seoul-1 as an earlier deployment left it: `moved` says it was launched
 * at 10.1.0.11 (the plan now says 10.1.0.10), `same` at the planned IP.
 * Prints one JSON line: the program's errors and the instances it registered.
 * A separate process, because the refusal is an unhandled rejection of the
 * program, as under `pulumi up`, which node's test runner would claim.
 */
import { buildClusterPlan } from "../../../plan";
import { installMocks, valueOf } from "../mocks";

const mode = process.argv[2];
if (mode !== "moved" && mode !== "same") throw new Error("usage: moved-node.ts moved|same");
const plan = buildClusterPlan({ access: { applicationCidrs: ["10.1.0.0/16"], adminCidrs: [] } }, { stack: "test" });
const { slug } = require("../../../components/naming") as typeof import("../../../components/naming");
const node = plan.nodes.find((n) => n.name === "pg-seoul-1")!;
// The mocks give a subnet its name + "-id" as id, so only the IP differs.
const subnetId = `pgha-${node.region}-private-${slug(node.subnetCidr)}-id`;
const world = installMocks("test", { stashed: { "pgha-pg-seoul-1-instance-launch": { privateIp: mode === "moved" ? "10.1.0.11" : node.privateIp, subnetId } } });
const errors = new Set<string>();
process.on("unhandledRejection", (error) => errors.add(error instanceof Error ? error.message : String(error)));
const { PgHaCluster } = require("../../../components/cluster") as typeof import("../../../components/cluster");

void (async () => {
  const cluster = new PgHaCluster("pgha", { plan });
  await Promise.race([valueOf(cluster.nodePrivateIps), new Promise((resolve) => setTimeout(resolve, 3000))]);
  await world.settle();
  const instances = world
    .ofType("aws:ec2/instance:Instance")
    .map((i) => i.inputs.privateIp as string)
    .sort();
  process.stdout.write(`${JSON.stringify({ errors: [...errors], instances })}\n`);
  process.exit(0);
})();
