/**
 * The policy pack entry point, run by the Pulumi CLI:
 *
 *   pulumi preview --policy-pack policy
 *   pulumi up --policy-pack policy [--policy-pack-config policy/ephemeral.json]
 *
 * `new PolicyPack(...)` starts the analyzer's gRPC server, so nothing else
 * lives here: the rules are in ./policies.ts, which the tests import.
 */
import { PolicyPack } from "@pulumi/policy";
import { POLICY_PACK_NAME, policyPackArgs } from "./policies";

new PolicyPack(POLICY_PACK_NAME, policyPackArgs);
