import { NODE_PATHS, postgresPaths, SERVICE_USERS, type ClusterPlan, type NodePlan, type NodeSecretsPlan } from "../plan";
import { renderEtcdConfig, renderEtcdctlEnv } from "./etcd";
import { renderHaproxyConfig } from "./haproxy";
import { certificateMetricsUnits, dropInPath, monitoringConfigFiles, monitoringDropIns } from "./monitoring";
import { osUpdateFiles } from "./os-updates";
import { renderPatroniConfig } from "./patroni";
import { backupUnits, primaryUpkeepUnits, renderPgbackrestConfig } from "./pgbackrest";
import { bootScript } from "./scripts";
import { emitSystemdUnit, nodeUnits, PATH_MTU_UNIT, renderSysctl } from "./systemd";
import type { NodeFile } from "./types";

/** What /etc/pgha/secrets.json holds: names and destinations, never values. */
export function secretsManifest(secrets: NodeSecretsPlan): { region: string; files: NodeSecretsPlan["files"] } {
  return { region: secrets.awsRegion, files: secrets.files };
}

function file(path: string, content: string, owner: string, permissions: string, defer = true): NodeFile {
  return { path, content, owner: `${owner}:${owner}`, permissions, defer };
}

/** apt pins: the Patroni minor and PostgreSQL major the stack asks for, from PGDG. */
export function aptPins(plan: ClusterPlan): string {
  const { versions } = plan.config;
  const stanzas = [
    [`Package: patroni`, `Pin: version ${versions.patroni}`, `Pin-Priority: 1001`],
    [`Package: postgresql-${versions.postgresMajor} postgresql-client-${versions.postgresMajor}`, `Pin: version ${versions.postgresPackage}`, `Pin-Priority: 1001`],
  ];
  return `${stanzas.map((lines) => lines.join("\n")).join("\n\n")}\n`;
}

/**
 * Every file the node needs, one renderer per file. Files owned by service
 * users are deferred until packages have created those users.
 */
export function renderNodeFiles(plan: ClusterPlan, node: NodePlan): NodeFile[] {
  const secrets = plan.secrets.find((s) => s.node === node.name);
  if (!secrets) throw new Error(`internal: no secrets planned for ${node.name}`);
  const files: NodeFile[] = [];
  if (node.roles.has("postgres")) {
    // Written before packages install so the PGDG packages neither pick
    // another Patroni nor create and start a default `main` cluster.
    files.push(file("/etc/apt/preferences.d/pgha.pref", aptPins(plan), "root", "0644", false));
    files.push(file(NODE_PATHS.createClusterConf, "create_main_cluster = false\n", "root", "0644", false));
  }
  files.push(...osUpdateFiles(plan, node));
  files.push(file(NODE_PATHS.secretsManifest, `${JSON.stringify(secretsManifest(secrets))}\n`, "root", "0600"));
  files.push(file(NODE_PATHS.fetchSecrets, bootScript("pgha-fetch-secrets.py"), "root", "0755"));
  if (nodeUnits(plan, node).some((unit) => unit.name === PATH_MTU_UNIT)) {
    files.push(file(NODE_PATHS.pathMtu, bootScript("pgha-path-mtu.sh"), "root", "0755"));
    files.push(file(NODE_PATHS.sysctl, renderSysctl(), "root", "0644"));
  }
  if (node.roles.has("etcd")) {
    files.push(file(NODE_PATHS.installEtcd, bootScript("pgha-install-etcd.sh"), "root", "0755"));
    files.push(file(NODE_PATHS.etcdConfig, renderEtcdConfig(plan, node), "etcd", "0640"));
  }
  if (node.roles.has("etcd") || node.roles.has("postgres")) {
    files.push(file(NODE_PATHS.etcdctlEnv, renderEtcdctlEnv(plan, node), "root", "0644"));
  }
  if (node.roles.has("postgres")) {
    files.push(file(NODE_PATHS.prepareDataVolume, bootScript("pgha-prepare-data-volume.sh"), "root", "0755"));
    files.push(file(NODE_PATHS.patroniConfig, renderPatroniConfig(plan, node), "postgres", "0640"));
    files.push(file(NODE_PATHS.pgbackrestConfig, renderPgbackrestConfig(plan, node), "postgres", "0640"));
    files.push(file(NODE_PATHS.backup, bootScript("pgha-backup.sh"), "root", "0755"));
    files.push(file(NODE_PATHS.restore, bootScript("pgha-restore.sh"), "root", "0755"));
    for (const unit of [...backupUnits(plan), ...primaryUpkeepUnits()]) files.push(file(`${NODE_PATHS.systemdDir}/${unit.name}`, emitSystemdUnit(unit.unit), "root", "0644"));
  }
  if (node.roles.has("haproxy")) {
    files.push(file(NODE_PATHS.haproxyConfig, renderHaproxyConfig(plan, node), "root", "0644"));
  }
  for (const unit of nodeUnits(plan, node)) {
    files.push(file(`${NODE_PATHS.systemdDir}/${unit.name}`, emitSystemdUnit(unit.unit), "root", "0644"));
  }
  // Monitoring (cloud-init/monitoring.ts). Deferred like everything owned by a service user: the drop-ins too,
  // because a packaged service started by its postinst with them (before the certificates are fetched) would fail
  // and with it the package install.
  for (const config of monitoringConfigFiles(plan, node)) files.push(file(config.path, config.content, SERVICE_USERS.prometheus, "0640"));
  if (node.roles.has("postgres")) files.push(file(NODE_PATHS.postBootstrap, bootScript("pgha-post-bootstrap.sh"), "root", "0755"));
  files.push(file(NODE_PATHS.certificateMetrics, bootScript("pgha-certificate-metrics.sh"), "root", "0755"));
  for (const unit of certificateMetricsUnits()) files.push(file(`${NODE_PATHS.systemdDir}/${unit.name}`, emitSystemdUnit(unit.unit), "root", "0644"));
  for (const dropIn of monitoringDropIns(plan, node)) files.push(file(dropInPath(dropIn), emitSystemdUnit(dropIn.dropIn), "root", "0644"));
  return files;
}

/** Where PGDATA's volume is mounted (see pgha-prepare-data-volume). */
export function dataMountPoint(plan: ClusterPlan): string {
  return postgresPaths(plan.config.versions.postgresMajor).mountPoint;
}
