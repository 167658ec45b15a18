/**
 * The AWS side of the pgBackRest repositories (components/backup-repository.ts)
 * under Pulumi mocks: one bucket per region in that region with its KMS key,
 * its encryption, versioning, public access block, TLS-only policy and
 * lifecycle; the database nodes' role reaching exactly the stack's prefix of
 * every bucket; protect and forceDestroy following protectRepositories.
 *
 * Two clusters: the reference layout (stack "test", retention 9 days, kept)
 * and an ephemeral one (stack "eph", an etcd-only witness in Singapore,
 * protectRepositories off).
 */
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { buildClusterPlan, type ClusterPlan, type NodePlan } from "../../plan";
import { installMocks, witnessRegions, MOCK_ACCOUNT_ID, prepareRenderer, valueOf, type Registered } from "./mocks";

const world = installMocks("test");
const RETENTION_DAYS = 9;
const plan = buildClusterPlan({ access: { applicationCidrs: ["10.1.0.0/16"] }, backup: { retentionDays: RETENTION_DAYS } }, { stack: "test" });
const ephemeralPlan = buildClusterPlan(
  {
    regions: witnessRegions(),
    access: { applicationCidrs: ["10.1.0.0/16"] },
    instances: { protectDataVolumes: false },
    backup: { protectRepositories: false },
  },
  { stack: "eph" },
);
prepareRenderer(() => {
  const { renderUserData } = require("../../cloud-init/user-data") as typeof import("../../cloud-init/user-data");
  renderUserData(plan, "pg-seoul-1", { dataVolumeId: "vol-0123456789abcdef0" });
});
const { PgHaCluster } = require("../../components/cluster") as typeof import("../../components/cluster");
const { iamName } = require("../../components/naming") as typeof import("../../components/naming");
const repositoryModule = require("../../components/backup-repository") as typeof import("../../components/backup-repository");
const { backupRepositoriesPolicy, repositoryKeyPrefix, validateBackupRepositoryArgs, KEY_DELETION_WINDOW_DAYS } = repositoryModule;
const { nodeParameterPolicy } = require("../../components/node-secrets") as typeof import("../../components/node-secrets");

let cluster: InstanceType<typeof PgHaCluster>;
before(async () => {
  cluster = new PgHaCluster("pgha", { plan, readinessGate: false });
  const ephemeral = new PgHaCluster("eph", { plan: ephemeralPlan, readinessGate: false });
  await Promise.all([valueOf(cluster.backupRepositories), valueOf(ephemeral.backupRepositories)]);
  await world.settle();
});

const T = {
  bucket: "aws:s3/bucket:Bucket",
  key: "aws:kms/key:Key",
  encryption: "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
  versioning: "aws:s3/bucketVersioning:BucketVersioning",
  publicAccess: "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
  ownership: "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
  policy: "aws:s3/bucketPolicy:BucketPolicy",
  lifecycle: "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
  rolePolicy: "aws:iam/rolePolicy:RolePolicy",
  instance: "aws:ec2/instance:Instance",
} as const;

/** Resources of one of the two clusters: their names start with the cluster's ("pgha" for stack test, "eph"). */
const ofStack = (type: string, stack: string) => world.ofType(type).filter((r) => r.name.startsWith(stack === "test" ? "pgha-" : "eph-"));
const only = (items: Registered[], what: string) => {
  assert.equal(items.length, 1, `expected exactly one ${what}, got ${items.length}`);
  return items[0];
};
const bucketOf = (stack: string, awsRegion: string) =>
  only(
    ofStack(T.bucket, stack).filter((b) => world.regionOf(b) === awsRegion),
    `${stack} bucket in ${awsRegion}`,
  );
/** The configuration resource of `type` that names `bucket`. */
const configOf = (type: string, bucket: Registered) =>
  only(
    world.ofType(type).filter((r) => r.inputs.bucket === bucket.id),
    `${type.split(":").pop()} of ${bucket.id}`,
  );
const backupPolicyOf = (stack: string, node: NodePlan) =>
  world.ofType(T.rolePolicy).filter((p) => p.inputs.role === iamName(stack, node.name) && p.inputs.name === "backup-repositories");

// ---------------------------------------------------------------------------
// A small IAM evaluator: Allow and Deny, Action/Resource globs, the operators these documents use
// ---------------------------------------------------------------------------

interface Statement {
  Sid?: string;
  Effect: "Allow" | "Deny";
  Principal?: unknown;
  Action: string | string[];
  Resource: string | string[];
  Condition?: Record<string, Record<string, string | string[]>>;
}
type Context = Record<string, string | undefined>;
const list = <V>(value: V | V[]): V[] => [value].flat() as V[];
/** IAM's glob: `*` any run of characters (`/` and `:` too), `?` one character. */
const glob = (pattern: string, value: string) =>
  new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, "\\$&")
      .replace(/\*/g, ".*")
      .replace(/\?/g, ".")}$`,
  ).test(value);

function conditionHolds(operator: string, key: string, expected: string | string[], context: Context): boolean {
  const value = context[key];
  const wanted = list(expected);
  switch (operator) {
    case "StringEquals":
    case "Bool":
      return value !== undefined && wanted.includes(value);
    case "StringLike":
      return value !== undefined && wanted.some((w) => glob(w, value));
    // Negated operators hold when the key is absent: the reason the parameter deny needs its Null test.
    case "StringNotLike":
      return value === undefined || !wanted.some((w) => glob(w, value));
    case "Null":
      return wanted.includes(String(value === undefined));
    default:
      throw new Error(`the evaluator does not know ${operator}`);
  }
}
const applies = (s: Statement, action: string, resource: string, context: Context) =>
  list(s.Action).some((a) => glob(a.toLowerCase(), action.toLowerCase())) &&
  list(s.Resource).some((r) => glob(r, resource)) &&
  Object.entries(s.Condition ?? {}).every(([operator, keys]) => Object.entries(keys).every(([key, expected]) => conditionHolds(operator, key, expected, context)));
/** An explicit Deny wins; otherwise some Allow must apply. */
const allowed = (statements: Statement[], action: string, resource: string, context: Context = {}) =>
  !statements.some((s) => s.Effect === "Deny" && applies(s, action, resource, context)) && statements.some((s) => s.Effect === "Allow" && applies(s, action, resource, context));

/** Every statement of every inline policy of a node's role. */
const roleStatements = (stack: string, node: NodePlan): Statement[] =>
  world
    .ofType(T.rolePolicy)
    .filter((p) => p.inputs.role === iamName(stack, node.name))
    .flatMap((p) => (JSON.parse(p.inputs.policy as string) as { Statement: Statement[] }).Statement);

const pgNodes = (p: ClusterPlan) => p.nodes.filter((n) => n.roles.has("postgres"));
const keyArnOf = (stack: string, awsRegion: string) =>
  only(
    ofStack(T.key, stack).filter((k) => world.regionOf(k) === awsRegion),
    `${stack} key in ${awsRegion}`,
  ).state.arn as string;

describe("one repository per region, in that region", () => {
  it("creates one bucket per planned region, named <prefix>-<stack>-<awsRegion>, through that region's provider, under a BackupRepository", () => {
    assert.equal(ofStack(T.bucket, "test").length, plan.regions.length);
    assert.deepEqual(
      plan.backup.repositories.map((r) => r.bucket),
      ["pgha-test-ap-northeast-2", "pgha-test-ap-northeast-1", "pgha-test-ap-southeast-1"],
    );
    for (const repo of plan.backup.repositories) {
      const bucket = bucketOf("test", repo.awsRegion);
      assert.equal(bucket.inputs.bucket, repo.bucket);
      assert.equal(bucket.inputs.tags["pgha:stack"], "test");
      assert.equal(world.byUrn(bucket.parent)?.type, "pgha:aws:BackupRepository");
    }
  });

  it("gives each bucket its own KMS key in the same region, with rotation on, as its SSE-KMS default with an S3 Bucket Key", () => {
    const keys = ofStack(T.key, "test");
    assert.equal(keys.length, plan.regions.length);
    for (const repo of plan.backup.repositories) {
      const bucket = bucketOf("test", repo.awsRegion);
      const key = only(
        keys.filter((k) => world.regionOf(k) === repo.awsRegion),
        `key in ${repo.awsRegion}`,
      );
      assert.equal(key.inputs.enableKeyRotation, true);
      const encryption = configOf(T.encryption, bucket);
      assert.equal(world.regionOf(encryption), repo.awsRegion);
      const [rule] = encryption.inputs.rules;
      assert.equal(encryption.inputs.rules.length, 1);
      assert.deepEqual(rule.applyServerSideEncryptionByDefault, { sseAlgorithm: "aws:kms", kmsMasterKeyId: key.state.arn });
      assert.match(key.state.arn, new RegExp(`^arn:aws:kms:${repo.awsRegion}:`));
      assert.equal(rule.bucketKeyEnabled, true);
      assert.deepEqual(rule.blockedEncryptionTypes, ["SSE-C"]);
    }
  });

  it("versions every bucket, blocks all public access, enforces bucket-owner object ownership", () => {
    for (const repo of plan.backup.repositories) {
      const bucket = bucketOf("test", repo.awsRegion);
      assert.deepEqual(configOf(T.versioning, bucket).inputs.versioningConfiguration, { status: "Enabled" });
      const pab = configOf(T.publicAccess, bucket).inputs;
      assert.deepEqual([pab.blockPublicAcls, pab.blockPublicPolicy, pab.ignorePublicAcls, pab.restrictPublicBuckets], [true, true, true, true]);
      assert.deepEqual(configOf(T.ownership, bucket).inputs.rule, { objectOwnership: "BucketOwnerEnforced" });
      for (const type of [T.versioning, T.publicAccess, T.ownership, T.policy, T.lifecycle]) assert.equal(world.regionOf(configOf(type, bucket)), repo.awsRegion, type);
    }
  });

  it("denies every request to the bucket and its objects that does not arrive over TLS, and allows nothing", () => {
    for (const repo of plan.backup.repositories) {
      const bucket = bucketOf("test", repo.awsRegion);
      const doc = JSON.parse(configOf(T.policy, bucket).inputs.policy) as { Statement: Statement[] };
      assert.ok(
        doc.Statement.every((s) => s.Effect === "Deny"),
        "the bucket policy grants nothing",
      );
      const arn = `arn:aws:s3:::${repo.bucket}`;
      for (const [action, resource] of [
        ["s3:GetObject", `${arn}/test/archive/pg-multiregion/17-1/000000010000000000000001.zst`],
        ["s3:PutObject", `${arn}/test/backup/x`],
        ["s3:ListBucket", arn],
        ["s3:PutBucketPolicy", arn],
      ]) {
        const deny = doc.Statement.filter((s) => applies(s, action, resource, { "aws:SecureTransport": "false" }));
        assert.ok(deny.length > 0, `${action} ${resource} over plain HTTP is not denied`);
        for (const s of deny) assert.deepEqual(s.Condition, { Bool: { "aws:SecureTransport": "false" } });
        for (const s of deny) assert.equal(s.Principal, "*");
      }
    }
  });

  it(`expires noncurrent versions after retentionDays (${RETENTION_DAYS}), aborts incomplete uploads after a day, and never expires a current object`, () => {
    for (const repo of plan.backup.repositories) {
      const rules = configOf(T.lifecycle, bucketOf("test", repo.awsRegion)).inputs.rules as Record<string, any>[];
      for (const rule of rules) {
        assert.equal(rule.status, "Enabled");
        assert.deepEqual(rule.filter, { prefix: "test/" }, "the stack's repository prefix");
        assert.equal(rule.expiration?.days, undefined, `${rule.id} expires current objects`);
        assert.equal(rule.expiration?.date, undefined, `${rule.id} expires current objects`);
        assert.equal(rule.transitions, undefined);
      }
      const noncurrent = rules.filter((r) => r.noncurrentVersionExpiration);
      assert.deepEqual(
        noncurrent.map((r) => r.noncurrentVersionExpiration.noncurrentDays),
        [RETENTION_DAYS],
      );
      assert.equal(plan.backup.retentionDays, RETENTION_DAYS);
      const aborts = rules.filter((r) => r.abortIncompleteMultipartUpload);
      assert.deepEqual(
        aborts.map((r) => r.abortIncompleteMultipartUpload.daysAfterInitiation),
        [1],
      );
    }
  });

  it("applies each bucket's configuration one call after the other (S3 aborts concurrent changes)", () => {
    for (const repo of plan.backup.repositories) {
      const bucket = bucketOf("test", repo.awsRegion);
      const chain = [T.ownership, T.publicAccess, T.encryption, T.versioning, T.policy, T.lifecycle].map((type) => configOf(type, bucket));
      for (let i = 1; i < chain.length; i++) assert.ok(chain[i].dependencies.includes(chain[i - 1].urn), `${chain[i].name} does not wait for ${chain[i - 1].name}`);
    }
  });
});

describe("the database nodes' role reaches exactly the stack's prefix of every repository", () => {
  it("gives every postgres node one backup-repositories policy, and HAProxy-only nodes none and no S3 or KMS write at all", () => {
    for (const node of plan.nodes) {
      const policies = backupPolicyOf("test", node);
      assert.equal(policies.length, node.roles.has("postgres") ? 1 : 0, node.name);
      if (!node.roles.has("postgres")) {
        for (const s of roleStatements("test", node))
          for (const action of list(s.Action)) assert.ok(!/^s3:|^kms:(GenerateDataKey|Encrypt)/.test(action) || s.Effect === "Deny", `${node.name}: ${action}`);
      }
    }
    assert.ok(
      plan.nodes.some((n) => !n.roles.has("postgres")),
      "the layout has HAProxy-only nodes",
    );
  });

  it("allows what pgBackRest does on every region's bucket: list, get, put, delete under <stack>/, and the repository key through S3 of its region", () => {
    for (const node of pgNodes(plan)) {
      const statements = roleStatements("test", node);
      for (const repo of plan.backup.repositories) {
        const bucketArn = `arn:aws:s3:::${repo.bucket}`;
        for (const prefix of ["test", "test/", "test/archive/pg-multiregion/", "test/backup/pg-multiregion/backup.info"])
          assert.ok(allowed(statements, "s3:ListBucket", bucketArn, { "s3:prefix": prefix }), `${node.name}: list ${repo.bucket} ${prefix}`);
        for (const action of ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"])
          assert.ok(allowed(statements, action, `${bucketArn}/test/archive/pg-multiregion/17-1/0000000100000000/x.zst`), `${node.name}: ${action} on ${repo.bucket}`);
        const keyArn = keyArnOf("test", repo.awsRegion);
        for (const action of ["kms:GenerateDataKey", "kms:Decrypt"])
          assert.ok(
            allowed(statements, action, keyArn, { "kms:ViaService": `s3.${repo.awsRegion}.amazonaws.com`, "kms:EncryptionContext:aws:s3:arn": bucketArn }),
            `${node.name}: ${action} with ${repo.awsRegion}'s key (the parameter deny must not refuse S3's decryptions)`,
          );
      }
    }
  });

  it("refuses another prefix, another bucket, another key, the bucket's root listing, versions and bucket settings", () => {
    const otherKey = `arn:aws:kms:ap-northeast-2:${MOCK_ACCOUNT_ID}:key/00000000-0000-0000-0000-000000000000`;
    for (const node of pgNodes(plan)) {
      const statements = roleStatements("test", node);
      for (const repo of plan.backup.repositories) {
        const bucketArn = `arn:aws:s3:::${repo.bucket}`;
        for (const prefix of [undefined, "", "testing/", "test2/archive/", "eph/", "other/test/"])
          assert.ok(!allowed(statements, "s3:ListBucket", bucketArn, { "s3:prefix": prefix }), `${node.name}: list ${repo.bucket} prefix ${String(prefix)}`);
        for (const key of ["testing/x", "eph/archive/x", "x/test/archive/x", "test"])
          for (const action of ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"])
            assert.ok(!allowed(statements, action, `${bucketArn}/${key}`), `${node.name}: ${action} ${key}`);
        for (const action of ["s3:DeleteObjectVersion", "s3:GetObjectVersion", "s3:PutBucketPolicy", "s3:PutLifecycleConfiguration", "s3:PutBucketVersioning", "s3:DeleteBucket"])
          assert.ok(!allowed(statements, action, action.includes("Object") ? `${bucketArn}/test/x` : bucketArn), `${node.name}: ${action}`);
        const keyArn = keyArnOf("test", repo.awsRegion);
        assert.ok(!allowed(statements, "kms:Decrypt", keyArn, {}), `${node.name}: a direct Decrypt, not through S3`);
        assert.ok(!allowed(statements, "kms:Decrypt", keyArn, { "kms:ViaService": "s3.us-east-1.amazonaws.com" }), `${node.name}: through S3 of another region`);
        assert.ok(!allowed(statements, "kms:Encrypt", keyArn, { "kms:ViaService": `s3.${repo.awsRegion}.amazonaws.com` }));
        assert.ok(!allowed(statements, "kms:ScheduleKeyDeletion", keyArn, { "kms:ViaService": `s3.${repo.awsRegion}.amazonaws.com` }));
      }
      for (const other of ["pgha-eph-ap-northeast-2", "pgha-prod-ap-northeast-2", "someone-elses-bucket"]) {
        assert.ok(!allowed(statements, "s3:ListBucket", `arn:aws:s3:::${other}`, { "s3:prefix": "test/" }), other);
        assert.ok(!allowed(statements, "s3:GetObject", `arn:aws:s3:::${other}/test/x`), other);
      }
      assert.ok(!allowed(statements, "kms:Decrypt", otherKey, { "kms:ViaService": "s3.ap-northeast-2.amazonaws.com" }), "a key that is no repository's");
      assert.ok(!allowed(statements, "kms:Decrypt", keyArnOf("eph", "ap-northeast-2"), { "kms:ViaService": "s3.ap-northeast-2.amazonaws.com" }), "another stack's key");
    }
  });

  it("still refuses another node's SecureString: the parameter deny applies wherever a decryption names a parameter", () => {
    const [a, b] = pgNodes(plan);
    const statements = roleStatements("test", a);
    const own = `arn:aws:ssm:${a.awsRegion}:${MOCK_ACCOUNT_ID}:parameter${a.parameterPath}/passwords/superuser`;
    const theirs = `arn:aws:ssm:${b.awsRegion}:${MOCK_ACCOUNT_ID}:parameter${b.parameterPath}/passwords/superuser`;
    const anyKey = `arn:aws:kms:${a.awsRegion}:${MOCK_ACCOUNT_ID}:key/aws-ssm`;
    assert.ok(allowed(statements, "kms:Decrypt", anyKey, { "kms:ViaService": `ssm.${a.awsRegion}.amazonaws.com`, "kms:EncryptionContext:PARAMETER_ARN": own }));
    // The deny must hold on its own, as the aws/ssm key policy grants every principal of the account.
    const deny = statements.filter((s) => s.Effect === "Deny");
    for (const via of [a.awsRegion, b.awsRegion])
      assert.ok(
        deny.some((s) => applies(s, "kms:Decrypt", anyKey, { "kms:ViaService": `ssm.${via}.amazonaws.com`, "kms:EncryptionContext:PARAMETER_ARN": theirs })),
        `${a.name} decrypting ${b.name}'s parameter via ${via}`,
      );
    // Control: without the Null test the deny would refuse S3's decryption of a repository object.
    const doc = nodeParameterPolicy({ partition: "aws", accountId: MOCK_ACCOUNT_ID, awsRegion: a.awsRegion, parameterPath: a.parameterPath }) as { Statement: Statement[] };
    const bare = doc.Statement.map((s) => (s.Effect === "Deny" ? { ...s, Condition: { StringNotLike: s.Condition!.StringNotLike } } : s));
    const s3Decrypt = { "kms:ViaService": "s3.ap-northeast-2.amazonaws.com", "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::pgha-test-ap-northeast-2" };
    assert.ok(bare.some((s) => s.Effect === "Deny" && applies(s, "kms:Decrypt", anyKey, s3Decrypt)));
    assert.ok(!doc.Statement.some((s) => s.Effect === "Deny" && applies(s, "kms:Decrypt", anyKey, s3Decrypt)));
  });

  it("launches every postgres node only after every region's repository is complete; HAProxy nodes do not wait for them", () => {
    const repositoryResources = [T.bucket, T.key, T.encryption, T.versioning, T.publicAccess, T.ownership, T.policy, T.lifecycle].flatMap((type) => ofStack(type, "test"));
    assert.equal(repositoryResources.length, 8 * plan.regions.length);
    for (const instance of ofStack(T.instance, "test")) {
      const node = plan.nodes.find((n) => n.privateIp === instance.inputs.privateIp)!;
      const missing = repositoryResources.filter((r) => !instance.dependencies.includes(r.urn)).map((r) => r.name);
      if (node.roles.has("postgres")) assert.deepEqual(missing, [], `${node.name} may boot before these exist`);
      else assert.equal(missing.length, repositoryResources.length, `${node.name} waits for the repositories`);
    }
  });

  it("the policy function itself grants per repository and refuses to grant a bucket's root", () => {
    const doc = backupRepositoriesPolicy("aws-cn", [
      { index: 2, bucket: "b-x-cn-north-1", awsRegion: "cn-north-1", path: "/x", kmsKeyArn: "arn:aws-cn:kms:cn-north-1:1:key/k" },
    ]) as {
      Statement: Statement[];
    };
    assert.deepEqual(
      doc.Statement.map((s) => s.Sid),
      ["ListRepo2", "ReadWriteRepo2", "EncryptRepo2"],
    );
    assert.ok(allowed(doc.Statement, "s3:GetObject", "arn:aws-cn:s3:::b-x-cn-north-1/x/y"));
    assert.ok(!allowed(doc.Statement, "s3:GetObject", "arn:aws:s3:::b-x-cn-north-1/x/y"), "another partition");
    assert.throws(() => backupRepositoriesPolicy("aws", []), /no repositories/);
    for (const path of ["/", "", "x", "/x/y", "/x*", "/a?b", "/X"]) assert.throws(() => repositoryKeyPrefix({ path }), /never the bucket's root/, JSON.stringify(path));
    assert.equal(repositoryKeyPrefix({ path: "/pr-a-1b2c3d" }), "pr-a-1b2c3d");
  });
});

describe("protect and forceDestroy follow backup.protectRepositories", () => {
  it("kept stacks (the default): bucket and key protected, no forceDestroy, the key's deletion window 30 days", () => {
    assert.equal(plan.backup.protectRepositories, true);
    for (const bucket of ofStack(T.bucket, "test")) {
      assert.equal(bucket.protect, true, bucket.name);
      assert.equal(bucket.inputs.forceDestroy, false, bucket.name);
    }
    for (const key of ofStack(T.key, "test")) {
      assert.equal(key.protect, true, key.name);
      assert.equal(key.inputs.deletionWindowInDays, 30);
    }
    assert.equal(KEY_DELETION_WINDOW_DAYS.protected, 30);
  });

  it("protectRepositories false: nothing protected, forceDestroy on, the key's deletion window 7 days", () => {
    const buckets = ofStack(T.bucket, "eph");
    assert.deepEqual(buckets.map((b) => b.inputs.bucket).sort(), ["pgha-eph-ap-northeast-1", "pgha-eph-ap-northeast-2", "pgha-eph-ap-southeast-1"]);
    for (const bucket of buckets) {
      assert.equal(bucket.protect, false, bucket.name);
      assert.equal(bucket.inputs.forceDestroy, true, bucket.name);
    }
    const keys = ofStack(T.key, "eph");
    assert.equal(keys.length, 3);
    for (const key of keys) {
      assert.equal(key.protect, false, key.name);
      assert.equal(key.inputs.deletionWindowInDays, 7);
    }
    const repositoryTypes = [T.encryption, T.versioning, T.publicAccess, T.ownership, T.policy, T.lifecycle];
    for (const r of repositoryTypes.flatMap((type) => ofStack(type, "eph"))) assert.equal(r.protect, false, r.name);
  });

  it("an etcd-only witness gets no repository access, though its region has a repository", () => {
    const witness = ephemeralPlan.nodes.find((n) => n.name === "witness-1")!;
    assert.deepEqual(backupPolicyOf("eph", witness), []);
    assert.equal(bucketOf("eph", witness.awsRegion).inputs.bucket, "pgha-eph-ap-southeast-1");
    for (const node of pgNodes(ephemeralPlan)) {
      const doc = JSON.parse(only(backupPolicyOf("eph", node), node.name).inputs.policy) as { Statement: Statement[] };
      assert.ok(allowed(doc.Statement, "s3:PutObject", "arn:aws:s3:::pgha-eph-ap-southeast-1/eph/archive/x"), `${node.name} archives to Singapore too`);
      assert.ok(!allowed(doc.Statement, "s3:PutObject", "arn:aws:s3:::pgha-test-ap-southeast-1/eph/archive/x"), `${node.name}: the test stack's bucket`);
    }
  });
});

describe("validation and outputs", () => {
  it("refuses a repository outside the stack's own path, a bad bucket name, or no retention", () => {
    const [repo] = plan.backup.repositories;
    const backup = { retentionDays: 14, protectRepositories: true };
    validateBackupRepositoryArgs({ repository: repo, backup, stack: "test" });
    assert.throws(() => {
      validateBackupRepositoryArgs({ repository: repo, backup, stack: "prod" });
    }, /not the stack's own \/prod/);
    assert.throws(() => {
      validateBackupRepositoryArgs({ repository: { ...repo, bucket: "Bad_Bucket" }, backup, stack: "test" });
    }, /not a valid S3 bucket name/);
    assert.throws(() => {
      validateBackupRepositoryArgs({ repository: { ...repo, path: "/" }, backup, stack: "test" });
    }, /never the bucket's root/);
    assert.throws(() => {
      validateBackupRepositoryArgs({ repository: repo, backup: { ...backup, retentionDays: 0 }, stack: "test" });
    }, /retentionDays/);
  });

  it("outputs each region's bucket, ARN and key, as created", async () => {
    const outputs = await valueOf(cluster.backupRepositories);
    assert.deepEqual(Object.keys(outputs), ["seoul", "tokyo", "singapore"]);
    for (const repo of plan.backup.repositories) {
      const bucket = bucketOf("test", repo.awsRegion);
      assert.deepEqual(outputs[repo.region], {
        index: repo.index,
        awsRegion: repo.awsRegion,
        bucket: repo.bucket,
        bucketArn: bucket.state.arn,
        kmsKeyArn: keyArnOf("test", repo.awsRegion),
        path: "/test",
      });
    }
  });
});
