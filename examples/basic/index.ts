/**
 * A program of someone else's that deploys the cluster from the package:
 * its own config namespace (`db:`), its own tags, the package's defaults for
 * everything it does not set. See docs/packaging.md.
 */
import * as pulumi from "@pulumi/pulumi";
import {
  buildClusterPlan,
  ConfigError,
  PgHaCluster,
  type ClusterConfigInput,
  type ClusterPlan,
  type HaproxyEndpoint,
  type InstancesConfig,
  type PgHaClusterArgs,
  type RegionConfig,
} from "pgha-multiregion";

const config = new pulumi.Config("db");

/** The cluster settings this program exposes; the plan validates them and fills in the rest. */
function clusterInput(): ClusterConfigInput {
  const input: ClusterConfigInput = {
    access: {
      applicationCidrs: config.requireObject<string[]>("applicationCidrs"),
      adminCidrs: config.getObject<string[]>("adminCidrs") ?? [],
    },
    instances: config.getObject<Partial<InstancesConfig>>("instances") ?? {},
    tags: { project: pulumi.getProject(), stack: pulumi.getStack() },
  };
  // Unset: the package's three regions (Seoul, Tokyo, Singapore).
  const regions = config.getObject<RegionConfig[]>("regions");
  if (regions !== undefined) input.regions = regions;
  return input;
}

/**
 * The plan's `stack` names the cluster's account-wide resources: IAM roles
 * `pgha-<stack>-<node>` and SSM paths `<parameterPrefix>/<stack>/…`. The
 * project name in it keeps this program's `dev` apart from another project's
 * `dev` in the same AWS account.
 */
const clusterName = config.get("clusterName") ?? `${pulumi.getProject()}-${pulumi.getStack()}`;

function clusterPlan(): ClusterPlan {
  try {
    return buildClusterPlan(clusterInput(), { stack: clusterName });
  } catch (error) {
    // One line per problem and no stack trace; nothing has been created yet.
    // The keys in the message are the package's (pgha:access…), not db:.
    if (error instanceof ConfigError) throw new pulumi.RunError(error.message);
    throw error;
  }
}

const args: PgHaClusterArgs = {
  // With the readiness gate (the default), `pulumi up` returns only once the
  // cluster works; it runs the package's compiled ops/readiness.js with node.
  plan: clusterPlan(),
};
const cluster = new PgHaCluster("db", args);

/** Where applications connect: the writer listener of every region's HAProxy. */
export const writerEndpoints = cluster.haproxyEndpoints.apply((endpoints: HaproxyEndpoint[]) => endpoints.map((endpoint) => endpoint.writer));
export const haproxyEndpoints = cluster.haproxyEndpoints;
export const caCertificatePem = cluster.caCertificatePem;
export const superuserPassword = cluster.superuserPassword;
