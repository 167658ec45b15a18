/**
 * Every rule of the policy pack (policy/policies.ts), called directly the way
 * the analyzer calls it — `validateResource` with a resource's inputs,
 * `validateStack` with the stack's resources — each with resources that
 * pass and resources that must fail.
 */
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { describe, it } from "node:test";
import {
  DATABASE_PORTS,
  ebsEncrypted,
  ephemeralStackDestroyable,
  imdsv2Required,
  isWorldCidr,
  deniesInsecureTransport,
  nameCarriesStack,
  noElasticIpOnDatabaseNodes,
  noForceDestroyBuckets,
  noGeneratedSecretsInUserData,
  noPublicDatabaseIngress,
  noPublicIpOnDatabaseNodes,
  noSecretsInUserData,
  peeringWithinStack,
  policies,
  policyPackArgs,
  s3BucketsBlockPublicAccess,
  s3BucketsKmsEncrypted,
  s3BucketsTlsOnly,
  s3BucketsVersioned,
  stackOfUrn,
  stackScopedNames,
  TYPES,
} from "../../policy/policies";
import { stackResources, TEST_STACK, urnFor, validateResource, validateStack } from "../../policy/testing/harness";

const gzipBase64 = (text: string) => gzipSync(Buffer.from(text, "utf8")).toString("base64");
const GOOD_METADATA = { httpEndpoint: "enabled", httpTokens: "required", httpPutResponseHopLimit: 1 };
const GOOD_ROOT = { volumeType: "gp3", volumeSize: 10, encrypted: true };
const dbTags = { "pgha:role": "etcd+postgres", "pgha:stack": TEST_STACK };
const haproxyTags = { "pgha:role": "haproxy", "pgha:stack": TEST_STACK };
const instance = (props: Record<string, unknown> = {}) => ({
  type: TYPES.instance,
  props: { instanceType: "t3.medium", associatePublicIpAddress: false, metadataOptions: GOOD_METADATA, rootBlockDevice: GOOD_ROOT, tags: dbTags, ...props },
});

describe("the pack", () => {
  it("has unique names, a description and a known enforcement level for every policy; all but the ephemeral one mandatory", () => {
    const names = policies.map((p) => p.name);
    assert.equal(new Set(names).size, names.length);
    assert.ok(!names.includes("all"), '"all" is reserved by @pulumi/policy');
    for (const policy of policies) {
      assert.match(policy.name, /^[a-z0-9-]+$/);
      assert.ok(policy.description.length > 20, policy.name);
      const expected = policy.name === "ephemeral-stack-destroyable" ? "disabled" : "mandatory";
      assert.equal(policy.enforcementLevel, expected, policy.name);
      assert.ok(!policy.configSchema?.properties.enforcementLevel, "enforcementLevel may not be a config property");
    }
    assert.equal(policyPackArgs.enforcementLevel, "mandatory");
    assert.equal(policyPackArgs.policies, policies);
  });
});

describe("no-public-database-ingress", () => {
  const rule = (props: Record<string, unknown>) => ({ type: TYPES.securityGroupIngressRule, props: { ipProtocol: "tcp", ...props } });

  it("passes node /32s, application CIDRs, and 0.0.0.0/0 on a port that is not a database port", async () => {
    assert.deepEqual(await validateResource(noPublicDatabaseIngress, rule({ fromPort: 5432, toPort: 5432, cidrIpv4: "10.2.0.10/32" })), []);
    assert.deepEqual(await validateResource(noPublicDatabaseIngress, rule({ fromPort: 5000, toPort: 5000, cidrIpv4: "10.1.0.0/16" })), []);
    assert.deepEqual(await validateResource(noPublicDatabaseIngress, rule({ fromPort: 443, toPort: 443, cidrIpv4: "0.0.0.0/0" })), []);
    // Egress to the world is how nodes reach apt and SSM; the rule is about ingress.
    const egress = { type: TYPES.securityGroupRule, props: { type: "egress", protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: ["0.0.0.0/0"] } };
    assert.deepEqual(await validateResource(noPublicDatabaseIngress, egress), []);
  });

  for (const port of DATABASE_PORTS) {
    it(`fails 0.0.0.0/0 to ${port}`, async () => {
      const violations = await validateResource(noPublicDatabaseIngress, rule({ fromPort: port, toPort: port, cidrIpv4: "0.0.0.0/0" }));
      assert.equal(violations.length, 1);
      assert.match(violations[0], new RegExp(`0\\.0\\.0\\.0/0 reaches database port\\(s\\) ${port}`));
    });
  }

  it("fails ::/0, all-protocol rules, port ranges, legacy rules and inline security-group ingress", async () => {
    assert.equal((await validateResource(noPublicDatabaseIngress, rule({ fromPort: 2379, toPort: 2380, cidrIpv6: "::/0" }))).length, 1);
    assert.equal((await validateResource(noPublicDatabaseIngress, { type: TYPES.securityGroupIngressRule, props: { ipProtocol: "-1", cidrIpv4: "0.0.0.0/0" } })).length, 1);
    assert.equal((await validateResource(noPublicDatabaseIngress, rule({ fromPort: 1024, toPort: 65535, cidrIpv4: "0.0.0.0/0" }))).length, 1);
    const legacy = { type: TYPES.securityGroupRule, props: { type: "ingress", protocol: "tcp", fromPort: 8008, toPort: 8008, cidrBlocks: ["10.0.0.0/8", "0.0.0.0/0"] } };
    assert.equal((await validateResource(noPublicDatabaseIngress, legacy)).length, 1);
    const inline = { type: TYPES.securityGroup, props: { ingress: [{ protocol: "tcp", fromPort: 5432, toPort: 5432, cidrBlocks: ["0.0.0.0/0"] }] } };
    assert.equal((await validateResource(noPublicDatabaseIngress, inline)).length, 1);
    const defaultGroup = { type: TYPES.defaultSecurityGroup, props: { ingress: [{ protocol: "6", fromPort: 7000, toPort: 7000, ipv6CidrBlocks: ["::/0"] }] } };
    assert.equal((await validateResource(noPublicDatabaseIngress, defaultGroup)).length, 1);
  });

  it("takes the port list from the policy config (HAProxy listeners moved)", async () => {
    const moved = rule({ fromPort: 6000, toPort: 6000, cidrIpv4: "0.0.0.0/0" });
    assert.deepEqual(await validateResource(noPublicDatabaseIngress, moved), []);
    assert.equal((await validateResource(noPublicDatabaseIngress, moved, { ports: [5432, 6000] })).length, 1);
    assert.equal(isWorldCidr("0.0.0.0/0"), true);
    assert.equal(isWorldCidr("10.0.0.0/8"), false);
  });
});

describe("imdsv2-required", () => {
  it("passes required tokens with hop limit 1, and a disabled metadata endpoint", async () => {
    assert.deepEqual(await validateResource(imdsv2Required, instance()), []);
    assert.deepEqual(await validateResource(imdsv2Required, instance({ metadataOptions: { httpEndpoint: "disabled" } })), []);
    assert.deepEqual(await validateResource(imdsv2Required, { type: TYPES.launchTemplate, props: { metadataOptions: GOOD_METADATA } }), []);
  });

  it("fails optional tokens, missing metadata options and a hop limit above 1", async () => {
    assert.match((await validateResource(imdsv2Required, instance({ metadataOptions: { httpTokens: "optional" } })))[0], /httpTokens is "optional"/);
    assert.match((await validateResource(imdsv2Required, instance({ metadataOptions: undefined })))[0], /metadataOptions is not set/);
    assert.match((await validateResource(imdsv2Required, instance({ metadataOptions: { ...GOOD_METADATA, httpPutResponseHopLimit: 2 } })))[0], /HopLimit is 2/);
    assert.equal((await validateResource(imdsv2Required, { type: TYPES.launchTemplate, props: {} })).length, 1);
  });
});

describe("ebs-encrypted", () => {
  it("passes encrypted volumes, root and extra devices, and launch template mappings", async () => {
    assert.deepEqual(await validateResource(ebsEncrypted, { type: TYPES.volume, props: { size: 10, encrypted: true } }), []);
    assert.deepEqual(await validateResource(ebsEncrypted, instance({ ebsBlockDevices: [{ deviceName: "/dev/sdf", encrypted: true }] })), []);
    assert.deepEqual(
      await validateResource(ebsEncrypted, { type: TYPES.launchTemplate, props: { blockDeviceMappings: [{ deviceName: "/dev/sda1", ebs: { encrypted: "true" } }] } }),
      [],
    );
  });

  it("fails an unencrypted volume, a root volume left to the default, an unencrypted extra device and mapping", async () => {
    assert.match((await validateResource(ebsEncrypted, { type: TYPES.volume, props: { size: 10 } }))[0], /volume subject: encrypted is undefined/);
    assert.match((await validateResource(ebsEncrypted, instance({ rootBlockDevice: { volumeSize: 10 } })))[0], /root volume is not encrypted/);
    assert.match((await validateResource(ebsEncrypted, instance({ ebsBlockDevices: [{ deviceName: "/dev/sdf", encrypted: false }] })))[0], /\/dev\/sdf is not encrypted/);
    assert.equal((await validateResource(ebsEncrypted, { type: TYPES.launchTemplate, props: { blockDeviceMappings: [{ ebs: { encrypted: "false" } }] } })).length, 1);
  });
});

describe("no-public-ip-on-database-nodes", () => {
  it("passes database nodes with associatePublicIpAddress false, and HAProxy-only nodes", async () => {
    assert.deepEqual(await validateResource(noPublicIpOnDatabaseNodes, instance()), []);
    assert.deepEqual(await validateResource(noPublicIpOnDatabaseNodes, instance({ tags: haproxyTags, associatePublicIpAddress: undefined })), []);
  });

  it("fails a public IP, a database node that leaves it to the subnet, and an untagged instance", async () => {
    assert.match((await validateResource(noPublicIpOnDatabaseNodes, instance({ associatePublicIpAddress: true })))[0], /must not get a public IP/);
    assert.match((await validateResource(noPublicIpOnDatabaseNodes, instance({ associatePublicIpAddress: undefined })))[0], /the subnet decides/);
    assert.equal((await validateResource(noPublicIpOnDatabaseNodes, instance({ tags: {}, associatePublicIpAddress: true }))).length, 1);
  });
});

describe("no-elastic-ip-on-database-nodes", () => {
  const db = { ...instance(), name: "db", urn: urnFor(TYPES.instance, "db") };
  const proxy = { ...instance({ tags: haproxyTags }), name: "proxy", urn: urnFor(TYPES.instance, "proxy") };

  it("passes a NAT gateway's EIP and an EIP on an HAProxy node", async () => {
    const resources = stackResources([
      db,
      proxy,
      { type: TYPES.eip, name: "nat", props: { domain: "vpc" } },
      { type: TYPES.eip, name: "proxy-eip", props: { domain: "vpc" }, propertyDependencies: { instance: [proxy.urn] } },
    ]);
    assert.deepEqual(await validateStack(noElasticIpOnDatabaseNodes, resources), []);
  });

  it("fails an EIP or an EIP association on a database node", async () => {
    const resources = stackResources([
      db,
      { type: TYPES.eip, name: "db-eip", props: { domain: "vpc" }, propertyDependencies: { instance: [db.urn] } },
      { type: TYPES.eipAssociation, name: "db-assoc", props: {}, propertyDependencies: { instanceId: [db.urn] } },
    ]);
    const violations = await validateStack(noElasticIpOnDatabaseNodes, resources);
    assert.deepEqual(
      violations.map((v) => v.urn),
      [urnFor(TYPES.eip, "db-eip"), urnFor(TYPES.eipAssociation, "db-assoc")],
    );
    assert.match(violations[0].message, /database node db/);
  });
});

describe("no-secrets-in-user-data", () => {
  const clean = [
    "#cloud-config",
    "users:",
    "  - name: postgres",
    "    lock_passwd: true",
    "write_files:",
    "  - path: /etc/patroni/patroni.yml",
    "    content: |",
    "      postgresql:",
    "        parameters:",
    "          password_encryption: scram-sha-256",
    "        authentication:",
    "          superuser:",
    "            password: ${PATRONI_SUPERUSER_PASSWORD}",
    "  - path: /etc/pgha/secrets.json",
    '    content: \'{"variables":[{"name":"PATRONI_SUPERUSER_PASSWORD","parameter":"/pgha/dev/pg-seoul-1/passwords/superuser"}]}\'',
    "          ssl_key_file: /etc/pgha/tls/postgres-server.key",
  ].join("\n");

  it("passes references to secrets (variables, SSM paths, key file paths), plain or gzip+base64", async () => {
    assert.deepEqual(await validateResource(noSecretsInUserData, instance({ userData: clean })), []);
    assert.deepEqual(await validateResource(noSecretsInUserData, instance({ userDataBase64: gzipBase64(clean) })), []);
    assert.deepEqual(await validateResource(noSecretsInUserData, { type: TYPES.launchTemplate, props: { userData: Buffer.from(clean).toString("base64") } }), []);
  });

  const leaks: [string, string, RegExp][] = [
    ["a PEM private key", "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI...\n-----END EC PRIVATE KEY-----", /PEM private key/],
    ["a literal Patroni password", "        superuser:\n          password: Hunter2Hunter2", /literal value for password/],
    ["a password in an environment file", "PATRONI_REPLICATION_PASSWORD=s3cr3tvalue", /literal value for PATRONI_REPLICATION_PASSWORD/],
    ["a credential URL", "DATABASE_URL: postgres://app:pw123456@10.1.0.20:5000/app", /URL with a password/],
    ["an AWS access key", "export KEY=AKIAIOSFODNN7EXAMPLE", /AWS access key id/],
    ["an AWS secret key", "aws_secret_access_key = wJalrXUtnFEMIK7MDENGbPxRfiCY", /literal value for aws_secret_access_key/],
  ];
  for (const [what, leak, pattern] of leaks) {
    it(`fails ${what} (gzip+base64 user-data as the project sends it)`, async () => {
      const violations = await validateResource(noSecretsInUserData, instance({ userDataBase64: gzipBase64(`${clean}\n${leak}\n`) }));
      assert.equal(violations.length, 1, violations.join("\n"));
      assert.match(violations[0], pattern);
      assert.match(violations[0], /^subject userDataBase64, line \d+/);
    });
  }

  it("fails a secret in a launch template's user-data", async () => {
    const violations = await validateResource(noSecretsInUserData, { type: TYPES.launchTemplate, props: { userData: Buffer.from("password: abcdefgh12").toString("base64") } });
    assert.equal(violations.length, 1);
  });
});

describe("no-generated-secrets-in-user-data", () => {
  const password = "Pw9f8e7d6c5b4a39281706f5e4d3c2b1";
  const pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBx9xKq3bL0w4mZp6Tn1vS8rQy2uW5aJ7dE3fH9kLmNo\n-----END EC PRIVATE KEY-----\n";
  const generated = [
    { type: TYPES.randomPassword, name: "superuser", props: { length: 32, result: password } },
    { type: TYPES.tlsPrivateKey, name: "ca-key", props: { algorithm: "ECDSA", privateKeyPem: pem } },
    { type: TYPES.ssmParameter, name: "param", props: { name: "/pgha/x/y", type: "SecureString", value: "ssm-secure-value-123" } },
  ];

  it("passes user-data that only names the parameters", async () => {
    const resources = stackResources([...generated, instance({ userDataBase64: gzipBase64("parameter: /pgha/x/y\n") })]);
    assert.deepEqual(await validateStack(noGeneratedSecretsInUserData, resources), []);
  });

  it("fails a generated password, a re-indented private key body, a SecureString value, or a base64'd password", async () => {
    const indentedPem = pem
      .split("\n")
      .map((line) => `      ${line}`)
      .join("\n");
    for (const [what, text, source] of [
      ["password", `PGPASSWORD=${password}`, "superuser"],
      ["private key", `content: |\n${indentedPem}`, "ca-key"],
      ["SecureString", "value: ssm-secure-value-123", "param"],
      ["base64 password", `encoded: ${Buffer.from(password).toString("base64")}`, "superuser"],
    ]) {
      const resources = stackResources([...generated, { ...instance({ userDataBase64: gzipBase64(text) }), name: "node" }]);
      const violations = await validateStack(noGeneratedSecretsInUserData, resources);
      assert.equal(violations.length, 1, `${what}: ${JSON.stringify(violations)}`);
      assert.match(violations[0].message, new RegExp(`Instance node userDataBase64 contains the value of .* ${source}\\.`));
      assert.ok(!violations[0].message.includes(password), "the report must not repeat the secret");
    }
  });
});

describe("peering-within-stack", () => {
  const vpcA = { type: TYPES.vpc, name: "vpc-a", urn: urnFor(TYPES.vpc, "vpc-a"), props: { cidrBlock: "10.1.0.0/16" } };
  const vpcB = { type: TYPES.vpc, name: "vpc-b", urn: urnFor(TYPES.vpc, "vpc-b"), props: { cidrBlock: "10.2.0.0/16" } };
  const peeringUrn = urnFor(TYPES.peering, "a-b");
  const peering = { type: TYPES.peering, name: "a-b", urn: peeringUrn, props: {}, propertyDependencies: { vpcId: [vpcA.urn], peerVpcId: [vpcB.urn] } };
  const ownSide = [
    { type: TYPES.peeringAccepter, name: "a-b-accept", props: { autoAccept: true }, propertyDependencies: { vpcPeeringConnectionId: [peeringUrn] } },
    { type: TYPES.peeringOptions, name: "a-b-dns", props: {}, propertyDependencies: { vpcPeeringConnectionId: [peeringUrn] } },
    { type: TYPES.route, name: "a-b-route", props: { destinationCidrBlock: "10.2.0.0/16" }, propertyDependencies: { vpcPeeringConnectionId: [peeringUrn] } },
    { type: TYPES.route, name: "nat-route", props: { destinationCidrBlock: "0.0.0.0/0", natGatewayId: "nat-1" } },
  ];

  it("passes a peering between two VPCs of the stack with its accepter, options and routes (values still unknown, as in preview)", async () => {
    assert.deepEqual(await validateStack(peeringWithinStack, stackResources([vpcA, vpcB, peering, ...ownSide])), []);
  });

  it("passes literal ids when they are the ids of the stack's own resources", async () => {
    const known = stackResources([
      { ...vpcA, props: { ...vpcA.props, id: "vpc-0aaa" } },
      { ...vpcB, props: { ...vpcB.props, id: "vpc-0bbb" } },
      { type: TYPES.peering, name: "p", props: { id: "pcx-0123", vpcId: "vpc-0aaa", peerVpcId: "vpc-0bbb" } },
      { type: TYPES.routeTable, name: "rt", props: { routes: [{ cidrBlock: "10.2.0.0/16", vpcPeeringConnectionId: "pcx-0123" }] } },
    ]);
    assert.deepEqual(await validateStack(peeringWithinStack, known), []);
  });

  it("fails a peering to a VPC outside the stack", async () => {
    const foreign = { ...peering, props: { peerVpcId: "vpc-0f00ba4" }, propertyDependencies: { vpcId: [vpcA.urn] } };
    const violations = await validateStack(peeringWithinStack, stackResources([vpcA, vpcB, foreign]));
    assert.deepEqual(
      violations.map((v) => v.message),
      ["VpcPeeringConnection a-b: peerVpcId is not a VPC of this stack."],
    );
  });

  it("fails accepting, configuring or routing through a peering connection the stack did not create", async () => {
    const outsider = "pcx-0somebodyelse";
    const violations = await validateStack(
      peeringWithinStack,
      stackResources([
        vpcA,
        { type: TYPES.peeringAccepter, name: "accept-theirs", props: { vpcPeeringConnectionId: outsider, autoAccept: true } },
        { type: TYPES.peeringOptions, name: "dns-theirs", props: { vpcPeeringConnectionId: outsider } },
        { type: TYPES.route, name: "route-theirs", props: { destinationCidrBlock: "172.16.0.0/12", vpcPeeringConnectionId: outsider } },
        { type: TYPES.routeTable, name: "rt-theirs", props: { routes: [{ cidrBlock: "172.16.0.0/12", vpcPeeringConnectionId: outsider }] } },
      ]),
    );
    assert.equal(violations.length, 4, JSON.stringify(violations));
    assert.match(violations[0].message, /accept-theirs: vpcPeeringConnectionId is not a peering connection of this stack/);
  });
});

describe("stack-scoped-names", () => {
  const named = (type: string, name: string, stack = TEST_STACK) => ({ type, name: "r", urn: urnFor(type, "r", stack), props: { name } });

  it("passes IAM and SSM names that carry the stack name, and auto-named resources", async () => {
    assert.deepEqual(await validateResource(stackScopedNames, named(TYPES.iamRole, `pgha-${TEST_STACK}-pg-seoul-1`)), []);
    assert.deepEqual(await validateResource(stackScopedNames, named(TYPES.iamInstanceProfile, `pgha-${TEST_STACK}-haproxy-1`)), []);
    assert.deepEqual(await validateResource(stackScopedNames, named(TYPES.ssmParameter, `/pgha/${TEST_STACK}/pg-seoul-1/tls/ca.crt`)), []);
    assert.deepEqual(await validateResource(stackScopedNames, { type: TYPES.iamRole, props: {} }), []);
    assert.deepEqual(await validateResource(stackScopedNames, named(TYPES.vpc, "anything")), []);
  });

  it("fails names another stack would also use, and a stack name that is only a substring", async () => {
    assert.match((await validateResource(stackScopedNames, named(TYPES.iamRole, "pgha-pg-seoul-1")))[0], /does not contain the stack name "pr-test-1a2b3c"/);
    assert.equal((await validateResource(stackScopedNames, named(TYPES.ssmParameter, "/pgha/shared/pg-seoul-1/tls/ca.crt"))).length, 1);
    assert.equal((await validateResource(stackScopedNames, named(TYPES.iamPolicy, "pgha-dev-read", "dev")))[0], undefined);
    assert.equal((await validateResource(stackScopedNames, named(TYPES.iamPolicy, "pgha-devx-read", "dev"))).length, 1);
    assert.equal(stackOfUrn(urnFor(TYPES.iamRole, "r", "dev")), "dev");
    assert.equal(nameCarriesStack("/pgha/dev/x", "dev"), true);
    assert.equal(nameCarriesStack("/pgha/development/x", "dev"), false);
  });
});

describe("ephemeral-stack-destroyable", () => {
  it("passes small, unprotected resources and force-destroyed buckets", async () => {
    assert.deepEqual(await validateResource(ephemeralStackDestroyable, instance()), []);
    assert.deepEqual(await validateResource(ephemeralStackDestroyable, { type: TYPES.volume, props: { size: 10, encrypted: true } }), []);
    assert.deepEqual(await validateResource(ephemeralStackDestroyable, { type: TYPES.bucket, props: { bucket: "b", forceDestroy: true } }), []);
  });

  it("fails a bucket without forceDestroy (destroy would stop at it once it holds objects), of either bucket type", async () => {
    for (const type of [TYPES.bucket, TYPES.bucketV2])
      for (const forceDestroy of [false, undefined])
        assert.match((await validateResource(ephemeralStackDestroyable, { type, props: { bucket: "b", forceDestroy } }))[0], /bucket subject: forceDestroy is not true/);
  });

  it("fails protect, termination protection, a large instance type and large volumes", async () => {
    assert.match((await validateResource(ephemeralStackDestroyable, { type: TYPES.volume, props: { size: 10 }, opts: { protect: true } }))[0], /protected/);
    assert.match((await validateResource(ephemeralStackDestroyable, instance({ disableApiTermination: true })))[0], /termination protection/);
    assert.match((await validateResource(ephemeralStackDestroyable, instance({ instanceType: "m6i.large" })))[0], /m6i\.large is not one of the ephemeral instance types/);
    assert.match((await validateResource(ephemeralStackDestroyable, { type: TYPES.volume, props: { size: 100 } }))[0], /100 GiB exceeds 20 GiB/);
    assert.match((await validateResource(ephemeralStackDestroyable, instance({ rootBlockDevice: { ...GOOD_ROOT, volumeSize: 50 } })))[0], /root volume of 50 GiB/);
  });

  it("takes its limits from the policy config", async () => {
    assert.deepEqual(await validateResource(ephemeralStackDestroyable, instance({ instanceType: "m6i.large" }), { allowedInstanceTypes: ["m6i.large"] }), []);
  });
});

// ---------------------------------------------------------------------------
// S3 buckets: versioning, SSE-KMS, public access block, TLS only, forceDestroy
// ---------------------------------------------------------------------------

const BUCKET = "pgha-pr-test-1a2b3c-ap-northeast-2";
const bucketUrn = urnFor(TYPES.bucket, "repo");
/** A bucket with every configuration resource as components/backup-repository.ts creates them (bucket property from the bucket). */
function bucketStack(overrides: Partial<Record<"versioning" | "encryption" | "publicAccess" | "policy", Record<string, unknown> | null>> = {}, bucketType: string = TYPES.bucket) {
  const fromBucket = { bucket: [bucketUrn] };
  const tlsOnly = {
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "DenyInsecureTransport",
        Effect: "Deny",
        Principal: "*",
        Action: "s3:*",
        Resource: [`arn:aws:s3:::${BUCKET}`, `arn:aws:s3:::${BUCKET}/*`],
        Condition: { Bool: { "aws:SecureTransport": "false" } },
      },
    ],
  };
  const parts: Record<string, { type: string; props: Record<string, unknown> }> = {
    versioning: { type: TYPES.bucketVersioning, props: { versioningConfiguration: { status: "Enabled" } } },
    encryption: {
      type: TYPES.bucketEncryption,
      props: { rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "aws:kms", kmsMasterKeyId: "arn:aws:kms:ap-northeast-2:1:key/k" }, bucketKeyEnabled: true }] },
    },
    publicAccess: { type: TYPES.bucketPublicAccessBlock, props: { blockPublicAcls: true, blockPublicPolicy: true, ignorePublicAcls: true, restrictPublicBuckets: true } },
    policy: { type: TYPES.bucketPolicy, props: { policy: JSON.stringify(tlsOnly) } },
  };
  const specs = Object.entries(parts)
    .filter(([key]) => overrides[key as keyof typeof overrides] !== null)
    .map(([key, part]) => ({ ...part, name: `repo-${key}`, props: { ...part.props, ...(overrides[key as keyof typeof overrides] ?? {}) }, propertyDependencies: fromBucket }));
  return stackResources([
    { type: bucketType, name: "repo", urn: bucketType === TYPES.bucket ? bucketUrn : urnFor(bucketType, "repo"), props: { bucket: BUCKET, forceDestroy: false } },
    ...specs,
  ]);
}
const S3_RULES = [s3BucketsVersioned, s3BucketsKmsEncrypted, s3BucketsBlockPublicAccess, s3BucketsTlsOnly];

describe("s3-buckets-versioned, s3-buckets-kms-encrypted, s3-buckets-block-public-access, s3-buckets-tls-only", () => {
  it("pass a bucket configured as the backup repositories are, while the bucket id is still unknown (preview)", async () => {
    for (const rule of S3_RULES) assert.deepEqual(await validateStack(rule, bucketStack()), [], rule.name);
  });

  it("pass configuration that names the bucket by its literal name; a configuration of another bucket does not count", async () => {
    const literal = stackResources([
      { type: TYPES.bucket, name: "b", props: { bucket: "literal-bucket" } },
      { type: TYPES.bucketVersioning, name: "v", props: { bucket: "literal-bucket", versioningConfiguration: { status: "Enabled" } } },
      { type: TYPES.bucketVersioning, name: "other", props: { bucket: "another-bucket", versioningConfiguration: { status: "Suspended" } } },
    ]);
    assert.deepEqual(await validateStack(s3BucketsVersioned, literal), []);
    const otherOnly = stackResources([
      { type: TYPES.bucket, name: "b", props: { bucket: "literal-bucket" } },
      { type: TYPES.bucketVersioning, name: "v", props: { bucket: "another-bucket", versioningConfiguration: { status: "Enabled" } } },
    ]);
    assert.equal((await validateStack(s3BucketsVersioned, otherOnly)).length, 1);
  });

  it("judge each bucket by its own configuration resources only", async () => {
    const second = urnFor(TYPES.bucket, "second");
    const resources = stackResources([
      ...bucketStack().map((r) => ({ type: r.type, name: r.name, urn: r.urn, props: r.props, propertyDependencies: { bucket: r.type === TYPES.bucket ? [] : [bucketUrn] } })),
      { type: TYPES.bucket, name: "second", urn: second, props: { bucket: "second-bucket" } },
      { type: TYPES.bucketVersioning, name: "second-v", props: { versioningConfiguration: { status: "Suspended" } }, propertyDependencies: { bucket: [second] } },
    ]);
    const violations = await validateStack(s3BucketsVersioned, resources);
    assert.deepEqual(
      violations.map((v) => v.urn),
      [second],
    );
  });

  it("check the deprecated BucketV2 and the V2 configuration resources too", async () => {
    const v2 = bucketStack({}, TYPES.bucketV2);
    assert.equal((await validateStack(s3BucketsVersioned, v2)).length, 1, "its configuration names the other URN");
    const resources = stackResources([
      { type: TYPES.bucketV2, name: "old", props: { bucket: "old-bucket" } },
      {
        type: TYPES.bucketVersioningV2,
        name: "old-v",
        props: { versioningConfiguration: { status: "Enabled" } },
        propertyDependencies: { bucket: [urnFor(TYPES.bucketV2, "old")] },
      },
      {
        type: TYPES.bucketEncryptionV2,
        name: "old-e",
        props: { rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "aws:kms:dsse" } }] },
        propertyDependencies: { bucket: [urnFor(TYPES.bucketV2, "old")] },
      },
    ]);
    assert.deepEqual(await validateStack(s3BucketsVersioned, resources), []);
    assert.deepEqual(await validateStack(s3BucketsKmsEncrypted, resources), []);
    assert.equal((await validateStack(s3BucketsBlockPublicAccess, resources)).length, 1);
  });

  const failures: [string, Parameters<typeof bucketStack>[0], (typeof S3_RULES)[number], RegExp][] = [
    ["no versioning resource", { versioning: null }, s3BucketsVersioned, /no BucketVersioning resource/],
    ["versioning suspended", { versioning: { versioningConfiguration: { status: "Suspended" } } }, s3BucketsVersioned, /versioning is \["Suspended"\]/],
    ["no encryption configuration", { encryption: null }, s3BucketsKmsEncrypted, /no BucketServerSideEncryptionConfiguration/],
    ["SSE-S3 (AES256)", { encryption: { rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "AES256" } }] } }, s3BucketsKmsEncrypted, /must be SSE-KMS/],
    ["an encryption configuration without a rule", { encryption: { rules: [] } }, s3BucketsKmsEncrypted, /has no rule/],
    ["no public access block", { publicAccess: null }, s3BucketsBlockPublicAccess, /no BucketPublicAccessBlock/],
    ["restrictPublicBuckets off", { publicAccess: { restrictPublicBuckets: false } }, s3BucketsBlockPublicAccess, /leaves restrictPublicBuckets off/],
    ["blockPublicAcls unset", { publicAccess: { blockPublicAcls: undefined } }, s3BucketsBlockPublicAccess, /leaves blockPublicAcls off/],
    ["no bucket policy", { policy: null }, s3BucketsTlsOnly, /no BucketPolicy/],
    [
      "a policy without the TLS deny",
      { policy: { policy: JSON.stringify({ Statement: [{ Effect: "Allow", Principal: "*", Action: "s3:GetObject", Resource: `arn:aws:s3:::${BUCKET}/*` }] }) } },
      s3BucketsTlsOnly,
      /does not deny requests without TLS/,
    ],
  ];
  for (const [what, overrides, rule, pattern] of failures) {
    it(`${rule.name} fails ${what}`, async () => {
      const violations = await validateStack(rule, bucketStack(overrides));
      assert.equal(violations.length, 1, JSON.stringify(violations));
      assert.match(violations[0].message, pattern);
      assert.equal(violations[0].urn, bucketUrn);
      for (const other of S3_RULES.filter((r) => r !== rule)) assert.deepEqual(await validateStack(other, bucketStack(overrides)), [], `${what} also fails ${other.name}`);
    });
  }

  it("s3-buckets-tls-only accepts only a deny of every principal and S3 action, on the bucket and its objects, when SecureTransport is false", () => {
    const good = {
      Effect: "Deny",
      Principal: { AWS: "*" },
      Action: ["s3:*"],
      Resource: [`arn:aws-cn:s3:::${BUCKET}`, `arn:aws-cn:s3:::${BUCKET}/*`],
      Condition: { Bool: { "aws:SecureTransport": false } },
    };
    assert.equal(deniesInsecureTransport(good, BUCKET), true);
    assert.equal(deniesInsecureTransport({ ...good, Resource: "*" }, BUCKET), true);
    for (const [what, statement] of [
      ["Allow", { ...good, Effect: "Allow" }],
      ["one principal", { ...good, Principal: { AWS: "arn:aws:iam::1:root" } }],
      ["GetObject only", { ...good, Action: "s3:GetObject" }],
      ["the bucket without its objects", { ...good, Resource: `arn:aws:s3:::${BUCKET}` }],
      ["the objects without the bucket", { ...good, Resource: `arn:aws:s3:::${BUCKET}/*` }],
      ["a prefix of the objects", { ...good, Resource: [`arn:aws:s3:::${BUCKET}`, `arn:aws:s3:::${BUCKET}/logs/*`] }],
      ["another bucket", { ...good, Resource: ["arn:aws:s3:::other", "arn:aws:s3:::other/*"] }],
      ["SecureTransport true", { ...good, Condition: { Bool: { "aws:SecureTransport": "true" } } }],
      ["an extra condition", { ...good, Condition: { Bool: { "aws:SecureTransport": "false" }, IpAddress: { "aws:SourceIp": "10.0.0.0/8" } } }],
      ["NotAction", { ...good, NotAction: "s3:GetObject" }],
      ["no condition", { ...good, Condition: undefined }],
    ] as const)
      assert.equal(deniesInsecureTransport(statement, BUCKET), false, what);
  });
});

describe("no-force-destroy-buckets", () => {
  it("passes buckets without forceDestroy, and other resources", async () => {
    assert.deepEqual(await validateResource(noForceDestroyBuckets, { type: TYPES.bucket, props: { bucket: "b", forceDestroy: false } }), []);
    assert.deepEqual(await validateResource(noForceDestroyBuckets, { type: TYPES.bucketV2, props: { bucket: "b" } }), []);
    assert.deepEqual(await validateResource(noForceDestroyBuckets, { type: TYPES.volume, props: { forceDestroy: true } }), []);
  });

  it("fails forceDestroy on either bucket type", async () => {
    for (const type of [TYPES.bucket, TYPES.bucketV2]) {
      const violations = await validateResource(noForceDestroyBuckets, { type, props: { bucket: "b", forceDestroy: true } });
      assert.equal(violations.length, 1);
      assert.match(violations[0], /forceDestroy is true/);
    }
  });
});
