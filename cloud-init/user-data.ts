import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { findNode, NODE_PATHS, SERVICE_USERS, type ClusterPlan, type NodePlan } from "../plan";
import { monitoringStartOrder } from "./monitoring";
import { backupStartOrder } from "./pgbackrest";
import { dataMountPoint, renderNodeFiles } from "./node-files";
import { bootScript } from "./scripts";
import { nodeUnits, PATH_MTU_UNIT } from "./systemd";
import type { BootCommand, BootInputs, NodeFile } from "./types";
import { dumpYaml } from "./yaml";

/** EC2 refuses user-data over 16 KB (measured before base64, after compression). */
export const USER_DATA_LIMIT_BYTES = 16 * 1024;

/**
 * cloud-init writes runcmd as one `/bin/sh` script, a line per item, and
 * without this a failed step lets the next run: a missing data volume and
 * Patroni initdbs onto the root disk. With it the script stops at the first
 * failure, cloud-init reports the error (`cloud-init status`: error) and no
 * service is enabled or started.
 */
export const RUNCMD_FAIL_FAST = "set -e";

/** apt's retries of a fetch that could not connect (see userDataDocument); cloud-init writes it to /etc/apt/apt.conf.d/94cloud-init-config. */
export const APT_RETRY_CONF = 'Acquire::Retries "10";\nAcquire::Retries::Delay "true";\nAcquire::Retries::Delay::Maximum "30";\n';

/**
 * How long a first boot waits for its package sources (the NAT gateway of a
 * new stack can take minutes to carry traffic) before it fails.
 */
export const PACKAGE_SOURCES_WAIT_SECONDS = 900;

/**
 * The first-boot wait for the package sources, as a bootcmd entry: bootcmd
 * runs before cloud-init configures apt and installs the packages, and before
 * write_files, so the script travels inline; `cloud-init-per instance` runs
 * it on the first boot only.
 */
export function waitPackageSourcesCommand(): string[] {
  return [
    "cloud-init-per",
    "instance",
    "pgha-wait-package-sources",
    "sh",
    "-c",
    bootScript("pgha-wait-package-sources.sh"),
    "pgha-wait-package-sources",
    String(PACKAGE_SOURCES_WAIT_SECONDS),
  ];
}

/**
 * The first boot's policy-rc.d: exit 101 ("action forbidden") for every
 * service action. Without it each package's maintainer script starts its
 * service with the package's own configuration while cloud-init installs it:
 * HAProxy with Debian's haproxy.cfg, Prometheus on 0.0.0.0:9090 without TLS,
 * node_exporter without client certificates, Alertmanager gossiping on
 * 0.0.0.0:9094; and runcmd's `systemctl restart` then has to stop each of them
 * again (Prometheus may take up to its 20 s TimeoutStopSec). cloud-init writes
 * it with write_files, before the package step; runcmd's first step removes
 * it, so every later apt run starts and restarts services as usual.
 */
export const FIRST_BOOT_POLICY_RC_D = "#!/bin/sh\n# pgha first boot: runcmd starts the services once their configuration is in place\nexit 101\n";

/** The PostgreSQL project's apt signing key (ACCC4CF8), pinned by full fingerprint. */
export const PGDG_KEY_FINGERPRINT = "B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8";

/**
 * The armoured PGDG key, shipped in user-data so a first boot needs no
 * keyserver (a keyserver outage or a blocked port 11371 would stop the
 * package step, which cloud-init does not retry). The file is Debian's own
 * copy (postgresql-common's /usr/share/postgresql-common/pgdg/
 * apt.postgresql.org.asc) exported with `gpg --export-options export-minimal`:
 * the key and its latest self-signature, without the third-party signatures
 * apt never reads (4.8 KB → 1.6 KB, a sixth of the 16 KB user-data limit). A
 * unit test checks with gpg that its primary key is {@link PGDG_KEY_FINGERPRINT}.
 */
export const PGDG_KEY_FILE = join(__dirname, "keys", "pgdg.asc");

export function pgdgKey(): string {
  return readFileSync(PGDG_KEY_FILE, "utf8");
}

/** The packages the install step installs on a node (cloud-init `packages:`). */
export function nodePackages(plan: ClusterPlan, node: NodePlan): string[] {
  const major = plan.config.versions.postgresMajor;
  // node_exporter on every node (cloud-init/monitoring.ts); openssl for the certificate expiry metrics.
  const packages = new Set<string>(["ca-certificates", "curl", "python3-boto3", "openssl", "prometheus-node-exporter"]);
  if (node.roles.has("postgres")) {
    // python3-etcd: Patroni's etcd3 DCS imports it; the Debian package only
    // lists it as one alternative among several DCS clients.
    for (const name of [`postgresql-${major}`, `postgresql-client-${major}`, "patroni", "python3-etcd", "python3-psycopg2", "prometheus-postgres-exporter", "pgbackrest"])
      packages.add(name);
  }
  if (node.roles.has("haproxy")) for (const name of ["haproxy", "prometheus", "prometheus-alertmanager"]) packages.add(name);
  return [...packages];
}

/**
 * The version check's argv (pgha-check-versions): the pins of what this
 * node runs, and every unit of the node to hold if a version is wrong.
 * Nodes that run neither PostgreSQL nor etcd install nothing pinned.
 */
export function checkVersionsCommand(plan: ClusterPlan, node: NodePlan): BootCommand | undefined {
  const { versions } = plan.config;
  const args: string[] = [];
  if (node.roles.has("postgres")) args.push("--patroni", versions.patroni, "--postgres", String(versions.postgresMajor), versions.postgresPackage);
  if (node.roles.has("etcd")) args.push("--etcd", versions.etcd);
  if (args.length === 0) return undefined;
  // The services are held; the route unit is not one (it joins nothing, and routes do no harm).
  const services = nodeUnits(plan, node).filter((unit) => unit.name !== PATH_MTU_UNIT);
  return [NODE_PATHS.checkVersions, ...args, ...services.flatMap((unit) => ["--hold", unit.name])];
}

/**
 * Boot steps, in order, as argv lists. The first removes the first boot's
 * policy-rc.d ({@link FIRST_BOOT_POLICY_RC_D}). Services are enabled and then
 * restarted (restart, not start: a service an image already runs takes its
 * new configuration).
 * The version check runs once everything is installed and before anything
 * touches the data volume or starts.
 */
export function bootCommands(plan: ClusterPlan, node: NodePlan, boot: BootInputs): BootCommand[] {
  const { versions, instances, packages } = plan.config;
  const commands: BootCommand[] = [["rm", "-f", NODE_PATHS.policyRcD]];
  if (node.roles.has("etcd")) {
    const sha = versions.etcdSha256[instances.architecture];
    if (!sha) throw new Error(`internal: no etcd checksum for ${instances.architecture} after validation`);
    commands.push([NODE_PATHS.installEtcd, versions.etcd, sha, instances.architecture, packages.etcdReleaseUrl]);
  }
  const checkVersions = checkVersionsCommand(plan, node);
  if (checkVersions) commands.push(checkVersions);
  if (node.roles.has("postgres")) {
    commands.push(
      boot.dataVolumeId
        ? [NODE_PATHS.prepareDataVolume, boot.dataVolumeId, dataMountPoint(plan), String(plan.config.instances.dataVolumeAttachSeconds)]
        : ["install", "-d", "-o", SERVICE_USERS.postgres, "-g", SERVICE_USERS.postgres, "-m", "0700", dataMountPoint(plan)],
    );
  }
  commands.push([NODE_PATHS.fetchSecrets]);
  commands.push(["systemctl", "daemon-reload"]);
  for (const unit of [...nodeUnits(plan, node).map((u) => u.name), ...monitoringStartOrder(plan, node), ...backupStartOrder(node)]) {
    commands.push(["systemctl", "enable", unit]);
    commands.push(["systemctl", "restart", unit]);
  }
  return commands;
}

function writeFilesEntry(f: NodeFile): Record<string, unknown> {
  return { path: f.path, owner: f.owner, permissions: f.permissions, ...(f.defer ? { defer: true } : {}), content: f.content };
}

/** The cloud-config document as data, before it is dumped. */
export function userDataDocument(plan: ClusterPlan, node: NodePlan, boot: BootInputs): Record<string, unknown> {
  const document: Record<string, unknown> = {
    hostname: node.name,
    preserve_hostname: false,
    // The hostname on 127.0.1.1 (the rest of /etc/hosts left alone): sudo, postfix-style tools and
    // Python's socket.getfqdn() otherwise wait on DNS for a name the VPC resolver does not know.
    manage_etc_hosts: "localhost",
  };
  if (node.roles.has("etcd")) {
    // The release archive creates no user; etcd runs as its own system account.
    document.users = ["default", { name: SERVICE_USERS.etcd, system: true, homedir: NODE_PATHS.etcdDataDir, no_create_home: true, shell: "/usr/sbin/nologin", lock_passwd: true }];
  }
  // A first boot before the NAT gateway carries traffic waits for it here (see the script), not in apt.
  document.bootcmd = [waitPackageSourcesCommand()];
  // apt retries a fetch that failed with a growing delay (1, 2, 4 … capped at 30 s): a mirror's passing error
  // during the install. It cannot wait out an outage: apt does not try an address again once it failed to connect.
  const apt: Record<string, unknown> = { conf: APT_RETRY_CONF };
  document.apt = apt;
  if (node.roles.has("postgres")) {
    const { uri, suite, components, key } = plan.config.packages.repository;
    apt.sources = {
      // The file keeps its name whatever the repository (PGDG by default, the lab's mirror there).
      "pgdg.list": {
        // cloud-init replaces $RELEASE with the OS codename (noble, trixie: plan/os.ts).
        source: `deb [signed-by=$KEY_FILE] ${uri} ${suite} ${components.join(" ")}`,
        // cloud-init dearmours it to /etc/apt/cloud-init.gpg.d/pgdg.gpg and puts that path in $KEY_FILE.
        key: key ?? pgdgKey(),
      },
    };
  }
  document.package_update = true;
  document.packages = nodePackages(plan, node);
  // The version check and the policy hook are first-boot files only, so they are not among the node files the rollout keeps in step.
  const firstBootFiles: NodeFile[] = [{ path: NODE_PATHS.policyRcD, content: FIRST_BOOT_POLICY_RC_D, owner: "root:root", permissions: "0755", defer: false }];
  if (checkVersionsCommand(plan, node)) {
    firstBootFiles.push({ path: NODE_PATHS.checkVersions, content: bootScript("pgha-check-versions.sh"), owner: "root:root", permissions: "0755", defer: false });
  }
  document.write_files = [...renderNodeFiles(plan, node), ...firstBootFiles].map(writeFilesEntry);
  document.runcmd = [RUNCMD_FAIL_FAST, ...bootCommands(plan, node, boot)];
  return document;
}

/**
 * The `#cloud-config` user-data of one node:
 * - `write_files`: every rendered file, including the systemd units under
 *   /etc/systemd/system, the secrets manifest /etc/pgha/secrets.json and
 *   the boot scripts under /usr/local/sbin;
 * - `runcmd`: argv lists in boot order — remove the first boot's
 *   policy-rc.d, install etcd from
 *   `packages.etcdReleaseUrl` (etcd nodes), check
 *   the installed versions (database-tier nodes), prepare
 *   PGDATA's volume (postgres nodes; a plain `install -d` when no volume id
 *   is given, as in the lab), fetch secrets, `systemctl daemon-reload`, then
 *   `systemctl enable X` and `systemctl restart X` per service in start order.
 * No secret is ever part of it: keys and passwords are fetched at boot.
 */
export function renderUserData(plan: ClusterPlan, nodeName: string, boot: BootInputs): string {
  const node = findNode(plan, nodeName);
  return `#cloud-config\n${dumpYaml(userDataDocument(plan, node, boot))}`;
}

/**
 * User-data as EC2 receives it: gzip, then base64 (cloud-init detects and
 * unpacks gzip). The plain document of a database node is about 20 KB, over
 * EC2's limit; compressed it is a third of that. Node's gzip writes no
 * timestamp, so the same document always encodes to the same bytes and
 * `pulumi preview` shows no spurious diff.
 */
export function encodeUserData(userData: string): string {
  const compressed = gzipSync(Buffer.from(userData, "utf8"), { level: 9 });
  if (compressed.length > USER_DATA_LIMIT_BYTES) {
    throw new Error(`user-data is ${compressed.length} bytes compressed; EC2 accepts at most ${USER_DATA_LIMIT_BYTES}`);
  }
  return compressed.toString("base64");
}
