import * as pulumi from "@pulumi/pulumi";
import { PgHaCluster } from "./components/cluster";
import { buildClusterPlan, CONFIG_NAMESPACE, ConfigError } from "./plan";

/**
 * Every `pgha:*` key of the stack, as plain data. All of them are passed on —
 * unknown ones too — so the plan reports a typo such as `pgha:patrnoi` instead
 * of silently ignoring it. Structured values arrive as JSON text; scalars
 * (e.g. `pgha:parameterPrefix: /pgha`) as plain strings.
 */
function readStackConfig(): Record<string, unknown> {
  const prefix = `${CONFIG_NAMESPACE}:`;
  const input: Record<string, unknown> = {};
  for (const [key, text] of Object.entries(pulumi.runtime.allConfig())) {
    if (!key.startsWith(prefix)) continue;
    let value: unknown = text;
    try {
      value = JSON.parse(text);
    } catch {
      // Not JSON: a plain string value.
    }
    input[key.slice(prefix.length)] = value;
  }
  return input;
}

function planFromStackConfig() {
  try {
    return buildClusterPlan(readStackConfig(), { stack: pulumi.getStack() });
  } catch (error) {
    // One line per problem, no stack trace: nothing has been registered yet.
    if (error instanceof ConfigError) throw new pulumi.RunError(error.message);
    throw error;
  }
}

const cluster = new PgHaCluster("pgha", { plan: planFromStackConfig() });

export const haproxyEndpoints = cluster.haproxyEndpoints;
export const nodePrivateIps = cluster.nodePrivateIps;
export const patroniRestUrls = cluster.patroniRestUrls;
export const caCertificatePem = cluster.caCertificatePem;
export const superuserPassword = cluster.superuserPassword;
export const natPublicIps = cluster.natPublicIps;
export const backupRepositories = cluster.backupRepositories;
