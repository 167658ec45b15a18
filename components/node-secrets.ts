import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import type { NodePlan, NodeSecretsPlan } from "../plan";
import { backupRepositoriesPolicy, type RepositoryGrant } from "./backup-repository";
import type { ParameterValueSource } from "./cluster-pki";
import { iamName, slug, stackTags, TYPE_PREFIX } from "./naming";

/** Arguments of {@link NodeSecrets}. */
export interface NodeSecretsArgs {
  /** The node whose secrets these are. */
  node: NodePlan;
  /** The node's entry of `plan.secrets`: every SSM parameter to create under its own path. */
  secrets: NodeSecretsPlan;
  /** Where parameter values come from (the cluster's {@link ClusterPki}). */
  values: ParameterValueSource;
  /** Stack name: part of the IAM names, written to the `pgha:stack` tag. */
  stack: string;
  /** AWS account id the parameters live in (from `aws.getCallerIdentity`). */
  accountId: pulumi.Input<string>;
  /** ARN partition (`aws`, `aws-cn`, …) from `aws.getPartition`. */
  partition: pulumi.Input<string>;
  /** The explicit AWS provider of the node's region. */
  provider: aws.Provider;
  /**
   * ARN of the managed policy set as the role's permissions boundary
   * (`pgha:iam.nodePermissionsBoundaryArn`); none when undefined. The
   * ephemeral deploy role creates `pgha-pr-*` roles only with its boundary.
   */
  permissionsBoundary?: string;
  /**
   * SNS topic the node's Alertmanager publishes to (`pgha:monitoring.alertTopicArn`, HAProxy nodes only): the
   * role may `sns:Publish` to that topic and no other.
   */
  alertTopicArn?: string;
  /**
   * The pgBackRest repositories the node archives to, backs up to and
   * restores from (database nodes only; see {@link backupRepositoriesPolicy}):
   * the role gets the inline policy `backup-repositories` on exactly these.
   * None: no such policy (HAProxy-only and etcd-only nodes).
   */
  backupRepositories?: (Omit<RepositoryGrant, "kmsKeyArn"> & { kmsKeyArn: pulumi.Input<string> })[];
}

/** The inline policy of a node that runs an Alertmanager: publish to the stack's alert topic only. */
export function alertPublishPolicy(topicArn: string): object {
  return { Version: "2012-10-17", Statement: [{ Sid: "PublishAlerts", Effect: "Allow", Action: "sns:Publish", Resource: topicArn }] };
}

/** Checks that the secrets plan belongs to the node and stays under its path; throws otherwise. */
export function validateNodeSecretsArgs(args: Pick<NodeSecretsArgs, "node" | "secrets">): void {
  const { node, secrets } = args;
  if (secrets.node !== node.name) throw new Error(`NodeSecrets ${node.name}: got the secrets plan of ${secrets.node}`);
  if (secrets.awsRegion !== node.awsRegion) throw new Error(`NodeSecrets ${node.name}: parameters planned in ${secrets.awsRegion}, node runs in ${node.awsRegion}`);
  if (secrets.parameterPath !== node.parameterPath) throw new Error(`NodeSecrets ${node.name}: parameter path ${secrets.parameterPath} is not the node's ${node.parameterPath}`);
  const seen = new Set<string>();
  for (const parameter of secrets.parameters) {
    if (!parameter.name.startsWith(`${node.parameterPath}/`)) {
      throw new Error(`NodeSecrets ${node.name}: parameter ${parameter.name} is outside ${node.parameterPath}/, which the node's role cannot read`);
    }
    if (seen.has(parameter.name)) throw new Error(`NodeSecrets ${node.name}: parameter ${parameter.name} is planned twice`);
    seen.add(parameter.name);
    if ((parameter.value.kind === "private-key" || parameter.value.kind === "password") && !parameter.secure) {
      throw new Error(`NodeSecrets ${node.name}: ${parameter.name} holds a ${parameter.value.kind} and must be a SecureString`);
    }
  }
}

/** Where the node's parameters live, as IAM sees them. */
export interface ParameterScope {
  partition: string;
  awsRegion: string;
  accountId: string;
  /** The node's parameter path, no trailing slash (e.g. `/pgha/dev/pg-seoul-1`). */
  parameterPath: string;
}

/** The ARN pattern of every parameter under the node's own path. */
export function parameterArnPattern(scope: ParameterScope): string {
  return `arn:${scope.partition}:ssm:${scope.awsRegion}:${scope.accountId}:parameter${scope.parameterPath}/*`;
}

/**
 * The node role's inline policy: read (and decrypt) the parameters under
 * the node's own path in its own region, and nothing else.
 *
 * - `ssm:GetParameter(s)` on `<path>/*`; `ssm:GetParametersByPath` also on
 *   the path itself, which is the resource IAM checks for that call.
 * - `kms:Decrypt` on keys of the node's account and region, only when SSM
 *   asks on the node's behalf (`kms:ViaService`) for a parameter under the
 *   node's path (`kms:EncryptionContext:PARAMETER_ARN`, which Parameter
 *   Store sets on every SecureString). SecureStrings use the AWS-managed
 *   `aws/ssm` key.
 * - An explicit deny of `kms:Decrypt` for any other parameter. This matters:
 *   the AmazonSSMManagedInstanceCore policy (attached for Session Manager)
 *   allows `ssm:GetParameter(s)` on `*`, and the `aws/ssm` key policy lets
 *   every principal of the account decrypt through SSM — without this
 *   statement a compromised HAProxy node could read the database passwords
 *   and every other node's private keys. It applies where a decryption names
 *   a parameter at all (`Null` false: Parameter Store always sets
 *   `PARAMETER_ARN`, and a SecureString's ciphertext does not decrypt without
 *   it), so S3's decryptions of the backup repositories' objects, whose
 *   context is the bucket's ARN, are left to their own statements
 *   ({@link backupRepositoriesPolicy}); without the `Null` test the deny
 *   would refuse every one of them.
 */
export function nodeParameterPolicy(scope: ParameterScope): object {
  const ownParameters = parameterArnPattern(scope);
  const ownPath = `arn:${scope.partition}:ssm:${scope.awsRegion}:${scope.accountId}:parameter${scope.parameterPath}`;
  return {
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "ReadOwnParameters",
        Effect: "Allow",
        Action: ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
        Resource: [ownParameters, ownPath],
      },
      {
        Sid: "DecryptOwnParameters",
        Effect: "Allow",
        Action: "kms:Decrypt",
        Resource: `arn:${scope.partition}:kms:${scope.awsRegion}:${scope.accountId}:key/*`,
        Condition: {
          StringEquals: { "kms:ViaService": `ssm.${scope.awsRegion}.amazonaws.com` },
          StringLike: { "kms:EncryptionContext:PARAMETER_ARN": ownParameters },
        },
      },
      {
        Sid: "DenyDecryptOtherParameters",
        Effect: "Deny",
        Action: "kms:Decrypt",
        Resource: "*",
        Condition: { StringNotLike: { "kms:EncryptionContext:PARAMETER_ARN": ownParameters }, Null: { "kms:EncryptionContext:PARAMETER_ARN": "false" } },
      },
    ],
  };
}

const EC2_TRUST_POLICY = JSON.stringify({
  Version: "2012-10-17",
  Statement: [{ Effect: "Allow", Principal: { Service: "ec2.amazonaws.com" }, Action: "sts:AssumeRole" }],
});

/**
 * Everything a node needs before it boots: its SSM parameters (in its own
 * region, under its own path; SecureString for keys and passwords, String
 * for certificates) and the IAM role + instance profile that can read them.
 *
 * The role also carries AmazonSSMManagedInstanceCore so operators reach the
 * node through Session Manager (there is no SSH); see
 * {@link nodeParameterPolicy} for why its broad read is fenced off.
 *
 * IAM is global, so role and profile names carry stack and node name
 * (`pgha-<stack>-<node>`, see {@link iamName}). With
 * `permissionsBoundary` the role is created with that boundary, which caps
 * whatever the two policies above grant.
 */
export class NodeSecrets extends pulumi.ComponentResource {
  public readonly parameters: aws.ssm.Parameter[];
  public readonly role: aws.iam.Role;
  public readonly instanceProfileName: pulumi.Output<string>;
  /**
   * Resources that must exist before the node's instance is created: the
   * parameters it fetches at boot and the permissions to fetch them.
   */
  public readonly bootDependencies: pulumi.Resource[];

  constructor(name: string, args: NodeSecretsArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super(`${TYPE_PREFIX}:NodeSecrets`, name, {}, opts);
    validateNodeSecretsArgs(args);
    const { node, secrets, stack, provider } = args;
    const child: pulumi.CustomResourceOptions = { parent: this, provider };
    const tags = stackTags(stack, { "pgha:region": node.region, "pgha:node": node.name });

    this.parameters = secrets.parameters.map(
      (parameter) =>
        new aws.ssm.Parameter(
          `${name}-${slug(parameter.name.slice(node.parameterPath.length))}`,
          {
            name: parameter.name,
            type: parameter.secure ? "SecureString" : "String",
            value: args.values.parameterValue(parameter.value),
            tier: "Standard",
            description: `pgha ${stack}: ${parameter.value.kind} for ${node.name}`,
            tags,
          },
          child,
        ),
    );

    const roleName = iamName(stack, node.name);
    this.role = new aws.iam.Role(
      `${name}-role`,
      {
        name: roleName,
        assumeRolePolicy: EC2_TRUST_POLICY,
        description: `pgha ${stack} node ${node.name}`,
        tags,
        ...(args.permissionsBoundary === undefined ? {} : { permissionsBoundary: args.permissionsBoundary }),
      },
      child,
    );
    const sessionManager = new aws.iam.RolePolicyAttachment(
      `${name}-ssm-core`,
      { role: this.role.name, policyArn: pulumi.interpolate`arn:${args.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore` },
      child,
    );
    const readOwnParameters = new aws.iam.RolePolicy(
      `${name}-read-own-parameters`,
      {
        role: this.role.id,
        name: "read-own-parameters",
        policy: pulumi
          .all([args.partition, args.accountId])
          .apply(([partition, accountId]) => JSON.stringify(nodeParameterPolicy({ partition, accountId, awsRegion: node.awsRegion, parameterPath: node.parameterPath }))),
      },
      child,
    );
    const publishAlerts = args.alertTopicArn
      ? [new aws.iam.RolePolicy(`${name}-publish-alerts`, { role: this.role.id, name: "publish-alerts", policy: JSON.stringify(alertPublishPolicy(args.alertTopicArn)) }, child)]
      : [];
    const repositories = args.backupRepositories ?? [];
    const backupAccess =
      repositories.length === 0
        ? []
        : [
            new aws.iam.RolePolicy(
              `${name}-backup-repositories`,
              {
                role: this.role.id,
                name: "backup-repositories",
                policy: pulumi.all([args.partition, pulumi.all(repositories.map((repo) => repo.kmsKeyArn))]).apply(([partition, keyArns]) =>
                  JSON.stringify(
                    backupRepositoriesPolicy(
                      partition,
                      repositories.map((repo, i) => ({ ...repo, kmsKeyArn: keyArns[i] })),
                    ),
                  ),
                ),
              },
              child,
            ),
          ];
    const profile = new aws.iam.InstanceProfile(`${name}-profile`, { name: roleName, role: this.role.name, tags }, child);

    this.instanceProfileName = profile.name;
    this.bootDependencies = [...this.parameters, sessionManager, readOwnParameters, ...publishAlerts, ...backupAccess, profile];
    this.registerOutputs({ instanceProfileName: this.instanceProfileName, parameterNames: this.parameters.map((p) => p.name) });
  }
}
