import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import type { BackupPlan, BackupRepositoryPlan } from "../plan";
import { stackTags, TYPE_PREFIX } from "./naming";

/**
 * The AWS side of pgBackRest's repositories (docs/backups.md): one S3 bucket
 * per region of the plan, each with its own KMS key, and the node role
 * policy that reaches exactly the stack's repository in each.
 */

/** S3's rule for a general purpose bucket name (the plan builds `<prefix>-<stack>-<awsRegion>`). */
const BUCKET_NAME = /^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/;
/** What a repository path may hold: IAM reads `*` and `?` in a resource or `s3:prefix` as wildcards. */
const REPOSITORY_PATH = /^\/[a-z0-9][a-z0-9-]*$/;

/** KMS keys wait this long between `pulumi destroy` and their deletion: AWS's maximum for kept stacks, its minimum for throwaway ones. */
export const KEY_DELETION_WINDOW_DAYS = { protected: 30, ephemeral: 7 } as const;
/** Incomplete multipart uploads (an archive-push or backup killed mid-file) are aborted after this many days. */
export const ABORT_INCOMPLETE_UPLOAD_DAYS = 1;

/**
 * The S3 key prefix of a repository: pgBackRest's `repo<N>-path` without its
 * leading slash (`/dev` → `dev`); every object pgBackRest writes is under
 * `<prefix>/`.
 */
export function repositoryKeyPrefix(repository: Pick<BackupRepositoryPlan, "path">): string {
  if (!REPOSITORY_PATH.test(repository.path)) {
    throw new Error(`backup repository path ${JSON.stringify(repository.path)}: must be one segment such as /dev (lower-case letters, digits, dashes), never the bucket's root`);
  }
  return repository.path.slice(1);
}

/** Arguments of {@link BackupRepository}. */
export interface BackupRepositoryArgs {
  /** The repository: its bucket name, region and pgBackRest path (`plan.backup.repositories[i]`). */
  repository: BackupRepositoryPlan;
  /** Retention and protection (`plan.backup`). */
  backup: Pick<BackupPlan, "retentionDays" | "protectRepositories">;
  /** Stack name, written to the `pgha:stack` tag. */
  stack: string;
  /**
   * ARN partition (`aws`, `aws-cn`, …) from `aws.getPartition`: the bucket
   * policy names the bucket's ARN from it, so the policy is known already at
   * `pulumi preview` (and the policy pack can check it there).
   */
  partition: pulumi.Input<string>;
  /** The explicit AWS provider of `repository.awsRegion`; the bucket and its key live there. */
  provider: aws.Provider;
}

/** Checks a repository plan before anything is created; throws on the first problem. */
export function validateBackupRepositoryArgs(args: Pick<BackupRepositoryArgs, "repository" | "backup" | "stack">): void {
  const { repository, backup, stack } = args;
  if (!BUCKET_NAME.test(repository.bucket) || repository.bucket.includes("..")) {
    throw new Error(`BackupRepository ${repository.region}: ${JSON.stringify(repository.bucket)} is not a valid S3 bucket name (3-63 lower-case letters, digits, dashes)`);
  }
  const prefix = repositoryKeyPrefix(repository);
  if (prefix !== stack) throw new Error(`BackupRepository ${repository.region}: path ${repository.path} is not the stack's own /${stack}`);
  if (!Number.isInteger(backup.retentionDays) || backup.retentionDays < 1) {
    throw new Error(`BackupRepository ${repository.region}: retentionDays must be a whole number of days ≥ 1, got ${backup.retentionDays}`);
  }
}

/**
 * The bucket policy: deny every request that does not arrive over TLS, to the
 * bucket and to every object, whoever makes it. (S3 accepts plain HTTP on its
 * endpoints; pgBackRest always uses HTTPS, this makes that a property of the
 * bucket, not of the client.)
 */
export function tlsOnlyBucketPolicy(bucketArn: string): object {
  return {
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "DenyInsecureTransport",
        Effect: "Deny",
        Principal: "*",
        Action: "s3:*",
        Resource: [bucketArn, `${bucketArn}/*`],
        Condition: { Bool: { "aws:SecureTransport": "false" } },
      },
    ],
  };
}

/**
 * The lifecycle rules of a repository bucket. pgBackRest owns expiry: it
 * deletes backups past `repo<N>-retention-full` and the WAL they no longer
 * need, so nothing here expires a current object. What S3 does on its own:
 *
 * - a version made noncurrent (an object pgBackRest deleted or overwrote) is
 *   kept `retentionDays` more, then removed; so a deleted or overwritten backup
 *   or segment stays recoverable as long as pgBackRest keeps backups at all,
 *   and the delete markers left without versions go too;
 * - an incomplete multipart upload (an archive-push or a backup killed in the
 *   middle of a file) is aborted after a day, so its parts stop costing.
 *
 * Both rules cover the repository's key prefix, which is all the nodes can
 * write.
 */
export function repositoryLifecycleRules(retentionDays: number, keyPrefix: string): aws.types.input.s3.BucketLifecycleConfigurationRule[] {
  const filter = { prefix: `${keyPrefix}/` };
  return [
    {
      id: "expire-noncurrent-versions",
      status: "Enabled",
      filter,
      noncurrentVersionExpiration: { noncurrentDays: retentionDays },
      // Only delete markers without any version left: no current object expires.
      expiration: { expiredObjectDeleteMarker: true },
    },
    {
      id: "abort-incomplete-multipart-uploads",
      status: "Enabled",
      filter,
      abortIncompleteMultipartUpload: { daysAfterInitiation: ABORT_INCOMPLETE_UPLOAD_DAYS },
    },
  ];
}

/** One repository as a node role sees it: where its objects are and which key encrypts them. */
export interface RepositoryGrant {
  /** pgBackRest's repository number (`repo<index>`): names the policy's statements. */
  index: number;
  bucket: string;
  awsRegion: string;
  /** pgBackRest's `repo<N>-path`, e.g. `/dev`. */
  path: string;
  /** ARN of the repository's KMS key (the bucket's default encryption key). */
  kmsKeyArn: string;
}

/**
 * The inline policy `backup-repositories` of a database node's role: what
 * pgBackRest on the node does to every repository, and nothing more.
 *
 * - `s3:ListBucket` on each bucket, only for keys under the repository's
 *   prefix (`s3:prefix` `<stack>` or `<stack>/*`): pgBackRest lists the
 *   archive and backup directories; a listing of the bucket's root, or of
 *   another stack's prefix, is refused.
 * - `s3:GetObject`, `s3:PutObject`, `s3:DeleteObject` on
 *   `arn:<partition>:s3:::<bucket>/<stack>/*` only: archive-push and backup
 *   write (PutObject also covers the parts of a multipart upload),
 *   archive-get and restore read, expiry deletes. No version-level action:
 *   a node can delete a current object, which leaves a noncurrent version,
 *   but cannot remove that version; only the lifecycle rule does, after
 *   `retentionDays`.
 * - `kms:GenerateDataKey` and `kms:Decrypt` on the repository's own key only,
 *   and only when S3 in that key's region asks on the node's behalf
 *   (`kms:ViaService`): the buckets use SSE-KMS with that key by default
 *   (pgBackRest sends no key id), and with an S3 Bucket Key S3 calls KMS for
 *   the bucket key rather than per object.
 */
export function backupRepositoriesPolicy(partition: string, repositories: RepositoryGrant[]): object {
  if (repositories.length === 0) throw new Error("backupRepositoriesPolicy: no repositories");
  return {
    Version: "2012-10-17",
    Statement: repositories.flatMap((repo) => {
      const prefix = repositoryKeyPrefix(repo);
      const bucketArn = `arn:${partition}:s3:::${repo.bucket}`;
      return [
        {
          Sid: `ListRepo${repo.index}`,
          Effect: "Allow",
          Action: "s3:ListBucket",
          Resource: bucketArn,
          Condition: { StringLike: { "s3:prefix": [prefix, `${prefix}/*`] } },
        },
        {
          Sid: `ReadWriteRepo${repo.index}`,
          Effect: "Allow",
          Action: ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
          Resource: `${bucketArn}/${prefix}/*`,
        },
        {
          Sid: `EncryptRepo${repo.index}`,
          Effect: "Allow",
          Action: ["kms:GenerateDataKey", "kms:Decrypt"],
          Resource: repo.kmsKeyArn,
          Condition: { StringEquals: { "kms:ViaService": `s3.${repo.awsRegion}.amazonaws.com` } },
        },
      ];
    }),
  };
}

/**
 * One pgBackRest repository: an S3 bucket in its region (through that
 * region's provider) and the KMS key it encrypts with.
 *
 * - SSE-KMS by default with the repository's own key, with an S3 Bucket Key
 *   (one KMS call per bucket key instead of per object: cheaper, and no KMS
 *   request-rate limit for WAL bursts); SSE-C uploads refused. pgBackRest
 *   also encrypts every file with its own cipher (`repo<N>-cipher-type`)
 *   before S3 sees it.
 * - Versioning on, so an overwrite or a delete (pgBackRest's, or a
 *   compromised node's) leaves a noncurrent version for `retentionDays`
 *   ({@link repositoryLifecycleRules}).
 * - The public access block with all four switches on, object ownership
 *   `BucketOwnerEnforced` (ACLs off), and a bucket policy that refuses any
 *   request without TLS ({@link tlsOnlyBucketPolicy}).
 * - `protect` on bucket and key when `protectRepositories` is on (the
 *   default): no `pulumi up` or `destroy` removes the backups. Off (ephemeral
 *   stacks), the bucket has `forceDestroy`, so `pulumi destroy` empties it,
 *   every version included, and deletes it, and the key is scheduled for
 *   deletion after 7 days instead of 30.
 *
 * The configuration resources are applied one after the other: S3 refuses
 * concurrent changes to one bucket's configuration (OperationAborted).
 */
export class BackupRepository extends pulumi.ComponentResource {
  /** The repository as planned. */
  public readonly repository: BackupRepositoryPlan;
  public readonly bucket: aws.s3.Bucket;
  public readonly key: aws.kms.Key;
  public readonly bucketName: pulumi.Output<string>;
  public readonly bucketArn: pulumi.Output<string>;
  public readonly kmsKeyArn: pulumi.Output<string>;
  /**
   * Everything the database nodes' first boot needs in place (bucket, key,
   * encryption, versioning, access block, policy, lifecycle): their
   * instances depend on these, so the first `stanza-create` finds the
   * repository as it is meant to be.
   */
  public readonly ready: pulumi.Resource[];

  constructor(name: string, args: BackupRepositoryArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super(`${TYPE_PREFIX}:BackupRepository`, name, {}, opts);
    validateBackupRepositoryArgs(args);
    const { repository, backup, stack, provider } = args;
    const protect = backup.protectRepositories;
    const keyPrefix = repositoryKeyPrefix(repository);
    const tags = stackTags(stack, { Name: repository.bucket, "pgha:region": repository.region, "pgha:backup-repository": String(repository.index) });
    const kept: pulumi.CustomResourceOptions = { parent: this, provider, protect };
    // Each configuration call waits for the one before: S3 aborts concurrent changes to one bucket.
    let previous: pulumi.Resource[] = [];
    const child = (): pulumi.CustomResourceOptions => ({ parent: this, provider, dependsOn: previous });

    this.key = new aws.kms.Key(
      `${name}-key`,
      {
        description: `pgha ${stack}: pgBackRest repository ${repository.index} (s3://${repository.bucket})`,
        enableKeyRotation: true,
        deletionWindowInDays: protect ? KEY_DELETION_WINDOW_DAYS.protected : KEY_DELETION_WINDOW_DAYS.ephemeral,
        tags,
      },
      kept,
    );
    this.bucket = new aws.s3.Bucket(`${name}-bucket`, { bucket: repository.bucket, forceDestroy: !protect, tags }, kept);
    const bucket = this.bucket.id;

    const ownership = new aws.s3.BucketOwnershipControls(`${name}-ownership`, { bucket, rule: { objectOwnership: "BucketOwnerEnforced" } }, child());
    previous = [ownership];
    const publicAccess = new aws.s3.BucketPublicAccessBlock(
      `${name}-public-access`,
      { bucket, blockPublicAcls: true, blockPublicPolicy: true, ignorePublicAcls: true, restrictPublicBuckets: true },
      child(),
    );
    previous = [publicAccess];
    const encryption = new aws.s3.BucketServerSideEncryptionConfiguration(
      `${name}-encryption`,
      {
        bucket,
        rules: [
          {
            applyServerSideEncryptionByDefault: { sseAlgorithm: "aws:kms", kmsMasterKeyId: this.key.arn },
            bucketKeyEnabled: true,
            // A client-chosen key would bypass the repository's KMS key; pgBackRest sends none.
            blockedEncryptionTypes: ["SSE-C"],
          },
        ],
      },
      child(),
    );
    previous = [encryption];
    const versioning = new aws.s3.BucketVersioning(`${name}-versioning`, { bucket, versioningConfiguration: { status: "Enabled" } }, child());
    previous = [versioning];
    const policy = new aws.s3.BucketPolicy(
      `${name}-policy`,
      { bucket, policy: pulumi.output(args.partition).apply((partition) => JSON.stringify(tlsOnlyBucketPolicy(`arn:${partition}:s3:::${repository.bucket}`))) },
      child(),
    );
    previous = [policy];
    const lifecycle = new aws.s3.BucketLifecycleConfiguration(`${name}-lifecycle`, { bucket, rules: repositoryLifecycleRules(backup.retentionDays, keyPrefix) }, child());

    this.repository = repository;
    this.bucketName = this.bucket.bucket;
    this.bucketArn = this.bucket.arn;
    this.kmsKeyArn = this.key.arn;
    this.ready = [this.key, this.bucket, ownership, publicAccess, encryption, versioning, policy, lifecycle];
    this.registerOutputs({ bucketName: this.bucketName, bucketArn: this.bucketArn, kmsKeyArn: this.kmsKeyArn });
  }
}
