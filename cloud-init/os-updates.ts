import type { ClusterPlan, NodePlan } from "../plan";
import { emitSystemdUnit, nodeUnits } from "./systemd";
import type { NodeFile } from "./types";

/**
 * Ubuntu's automatic updates must not restart the cluster. Out of the box,
 * apt-daily-upgrade runs unattended-upgrades on every node in the same
 * morning hour, and needrestart (from apt's post-invoke hook) then restarts
 * every service that maps an upgraded library: patroni.service (and with it
 * PostgreSQL), etcd, HAProxy — an unplanned failover, on several nodes at
 * once. Three files stop that:
 *
 * - needrestart's override_rc: the cluster's services are never restarted
 *   automatically; needrestart lists them as "deferred" instead, and the
 *   rollout restarts them one node at a time;
 * - unattended-upgrades' Package-Blacklist: the cluster's own packages are
 *   never upgraded automatically (their maintainer scripts restart the
 *   service directly, bypassing needrestart — haproxy's postinst does); they
 *   change through a new image or the rollout, node by node. No automatic
 *   reboot either;
 * - a per-node slot for apt-daily-upgrade.timer, so even what is still
 *   upgraded automatically (libc, openssl, the kernel package) runs on one
 *   node at a time, not on all in the same hour. The first two files make
 *   an upgrade harmless; the slot keeps a harmful one (a bad package, a
 *   maintainer script that restarts something we did not list) from hitting
 *   every node at once.
 */

export const OS_UPDATE_PATHS = {
  /** needrestart's default config evaluates every conf.d/*.conf, in sort order, after its own defaults. */
  needrestart: "/etc/needrestart/conf.d/50-pgha.conf",
  /** After 50unattended-upgrades, so our scalars win and our list entries add to its lists. */
  unattendedUpgrades: "/etc/apt/apt.conf.d/52pgha-unattended-upgrades",
  timerDropIn: "/etc/systemd/system/apt-daily-upgrade.timer.d/50-pgha-stagger.conf",
} as const;

/**
 * Packages of the cluster, as unattended-upgrades' blacklist entries
 * (Python regular expressions matched from the start of the package name).
 * PostgreSQL with its common and client packages and libpq from PGDG,
 * Patroni and its DCS and driver modules, HAProxy; etcd comes from its
 * release archive, but a Debian/Ubuntu etcd package must not slip in either.
 */
export const HELD_PACKAGES = ["^postgresql-", "^libpq5$", "^patroni$", "^python3-etcd$", "^python3-psycopg2$", "^haproxy$", "^etcd-"] as const;

/** First hour (UTC) of the first node's slot, and the slot length: apt runs well within 2 h. */
const FIRST_SLOT_HOUR = 2;
const SLOT_HOURS = 2;
/** Ubuntu's timer spreads its start over 60 min; keep a little spread, inside the slot. */
const SLOT_SPREAD = "15min";

const escapeRegex = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Unit-name patterns needrestart must leave alone on this node: its cluster units, and any PostgreSQL unit. */
export function restartExclusions(plan: ClusterPlan, node: NodePlan): string[] {
  return [...nodeUnits(plan, node).map((unit) => `^${escapeRegex(unit.name)}$`), "^postgresql"];
}

/** Perl, as needrestart evaluates it: one override_rc entry (0 = do not restart) per pattern. */
export function renderNeedrestartConf(plan: ClusterPlan, node: NodePlan): string {
  const entries = restartExclusions(plan, node).map((pattern) => {
    // qr(...) takes the pattern literally between its parentheses; none of ours has one.
    if (/[()]/.test(pattern)) throw new Error(`needrestart: pattern ${pattern} contains a parenthesis`);
    return `$nrconf{override_rc}{qr(${pattern})} = 0;`;
  });
  return [
    "# pgha: the cluster's services are restarted by the rollout, one node at a time, never by needrestart",
    '# after an automatic upgrade (they show as "Service restarts being deferred").',
    ...entries,
    "",
  ].join("\n");
}

const aptString = (text: string) => {
  if (/["\n\\]/.test(text)) throw new Error(`apt.conf: value ${text} needs quoting apt cannot express`);
  return `"${text}"`;
};

/** apt.conf syntax: a list scope appends to the list that 50unattended-upgrades declares. */
export function renderUnattendedUpgradesConf(): string {
  return [
    "// pgha: the cluster's packages change through the rollout or a new image, one node at a time.",
    "Unattended-Upgrade::Package-Blacklist {",
    ...HELD_PACKAGES.map((pattern) => `  ${aptString(pattern)};`),
    "};",
    "// A reboot is a failover: never automatic.",
    `Unattended-Upgrade::Automatic-Reboot ${aptString("false")};`,
    "",
  ].join("\n");
}

/** The node's daily slot: its position in the plan, two hours apart, wrapping at midnight. */
export function upgradeSlotHour(plan: ClusterPlan, node: NodePlan): number {
  const index = plan.nodes.findIndex((n) => n.name === node.name);
  if (index < 0) throw new Error(`internal: ${node.name} is not in the plan`);
  return (FIRST_SLOT_HOUR + index * SLOT_HOURS) % 24;
}

export function renderUpgradeTimerDropIn(plan: ClusterPlan, node: NodePlan): string {
  const hour = String(upgradeSlotHour(plan, node)).padStart(2, "0");
  return emitSystemdUnit({
    Timer: {
      // The empty assignment clears Ubuntu's OnCalendar (06:00) before ours.
      OnCalendar: ["", `*-*-* ${hour}:00:00 UTC`],
      RandomizedDelaySec: SLOT_SPREAD,
    },
  });
}

/**
 * Written before cloud-init installs packages (not deferred): the first apt
 * run already honours them, and nothing here depends on a service user.
 * The timer drop-in takes effect at the next daemon-reload or boot.
 */
export function osUpdateFiles(plan: ClusterPlan, node: NodePlan): NodeFile[] {
  const root = (path: string, content: string): NodeFile => ({ path, content, owner: "root:root", permissions: "0644", defer: false });
  return [
    root(OS_UPDATE_PATHS.needrestart, renderNeedrestartConf(plan, node)),
    root(OS_UPDATE_PATHS.unattendedUpgrades, renderUnattendedUpgradesConf()),
    root(OS_UPDATE_PATHS.timerDropIn, renderUpgradeTimerDropIn(plan, node)),
  ];
}
