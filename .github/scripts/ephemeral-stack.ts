/**
 * Names and configures the ephemeral stack of a pull request's branch.
 *
 *   BRANCH=feature/Login-Page PR_NUMBER=42 PR_AUTHOR=alice \
 *   PR_CREATED_AT=2026-01-02T03:04:05Z REPOSITORY=acme/pgha \
 *   EPHEMERAL_ROLE_ARN=arn:aws:iam::123456789012:role/github-pgha-ephemeral \
 *     node --import tsx .github/scripts/ephemeral-stack.ts
 *
 * writes Pulumi.<stack>.yaml from the template Pulumi.ephemeral.yaml and
 * prints `stack=<stack>` (also to $GITHUB_OUTPUT when set).
 *
 * The stack name is `pr-<slug>-<hash>`: the branch lower-cased with every
 * run of other characters turned into one dash, cut to 30 characters, and
 * the first 6 hex digits of the SHA-256 of the branch name as given. The
 * hash keeps branches apart that sanitise alike (`fix/a`, `fix-a`, `Fix_A`)
 * or share a long prefix; the whole name stays within the plan's stack-name
 * rule (1-40 lower-case letters, digits, dashes), which keeps IAM names
 * `pgha-<stack>-<node>` within 64 characters.
 *
 * Before the stack is deployed it checks the account's room in every region
 * of the stack: each stack takes one VPC and one Elastic IP (its NAT
 * gateway's) per region, and AWS allows 5 of each per region by default. A
 * full account would otherwise fail halfway through `pulumi up`, with the
 * other regions' resources already created. A stack that already has its
 * VPC and address in a region needs no more there, so updates pass. The
 * destroy job runs the same script and skips the check (`GITHUB_JOB=destroy`).
 *
 * Creator tags (`pgha:created-by`, `pgha:created-at`, …) come from the pull
 * request, not the clock, so every run of the same pull request renders the
 * same file and `pulumi up` shows no tag churn. They go under `pgha:tags`,
 * which the providers apply to every resource as default tags.
 *
 * The node roles get the permissions boundary `pgha-ephemeral-node-boundary`
 * (`pgha:iam.nodePermissionsBoundaryArn`): the ephemeral role creates
 * `pgha-pr-*` roles only with it. Its ARN is built from the account and
 * partition of the role the workflow assumed (`EPHEMERAL_ROLE_ARN`, the
 * repository variable `AWS_EPHEMERAL_ROLE_ARN`), where the setup creates
 * the policy. The destroy job runs no program and may leave it out.
 */
import { createHash } from "node:crypto";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { DescribeAddressesCommand, EC2Client, paginateDescribeVpcs } from "@aws-sdk/client-ec2";
import { GetServiceQuotaCommand, ServiceQuotasClient } from "@aws-sdk/client-service-quotas";
import { dump, load } from "js-yaml";
import { buildClusterPlan, CONFIG_NAMESPACE } from "../../plan";

export const PROJECT_ROOT = resolve(__dirname, "..", "..");
export const TEMPLATE_FILE = "Pulumi.ephemeral.yaml";
/** The plan's rule for stack names (plan/plan.ts). */
export const STACK_NAME_RULE = /^[a-z0-9][a-z0-9-]{0,39}$/;
const SLUG_MAX = 30;

/** `pr-<slug>-<6 hex>`, at most 40 characters, deterministic per branch name. */
export function ephemeralStackName(branch: string): string {
  if (branch.trim() === "") throw new Error("ephemeral-stack: the branch name is empty");
  const hash = createHash("sha256").update(branch, "utf8").digest("hex").slice(0, 6);
  const slug =
    branch
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, "-")
      .replace(/^-+|-+$/g, "")
      .slice(0, SLUG_MAX)
      .replace(/-+$/, "") || "branch";
  return `pr-${slug}-${hash}`;
}

export interface PullRequestFacts {
  branch: string;
  number: string;
  author: string;
  /** ISO time the pull request was opened. */
  createdAt: string;
  /** owner/name */
  repository: string;
}

/** AWS tag values: letters, digits, spaces and `_ . : / = + - @`, at most 256 characters. */
export function tagValue(text: string): string {
  return text.replace(/[^\p{L}\p{N} _.:/=+\-@]/gu, "_").slice(0, 256);
}

/** Who made the stack and when, from the pull request (stable across its runs). */
export function ephemeralTags(facts: PullRequestFacts): Record<string, string> {
  return {
    "pgha:ephemeral": "true",
    "pgha:created-by": tagValue(facts.author),
    "pgha:created-at": tagValue(facts.createdAt),
    "pgha:pull-request": tagValue(`${facts.repository}/pull/${facts.number}`),
    "pgha:branch": tagValue(facts.branch),
  };
}

/** The managed policy every `pgha-pr-*` node role must carry as its boundary (.github/aws/boundary-ephemeral-node.json). */
export const NODE_BOUNDARY_POLICY = "pgha-ephemeral-node-boundary";

/** The boundary policy's ARN in the account and partition of the ephemeral role `roleArn`. */
export function nodeBoundaryArn(roleArn: string): string {
  const match = /^arn:(aws(?:-[a-z]+)*):iam::(\d{12}):role\/[\w+=,.@/-]+$/.exec(roleArn);
  if (!match) throw new Error(`ephemeral-stack: EPHEMERAL_ROLE_ARN = ${JSON.stringify(roleArn)}: must be the ephemeral role's ARN, arn:aws:iam::<12-digit account>:role/<name>`);
  return `arn:${match[1]}:iam::${match[2]}:policy/${NODE_BOUNDARY_POLICY}`;
}

/**
 * The stack file for an ephemeral stack: the template's config, plus
 * `pgha:tags` and the node roles' boundary (`pgha:iam`) when given.
 */
export function renderStackFile(template: string, tags?: Record<string, string>, nodeBoundary?: string): string {
  const doc = (load(template) ?? {}) as { config?: Record<string, unknown> };
  const config: Record<string, unknown> = { ...(doc.config ?? {}) };
  if (tags) config["pgha:tags"] = { ...(config["pgha:tags"] ?? {}), ...tags };
  if (nodeBoundary) config["pgha:iam"] = { ...(config["pgha:iam"] ?? {}), nodePermissionsBoundaryArn: nodeBoundary };
  const header = `# Generated by .github/scripts/ephemeral-stack.ts from ${TEMPLATE_FILE}; do not edit or commit.\n`;
  return header + dump({ ...doc, config }, { lineWidth: -1, noRefs: true, sortKeys: false });
}

/** The per-region quotas a stack draws on, one unit of each per region (Service Quotas codes). */
export const STACK_QUOTAS = [
  { resource: "VPCs", serviceCode: "vpc", quotaCode: "L-F678F1CE", name: "VPCs per Region" },
  { resource: "Elastic IPs", serviceCode: "ec2", quotaCode: "L-0263D0A3", name: "EC2-VPC Elastic IPs" },
] as const;
/** AWS's default for both, used when the quota cannot be read. */
export const DEFAULT_QUOTA = 5;

export type QuotaResource = (typeof STACK_QUOTAS)[number]["resource"];

/** One quota in one region: what the account has, and whether this stack already holds its unit. */
export interface QuotaUsage {
  region: string;
  resource: QuotaResource;
  quotaCode: string;
  quota: number;
  /** Whether `quota` is AWS's default because Service Quotas did not answer. */
  assumed: boolean;
  inUse: number;
  /** In use by this stack already (tag pgha:stack). */
  ours: number;
}

/** One line per quota the stack would exceed; empty when it fits. */
export function quotaProblems(stack: string, usages: QuotaUsage[]): string[] {
  return usages
    .filter((u) => u.ours === 0 && u.inUse + 1 > u.quota)
    .map(
      (u) =>
        `ephemeral-stack: ${u.region}: ${u.inUse} of ${u.quota} ${u.resource} in use (quota ${u.quotaCode}${u.assumed ? ", AWS's default; Service Quotas did not answer" : ""}); ` +
        `stack ${stack} needs 1 more: destroy an unused stack there or raise the quota`,
    );
}

/** The AWS clients of one region (a seam for tests). */
export interface RegionClients {
  ec2: EC2Client;
  quotas: ServiceQuotasClient;
}

export function regionClients(region: string): RegionClients {
  return { ec2: new EC2Client({ region }), quotas: new ServiceQuotasClient({ region }) };
}

async function countVpcs(ec2: EC2Client, stack?: string): Promise<number> {
  let count = 0;
  const filters = stack ? [{ Name: "tag:pgha:stack", Values: [stack] }] : undefined;
  for await (const page of paginateDescribeVpcs({ client: ec2 }, { Filters: filters })) count += page.Vpcs?.length ?? 0;
  return count;
}

async function countAddresses(ec2: EC2Client, stack?: string): Promise<number> {
  // DescribeAddresses is not paginated: it returns every address of the region.
  const filters = [{ Name: "domain", Values: ["vpc"] }, ...(stack ? [{ Name: "tag:pgha:stack", Values: [stack] }] : [])];
  return (await ec2.send(new DescribeAddressesCommand({ Filters: filters }))).Addresses?.length ?? 0;
}

async function quotaValue(quotas: ServiceQuotasClient, serviceCode: string, quotaCode: string): Promise<number | undefined> {
  try {
    return (await quotas.send(new GetServiceQuotaCommand({ ServiceCode: serviceCode, QuotaCode: quotaCode }))).Quota?.Value;
  } catch {
    // No servicequotas:GetServiceQuota, or a quota never read in this region: judge by AWS's default.
    return undefined;
  }
}

/** What the account uses of each stack quota in `region`. */
export async function regionQuotaUsage(region: string, stack: string, clients: RegionClients): Promise<QuotaUsage[]> {
  const counters: Record<QuotaResource, (stack?: string) => Promise<number>> = {
    VPCs: (tag) => countVpcs(clients.ec2, tag),
    "Elastic IPs": (tag) => countAddresses(clients.ec2, tag),
  };
  return Promise.all(
    STACK_QUOTAS.map(async (q): Promise<QuotaUsage> => {
      const [quota, inUse, ours] = await Promise.all([quotaValue(clients.quotas, q.serviceCode, q.quotaCode), counters[q.resource](), counters[q.resource](stack)]);
      return { region, resource: q.resource, quotaCode: q.quotaCode, quota: quota ?? DEFAULT_QUOTA, assumed: quota === undefined, inUse, ours };
    }),
  );
}

/** The AWS regions the stack file deploys to (its `pgha:regions`, or the defaults). */
export function stackRegions(stackFile: string, stack: string): string[] {
  const doc = (load(stackFile) ?? {}) as { config?: Record<string, unknown> };
  const prefix = `${CONFIG_NAMESPACE}:`;
  const input = Object.fromEntries(
    Object.entries(doc.config ?? {})
      .filter(([key]) => key.startsWith(prefix))
      .map(([key, value]) => [key.slice(prefix.length), value]),
  );
  return buildClusterPlan(input, { stack }).regions.map((region) => region.awsRegion);
}

/** Every quota problem of the stack across its regions. */
export async function checkStackQuotas(stack: string, regions: string[], clientsFor: (region: string) => RegionClients = regionClients): Promise<string[]> {
  const usages = (await Promise.all(regions.map((region) => regionQuotaUsage(region, stack, clientsFor(region))))).flat();
  for (const u of usages.filter((x) => x.assumed)) console.error(`ephemeral-stack: ${u.region}: could not read quota ${u.quotaCode}; assuming AWS's default of ${DEFAULT_QUOTA}`);
  return quotaProblems(stack, usages);
}

function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`ephemeral-stack: environment variable ${name} is not set`);
  return value;
}

async function main(): Promise<void> {
  const facts: PullRequestFacts = {
    branch: required("BRANCH"),
    number: required("PR_NUMBER"),
    author: required("PR_AUTHOR"),
    createdAt: required("PR_CREATED_AT"),
    repository: required("REPOSITORY"),
  };
  const stack = ephemeralStackName(facts.branch);
  if (!STACK_NAME_RULE.test(stack)) throw new Error(`ephemeral-stack: derived stack name ${stack} breaks the plan's rule`);
  const template = readFileSync(join(PROJECT_ROOT, TEMPLATE_FILE), "utf8");
  const file = `Pulumi.${stack}.yaml`;
  const destroying = process.env.GITHUB_JOB === "destroy";
  const roleArn = destroying ? process.env.EPHEMERAL_ROLE_ARN : required("EPHEMERAL_ROLE_ARN");
  const stackFile = renderStackFile(template, ephemeralTags(facts), roleArn ? nodeBoundaryArn(roleArn) : undefined);
  writeFileSync(join(PROJECT_ROOT, file), stackFile);
  if (!destroying) {
    const problems = await checkStackQuotas(stack, stackRegions(stackFile, stack));
    if (problems.length > 0) throw new Error(problems.join("\n"));
  }
  console.log(`stack=${stack}`);
  console.log(`file=${file}`);
  if (process.env.GITHUB_OUTPUT) appendFileSync(process.env.GITHUB_OUTPUT, `stack=${stack}\nfile=${file}\n`);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : String(error));
    process.exit(1);
  });
}
