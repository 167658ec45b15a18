/**
 * Branch stacks are fenced off from production (.github/aws):
 *
 * - the ephemeral role's documents are evaluated by a small IAM evaluator
 *   (Action/Resource globs with IAM's `*` and `?`, and the condition
 *   operators the documents use) against the real resource graph of the
 *   program under mocks: everything an ephemeral stack (pr-…) creates is
 *   allowed, and nothing of a production stack (dev) is — with the request
 *   keys a hostile branch controls (region, request tags, passed service,
 *   permissions boundary of a role it creates) chosen in its favour;
 * - the ephemeral graph is the program run on the stack file exactly as
 *   .github/scripts/ephemeral-stack.ts writes it, and its node roles' real
 *   `permissionsBoundary` is what CreateRole is judged by: allowed with the
 *   boundary the script sets, refused for the bare template without it;
 * - every Allow statement on ec2/iam/ssm that is not confined by resource
 *   name or pgha:stack tag is one of a few named exceptions;
 * - the production role no longer trusts the ephemeral environment.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import { ephemeralStackName, ephemeralTags, nodeBoundaryArn, PROJECT_ROOT, renderStackFile, STACK_QUOTAS, TEMPLATE_FILE } from "../../.github/scripts/ephemeral-stack";
import { programGraph, type GraphResource, type ProgramGraph } from "../../policy/testing/program-graph";

const AWS_DIR = join(__dirname, "..", "..", ".github", "aws");
/** The account the documents are filled with, as docs/delivery.md's `fill` does with ACCOUNT_ID. */
const ACCOUNT = "123456789012";
interface Statement {
  Sid: string;
  Effect: string;
  Action: string | string[];
  Resource: string | string[];
  Condition?: Record<string, Record<string, string | string[]>>;
}
const statements = (file: string): Statement[] => JSON.parse(readFileSync(join(AWS_DIR, file), "utf8").replaceAll("ACCOUNT_ID", ACCOUNT)).Statement;
const list = <T>(value: T | T[]): T[] => [value].flat() as T[];

/** IAM's glob: `*` any run of characters (also `/` and `:`), `?` one character, case-sensitive. */
function iamGlob(pattern: string, value: string): boolean {
  const source = pattern
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${source}$`).test(value);
}
/** Action names are case-insensitive in IAM. */
const actionMatches = (pattern: string, action: string) => iamGlob(pattern.toLowerCase(), action.toLowerCase());

type Context = Record<string, string | undefined>;

function conditionHolds(operator: string, key: string, expected: string | string[], context: Context): boolean {
  const value = context[key];
  const wanted = list(expected);
  switch (operator) {
    case "StringEquals":
    case "ArnEquals":
      return value !== undefined && wanted.includes(value);
    case "StringLike":
    case "ArnLike":
      return value !== undefined && wanted.some((w) => iamGlob(w, value));
    case "StringLikeIfExists":
      return value === undefined || wanted.some((w) => iamGlob(w, value));
    case "Null":
      return wanted.includes(String(value === undefined));
    default:
      throw new Error(`the evaluator does not know condition operator ${operator}`);
  }
}

/** Whether one Allow statement grants `action` on `resource` in `context` (no Deny statements in these documents). */
function allows(statement: Statement, action: string, resource: string, context: Context): boolean {
  if (statement.Effect !== "Allow") throw new Error(`${statement.Sid}: only Allow statements are modelled`);
  if (!list(statement.Action).some((a) => actionMatches(a, action))) return false;
  if (!list(statement.Resource).some((r) => iamGlob(r, resource))) return false;
  return Object.entries(statement.Condition ?? {}).every(([operator, keys]) => Object.entries(keys).every(([key, expected]) => conditionHolds(operator, key, expected, context)));
}

const allowedBy = (policy: Statement[], action: string, resource: string, context: Context) => policy.filter((s) => allows(s, action, resource, context)).map((s) => s.Sid);

// ---------------------------------------------------------------------------
// The resource graph as IAM sees it
// ---------------------------------------------------------------------------

const BOUNDARY = `arn:aws:iam::${ACCOUNT}:policy/pgha-ephemeral-node-boundary`;

/** ARN resource type of each EC2 resource type the program creates (service authorization reference). */
const EC2_ARN_TYPE: Record<string, string> = {
  "aws:ec2/vpc:Vpc": "vpc",
  "aws:ec2/subnet:Subnet": "subnet",
  "aws:ec2/internetGateway:InternetGateway": "internet-gateway",
  "aws:ec2/eip:Eip": "elastic-ip",
  "aws:ec2/natGateway:NatGateway": "natgateway",
  "aws:ec2/routeTable:RouteTable": "route-table",
  "aws:ec2/securityGroup:SecurityGroup": "security-group",
  "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": "security-group",
  "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "security-group-rule",
  "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "security-group-rule",
  "aws:ec2/vpcPeeringConnection:VpcPeeringConnection": "vpc-peering-connection",
  "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter": "vpc-peering-connection",
  "aws:ec2/instance:Instance": "instance",
  "aws:ebs/volume:Volume": "volume",
};
/** EC2 resources that are no AWS resource of their own: the API call acts on (tagged) resources above. */
const EC2_UNTAGGED: Record<string, string> = {
  "aws:ec2/route:Route": "CreateRoute on its route table",
  "aws:ec2/routeTableAssociation:RouteTableAssociation": "AssociateRouteTable on its route table and subnet",
  "aws:ec2/volumeAttachment:VolumeAttachment": "AttachVolume on its instance and volume",
  "aws:ec2/peeringConnectionOptions:PeeringConnectionOptions": "ModifyVpcPeeringConnectionOptions on its peering connection",
};
/** What deploying (and destroying) does to each kind of resource. */
const EC2_ACTIONS: Record<string, string[]> = {
  vpc: [
    "ModifyVpcAttribute",
    "DeleteVpc",
    "CreateSubnet",
    "CreateRouteTable",
    "CreateSecurityGroup",
    "AttachInternetGateway",
    "CreateVpcPeeringConnection",
    "AcceptVpcPeeringConnection",
  ],
  subnet: ["ModifySubnetAttribute", "DeleteSubnet", "RunInstances", "CreateNatGateway", "AssociateRouteTable"],
  "internet-gateway": ["AttachInternetGateway", "DetachInternetGateway", "DeleteInternetGateway"],
  "elastic-ip": ["ReleaseAddress", "DisassociateAddress", "CreateNatGateway"],
  natgateway: ["DeleteNatGateway"],
  "route-table": ["CreateRoute", "ReplaceRoute", "DeleteRoute", "AssociateRouteTable", "DisassociateRouteTable", "DeleteRouteTable"],
  "security-group": [
    "AuthorizeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupIngress",
    "RevokeSecurityGroupEgress",
    "DeleteSecurityGroup",
    "RunInstances",
  ],
  "security-group-rule": ["ModifySecurityGroupRules", "UpdateSecurityGroupRuleDescriptionsIngress", "RevokeSecurityGroupIngress"],
  "vpc-peering-connection": ["ModifyVpcPeeringConnectionOptions", "DeleteVpcPeeringConnection"],
  instance: ["TerminateInstances", "StopInstances", "StartInstances", "ModifyInstanceAttribute", "ModifyInstanceMetadataOptions", "AttachVolume"],
  volume: ["AttachVolume", "DetachVolume", "DeleteVolume", "ModifyVolume"],
};
const SSM_ACTIONS = ["ssm:PutParameter", "ssm:GetParameter", "ssm:GetParameters", "ssm:DeleteParameter", "ssm:AddTagsToResource"];
const ROLE_ACTIONS = ["iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:UpdateAssumeRolePolicy", "iam:PassRole", "iam:DeleteRole", "iam:TagRole"];
const PROFILE_ACTIONS = ["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"];

/** What the AWS provider's Read of an S3 bucket calls (HeadBucket is s3:ListBucket), as IAM actions. */
const S3_BUCKET_READS = [
  "s3:ListBucket",
  "s3:GetBucketLocation",
  "s3:GetBucketAcl",
  "s3:GetBucketCORS",
  "s3:GetBucketWebsite",
  "s3:GetBucketVersioning",
  "s3:GetAccelerateConfiguration",
  "s3:GetBucketRequestPayment",
  "s3:GetBucketLogging",
  "s3:GetLifecycleConfiguration",
  "s3:GetReplicationConfiguration",
  "s3:GetEncryptionConfiguration",
  "s3:GetBucketObjectLockConfiguration",
  "s3:GetBucketPolicy",
  "s3:GetBucketTagging",
  "s3:ListTagsForResource",
];
/**
 * S3 resources of the program: what reading one calls and what creating, updating and deleting it calls (the
 * configuration resources' Delete is the same Put, except the policy's), all on the bucket's ARN.
 */
const S3_ACTIONS: Record<string, { reads: string[]; writes: string[] }> = {
  "aws:s3/bucket:Bucket": { reads: S3_BUCKET_READS, writes: ["s3:CreateBucket", "s3:DeleteBucket", "s3:TagResource", "s3:UntagResource", "s3:PutBucketTagging"] },
  "aws:s3/bucketOwnershipControls:BucketOwnershipControls": { reads: ["s3:GetBucketOwnershipControls"], writes: ["s3:PutBucketOwnershipControls"] },
  "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": { reads: ["s3:GetBucketPublicAccessBlock"], writes: ["s3:PutBucketPublicAccessBlock"] },
  "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": { reads: ["s3:GetEncryptionConfiguration"], writes: ["s3:PutEncryptionConfiguration"] },
  "aws:s3/bucketVersioning:BucketVersioning": { reads: ["s3:GetBucketVersioning"], writes: ["s3:PutBucketVersioning"] },
  "aws:s3/bucketPolicy:BucketPolicy": { reads: ["s3:GetBucketPolicy"], writes: ["s3:PutBucketPolicy", "s3:DeleteBucketPolicy"] },
  "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": { reads: ["s3:GetLifecycleConfiguration"], writes: ["s3:PutLifecycleConfiguration"] },
};
/** Destroying a bucket with forceDestroy first deletes every object version in it. */
const FORCE_DESTROY_BUCKET = ["s3:ListBucketVersions"];
const FORCE_DESTROY_OBJECTS = ["s3:DeleteObject", "s3:DeleteObjectVersion"];
const KMS_KEY = "aws:kms/key:Key";
/** What the provider's Read of a KMS key calls, and its updates and Delete (ScheduleKeyDeletion). */
const KMS_KEY_READS = ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListResourceTags"];
const KMS_KEY_WRITES = ["kms:EnableKeyRotation", "kms:UpdateKeyDescription", "kms:ScheduleKeyDeletion", "kms:TagResource", "kms:UntagResource"];
/** CreateKey with tags: KMS authorises both on `*` (the key does not exist yet), with the request's tags. */
const KMS_KEY_CREATION = ["kms:CreateKey", "kms:TagResource"];

interface Probe {
  what: string;
  action: string;
  resource: string;
  /** Facts about the resource as it exists (its tags, a role's boundary). */
  context: Context;
  /** The call creates something new and acts on no existing resource (CreateKey and its tags on `*`). */
  creation?: boolean;
}

function regionOf(graph: ProgramGraph, resource: GraphResource): string {
  const provider = graph.resources.find((r) => r.type === "pulumi:providers:aws" && resource.provider.startsWith(`${r.urn}::`));
  const region = provider?.inputs.region as string | undefined;
  assert.ok(region, `${resource.name}: no regional provider`);
  return region;
}

/** Every action the ephemeral workflow needs on the resources of a graph, as IAM would be asked. */
function probes(graph: ProgramGraph): Probe[] {
  const out: Probe[] = [];
  for (const r of graph.resources) {
    if (r.type === "aws:ssm/parameter:Parameter") {
      const arn = `arn:aws:ssm:${regionOf(graph, r)}:${ACCOUNT}:parameter${r.inputs.name}`;
      for (const action of SSM_ACTIONS) out.push({ what: r.inputs.name, action, resource: arn, context: {} });
    } else if (r.type === "aws:iam/role:Role") {
      const arn = `arn:aws:iam::${ACCOUNT}:role/${r.inputs.name}`;
      // The boundary the program creates the role with (and that it then has), nothing assumed.
      const boundary = r.inputs.permissionsBoundary as string | undefined;
      for (const action of ROLE_ACTIONS) out.push({ what: r.inputs.name, action, resource: arn, context: { "iam:PermissionsBoundary": boundary } });
    } else if (r.type === "aws:iam/instanceProfile:InstanceProfile") {
      const arn = `arn:aws:iam::${ACCOUNT}:instance-profile/${r.inputs.name}`;
      for (const action of PROFILE_ACTIONS) out.push({ what: r.inputs.name, action, resource: arn, context: {} });
    } else if (EC2_ARN_TYPE[r.type]) {
      const kind = EC2_ARN_TYPE[r.type];
      const arn = `arn:aws:ec2:${regionOf(graph, r)}:${ACCOUNT}:${kind}/${r.name}-id`;
      const stack = r.inputs.tags?.["pgha:stack"] as string | undefined;
      const context = { "ec2:ResourceTag/pgha:stack": stack, "ssm:resourceTag/pgha:stack": stack };
      for (const action of [...EC2_ACTIONS[kind], "CreateTags", "DeleteTags"]) out.push({ what: `${r.type} ${r.name}`, action: `ec2:${action}`, resource: arn, context });
      if (kind === "instance") out.push({ what: `${r.name} (readiness gate)`, action: "ssm:SendCommand", resource: arn, context });
    } else if (S3_ACTIONS[r.type]) {
      // A bucket's id is its name; its configuration resources name it in `bucket`.
      const bucket = String(r.inputs.bucket);
      const arn = `arn:aws:s3:::${bucket}`;
      const { reads, writes } = S3_ACTIONS[r.type];
      for (const action of [...reads, ...writes]) out.push({ what: `${r.type} ${r.name}`, action, resource: arn, context: {} });
      if (r.type === "aws:s3/bucket:Bucket" && r.inputs.forceDestroy === true) {
        for (const action of FORCE_DESTROY_BUCKET) out.push({ what: `${r.name} (forceDestroy)`, action, resource: arn, context: {} });
        for (const action of FORCE_DESTROY_OBJECTS) out.push({ what: `${r.name} (forceDestroy)`, action, resource: `${arn}/${graph.stack}/archive/x`, context: {} });
      }
    } else if (r.type === KMS_KEY) {
      const region = regionOf(graph, r);
      const stack = r.inputs.tags?.["pgha:stack"] as string | undefined;
      const arn = r.state.arn as string;
      // The provider calls KMS itself: no service calls on its behalf (kms:ViaService is AWS's to set, not the caller's).
      const context = { "aws:ResourceTag/pgha:stack": stack, "kms:ViaService": undefined };
      for (const action of [...KMS_KEY_READS, ...KMS_KEY_WRITES]) out.push({ what: `${r.type} ${r.name}`, action, resource: arn, context });
      for (const action of KMS_KEY_CREATION)
        out.push({ what: `${r.name} (create)`, action, resource: "*", context: { "aws:RequestedRegion": region, "kms:ViaService": undefined }, creation: true });
    }
  }
  return out;
}

/** What a request can add: a hostile branch picks every key it controls to pass. */
const REQUEST: Context = {
  "aws:RequestedRegion": "ap-northeast-2",
  "iam:PassedToService": "ec2.amazonaws.com",
  "iam:PolicyARN": "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
  "kms:ViaService": "ssm.ap-northeast-2.amazonaws.com",
};
function requestFor(probe: Probe, stackTag: string): Context {
  const region = /^arn:aws:[a-z0-9]+:([a-z0-9-]+):/.exec(probe.resource)?.[1];
  return { ...REQUEST, ...(region ? { "aws:RequestedRegion": region } : {}), "aws:RequestTag/pgha:stack": stackTag, ...probe.context };
}

const FACTS = { branch: "feature/fence", number: "7", author: "octocat", createdAt: "2026-01-02T03:04:05Z", repository: "acme/pgha" };
const EPHEMERAL_STACK = ephemeralStackName(FACTS.branch);
/** What the workflow passes as EPHEMERAL_ROLE_ARN (vars.AWS_EPHEMERAL_ROLE_ARN). */
const EPHEMERAL_ROLE_ARN = `arn:aws:iam::${ACCOUNT}:role/github-pgha-ephemeral`;
/** The program run on the stack file exactly as .github/scripts/ephemeral-stack.ts writes it. */
let ephemeralGraph: ProgramGraph;
/** The program run on the bare template: no pgha:iam.nodePermissionsBoundaryArn. */
let templateGraph: ProgramGraph;
let productionGraph: ProgramGraph;
/** The ephemeral role's inline policy and its managed policy of the backup buckets and keys (one role's inline policies hold 10,240 characters in all). */
const ephemeral = [...statements("permissions-ephemeral.json"), ...statements("permissions-ephemeral-backups.json")];
const deploy = statements("permissions-deploy.json");
const scratch = mkdtempSync(join(tmpdir(), "pgha-aws-roles-"));

before(async () => {
  const stackFile = join(scratch, `Pulumi.${EPHEMERAL_STACK}.yaml`);
  const template = readFileSync(join(PROJECT_ROOT, TEMPLATE_FILE), "utf8");
  writeFileSync(stackFile, renderStackFile(template, ephemeralTags(FACTS), nodeBoundaryArn(EPHEMERAL_ROLE_ARN)));
  [ephemeralGraph, templateGraph, productionGraph] = await Promise.all([
    // programGraph takes the stack file relative to the project root.
    programGraph({ stackFile: relative(PROJECT_ROOT, stackFile), stack: EPHEMERAL_STACK }),
    programGraph({ stackFile: TEMPLATE_FILE, stack: EPHEMERAL_STACK }),
    programGraph({ stackFile: "Pulumi.dev.yaml", stack: "dev" }),
  ]);
});
after(() => {
  rmSync(scratch, { recursive: true, force: true });
});

describe("the IAM glob matcher", () => {
  it("has IAM's semantics: * spans / and :, ? is one character, the whole value must match", () => {
    assert.ok(iamGlob("arn:aws:ssm:*:1:parameter/pgha/pr-*", "arn:aws:ssm:ap-northeast-2:1:parameter/pgha/pr-x-1/pg/tls/a.key"));
    assert.ok(iamGlob("pr-?", "pr-a"));
    assert.ok(!iamGlob("pr-?", "pr-ab"));
    assert.ok(!iamGlob("arn:aws:ssm:*:1:parameter/pgha/pr-*", "arn:aws:ssm:ap-northeast-2:1:parameter/pgha/dev/pg/tls/a.key"));
    assert.ok(!iamGlob("pgha-pr-*", "xpgha-pr-a"), "anchored at the start");
    assert.ok(!iamGlob("a.c", "abc"), "a dot is a dot");
  });
});

describe("ephemeral stacks stay inside the ephemeral role (the program's real graph under mocks)", () => {
  it(`every SSM parameter, IAM role and profile and pgha:stack tag of ${EPHEMERAL_STACK} matches the role's patterns`, () => {
    const [parameterStatement] = ephemeral.filter((s) => s.Sid === "PrNodeParameters");
    const [roleStatement] = ephemeral.filter((s) => s.Sid === "PrNodeRolesAndInstanceProfiles");
    const tagPattern = ephemeral.find((s) => s.Sid === "ActOnPrStackResourcesOnly")!.Condition!.StringLike["ec2:ResourceTag/pgha:stack"] as string;
    const names = (type: string) => ephemeralGraph.resources.filter((r) => r.type === type).map((r) => r.inputs.name as string);
    assert.ok(names("aws:ssm/parameter:Parameter").length >= 20 && names("aws:iam/role:Role").length === 6);
    for (const name of names("aws:ssm/parameter:Parameter"))
      assert.ok(
        list(parameterStatement.Resource).some((p) => iamGlob(p, `arn:aws:ssm:ap-northeast-2:${ACCOUNT}:parameter${name}`)),
        name,
      );
    for (const name of names("aws:iam/role:Role")) assert.ok(iamGlob(list(roleStatement.Resource)[0], `arn:aws:iam::${ACCOUNT}:role/${name}`), name);
    for (const name of names("aws:iam/instanceProfile:InstanceProfile"))
      assert.ok(iamGlob(list(roleStatement.Resource)[1], `arn:aws:iam::${ACCOUNT}:instance-profile/${name}`), name);
    for (const r of ephemeralGraph.resources.filter((x) => /^aws:(ec2|ebs|vpc)\//.test(x.type))) {
      if (EC2_UNTAGGED[r.type]) continue;
      assert.ok(EC2_ARN_TYPE[r.type], `${r.type}: unknown to this test; add its ARN type and the actions it needs`);
      assert.ok(iamGlob(tagPattern, r.inputs.tags?.["pgha:stack"] ?? ""), `${r.type} ${r.name}: pgha:stack ${r.inputs.tags?.["pgha:stack"]}`);
    }
  });

  it("the node roles' backup policies reach only the stack's own pgha-pr-* buckets and pr-* prefix", () => {
    const policies = ephemeralGraph.resources.filter((r) => r.type === "aws:iam/rolePolicy:RolePolicy" && r.inputs.name === "backup-repositories");
    assert.equal(policies.length, 3, "one per database node");
    for (const policy of policies) {
      const doc = JSON.parse(policy.inputs.policy as string) as { Statement: Statement[] };
      for (const st of doc.Statement.filter((x) => list(x.Action).some((a) => a.startsWith("s3:"))))
        for (const resource of list(st.Resource)) assert.ok(iamGlob(`arn:aws:s3:::pgha-${EPHEMERAL_STACK}-ap-*`, resource), `${policy.name}: ${resource}`);
      for (const st of doc.Statement.filter((x) => x.Condition?.StringLike?.["s3:prefix"]))
        assert.deepEqual(list(st.Condition!.StringLike["s3:prefix"]), [EPHEMERAL_STACK, `${EPHEMERAL_STACK}/*`]);
    }
  });

  it("the node roles' own inline policies read only their pr-* parameters", () => {
    for (const policy of ephemeralGraph.resources.filter((r) => r.type === "aws:iam/rolePolicy:RolePolicy")) {
      const doc = JSON.parse(policy.inputs.policy as string) as { Statement: Statement[] };
      for (const s of doc.Statement.filter((x) => list(x.Action).some((a) => a.startsWith("ssm:")))) {
        for (const resource of list(s.Resource)) assert.ok(iamGlob("arn:aws:ssm:*:*:parameter/pgha/pr-*", resource), `${policy.name}: ${resource}`);
      }
    }
  });

  it("the ephemeral role allows every action deploying the ephemeral stack needs", () => {
    const all = probes(ephemeralGraph);
    assert.ok(all.length > 500);
    for (const action of ["s3:CreateBucket", "s3:PutBucketPolicy", "s3:DeleteObjectVersion", "kms:CreateKey", "kms:ScheduleKeyDeletion"])
      assert.ok(
        all.some((p) => p.action === action),
        action,
      );
    const denied = all.filter((p) => allowedBy(ephemeral, p.action, p.resource, requestFor(p, EPHEMERAL_STACK)).length === 0);
    assert.deepEqual(
      denied.map((p) => `${p.action} ${p.what}`),
      [],
    );
  });

  /**
   * CreateRole, PutRolePolicy and AttachRolePolicy of every node role of a
   * graph, judged with the boundary and policy ARNs the program sends; first
   * checks that all six node roles carry `boundary` (undefined: none).
   */
  const roleCreation = (graph: ProgramGraph, boundary: string | undefined) => {
    const roles = graph.resources.filter((r) => r.type === "aws:iam/role:Role");
    assert.equal(roles.length, 6);
    for (const role of roles) assert.equal(role.inputs.permissionsBoundary, boundary, role.inputs.name);
    const checks = roles.flatMap((role) => {
      const arn = `arn:aws:iam::${ACCOUNT}:role/${role.inputs.name}`;
      const request = { ...REQUEST, "aws:RequestTag/pgha:stack": EPHEMERAL_STACK, "iam:PermissionsBoundary": role.inputs.permissionsBoundary as string | undefined };
      const attached = graph.resources.filter((a) => a.type === "aws:iam/rolePolicyAttachment:RolePolicyAttachment" && a.inputs.role === role.inputs.name);
      assert.equal(attached.length, 1, `${role.inputs.name}: attachments`);
      return [
        { what: `iam:CreateRole ${role.inputs.name}`, by: allowedBy(ephemeral, "iam:CreateRole", arn, request) },
        { what: `iam:PutRolePolicy ${role.inputs.name}`, by: allowedBy(ephemeral, "iam:PutRolePolicy", arn, request) },
        ...attached.map((a) => ({
          what: `iam:AttachRolePolicy ${role.inputs.name} ${a.inputs.policyArn}`,
          by: allowedBy(ephemeral, "iam:AttachRolePolicy", arn, { ...request, "iam:PolicyARN": a.inputs.policyArn as string }),
        })),
      ];
    });
    assert.equal(checks.length, 18);
    return checks;
  };

  it("the stack file the script writes makes the program create every node role with the boundary, so CreateRole, PutRolePolicy and AttachRolePolicy are allowed", () => {
    const checks = roleCreation(ephemeralGraph, BOUNDARY);
    assert.deepEqual(
      checks.filter((c) => c.by.length === 0).map((c) => c.what),
      [],
    );
    for (const c of checks.filter((x) => !x.what.startsWith("iam:AttachRolePolicy"))) assert.deepEqual(c.by, ["CreatePrNodeRolesOnlyWithTheBoundary"], c.what);
  });

  it("without pgha:iam.nodePermissionsBoundaryArn (the bare template) the program sets no boundary and the same requests are refused", () => {
    const checks = roleCreation(templateGraph, undefined);
    assert.deepEqual(
      checks.filter((c) => c.by.length > 0).map((c) => `${c.what} (by ${c.by.join(", ")})`),
      [],
    );
  });

  it("a boundary other than pgha-ephemeral-node-boundary of the role's own account is refused too", () => {
    const role = `arn:aws:iam::${ACCOUNT}:role/pgha-${EPHEMERAL_STACK}-pg-seoul-1`;
    for (const boundary of [`${BOUNDARY}-wide`, "arn:aws:iam::aws:policy/AdministratorAccess", "arn:aws:iam::210987654321:policy/pgha-ephemeral-node-boundary"]) {
      for (const action of ["iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy"]) {
        assert.deepEqual(allowedBy(ephemeral, action, role, { ...REQUEST, "iam:PermissionsBoundary": boundary }), [], `${action} with ${boundary}`);
      }
    }
  });
});

describe("production is out of the ephemeral role's reach", () => {
  it("production stack names do not match the ephemeral patterns", () => {
    for (const stack of ["dev", "prod", "production", "main", "prx", "pr"]) {
      assert.ok(!iamGlob("pr-*", stack), stack);
      assert.ok(!iamGlob(`arn:aws:iam::${ACCOUNT}:role/pgha-pr-*`, `arn:aws:iam::${ACCOUNT}:role/pgha-${stack}-pg-seoul-1`) || stack === "pr", stack);
      assert.ok(!iamGlob(`arn:aws:ssm:*:${ACCOUNT}:parameter/pgha/pr-*`, `arn:aws:ssm:ap-northeast-2:${ACCOUNT}:parameter/pgha/${stack}/pg-seoul-1/tls/ca.crt`), stack);
    }
  });

  it("nothing of the dev stack's graph is allowed, even with every request key chosen by the branch (pgha:stack request tag pr-…)", () => {
    // Creating a new key (tagged pr-*) touches nothing of production; tagging or deleting dev's keys is probed.
    const all = probes(productionGraph).filter((p) => !p.creation);
    assert.ok(all.length > 500);
    for (const service of ["s3:", "kms:"])
      assert.ok(
        all.some((p) => p.action.startsWith(service)),
        service,
      );
    // The branch also picks the node boundary for roles it would create (or claims an existing role has it).
    const hostile = (p: Probe) => ({ ...requestFor(p, "pr-hostile-000000"), "iam:PermissionsBoundary": BOUNDARY });
    const allowed = all.map((p) => ({ p, by: allowedBy(ephemeral, p.action, p.resource, hostile(p)) })).filter((x) => x.by.length > 0);
    assert.deepEqual(
      allowed.map(({ p, by }) => `${p.action} ${p.what} (by ${by.join(", ")})`),
      [],
    );
  });

  it("control: the production deploy role allows those very actions (the probes reach real grants)", () => {
    const all = probes(productionGraph).filter((p) => !p.action.startsWith("iam:") || p.action === "iam:PassRole");
    const denied = all.filter((p) => allowedBy(deploy, p.action, p.resource, requestFor(p, "dev")).length === 0);
    assert.deepEqual(
      denied.map((p) => `${p.action} ${p.what}`),
      [],
    );
  });

  it("every Allow on ec2/iam/ssm is confined to pr-* by resource or pgha:stack tag, except AWS's unscoped actions, named here", () => {
    const EXCEPTIONS: Record<string, string> = {
      DescribeInTheClusterRegions: "Describe* supports no resource-level permissions; read-only",
      RunInstancesFromAnImageIntoANewInterface: "the AMI is read, the new interface lands in a subnet that must be tagged pr-*",
      AcceptPeeringIntoAPrVpc: "the accepter side of a peering is untagged until accepted; accepting also needs the accepter VPC tagged pr-*",
      ProviderStartup: "iam:GetUser has no stack",
      ParameterListing: "DescribeParameters supports no resource-level permissions; lists names, not values",
      UbuntuAmiLookup: "Canonical's public parameters, read-only",
      ReadinessGateRunCommand: "SendCommand also names the document; the instance must be tagged pr-*",
      ReadinessGateCommandResults: "GetCommandInvocation/CancelCommand support no resource-level permissions",
      SecureStringsThroughSsmOnly: "KMS for SecureStrings only through SSM, whose parameters are fenced by PrNodeParameters",
    };
    const confined = (s: Statement) => {
      // IAM and SSM names pgha-pr-* and /pgha/pr-*; buckets pgha-pr-*-<region> (and their objects).
      const byName = list(s.Resource).every((r) => /\/(pgha\/|pgha-)pr-\*$/.test(r) || /^arn:aws:s3:::pgha-pr-\*-[a-z]+-[a-z]+-\d(\/\*)?$/.test(r));
      const tagged = Object.values(s.Condition ?? {}).some((keys) =>
        Object.entries(keys).some(([key, value]) => key.endsWith("pgha:stack") && !key.includes("IfExists") && list(value).every((v) => v === "pr-*")),
      );
      return byName || tagged;
    };
    const unconfined = ephemeral.filter((s) => list(s.Action).some((a) => /^(ec2|iam|ssm|s3|kms):/.test(a)) && !confined(s)).map((s) => s.Sid);
    assert.deepEqual(
      unconfined.sort(),
      Object.keys(EXCEPTIONS)
        .filter((sid) => ephemeral.some((s) => s.Sid === sid))
        .sort(),
    );
  });

  it("only the production environment assumes the deploy role, only the ephemeral one the ephemeral role", () => {
    const subjects = (file: string) => list(statements(file)[0].Condition!.StringEquals["token.actions.githubusercontent.com:sub"]);
    assert.deepEqual(subjects("trust-deploy.json"), ["repo:OWNER/REPO:environment:production"]);
    assert.deepEqual(subjects("trust-ephemeral.json"), ["repo:OWNER/REPO:environment:ephemeral"]);
  });

  it("the node boundary lets a pr-* node read only pr-* parameters (AmazonSSMManagedInstanceCore alone would read every parameter)", () => {
    const boundary = statements("boundary-ephemeral-node.json");
    const read = (arn: string) => allowedBy(boundary, "ssm:GetParameter", arn, { "kms:ViaService": "ssm.ap-northeast-2.amazonaws.com" });
    assert.ok(read(`arn:aws:ssm:ap-northeast-2:${ACCOUNT}:parameter/pgha/${EPHEMERAL_STACK}/pg-seoul-1/tls/patroni-rest.key`).length > 0);
    for (const r of productionGraph.resources.filter((x) => x.type === "aws:ssm/parameter:Parameter")) {
      assert.deepEqual(read(`arn:aws:ssm:${regionOf(productionGraph, r)}:${ACCOUNT}:parameter${r.inputs.name}`), [], r.inputs.name);
    }
    for (const s of boundary) for (const action of list(s.Action)) assert.ok(!action.includes("*"), `${s.Sid}: ${action}`);
  });

  it("the node boundary lets a pr-* node use only pr-* backup buckets under a pr-* prefix, and pr-* keys only through S3", () => {
    const boundary = statements("boundary-ephemeral-node.json");
    const allowed = (action: string, resource: string, context: Context = {}) => allowedBy(boundary, action, resource, context).length > 0;
    // What pgBackRest on a node of the ephemeral stack does, on every repository of its graph.
    const buckets = ephemeralGraph.resources.filter((r) => r.type === "aws:s3/bucket:Bucket");
    assert.equal(buckets.length, 3);
    for (const bucket of buckets) {
      const arn = `arn:aws:s3:::${bucket.inputs.bucket}`;
      assert.ok(allowed("s3:ListBucket", arn, { "s3:prefix": `${EPHEMERAL_STACK}/archive/` }), `${arn}: list`);
      for (const prefix of [undefined, "", "dev/"]) assert.ok(!allowed("s3:ListBucket", arn, { "s3:prefix": prefix }), `${arn}: list ${String(prefix)}`);
      for (const action of ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]) assert.ok(allowed(action, `${arn}/${EPHEMERAL_STACK}/archive/x`), `${arn}: ${action}`);
    }
    for (const key of ephemeralGraph.resources.filter((r) => r.type === KMS_KEY)) {
      const via = { "kms:ViaService": `s3.${regionOf(ephemeralGraph, key)}.amazonaws.com`, "aws:ResourceTag/pgha:stack": EPHEMERAL_STACK };
      for (const action of ["kms:GenerateDataKey", "kms:Decrypt"]) assert.ok(allowed(action, key.state.arn as string, via), `${key.name}: ${action}`);
      assert.ok(!allowed("kms:Decrypt", key.state.arn as string, { "aws:ResourceTag/pgha:stack": EPHEMERAL_STACK }), "a direct Decrypt");
    }
    // Nothing of the dev stack's repositories, whatever the request says.
    for (const bucket of productionGraph.resources.filter((r) => r.type === "aws:s3/bucket:Bucket")) {
      const arn = `arn:aws:s3:::${bucket.inputs.bucket}`;
      for (const prefix of ["dev/", EPHEMERAL_STACK, "pr-x/"]) assert.ok(!allowed("s3:ListBucket", arn, { "s3:prefix": prefix }), `${arn} ${prefix}`);
      for (const action of ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]) {
        assert.ok(!allowed(action, `${arn}/dev/archive/x`), `${arn}: ${action}`);
        assert.ok(!allowed(action, `${arn}/pr-x/archive/x`), `${arn}: ${action} under a pr- prefix`);
      }
    }
    for (const key of productionGraph.resources.filter((r) => r.type === KMS_KEY)) {
      const via = { "kms:ViaService": `s3.${regionOf(productionGraph, key)}.amazonaws.com`, "aws:ResourceTag/pgha:stack": "dev" };
      assert.ok(!allowed("kms:Decrypt", key.state.arn as string, via), key.name);
    }
  });

  it("the ephemeral role empties and deletes only pr-* buckets, and touches no object of dev's", () => {
    for (const bucket of productionGraph.resources.filter((r) => r.type === "aws:s3/bucket:Bucket")) {
      const arn = `arn:aws:s3:::${bucket.inputs.bucket}`;
      for (const action of ["s3:DeleteBucket", "s3:ListBucketVersions", "s3:PutBucketPolicy", "s3:PutBucketVersioning", "s3:PutLifecycleConfiguration"])
        assert.deepEqual(allowedBy(ephemeral, action, arn, requestFor({ what: "", action, resource: arn, context: {} }, "pr-hostile-000000")), [], `${action} ${arn}`);
      for (const action of ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:GetObject", "s3:PutObject"])
        assert.deepEqual(allowedBy(ephemeral, action, `${arn}/dev/x`, {}), [], `${action} ${arn}/dev/x`);
    }
    // The state bucket of docs/delivery.md is no backup bucket either.
    assert.deepEqual(allowedBy(deploy, "s3:PutBucketPolicy", `arn:aws:s3:::pgha-pulumi-state-${ACCOUNT}`, {}), [], "the deploy role and the state bucket");
  });

  it("the quota check before a branch stack may read exactly the quotas it checks, in every region", () => {
    for (const quota of STACK_QUOTAS) {
      for (const region of ["ap-northeast-2", "ap-northeast-1", "ap-southeast-1"]) {
        const arn = `arn:aws:servicequotas:${region}:${ACCOUNT}:${quota.serviceCode}/${quota.quotaCode}`;
        assert.ok(allowedBy(ephemeral, "servicequotas:GetServiceQuota", arn, {}).length > 0, `${quota.name} in ${region}`);
      }
    }
    assert.deepEqual(allowedBy(ephemeral, "servicequotas:GetServiceQuota", `arn:aws:servicequotas:ap-northeast-2:${ACCOUNT}:ec2/L-1216C47A`, {}), [], "no other quota");
    assert.deepEqual(allowedBy(ephemeral, "servicequotas:RequestServiceQuotaIncrease", `arn:aws:servicequotas:ap-northeast-2:${ACCOUNT}:vpc/L-F678F1CE`, {}), [], "reading only");
  });

  it("the ephemeral state backend policy reaches pr-* stacks' objects only", () => {
    const s3 = statements("permissions-s3-backend-ephemeral.json");
    const object = (key: string) => `arn:aws:s3:::STATE_BUCKET/${key}`;
    assert.ok(allowedBy(s3, "s3:PutObject", object(`.pulumi/stacks/pgha-multiregion/${EPHEMERAL_STACK}.json`), {}).length > 0);
    assert.ok(allowedBy(s3, "s3:PutObject", object(`.pulumi/locks/organization/pgha-multiregion/${EPHEMERAL_STACK}/lock.json`), {}).length > 0);
    for (const key of [
      ".pulumi/stacks/pgha-multiregion/dev.json",
      ".pulumi/history/pgha-multiregion/dev/dev-1.history.json",
      ".pulumi/locks/organization/pgha-multiregion/dev/x.json",
      ".pulumi/meta.yaml",
    ]) {
      assert.deepEqual(allowedBy(s3, "s3:PutObject", object(key), {}), [], key);
      assert.deepEqual(allowedBy(s3, "s3:DeleteObject", object(key), {}), [], key);
    }
    assert.deepEqual(allowedBy(s3, "s3:GetObject", object(".pulumi/stacks/pgha-multiregion/dev.json"), {}), [], "production's state (and its encrypted secrets) is not readable");
  });
});

// ---------------------------------------------------------------------------
// The drift role: `pulumi preview --refresh --expect-no-changes` of the main stack
// ---------------------------------------------------------------------------

describe("the drift role reads the main stack and writes nothing (drift.yml, the dev stack's real graph)", () => {
  const drift = statements("permissions-drift.json");
  const driftBackend = statements("permissions-s3-backend-drift.json");
  const preview = statements("permissions-preview.json");
  /** The region of the default provider and the STS call (vars.AWS_REGION's default). */
  const DEFAULT_REGION = "ap-northeast-2";

  /** What the AWS provider's Read of each EC2 resource kind calls (Describe*: no resource-level permissions). */
  const EC2_READS: Record<string, string[]> = {
    vpc: ["DescribeVpcs", "DescribeVpcAttribute", "DescribeRouteTables", "DescribeSecurityGroups", "DescribeNetworkAcls"],
    subnet: ["DescribeSubnets"],
    "internet-gateway": ["DescribeInternetGateways"],
    "elastic-ip": ["DescribeAddresses", "DescribeAddressesAttribute"],
    natgateway: ["DescribeNatGateways"],
    "route-table": ["DescribeRouteTables"],
    "security-group": ["DescribeSecurityGroups"],
    "security-group-rule": ["DescribeSecurityGroupRules"],
    "vpc-peering-connection": ["DescribeVpcPeeringConnections"],
    instance: ["DescribeInstances", "DescribeInstanceAttribute", "DescribeInstanceCreditSpecifications", "DescribeVolumes"],
    volume: ["DescribeVolumes"],
  };
  const EC2_UNTAGGED_READS: Record<string, string[]> = {
    "aws:ec2/route:Route": ["DescribeRouteTables"],
    "aws:ec2/routeTableAssociation:RouteTableAssociation": ["DescribeRouteTables"],
    "aws:ec2/volumeAttachment:VolumeAttachment": ["DescribeVolumes", "DescribeInstances"],
    "aws:ec2/peeringConnectionOptions:PeeringConnectionOptions": ["DescribeVpcPeeringConnections"],
  };
  /** Refreshing these calls no AWS API: tls/random keep their state, a local Command runs only on create and update, components are not in AWS. */
  const NO_AWS_READ = /^(tls|random|command):|^pulumi:index:|^pgha:/;
  /** sts:GetCallerIdentity needs no permission; getPartition calls nothing. */
  const FREE_INVOKES = ["aws:index/getCallerIdentity:getCallerIdentity", "aws:index/getPartition:getPartition"];

  const providerRegion = (graph: ProgramGraph, ref: string): string => {
    if (ref === "") return DEFAULT_REGION;
    const provider = graph.resources.find((r) => r.type === "pulumi:providers:aws" && ref.startsWith(`${r.urn}::`));
    assert.ok(provider, `no provider ${ref}`);
    return provider.inputs.region as string;
  };

  /** Every call a refresh (and the preview's program run) of a graph makes to AWS, as IAM would be asked. */
  function readProbes(graph: ProgramGraph): Probe[] {
    const out: Probe[] = [];
    const push = (what: string, actions: string[], resource: string, region: string, context: Context = {}) => {
      for (const action of actions) out.push({ what, action, resource, context: { "aws:RequestedRegion": region, ...context } });
    };
    const roleArn = (name: unknown) => `arn:aws:iam::${ACCOUNT}:role/${String(name)}`;
    for (const r of graph.resources) {
      if (r.type === "pulumi:providers:aws") {
        // The provider's start-up, as the preview role already allows it.
        for (const s of preview) for (const resource of list(s.Resource)) push(`${r.name} start-up`, list(s.Action), resource, r.inputs.region as string);
      } else if (r.type === "aws:ssm/parameter:Parameter") {
        const region = regionOf(graph, r);
        push(
          r.inputs.name as string,
          ["ssm:GetParameter", "ssm:DescribeParameters", "ssm:ListTagsForResource"],
          `arn:aws:ssm:${region}:${ACCOUNT}:parameter${r.inputs.name}`,
          region,
        );
        // Read with decryption: SSM asks KMS for the key (aws/ssm unless keyId is set).
        if (r.inputs.type === "SecureString")
          push(`${r.inputs.name} (SecureString)`, ["kms:Decrypt"], `arn:aws:kms:${region}:${ACCOUNT}:key/${String(r.inputs.keyId ?? "aws-ssm-default")}`, region, {
            "kms:ViaService": `ssm.${region}.amazonaws.com`,
          });
      } else if (r.type === "aws:iam/role:Role") {
        push(r.inputs.name as string, ["iam:GetRole", "iam:ListRolePolicies", "iam:GetRolePolicy", "iam:ListAttachedRolePolicies"], roleArn(r.inputs.name), "us-east-1");
      } else if (r.type === "aws:iam/instanceProfile:InstanceProfile") {
        push(r.inputs.name as string, ["iam:GetInstanceProfile"], `arn:aws:iam::${ACCOUNT}:instance-profile/${r.inputs.name}`, "us-east-1");
      } else if (r.type === "aws:iam/rolePolicy:RolePolicy") {
        push(r.name, ["iam:GetRolePolicy"], roleArn(r.inputs.role), "us-east-1");
      } else if (r.type === "aws:iam/rolePolicyAttachment:RolePolicyAttachment") {
        push(r.name, ["iam:ListAttachedRolePolicies"], roleArn(r.inputs.role), "us-east-1");
      } else if (S3_ACTIONS[r.type]) {
        // S3 answers in the bucket's region; its ARN names none.
        push(`${r.type} ${r.name}`, S3_ACTIONS[r.type].reads, `arn:aws:s3:::${String(r.inputs.bucket)}`, regionOf(graph, r));
      } else if (r.type === KMS_KEY) {
        push(`${r.type} ${r.name}`, KMS_KEY_READS, r.state.arn as string, regionOf(graph, r), {
          "aws:ResourceTag/pgha:stack": r.inputs.tags?.["pgha:stack"] as string | undefined,
        });
      } else if (EC2_ARN_TYPE[r.type] || EC2_UNTAGGED_READS[r.type]) {
        const kind = EC2_ARN_TYPE[r.type] ?? "untagged";
        const region = regionOf(graph, r);
        push(
          `${r.type} ${r.name}`,
          (EC2_READS[kind] ?? EC2_UNTAGGED_READS[r.type]).map((a) => `ec2:${a}`),
          `arn:aws:ec2:${region}:${ACCOUNT}:${kind}/${r.name}-id`,
          region,
        );
      } else {
        assert.match(r.type, NO_AWS_READ, `${r.type} ${r.name}: unknown to this test; add the calls its refresh makes`);
      }
    }
    for (const invoke of graph.invocations) {
      const region = providerRegion(graph, invoke.provider);
      if (invoke.token === "aws:ssm/getParameter:getParameter") {
        const name = String(invoke.inputs.name);
        const arn = name.startsWith("/aws/service/") ? `arn:aws:ssm:${region}::parameter${name}` : `arn:aws:ssm:${region}:${ACCOUNT}:parameter${name}`;
        push(`${invoke.token} ${name}`, ["ssm:GetParameter"], arn, region);
      } else {
        assert.ok(FREE_INVOKES.includes(invoke.token), `${invoke.token}: unknown to this test; add the calls it makes`);
      }
    }
    return out;
  }

  /** IAM's read verbs; kms:Decrypt reads a SecureString (only through SSM here). */
  const isRead = (action: string) => /^[a-z0-9]+:(Describe|Get|List)/i.test(action) || action.toLowerCase() === "kms:decrypt";
  /** Every request key chosen to pass: the cluster region, the node role's boundary and policy, the stack's own tags. */
  const FAVOURABLE: Context = {
    ...REQUEST,
    "aws:RequestTag/pgha:stack": "dev",
    "ec2:ResourceTag/pgha:stack": "dev",
    "ssm:resourceTag/pgha:stack": "dev",
    "aws:ResourceTag/pgha:stack": "dev",
    "iam:PermissionsBoundary": BOUNDARY,
  };
  /** Every write the deploy role's document grants, on each resource it names, and every write deploying the dev stack needs. */
  const writes = (): Probe[] => [
    ...deploy.flatMap((s) =>
      list(s.Action)
        .filter((a) => !a.includes("*") && !isRead(a))
        .flatMap((action) => list(s.Resource).map((resource) => ({ what: s.Sid, action, resource, context: FAVOURABLE }))),
    ),
    ...probes(productionGraph)
      .filter((p) => !isRead(p.action))
      .map((p) => ({ ...p, context: { ...FAVOURABLE, ...requestFor(p, "dev") } })),
  ];
  const STATE_OBJECT = (key: string) => `arn:aws:s3:::STATE_BUCKET/${key}`;
  const STATE_KEY = `arn:aws:kms:STATE_REGION:${ACCOUNT}:key/STATE_KEY_ID`;

  it("allows every read a refresh of the dev stack's graph makes, and the program's own invokes (AMI lookup, provider start-up)", () => {
    const reads = readProbes(productionGraph);
    assert.ok(reads.length > 400, String(reads.length));
    for (const service of ["ec2:", "iam:", "ssm:", "kms:", "s3:"])
      assert.ok(
        reads.some((p) => p.action.startsWith(service)),
        service,
      );
    assert.ok(
      reads.some((p) => p.action === "kms:GetKeyPolicy"),
      "the backup keys",
    );
    assert.ok(
      reads.some((p) => p.action === "ssm:GetParameter" && p.resource.includes("/aws/service/canonical/")),
      "the AMI lookup",
    );
    assert.deepEqual(
      reads.filter((p) => allowedBy(drift, p.action, p.resource, p.context).length === 0).map((p) => `${p.action} ${p.what}`),
      [],
    );
  });

  it("control: the deploy role allows the same reads (it refreshes on every up); the preview role does not", () => {
    const reads = readProbes(productionGraph);
    assert.deepEqual(
      reads.filter((p) => allowedBy(deploy, p.action, p.resource, p.context).length === 0).map((p) => `${p.action} ${p.what}`),
      [],
    );
    assert.ok(reads.filter((p) => allowedBy(preview, p.action, p.resource, p.context).length === 0).length > 300);
  });

  it("reads only the stack's own names: no other parameter, role or region; KMS only through SSM", () => {
    const ssmContext = { "aws:RequestedRegion": "ap-northeast-2" };
    assert.deepEqual(allowedBy(drift, "ssm:GetParameter", `arn:aws:ssm:ap-northeast-2:${ACCOUNT}:parameter/other/db/password`, ssmContext), []);
    assert.deepEqual(allowedBy(drift, "iam:GetRolePolicy", `arn:aws:iam::${ACCOUNT}:role/github-pgha-deploy`, {}), [], "not the GitHub roles' own policies");
    assert.deepEqual(allowedBy(drift, "ec2:DescribeInstances", "*", { "aws:RequestedRegion": "us-east-1" }), [], "no region outside the cluster");
    assert.deepEqual(allowedBy(drift, "kms:Decrypt", `arn:aws:kms:ap-northeast-2:${ACCOUNT}:key/k`, ssmContext), [], "no direct Decrypt");
    assert.deepEqual(allowedBy(drift, "kms:Decrypt", `arn:aws:kms:ap-northeast-2:${ACCOUNT}:key/k`, { "kms:ViaService": "secretsmanager.ap-northeast-2.amazonaws.com" }), []);
  });

  it("allows no write: every write of the deploy document and of deploying the dev stack is refused", () => {
    const all = writes();
    assert.ok(all.length > 500, String(all.length));
    for (const verb of ["Create", "Delete", "Put", "Modify", "Attach", "Run", "Terminate", "Update", "Authorize", "Revoke", "Tag", "SendCommand", "PassRole"])
      assert.ok(
        all.some((p) => p.action.split(":")[1].startsWith(verb)),
        verb,
      );
    assert.deepEqual(
      all
        .map((p) => ({ p, by: allowedBy(drift, p.action, p.resource, p.context) }))
        .filter((x) => x.by.length > 0)
        .map(({ p, by }) => `${p.action} ${p.what} (by ${by.join(", ")})`),
      [],
    );
  });

  it("control: the deploy document passes the reads and allows every one of those writes (the check can fail)", () => {
    assert.deepEqual(
      writes()
        .filter((p) => allowedBy(deploy, p.action, p.resource, p.context).length === 0)
        .map((p) => `${p.action} ${p.what}`),
      [],
    );
  });

  it("every action the drift documents name is a read verb, so no wildcard can reach a write (control: the deploy document's are not)", () => {
    const notReads = (policy: Statement[]) => policy.flatMap((s) => list(s.Action).filter((a) => !/^[a-z0-9]+:(Describe|Get|List)[A-Za-z]*\*?$/.test(a) && a !== "kms:Decrypt"));
    assert.deepEqual(notReads(drift), []);
    assert.deepEqual(notReads(driftBackend), []);
    assert.ok(notReads(deploy).length > 50);
  });

  it("the drift state backend policy reads the stack's state and its key, and writes no object, not even a lock (a preview takes none)", () => {
    for (const key of [".pulumi/meta.yaml", ".pulumi/stacks/pgha-multiregion/dev.json", ".pulumi/stacks/pgha-multiregion/dev.json.gz"])
      assert.ok(allowedBy(driftBackend, "s3:GetObject", STATE_OBJECT(key), {}).length > 0, key);
    assert.ok(allowedBy(driftBackend, "s3:ListBucket", "arn:aws:s3:::STATE_BUCKET", {}).length > 0);
    assert.ok(allowedBy(driftBackend, "kms:Decrypt", STATE_KEY, {}).length > 0);
    const rw = statements("permissions-s3-backend.json");
    const objects = [
      ".pulumi/meta.yaml",
      ".pulumi/stacks/pgha-multiregion/dev.json",
      ".pulumi/history/pgha-multiregion/dev/dev-1.history.json",
      ".pulumi/backups/pgha-multiregion/dev/dev.1.json",
      ".pulumi/locks/organization/pgha-multiregion/dev/0c1f.json",
    ];
    const backendWrites = [
      ...objects.flatMap((key) => ["s3:PutObject", "s3:DeleteObject"].map((action) => ({ action, resource: STATE_OBJECT(key) }))),
      ...["kms:Encrypt", "kms:GenerateDataKey"].map((action) => ({ action, resource: STATE_KEY })),
    ];
    for (const { action, resource } of backendWrites) {
      assert.deepEqual(allowedBy(driftBackend, action, resource, {}), [], `${action} ${resource}`);
      assert.ok(allowedBy(rw, action, resource, {}).length > 0, `control: the deploy role's backend policy allows ${action} ${resource}`);
    }
    assert.deepEqual(allowedBy(driftBackend, "s3:GetObject", STATE_OBJECT(".pulumi/stacks/other-project/prod.json"), {}), [], "only this project's stacks");
  });

  it("only the drift environment of this repository assumes the drift role: not pull requests, not production", () => {
    interface TrustStatement {
      Effect: string;
      Principal: { Federated: string };
      Action: string;
      Condition: Record<string, Record<string, string | string[]>>;
    }
    const trust = (file: string) => statements(file) as unknown as TrustStatement[];
    const admits = (file: string, sub: string, aud = "sts.amazonaws.com") =>
      trust(file).some(
        (s) =>
          s.Effect === "Allow" &&
          s.Action === "sts:AssumeRoleWithWebIdentity" &&
          s.Principal.Federated === `arn:aws:iam::${ACCOUNT}:oidc-provider/token.actions.githubusercontent.com` &&
          Object.entries(s.Condition).every(([operator, keys]) =>
            Object.entries(keys).every(([key, expected]) =>
              conditionHolds(operator, key, expected, { "token.actions.githubusercontent.com:sub": sub, "token.actions.githubusercontent.com:aud": aud }),
            ),
          ),
      );
    const [statement] = trust("trust-drift.json");
    assert.equal(trust("trust-drift.json").length, 1);
    assert.deepEqual(Object.keys(statement.Condition), ["StringEquals"], "exact subject, no StringLike");
    assert.deepEqual(list(statement.Condition.StringEquals["token.actions.githubusercontent.com:sub"]), ["repo:OWNER/REPO:environment:drift"]);
    assert.ok(admits("trust-drift.json", "repo:OWNER/REPO:environment:drift"));
    for (const sub of [
      "repo:OWNER/REPO:pull_request",
      "repo:OWNER/REPO:environment:production",
      "repo:OWNER/REPO:environment:ephemeral",
      "repo:OWNER/REPO:ref:refs/heads/main",
      "repo:OWNER/REPO:environment:drift-preview",
      "repo:OTHER/REPO:environment:drift",
    ])
      assert.ok(!admits("trust-drift.json", sub), sub);
    assert.ok(!admits("trust-drift.json", "repo:OWNER/REPO:environment:drift", "https://github.com/OWNER"), "another audience");
    for (const file of ["trust-preview.json", "trust-deploy.json", "trust-ephemeral.json"]) assert.ok(!admits(file, "repo:OWNER/REPO:environment:drift"), `${file} admits drift`);
    // Control: the evaluator does admit the other roles' own subjects.
    assert.ok(admits("trust-preview.json", "repo:OWNER/REPO:pull_request"));
    assert.ok(admits("trust-deploy.json", "repo:OWNER/REPO:environment:production"));
  });
});
