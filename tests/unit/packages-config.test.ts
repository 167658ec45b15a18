/**
 * Where nodes get their software (`pgha:packages`) and which OS they run
 * (`pgha:instances.os`): the defaults, what the renderer makes of them, and
 * one problem line per bad value.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import * as yaml from "js-yaml";
import { bootCommands, pgdgKey, renderUserData } from "../../cloud-init";
import { buildClusterPlan, ConfigError, DEFAULT_CONFIG, findNode, NODE_PATHS, nodesWithRole, OS_NAMES, osProfile, validateConfig, type ClusterPlan } from "../../plan";

const STACK = { stack: "test" };
const PGDG_SOURCE = "deb [signed-by=$KEY_FILE] https://apt.postgresql.org/pub/repos/apt $RELEASE-pgdg main";
/** Not a real key: the schema checks the armour, cloud-init (and apt) the rest. */
const MIRROR_KEY = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZlabKey\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";

interface Document {
  apt: { sources?: Record<string, { source: string; key: string }> };
  runcmd: (string | string[])[];
}
const documentOf = (plan: ClusterPlan, node: string): Document => yaml.load(renderUserData(plan, node, { dataVolumeId: "vol-0123456789abcdef0" })) as Document;
const installStep = (document: Document): string[] | undefined => document.runcmd.find((step): step is string[] => Array.isArray(step) && step[0] === NODE_PATHS.installEtcd);

describe("packages and OS defaults", () => {
  test("are PGDG, etcd's GitHub releases and Ubuntu 24.04", () => {
    const config = validateConfig(undefined);
    assert.deepEqual(config.packages, {
      repository: { uri: "https://apt.postgresql.org/pub/repos/apt", suite: "$RELEASE-pgdg", components: ["main"] },
      etcdReleaseUrl: "https://github.com/etcd-io/etcd/releases/download",
    });
    assert.equal(config.packages.repository.key, undefined);
    assert.equal(config.instances.os, "ubuntu-24.04");
    assert.deepEqual(config.packages, DEFAULT_CONFIG.packages);
  });

  test("each OS has a label, its codename and an AMI parameter per architecture", () => {
    assert.deepEqual(OS_NAMES, ["ubuntu-24.04", "debian-13"]);
    assert.equal(osProfile("ubuntu-24.04").codename, "noble");
    assert.equal(osProfile("debian-13").codename, "trixie");
    assert.equal(osProfile("debian-13").label, "Debian 13");
    assert.equal(osProfile("ubuntu-24.04").amiParameter("amd64"), "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id");
    assert.equal(osProfile("debian-13").amiParameter("amd64"), "/aws/service/debian/release/13/latest/amd64");
  });

  test("a partial packages section is merged key by key over the defaults", () => {
    const config = validateConfig({ packages: { repository: { uri: "http://10.0.0.1:8080/pgdg" } } });
    assert.deepEqual(config.packages.repository, { uri: "http://10.0.0.1:8080/pgdg", suite: "$RELEASE-pgdg", components: ["main"] });
    assert.equal(config.packages.etcdReleaseUrl, DEFAULT_CONFIG.packages.etcdReleaseUrl);
  });
});

describe("rendered from pgha:packages", () => {
  const plan = buildClusterPlan(undefined, STACK);

  test("the defaults give exactly the PGDG source with the shipped PGDG key", () => {
    for (const node of nodesWithRole(plan, "postgres")) {
      assert.deepEqual(documentOf(plan, node.name).apt.sources, { "pgdg.list": { source: PGDG_SOURCE, key: pgdgKey() } }, node.name);
    }
  });

  test("the defaults install etcd from its GitHub releases, the version at argv[1] where the lab reads it", () => {
    const node = findNode(plan, "pg-seoul-1");
    const { etcd, etcdSha256 } = plan.config.versions;
    assert.deepEqual(installStep(documentOf(plan, node.name)), [NODE_PATHS.installEtcd, etcd, etcdSha256.amd64, "amd64", "https://github.com/etcd-io/etcd/releases/download"]);
    assert.deepEqual(bootCommands(plan, node, {})[1], installStep(documentOf(plan, node.name)), "the first step after removing the first boot's policy-rc.d");
  });

  test("a custom repository (uri, suite, components, key) and etcd URL reach apt.sources and runcmd", () => {
    const mirror = buildClusterPlan(
      {
        packages: {
          repository: { uri: "http://10.99.0.1:3142/pgdg", suite: "trixie-pgdg", components: ["main", "17"], key: MIRROR_KEY },
          etcdReleaseUrl: "http://10.99.0.1:8000/etcd",
        },
        instances: { os: "debian-13" },
      },
      STACK,
    );
    for (const node of nodesWithRole(mirror, "postgres")) {
      const document = documentOf(mirror, node.name);
      assert.deepEqual(document.apt.sources, { "pgdg.list": { source: "deb [signed-by=$KEY_FILE] http://10.99.0.1:3142/pgdg trixie-pgdg main 17", key: MIRROR_KEY } }, node.name);
      assert.ok(!renderUserData(mirror, node.name, {}).includes("apt.postgresql.org"), `${node.name} still names PGDG`);
    }
    for (const node of nodesWithRole(mirror, "etcd")) assert.equal(installStep(documentOf(mirror, node.name))?.[4], "http://10.99.0.1:8000/etcd", node.name);
  });

  test("a repository without a key keeps the PGDG key (a mirror of PGDG is signed by it)", () => {
    const mirror = buildClusterPlan({ packages: { repository: { uri: "https://mirror.example.com/pgdg" } } }, STACK);
    const source = documentOf(mirror, "pg-tokyo-1").apt.sources?.["pgdg.list"];
    assert.deepEqual(source, { source: "deb [signed-by=$KEY_FILE] https://mirror.example.com/pgdg $RELEASE-pgdg main", key: pgdgKey() });
  });
});

describe("pgha:packages and pgha:instances.os rejections", () => {
  const URI_RULE = "must be an http(s) URL without credentials, query or fragment, such as https://apt.postgresql.org/pub/repos/apt";
  const ETCD_RULE =
    "must be an http(s) URL without credentials, query, fragment or trailing slash, such as https://github.com/etcd-io/etcd/releases/download (the archive is <url>/v<version>/etcd-v<version>-linux-<arch>.tar.gz)";
  const SUITE_RULE = "must be letters, digits, dots, dashes, underscores and $RELEASE (the OS codename), such as $RELEASE-pgdg";
  const COMPONENT_RULE = "must be an apt component (letters, digits, dots, dashes, underscores), such as main";
  const KEY_RULE = "must be an armoured OpenPGP public key, from -----BEGIN PGP PUBLIC KEY BLOCK----- to -----END PGP PUBLIC KEY BLOCK-----";
  const repository = (value: Record<string, unknown>) => ({ packages: { repository: value } });

  const cases: { name: string; input: unknown; line: string }[] = [
    ...[
      ["an ftp repository", "ftp://ftp.example.com/pgdg"],
      ["a repository without a scheme", "apt.postgresql.org/pub/repos/apt"],
      ["credentials in the repository URL", "https://user:secret@mirror.example.com/pgdg"],
      ["a space in the repository URL", "https://mirror.example.com/pg dg"],
      ["a repository URL with a query", "https://mirror.example.com/pgdg?x=1"],
    ].map(([name, uri]) => ({ name, input: repository({ uri }), line: `pgha:packages.repository.uri = ${JSON.stringify(uri)}: ${URI_RULE}` })),
    { name: "an empty repository URL", input: repository({ uri: "" }), line: 'pgha:packages.repository.uri = "": must be a non-empty string' },
    { name: "a space in the suite", input: repository({ suite: "$RELEASE pgdg" }), line: `pgha:packages.repository.suite = "$RELEASE pgdg": ${SUITE_RULE}` },
    { name: "another variable in the suite", input: repository({ suite: "$CODENAME-pgdg" }), line: `pgha:packages.repository.suite = "$CODENAME-pgdg": ${SUITE_RULE}` },
    { name: "no components", input: repository({ components: [] }), line: "pgha:packages.repository.components = []: must hold at least 1 item(s)" },
    { name: "a component with a space", input: repository({ components: ["main", "non free"] }), line: `pgha:packages.repository.components[1] = "non free": ${COMPONENT_RULE}` },
    { name: "components as one string", input: repository({ components: "main" }), line: 'pgha:packages.repository.components = "main": must be a list' },
    {
      name: "a key that is not armoured",
      input: repository({ key: "B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8" }),
      line: `pgha:packages.repository.key = "B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8": ${KEY_RULE}`,
    },
    {
      name: "a key without its end line",
      input: repository({ key: "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ\n" }),
      line: `pgha:packages.repository.key = ${JSON.stringify("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ\n")}: ${KEY_RULE}`,
    },
    {
      name: "a private key",
      input: repository({ key: "-----BEGIN PGP PRIVATE KEY BLOCK-----\n-----END PGP PRIVATE KEY BLOCK-----\n" }),
      line: `pgha:packages.repository.key = ${JSON.stringify("-----BEGIN PGP PRIVATE KEY BLOCK-----\n-----END PGP PRIVATE KEY BLOCK-----\n")}: ${KEY_RULE}`,
    },
    {
      name: "an unknown key under repository",
      input: repository({ url: "https://mirror.example.com/pgdg" }),
      line: 'pgha:packages.repository.url = "https://mirror.example.com/pgdg": unknown key; expected one of uri, suite, components, key',
    },
    {
      name: "a repository given as a string",
      input: { packages: { repository: "https://mirror.example.com/pgdg" } },
      line: 'pgha:packages.repository = "https://mirror.example.com/pgdg": must be an object with uri, suite, components and key',
    },
    {
      name: "an etcd URL with a trailing slash",
      input: { packages: { etcdReleaseUrl: "https://mirror.example.com/etcd/" } },
      line: `pgha:packages.etcdReleaseUrl = "https://mirror.example.com/etcd/": ${ETCD_RULE}`,
    },
    { name: "a file: etcd URL", input: { packages: { etcdReleaseUrl: "file:///srv/release" } }, line: `pgha:packages.etcdReleaseUrl = "file:///srv/release": ${ETCD_RULE}` },
    {
      name: "an unknown key under packages",
      input: { packages: { etcdUrl: "https://mirror.example.com/etcd" } },
      line: 'pgha:packages.etcdUrl = "https://mirror.example.com/etcd": unknown key; expected one of repository, etcdReleaseUrl',
    },
    { name: "packages as a list", input: { packages: [] }, line: "pgha:packages = []: must be an object" },
    { name: "an OS this program has no profile for", input: { instances: { os: "debian-12" } }, line: 'pgha:instances.os = "debian-12": must be one of ubuntu-24.04, debian-13' },
  ];

  for (const c of cases) {
    test(c.name, () => {
      assert.throws(
        () => validateConfig(c.input),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError, String(error));
          assert.equal(error.message, c.line);
          return true;
        },
      );
    });
  }
});
