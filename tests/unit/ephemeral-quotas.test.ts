/**
 * The ephemeral stack's quota check (.github/scripts/ephemeral-stack.ts)
 * against mocked EC2 and Service Quotas clients (aws-sdk-client-mock): a
 * stack needs one VPC and one Elastic IP per region unless it already has
 * them; the quota comes from Service Quotas, or AWS's default of 5.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";
import { DescribeAddressesCommand, DescribeVpcsCommand, EC2Client, type Filter } from "@aws-sdk/client-ec2";
import { GetServiceQuotaCommand, ServiceQuotasClient } from "@aws-sdk/client-service-quotas";
import { mockClient } from "aws-sdk-client-mock";
import { checkStackQuotas, PROJECT_ROOT, renderStackFile, stackRegions, TEMPLATE_FILE } from "../../.github/scripts/ephemeral-stack";

const ec2 = mockClient(EC2Client);
const quotas = mockClient(ServiceQuotasClient);
afterEach(() => {
  ec2.reset();
  quotas.reset();
});

const STACK = "pr-feature-abc123";
const REGION = "ap-northeast-1";
const clients = () => ({
  ec2: new EC2Client({ region: REGION, credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "x" } }),
  quotas: new ServiceQuotasClient({ region: REGION, credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "x" } }),
});
const taggedOurs = (filters: Filter[] | undefined) => (filters ?? []).some((f) => f.Name === "tag:pgha:stack" && f.Values?.includes(STACK));

/** An account with `vpcs` VPCs and `eips` addresses in the region, `ours` of each tagged with the stack, and the given quotas. */
function account(options: { vpcs: number; eips: number; ours?: number; vpcQuota?: number; eipQuota?: number; quotasDenied?: boolean }): void {
  const ours = options.ours ?? 0;
  ec2.on(DescribeVpcsCommand).callsFake((input) => ({ Vpcs: Array.from({ length: taggedOurs(input.Filters) ? ours : options.vpcs }, (_, i) => ({ VpcId: `vpc-${i}` })) }));
  ec2
    .on(DescribeAddressesCommand)
    .callsFake((input) => ({ Addresses: Array.from({ length: taggedOurs(input.Filters) ? ours : options.eips }, (_, i) => ({ AllocationId: `eipalloc-${i}` })) }));
  if (options.quotasDenied) quotas.on(GetServiceQuotaCommand).rejects(Object.assign(new Error("not authorized"), { name: "AccessDeniedException" }));
  else {
    quotas.on(GetServiceQuotaCommand, { ServiceCode: "vpc", QuotaCode: "L-F678F1CE" }).resolves({ Quota: { Value: options.vpcQuota ?? 5 } });
    quotas.on(GetServiceQuotaCommand, { ServiceCode: "ec2", QuotaCode: "L-0263D0A3" }).resolves({ Quota: { Value: options.eipQuota ?? 5 } });
  }
}

describe("ephemeral stack quota check", () => {
  it("passes with room for one more VPC and Elastic IP", async () => {
    account({ vpcs: 4, eips: 4 });
    assert.deepEqual(await checkStackQuotas(STACK, [REGION], clients), []);
  });

  it("refuses a new stack in a region whose VPCs and Elastic IPs are at the default quota, one line each", async () => {
    account({ vpcs: 5, eips: 5 });
    assert.deepEqual(await checkStackQuotas(STACK, [REGION], clients), [
      `ephemeral-stack: ${REGION}: 5 of 5 VPCs in use (quota L-F678F1CE); stack ${STACK} needs 1 more: destroy an unused stack there or raise the quota`,
      `ephemeral-stack: ${REGION}: 5 of 5 Elastic IPs in use (quota L-0263D0A3); stack ${STACK} needs 1 more: destroy an unused stack there or raise the quota`,
    ]);
  });

  it("lets an existing stack update in a full region (it already holds its VPC and address)", async () => {
    account({ vpcs: 5, eips: 5, ours: 1 });
    assert.deepEqual(await checkStackQuotas(STACK, [REGION], clients), []);
  });

  it("judges by a raised quota", async () => {
    account({ vpcs: 5, eips: 9, vpcQuota: 10, eipQuota: 10 });
    assert.deepEqual(await checkStackQuotas(STACK, [REGION], clients), []);
  });

  it("assumes AWS's default of 5 when Service Quotas does not answer, and says so", async () => {
    account({ vpcs: 5, eips: 1, quotasDenied: true });
    const problems = await checkStackQuotas(STACK, [REGION], clients);
    assert.equal(problems.length, 1);
    assert.match(problems[0], /5 of 5 VPCs in use \(quota L-F678F1CE, AWS's default; Service Quotas did not answer\)/);
  });

  it("checks every region of the rendered stack file", () => {
    const stackFile = renderStackFile(readFileSync(join(PROJECT_ROOT, TEMPLATE_FILE), "utf8"), { "pgha:ephemeral": "true" });
    assert.deepEqual(stackRegions(stackFile, STACK), ["ap-northeast-2", "ap-northeast-1", "ap-southeast-1"]);
  });
});
