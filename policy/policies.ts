/**
 * The rules the project promises (README "What it builds on AWS"), as Pulumi
 * policies. This module only defines them: `index.ts` hands them to
 * `new PolicyPack(...)`, whose constructor starts the analyzer's gRPC server,
 * so tests import this file and never `index.ts`.
 *
 * Resource types are matched by their type token (no `@pulumi/aws` import):
 * the pack stays light, loads in well under a second, and does not pin a
 * second copy of the provider SDK.
 *
 * | policy                              | kind     | checks |
 * |-------------------------------------|----------|--------|
 * | no-public-database-ingress          | resource | no 0.0.0.0/0 or ::/0 ingress that reaches a database port |
 * | imdsv2-required                     | resource | instances and launch templates: httpTokens required, hop limit 1 |
 * | ebs-encrypted                       | resource | volumes, root and extra block devices encrypted |
 * | no-public-ip-on-database-nodes      | resource | database instances set associatePublicIpAddress: false |
 * | no-elastic-ip-on-database-nodes     | stack    | no Elastic IP attached to a database instance |
 * | no-secrets-in-user-data             | resource | no private key, password assignment, credential URL or AWS key in user-data |
 * | no-generated-secrets-in-user-data   | stack    | no generated password, private key or SecureString value of the stack in user-data |
 * | peering-within-stack                | stack    | peering, accepters, peering options and peering routes only between the stack's own VPCs |
 * | stack-scoped-names                  | resource | account-wide names (IAM, SSM paths) carry the stack name |
 * | s3-buckets-versioned                | stack    | every S3 bucket has versioning Enabled |
 * | s3-buckets-kms-encrypted            | stack    | every S3 bucket's default encryption is SSE-KMS |
 * | s3-buckets-block-public-access      | stack    | every S3 bucket has a public access block with all four switches on |
 * | s3-buckets-tls-only                 | stack    | every S3 bucket's policy denies any request without TLS |
 * | no-force-destroy-buckets            | resource | (the ephemeral profile disables it) no S3 bucket sets forceDestroy |
 * | ephemeral-stack-destroyable         | resource | (disabled; the ephemeral workflow enables it) nothing protected, small instances and volumes, buckets forceDestroy |
 */
import { gunzipSync } from "node:zlib";
import type {
  EnforcementLevel,
  PolicyPackArgs,
  PolicyResource,
  ReportViolation,
  ResourceValidationArgs,
  ResourceValidationPolicy,
  StackValidationArgs,
  StackValidationPolicy,
} from "@pulumi/policy";

export const POLICY_PACK_NAME = "pgha-policy";

/** Type tokens the policies look at. */
export const TYPES = {
  instance: "aws:ec2/instance:Instance",
  launchTemplate: "aws:ec2/launchTemplate:LaunchTemplate",
  volume: "aws:ebs/volume:Volume",
  securityGroup: "aws:ec2/securityGroup:SecurityGroup",
  defaultSecurityGroup: "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
  securityGroupRule: "aws:ec2/securityGroupRule:SecurityGroupRule",
  securityGroupIngressRule: "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
  vpc: "aws:ec2/vpc:Vpc",
  peering: "aws:ec2/vpcPeeringConnection:VpcPeeringConnection",
  peeringAccepter: "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter",
  peeringOptions: "aws:ec2/peeringConnectionOptions:PeeringConnectionOptions",
  route: "aws:ec2/route:Route",
  routeTable: "aws:ec2/routeTable:RouteTable",
  eip: "aws:ec2/eip:Eip",
  eipAssociation: "aws:ec2/eipAssociation:EipAssociation",
  iamRole: "aws:iam/role:Role",
  iamInstanceProfile: "aws:iam/instanceProfile:InstanceProfile",
  iamPolicy: "aws:iam/policy:Policy",
  iamUser: "aws:iam/user:User",
  ssmParameter: "aws:ssm/parameter:Parameter",
  bucket: "aws:s3/bucket:Bucket",
  bucketV2: "aws:s3/bucketV2:BucketV2",
  bucketVersioning: "aws:s3/bucketVersioning:BucketVersioning",
  bucketVersioningV2: "aws:s3/bucketVersioningV2:BucketVersioningV2",
  bucketEncryption: "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
  bucketEncryptionV2: "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
  bucketPublicAccessBlock: "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
  bucketPolicy: "aws:s3/bucketPolicy:BucketPolicy",
  randomPassword: "random:index/randomPassword:RandomPassword",
  tlsPrivateKey: "tls:index/privateKey:PrivateKey",
} as const;

/**
 * PostgreSQL, Patroni REST, etcd client and peer, and HAProxy's default
 * listeners (writer, readers, sync standby, stats). A stack that moves
 * HAProxy's ports lists them in the policy config (`ports`).
 */
export const DATABASE_PORTS: readonly number[] = [5432, 8008, 2379, 2380, 5000, 5001, 5002, 7000];

/** Instance types the ephemeral profile may use (policy `ephemeral-stack-destroyable`). */
export const EPHEMERAL_INSTANCE_TYPES: readonly string[] = ["t3.micro", "t3.small", "t3.medium", "t3a.micro", "t3a.small", "t3a.medium", "t4g.micro", "t4g.small", "t4g.medium"];
export const EPHEMERAL_MAX_VOLUME_GIB = 20;

type Props = Record<string, unknown>;

/** A scalar property as text, as String() spells it (props are JSON, never a symbol). */
const scalarText = (value: unknown): string => `${value as string | number}`;

/** A protocol as the resource spells it: a string, or a number such as 6; "" when unset. */
const protocolOf = (value: unknown): string => scalarText(value ?? "");

// ---------------------------------------------------------------------------
// Helpers (exported for the tests)
// ---------------------------------------------------------------------------

/** A CIDR that admits every address: any prefix length of 0 (0.0.0.0/0, ::/0). */
export function isWorldCidr(cidr: unknown): boolean {
  return typeof cidr === "string" && cidr.trim().endsWith("/0");
}

/** One ingress permission, whatever resource type it came from. */
export interface IngressPermission {
  protocol: string;
  fromPort?: number;
  toPort?: number;
  cidrs: string[];
}

/** Does a permission admit TCP traffic to `port`? Protocol -1/all covers every port. */
export function permissionCoversPort(permission: IngressPermission, port: number): boolean {
  const protocol = protocolOf(permission.protocol).toLowerCase();
  if (protocol === "-1" || protocol === "all") return true;
  if (protocol !== "tcp" && protocol !== "6") return false;
  const from = permission.fromPort ?? 0;
  const to = permission.toPort ?? 65535;
  // AWS writes "all ports" as 0-0 or -1 on some rule shapes.
  if ((from === 0 && to === 0) || (from === -1 && to === -1)) return true;
  return from <= port && port <= to;
}

/** The ingress permissions a resource grants; empty for types that grant none. */
export function ingressPermissions(type: string, props: Props): IngressPermission[] {
  const cidrsOf = (v4: unknown, v6: unknown) =>
    [...(Array.isArray(v4) ? (v4 as unknown[]) : []), ...(Array.isArray(v6) ? (v6 as unknown[]) : [])].filter((c): c is string => typeof c === "string");
  switch (type) {
    case TYPES.securityGroupIngressRule:
      return [
        {
          protocol: protocolOf(props.ipProtocol),
          fromPort: props.fromPort as number | undefined,
          toPort: props.toPort as number | undefined,
          cidrs: [props.cidrIpv4, props.cidrIpv6].filter((c): c is string => typeof c === "string"),
        },
      ];
    case TYPES.securityGroupRule:
      if (props.type !== "ingress") return [];
      return [
        {
          protocol: protocolOf(props.protocol),
          fromPort: props.fromPort as number | undefined,
          toPort: props.toPort as number | undefined,
          cidrs: cidrsOf(props.cidrBlocks, props.ipv6CidrBlocks),
        },
      ];
    case TYPES.securityGroup:
    case TYPES.defaultSecurityGroup:
      return (Array.isArray(props.ingress) ? (props.ingress as Props[]) : []).map((rule) => ({
        protocol: protocolOf(rule.protocol),
        fromPort: rule.fromPort as number | undefined,
        toPort: rule.toPort as number | undefined,
        cidrs: cidrsOf(rule.cidrBlocks, rule.ipv6CidrBlocks),
      }));
    default:
      return [];
  }
}

/** Roles a node carries according to its `pgha:role` tag (`postgres+etcd`); undefined when untagged. */
function taggedRoles(props: Props): string[] | undefined {
  const tag = (props.tags as Props | undefined)?.["pgha:role"];
  return typeof tag === "string" ? tag.split("+") : undefined;
}

/**
 * A database node: tagged with the postgres or etcd role. An instance without
 * a `pgha:role` tag counts as one too — the rule must not be dodged by
 * leaving the tag off.
 */
export function isDatabaseInstance(props: Props): boolean {
  const roles = taggedRoles(props);
  return roles === undefined || roles.includes("postgres") || roles.includes("etcd");
}

/** Base64 user-data as text: gunzipped when it is gzip (as this project sends it). */
export function decodeBase64UserData(encoded: string): string {
  const bytes = Buffer.from(encoded, "base64");
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) return gunzipSync(bytes).toString("utf8");
  return bytes.toString("utf8");
}

/** Every user-data document of an instance or launch template, decoded. */
export function userDataDocuments(type: string, props: Props): { field: string; text: string }[] {
  const documents: { field: string; text: string }[] = [];
  if (type === TYPES.instance) {
    if (typeof props.userData === "string" && props.userData !== "") documents.push({ field: "userData", text: props.userData });
    if (typeof props.userDataBase64 === "string" && props.userDataBase64 !== "") {
      documents.push({ field: "userDataBase64", text: decodeBase64UserData(props.userDataBase64) });
    }
  } else if (type === TYPES.launchTemplate) {
    // A launch template's userData is base64 by API contract.
    if (typeof props.userData === "string" && props.userData !== "") documents.push({ field: "userData", text: decodeBase64UserData(props.userData) });
  }
  return documents;
}

const PRIVATE_KEY_PEM = /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----/;
const AWS_ACCESS_KEY_ID = /\b(?:AKIA|ASIA)[0-9A-Z]{16}\b/;
const CREDENTIAL_URL = /\b[a-z][a-z0-9+.-]*:\/\/[^\s/:@'"]+:[^\s/@'"]+@/i;
/** `password: x`, `PGPASSWORD=x`, `"client_secret": "x"`, `aws_secret_access_key = x` … */
const SECRET_ASSIGNMENT = /(?:^|[^A-Za-z0-9_.-])([A-Za-z0-9_.-]*(?:password|passwd|secret|secret_key|secret_access_key))["']?\s*[:=]\s*(.*)$/i;

/** Values that point at a secret instead of holding one. */
function isReference(value: string): boolean {
  const v = value.replace(/^["']|["',;}\]]+$/g, "").trim();
  return (
    v === "" ||
    v === "null" ||
    v === "~" ||
    /^(?:true|false|yes|no|on|off)$/i.test(v) || // a switch such as cloud-init's lock_passwd: true
    v.startsWith("$") || // shell or systemd variable
    v.startsWith("{{") || // template
    v.startsWith("%(") ||
    v.startsWith("/") || // an SSM parameter name or a file path
    v.startsWith("!") || // a YAML tag such as !env_var
    v.startsWith("<") || // placeholder: <from SSM>
    /^[{[]/.test(v) // a nested structure: its own lines are checked
  );
}

/** Why a user-data document holds a secret, one line per finding (never the secret itself). */
export function secretFindings(text: string): string[] {
  const findings: string[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((line, index) => {
    const where = `line ${index + 1}`;
    if (PRIVATE_KEY_PEM.test(line)) findings.push(`${where}: a PEM private key`);
    if (AWS_ACCESS_KEY_ID.test(line)) findings.push(`${where}: an AWS access key id`);
    if (CREDENTIAL_URL.test(line)) findings.push(`${where}: a URL with a password`);
    const assignment = SECRET_ASSIGNMENT.exec(line);
    if (assignment && !isReference(assignment[2])) findings.push(`${where}: a literal value for ${assignment[1]}`);
  });
  return findings;
}

/** Distinctive fragments of a secret value to look for in user-data (PEM bodies are matched line by line). */
export function secretFragments(value: string): string[] {
  if (PRIVATE_KEY_PEM.test(value)) {
    return value
      .split(/\r?\n/)
      .map((line) => line.trim())
      .filter((line) => line.length >= 16 && !line.startsWith("-----"));
  }
  if (value.length < 8) return [];
  return [value, Buffer.from(value, "utf8").toString("base64")];
}

/** The stack name inside a URN: `urn:pulumi:<stack>::<project>::<type>::<name>`. */
export function stackOfUrn(urn: string): string {
  const head = urn.split("::")[0] ?? "";
  return head.split(":")[2] ?? "";
}

/** Does `name` contain `stack` as a whole token (between /, -, _, . or the ends)? */
export function nameCarriesStack(name: string, stack: string): boolean {
  if (!stack) return false;
  const escaped = stack.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(?:^|[/._-])${escaped}(?:$|[/._-])`).test(name);
}

// ---------------------------------------------------------------------------
// Stack helpers: where a property's value comes from
// ---------------------------------------------------------------------------

/**
 * Whether `resource.props[property]` is produced by a resource of `type` in
 * this stack. Property dependencies answer first, so a value still unknown
 * during preview is never read (reading it would make the policy advisory).
 * A literal value counts only if it equals the `id` of such a resource.
 */
function comesFromStack(resource: PolicyResource, property: string, type: string, stackResources: PolicyResource[]): boolean {
  const dependencies = resource.propertyDependencies?.[property] ?? [];
  if (dependencies.some((dependency) => dependency.type === type)) return true;
  const value: unknown = resource.props[property];
  if (typeof value !== "string") return false;
  return stackResources.some((candidate) => candidate.type === type && candidate.props.id === value);
}

// ---------------------------------------------------------------------------
// S3 buckets: which configuration resources belong to which bucket
// ---------------------------------------------------------------------------

/** S3 bucket types (the current one and the deprecated BucketV2). */
export const BUCKET_TYPES: readonly string[] = [TYPES.bucket, TYPES.bucketV2];

const isBucket = (resource: { type: string }) => BUCKET_TYPES.includes(resource.type);

/**
 * The resources of `types` whose `bucket` property is `bucket`. A value that
 * comes from resources of the stack (its property dependencies) is judged by
 * them alone, so a bucket id still unknown during preview is never read; only
 * a literal is compared with the bucket's name.
 */
export function configurationsOf(bucket: PolicyResource, types: readonly string[], resources: PolicyResource[]): PolicyResource[] {
  return resources.filter((candidate) => {
    if (!types.includes(candidate.type)) return false;
    const dependencies = candidate.propertyDependencies?.bucket ?? [];
    if (dependencies.length > 0) return dependencies.some((dependency) => dependency.urn === bucket.urn);
    const value: unknown = candidate.props.bucket;
    return typeof value === "string" && value !== "" && value === bucket.props.bucket;
  });
}

/** A bucket policy document as an object: the property is JSON text, or an object in some programs. */
export function policyDocument(value: unknown): { Statement?: unknown } | undefined {
  if (typeof value === "string") {
    try {
      return JSON.parse(value) as { Statement?: unknown };
    } catch {
      return undefined;
    }
  }
  return typeof value === "object" && value !== null ? value : undefined;
}

const asList = (value: unknown): unknown[] => (Array.isArray(value) ? (value as unknown[]) : value === undefined ? [] : [value]);

/** Every principal: `"*"`, or `{AWS: "*"}`. */
function isEveryone(principal: unknown): boolean {
  if (principal === "*") return true;
  if (typeof principal === "object" && principal !== null) return asList((principal as Props).AWS).includes("*");
  return false;
}

/**
 * Whether a statement denies every request without TLS to the bucket named
 * `name` and to all its objects: Effect Deny, every principal, every S3
 * action (`s3:*` or `*`), resources covering `arn:<partition>:s3:::<name>` and
 * `…/*` (or `*`), and the condition `Bool aws:SecureTransport false` alone.
 */
export function deniesInsecureTransport(statement: unknown, name: string): boolean {
  if (typeof statement !== "object" || statement === null) return false;
  const s = statement as Props;
  if (s.Effect !== "Deny" || !isEveryone(s.Principal) || s.NotAction !== undefined || s.NotResource !== undefined || s.NotPrincipal !== undefined) return false;
  if (!asList(s.Action).some((action) => action === "*" || action === "s3:*")) return false;
  // What each resource names after `arn:<partition>:s3:::` ("*" for every resource).
  const named = asList(s.Resource).map((r) => (r === "*" ? "*" : typeof r === "string" ? /^arn:[a-z-]+:s3:::(.+)$/.exec(r)?.[1] : undefined));
  if (!named.some((n) => n === "*" || n === name) || !named.some((n) => n === "*" || n === `${name}/*`)) return false;
  const condition = s.Condition as Record<string, Props> | undefined;
  if (!condition || Object.keys(condition).length !== 1 || !condition.Bool || Object.keys(condition.Bool).length !== 1) return false;
  const values = asList(condition.Bool["aws:SecureTransport"]);
  return values.length > 0 && values.every((v) => v === false || v === "false");
}

function describe(resource: PolicyResource): string {
  return `${resource.type.split(":").pop()} ${resource.name}`;
}

// ---------------------------------------------------------------------------
// The policies
// ---------------------------------------------------------------------------

export const noPublicDatabaseIngress: ResourceValidationPolicy = {
  name: "no-public-database-ingress",
  description: "No security group ingress from 0.0.0.0/0 or ::/0 may reach a database port (PostgreSQL, Patroni REST, etcd, HAProxy).",
  enforcementLevel: "mandatory",
  severity: "critical",
  configSchema: {
    properties: {
      ports: { type: "array", items: { type: "integer", minimum: 1, maximum: 65535 }, default: [...DATABASE_PORTS] },
    },
  },
  validateResource: (args: ResourceValidationArgs, reportViolation: ReportViolation) => {
    const permissions = ingressPermissions(args.type, args.props);
    if (permissions.length === 0) return;
    const ports = args.getConfig<{ ports?: number[] }>().ports ?? DATABASE_PORTS;
    for (const permission of permissions) {
      const world = permission.cidrs.filter(isWorldCidr);
      if (world.length === 0) continue;
      const reached = ports.filter((port) => permissionCoversPort(permission, port));
      if (reached.length > 0) {
        reportViolation(
          `${args.name}: ingress from ${world.join(", ")} reaches database port(s) ${reached.join(", ")}; allow the stack's node /32s or named application CIDRs instead.`,
        );
      }
    }
  },
};

function checkMetadataOptions(options: Props | undefined, what: string, reportViolation: ReportViolation): void {
  if (!options) {
    reportViolation(`${what}: metadataOptions is not set, so IMDSv1 stays available; set httpTokens: "required" and httpPutResponseHopLimit: 1.`);
    return;
  }
  if (options.httpEndpoint === "disabled") return;
  if (options.httpTokens !== "required") reportViolation(`${what}: metadataOptions.httpTokens is ${JSON.stringify(options.httpTokens)}; IMDSv2 requires "required".`);
  const hops = options.httpPutResponseHopLimit;
  if (hops !== undefined && hops !== null && Number(hops) > 1) {
    reportViolation(`${what}: metadataOptions.httpPutResponseHopLimit is ${scalarText(hops)}; 1 keeps containers and forwarded traffic away from the metadata service.`);
  }
}

export const imdsv2Required: ResourceValidationPolicy = {
  name: "imdsv2-required",
  description: "EC2 instances and launch templates require IMDSv2 (httpTokens: required) with a hop limit of 1.",
  enforcementLevel: "mandatory",
  severity: "high",
  validateResource: (args, reportViolation) => {
    if (args.type === TYPES.instance) checkMetadataOptions(args.props.metadataOptions as Props | undefined, `instance ${args.name}`, reportViolation);
    else if (args.type === TYPES.launchTemplate) checkMetadataOptions(args.props.metadataOptions as Props | undefined, `launch template ${args.name}`, reportViolation);
  },
};

const isTrue = (value: unknown) => value === true || value === "true";
const isEncrypted = isTrue;

export const ebsEncrypted: ResourceValidationPolicy = {
  name: "ebs-encrypted",
  description: "Every EBS volume is encrypted: standalone volumes, instance root and extra block devices, launch template mappings.",
  enforcementLevel: "mandatory",
  severity: "high",
  validateResource: (args, reportViolation) => {
    const props = args.props as Props;
    if (args.type === TYPES.volume) {
      if (!isEncrypted(props.encrypted)) reportViolation(`volume ${args.name}: encrypted is ${JSON.stringify(props.encrypted)}; set encrypted: true.`);
    } else if (args.type === TYPES.instance) {
      if (!isEncrypted((props.rootBlockDevice as Props | undefined)?.encrypted)) {
        reportViolation(`instance ${args.name}: the root volume is not encrypted; set rootBlockDevice.encrypted: true.`);
      }
      for (const device of Array.isArray(props.ebsBlockDevices) ? (props.ebsBlockDevices as (Props | undefined)[]) : []) {
        if (!isEncrypted(device?.encrypted)) reportViolation(`instance ${args.name}: block device ${scalarText(device?.deviceName ?? "?")} is not encrypted.`);
      }
    } else if (args.type === TYPES.launchTemplate) {
      for (const mapping of Array.isArray(props.blockDeviceMappings) ? (props.blockDeviceMappings as (Props | undefined)[]) : []) {
        const ebs = mapping?.ebs as Props | undefined;
        if (mapping && ebs && !isEncrypted(ebs.encrypted)) reportViolation(`launch template ${args.name}: ${scalarText(mapping.deviceName ?? "a block device")} is not encrypted.`);
      }
    }
  },
};

export const noPublicIpOnDatabaseNodes: ResourceValidationPolicy = {
  name: "no-public-ip-on-database-nodes",
  description: "Database instances (pgha:role postgres or etcd, or untagged) set associatePublicIpAddress: false explicitly.",
  enforcementLevel: "mandatory",
  severity: "critical",
  validateResource: (args, reportViolation) => {
    if (args.type !== TYPES.instance || !isDatabaseInstance(args.props)) return;
    const value: unknown = args.props.associatePublicIpAddress;
    if (value !== false) {
      reportViolation(
        value === true
          ? `instance ${args.name}: a database node must not get a public IP (associatePublicIpAddress: true).`
          : `instance ${args.name}: associatePublicIpAddress is not set, so the subnet decides; set it to false on database nodes.`,
      );
    }
  },
};

export const noElasticIpOnDatabaseNodes: StackValidationPolicy = {
  name: "no-elastic-ip-on-database-nodes",
  description: "No Elastic IP is attached to a database instance.",
  enforcementLevel: "mandatory",
  severity: "critical",
  validateStack: (args: StackValidationArgs, reportViolation: ReportViolation) => {
    const databaseInstances = args.resources.filter((r) => r.type === TYPES.instance && isDatabaseInstance(r.props));
    const attachesTo = (resource: PolicyResource, property: string) =>
      databaseInstances.find(
        (instance) =>
          (resource.propertyDependencies?.[property] ?? []).some((dependency) => dependency.urn === instance.urn) ||
          (instance.props.id !== undefined && resource.props[property] === instance.props.id),
      );
    for (const resource of args.resources) {
      const property = resource.type === TYPES.eip ? "instance" : resource.type === TYPES.eipAssociation ? "instanceId" : undefined;
      if (!property) continue;
      const instance = attachesTo(resource, property);
      if (instance) reportViolation(`${describe(resource)} attaches a public address to database node ${instance.name}.`, resource.urn);
    }
  },
};

export const noSecretsInUserData: ResourceValidationPolicy = {
  name: "no-secrets-in-user-data",
  description: "User-data holds no private key, literal password or secret, credential URL or AWS access key (secrets come from SSM at boot).",
  enforcementLevel: "mandatory",
  severity: "critical",
  validateResource: (args, reportViolation) => {
    for (const document of userDataDocuments(args.type, args.props)) {
      for (const finding of secretFindings(document.text)) reportViolation(`${args.name} ${document.field}, ${finding}.`);
    }
  },
};

export const noGeneratedSecretsInUserData: StackValidationPolicy = {
  name: "no-generated-secrets-in-user-data",
  description: "No password, private key or SecureString value generated in this stack appears in any instance's user-data.",
  enforcementLevel: "mandatory",
  severity: "critical",
  validateStack: (args, reportViolation) => {
    const secrets: { source: PolicyResource; fragments: string[] }[] = [];
    for (const resource of args.resources) {
      const values: unknown[] = [];
      if (resource.type === TYPES.randomPassword) values.push(resource.props.result);
      if (resource.type === TYPES.tlsPrivateKey) values.push(resource.props.privateKeyPem, resource.props.privateKeyPemPkcs8, resource.props.privateKeyOpenssh);
      if (resource.type === TYPES.ssmParameter && resource.props.type === "SecureString") values.push(resource.props.value);
      const fragments = values.filter((v): v is string => typeof v === "string").flatMap(secretFragments);
      if (fragments.length > 0) secrets.push({ source: resource, fragments });
    }
    for (const resource of args.resources) {
      for (const document of userDataDocuments(resource.type, resource.props)) {
        for (const secret of secrets) {
          if (secret.fragments.some((fragment) => document.text.includes(fragment))) {
            reportViolation(`${describe(resource)} ${document.field} contains the value of ${describe(secret.source)}.`, resource.urn);
          }
        }
      }
    }
  },
};

export const peeringWithinStack: StackValidationPolicy = {
  name: "peering-within-stack",
  description: "VPC peering connects only VPCs of this stack; accepters, peering options and peering routes only use this stack's connections.",
  enforcementLevel: "mandatory",
  severity: "critical",
  validateStack: (args, reportViolation) => {
    const all = args.resources;
    const needs = (resource: PolicyResource, property: string, type: string, what: string) => {
      if (!comesFromStack(resource, property, type, all)) {
        reportViolation(`${describe(resource)}: ${property} is not ${what} of this stack.`, resource.urn);
      }
    };
    for (const resource of all) {
      switch (resource.type) {
        case TYPES.peering:
          needs(resource, "vpcId", TYPES.vpc, "a VPC");
          needs(resource, "peerVpcId", TYPES.vpc, "a VPC");
          break;
        case TYPES.peeringAccepter:
        case TYPES.peeringOptions:
          needs(resource, "vpcPeeringConnectionId", TYPES.peering, "a peering connection");
          break;
        case TYPES.route:
          if ((resource.propertyDependencies?.vpcPeeringConnectionId ?? []).length > 0 || resource.props.vpcPeeringConnectionId !== undefined) {
            needs(resource, "vpcPeeringConnectionId", TYPES.peering, "a peering connection");
          }
          break;
        case TYPES.routeTable: {
          const routes = Array.isArray(resource.props.routes) ? (resource.props.routes as (Props | undefined)[]) : [];
          const viaPeering = routes.filter((route): route is Props => route?.vpcPeeringConnectionId !== undefined && route.vpcPeeringConnectionId !== "");
          const fromStack = (resource.propertyDependencies?.routes ?? []).some((dependency) => dependency.type === TYPES.peering);
          for (const route of viaPeering) {
            const known = all.some((candidate) => candidate.type === TYPES.peering && candidate.props.id === route.vpcPeeringConnectionId);
            if (!known && !fromStack)
              reportViolation(`${describe(resource)}: a route uses peering ${scalarText(route.vpcPeeringConnectionId)}, which is not a connection of this stack.`, resource.urn);
          }
          break;
        }
      }
    }
  },
};

/** Resource types whose physical name is unique per account (or account and region), and the property holding it. */
export const ACCOUNT_SCOPED_NAMES: Readonly<Record<string, string>> = {
  [TYPES.iamRole]: "name",
  [TYPES.iamInstanceProfile]: "name",
  [TYPES.iamPolicy]: "name",
  [TYPES.iamUser]: "name",
  [TYPES.ssmParameter]: "name",
};

export const stackScopedNames: ResourceValidationPolicy = {
  name: "stack-scoped-names",
  description:
    "Explicit names that are unique per account (IAM roles, instance profiles, policies, users; SSM parameter paths) carry the stack name, so parallel stacks never collide.",
  enforcementLevel: "mandatory",
  severity: "high",
  validateResource: (args, reportViolation) => {
    const property = ACCOUNT_SCOPED_NAMES[args.type];
    if (!property) return;
    const name: unknown = args.props[property];
    if (name === undefined || name === null || name === "") return; // auto-named: Pulumi appends a random suffix
    const stack = stackOfUrn(args.urn);
    if (!nameCarriesStack(scalarText(name), stack)) {
      reportViolation(
        `${args.name}: ${property} ${JSON.stringify(name)} does not contain the stack name ${JSON.stringify(stack)}; another stack in the account would collide with it.`,
      );
    }
  },
};

/** Runs `check` on every bucket of the stack; `check` returns what is wrong with it, or undefined. */
function everyBucket(check: (bucket: PolicyResource, resources: PolicyResource[]) => string | undefined): StackValidationPolicy["validateStack"] {
  return (args, reportViolation) => {
    for (const bucket of args.resources.filter(isBucket)) {
      const problem = check(bucket, args.resources);
      if (problem) reportViolation(`${describe(bucket)}: ${problem}`, bucket.urn);
    }
  };
}

export const s3BucketsVersioned: StackValidationPolicy = {
  name: "s3-buckets-versioned",
  description: "Every S3 bucket of the stack has a BucketVersioning resource with status Enabled, so a deleted or overwritten object leaves a version.",
  enforcementLevel: "mandatory",
  severity: "high",
  validateStack: everyBucket((bucket, resources) => {
    const configurations = configurationsOf(bucket, [TYPES.bucketVersioning, TYPES.bucketVersioningV2], resources);
    if (configurations.length === 0) return "no BucketVersioning resource; add one with versioningConfiguration.status Enabled.";
    const statuses = configurations.map((c) => (c.props.versioningConfiguration as Props | undefined)?.status);
    return statuses.every((status) => status === "Enabled") ? undefined : `versioning is ${JSON.stringify(statuses)}; it must be Enabled.`;
  }),
};

const KMS_ALGORITHMS = ["aws:kms", "aws:kms:dsse"];

export const s3BucketsKmsEncrypted: StackValidationPolicy = {
  name: "s3-buckets-kms-encrypted",
  description: "Every S3 bucket of the stack encrypts by default with SSE-KMS (aws:kms or aws:kms:dsse), through a BucketServerSideEncryptionConfiguration resource.",
  enforcementLevel: "mandatory",
  severity: "high",
  validateStack: everyBucket((bucket, resources) => {
    const configurations = configurationsOf(bucket, [TYPES.bucketEncryption, TYPES.bucketEncryptionV2], resources);
    if (configurations.length === 0) return "no BucketServerSideEncryptionConfiguration resource; add one with sseAlgorithm aws:kms.";
    const algorithms = configurations.flatMap((c) =>
      asList(c.props.rules).map((rule) => ((rule as Props | undefined)?.applyServerSideEncryptionByDefault as Props | undefined)?.sseAlgorithm),
    );
    if (algorithms.length === 0) return "its encryption configuration has no rule.";
    return algorithms.every((a) => typeof a === "string" && KMS_ALGORITHMS.includes(a))
      ? undefined
      : `default encryption is ${JSON.stringify(algorithms)}; it must be SSE-KMS (aws:kms).`;
  }),
};

const PUBLIC_ACCESS_SWITCHES = ["blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"] as const;

export const s3BucketsBlockPublicAccess: StackValidationPolicy = {
  name: "s3-buckets-block-public-access",
  description: "Every S3 bucket of the stack has a BucketPublicAccessBlock with blockPublicAcls, blockPublicPolicy, ignorePublicAcls and restrictPublicBuckets all true.",
  enforcementLevel: "mandatory",
  severity: "critical",
  validateStack: everyBucket((bucket, resources) => {
    const blocks = configurationsOf(bucket, [TYPES.bucketPublicAccessBlock], resources);
    if (blocks.length === 0) return "no BucketPublicAccessBlock; add one with all four switches true.";
    const off = PUBLIC_ACCESS_SWITCHES.filter((key) => !blocks.some((block) => isTrue(block.props[key])));
    return off.length === 0 ? undefined : `the public access block leaves ${off.join(", ")} off.`;
  }),
};

export const s3BucketsTlsOnly: StackValidationPolicy = {
  name: "s3-buckets-tls-only",
  description: "Every S3 bucket of the stack has a bucket policy that denies every principal every action on the bucket and its objects when aws:SecureTransport is false.",
  enforcementLevel: "mandatory",
  severity: "high",
  validateStack: everyBucket((bucket, resources) => {
    const policies = configurationsOf(bucket, [TYPES.bucketPolicy], resources);
    if (policies.length === 0) return "no BucketPolicy; add one denying requests with aws:SecureTransport false.";
    const name: unknown = bucket.props.bucket;
    if (typeof name !== "string" || name === "") return "has no explicit name to check its policy's resources against.";
    const denies = policies.some((policy) => asList(policyDocument(policy.props.policy)?.Statement).some((statement) => deniesInsecureTransport(statement, name)));
    return denies
      ? undefined
      : "its policy does not deny requests without TLS (Effect Deny, Principal *, Action s3:*, the bucket and its objects, Bool aws:SecureTransport false).";
  }),
};

export const noForceDestroyBuckets: ResourceValidationPolicy = {
  name: "no-force-destroy-buckets",
  description:
    "No S3 bucket sets forceDestroy: a destroy or a replacement stops at a bucket that holds objects (the backups) instead of deleting every object and version. The ephemeral profile (policy/ephemeral.json) disables it.",
  enforcementLevel: "mandatory",
  severity: "high",
  validateResource: (args, reportViolation) => {
    if (!isBucket(args) || args.props.forceDestroy !== true) return;
    reportViolation(`${args.name}: forceDestroy is true, so \`pulumi destroy\` or a replacement would delete every object and version in it; only ephemeral stacks may set it.`);
  },
};

export const ephemeralStackDestroyable: ResourceValidationPolicy = {
  name: "ephemeral-stack-destroyable",
  description:
    "Ephemeral stacks stay cheap and destroyable: nothing protected, no termination protection, small instance types and volumes, S3 buckets with forceDestroy. Disabled by default; the ephemeral workflow enables it.",
  enforcementLevel: "disabled",
  severity: "medium",
  configSchema: {
    properties: {
      allowedInstanceTypes: { type: "array", items: { type: "string" }, default: [...EPHEMERAL_INSTANCE_TYPES] },
      maxVolumeGiB: { type: "integer", minimum: 1, default: EPHEMERAL_MAX_VOLUME_GIB },
    },
  },
  validateResource: (args, reportViolation) => {
    const config = args.getConfig<{ allowedInstanceTypes?: string[]; maxVolumeGiB?: number }>();
    const allowed = config.allowedInstanceTypes ?? EPHEMERAL_INSTANCE_TYPES;
    const maxGiB = config.maxVolumeGiB ?? EPHEMERAL_MAX_VOLUME_GIB;
    if (args.opts?.protect) reportViolation(`${args.name}: protected; \`pulumi destroy\` of an ephemeral stack would stop at it.`);
    const { props } = args;
    if (args.type === TYPES.instance) {
      if (props.disableApiTermination === true) reportViolation(`instance ${args.name}: termination protection (disableApiTermination) is on.`);
      if (typeof props.instanceType === "string" && !allowed.includes(props.instanceType)) {
        reportViolation(`instance ${args.name}: ${props.instanceType} is not one of the ephemeral instance types (${allowed.join(", ")}).`);
      }
      const root = (props.rootBlockDevice as Props | undefined)?.volumeSize;
      if (typeof root === "number" && root > maxGiB) reportViolation(`instance ${args.name}: root volume of ${root} GiB exceeds ${maxGiB} GiB.`);
    }
    if (args.type === TYPES.volume && typeof props.size === "number" && props.size > maxGiB) {
      reportViolation(`volume ${args.name}: ${props.size} GiB exceeds ${maxGiB} GiB.`);
    }
    // `pulumi destroy` refuses to delete a bucket that still holds objects (or versions of them) unless forceDestroy is set.
    if (isBucket(args) && props.forceDestroy !== true) reportViolation(`bucket ${args.name}: forceDestroy is not true, so \`pulumi destroy\` stops at it once it holds objects.`);
  },
};

/** Every policy of the pack, in the order the README lists the promises. */
export const policies: (ResourceValidationPolicy | StackValidationPolicy)[] = [
  noPublicDatabaseIngress,
  imdsv2Required,
  ebsEncrypted,
  noPublicIpOnDatabaseNodes,
  noElasticIpOnDatabaseNodes,
  noSecretsInUserData,
  noGeneratedSecretsInUserData,
  peeringWithinStack,
  stackScopedNames,
  s3BucketsVersioned,
  s3BucketsKmsEncrypted,
  s3BucketsBlockPublicAccess,
  s3BucketsTlsOnly,
  noForceDestroyBuckets,
  ephemeralStackDestroyable,
];

export const PACK_ENFORCEMENT_LEVEL: EnforcementLevel = "mandatory";

/** What `index.ts` hands to `new PolicyPack(POLICY_PACK_NAME, policyPackArgs)`. */
export const policyPackArgs: PolicyPackArgs = {
  description: "pgha: the security and isolation promises of the three-region PostgreSQL cluster.",
  enforcementLevel: PACK_ENFORCEMENT_LEVEL,
  policies,
};
