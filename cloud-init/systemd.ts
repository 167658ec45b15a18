import { INTER_REGION_PATH_MTU, NODE_PATHS, postgresPaths, SERVICE_USERS, type ClusterPlan, type NodePlan } from "../plan";

/** The oneshot unit that routes the other regions' VPCs at INTER_REGION_PATH_MTU (first in start order). */
export const PATH_MTU_UNIT = "pgha-path-mtu.service";

/**
 * /etc/sysctl.d/90-pgha.conf. tcp_mtu_probing = 1: when a connection's
 * full-size segments keep vanishing (a path-MTU blackhole to a peer the
 * route MTU does not cover), TCP probes smaller segments instead of
 * retransmitting the same size forever.
 */
export function renderSysctl(): string {
  return "# pgha: recover from path-MTU blackholes (routes to the plan's regions are set by pgha-path-mtu)\nnet.ipv4.tcp_mtu_probing = 1\n";
}

/** A unit file as data: section → key → value (a list repeats the key). */
export type SystemdUnit = Record<string, Record<string, string | number | string[]>>;

const SAFE_VALUE = /^[^\n\r]*$/;

export function emitSystemdUnit(unit: SystemdUnit): string {
  const lines: string[] = [];
  for (const [section, entries] of Object.entries(unit)) {
    if (lines.length > 0) lines.push("");
    lines.push(`[${section}]`);
    for (const [key, value] of Object.entries(entries)) {
      for (const item of Array.isArray(value) ? value : [value]) {
        const text = String(item);
        if (!SAFE_VALUE.test(text)) throw new Error(`systemd unit: value of ${section}.${key} spans lines`);
        lines.push(`${key}=${text}`);
      }
    }
  }
  return `${lines.join("\n")}\n`;
}

export interface RenderedUnit {
  /** e.g. etcd.service */
  name: string;
  unit: SystemdUnit;
}

/**
 * The units of a node, in start order: the path-MTU routes first (every node
 * talks across regions: etcd peers, replication, HAProxy's checks), then the
 * services. Patroni only Wants etcd: with the
 * reference design's `Requires=etcd.service`, restarting the local etcd
 * member would also stop Patroni and with it the PostgreSQL primary.
 */
export function nodeUnits(plan: ClusterPlan, node: NodePlan): RenderedUnit[] {
  const units: RenderedUnit[] = [];
  const otherRegions = plan.regions.filter((region) => region.name !== node.region).map((region) => region.vpcCidr);
  if (otherRegions.length > 0) {
    units.push({
      name: PATH_MTU_UNIT,
      unit: {
        Unit: {
          Description: `Routes to the other regions at the inter-Region peering MTU (${INTER_REGION_PATH_MTU})`,
          Documentation: "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/network_mtu.html",
          After: "network-online.target",
          Wants: "network-online.target",
          Before: "etcd.service patroni.service haproxy.service",
          // systemd-networkd removes routes it did not configure when it restarts; PartOf= re-runs this then.
          PartOf: "systemd-networkd.service",
        },
        Service: {
          Type: "oneshot",
          RemainAfterExit: "yes",
          // TCP's own blackhole detection as well, for peers outside the plan's CIDRs (sysctl file, re-read here on first boot).
          ExecStartPre: `/usr/sbin/sysctl -q -p ${NODE_PATHS.sysctl}`,
          ExecStart: [NODE_PATHS.pathMtu, String(INTER_REGION_PATH_MTU), ...otherRegions].join(" "),
        },
        Install: { WantedBy: "multi-user.target systemd-networkd.service" },
      },
    });
  }
  if (node.roles.has("etcd")) {
    units.push({
      name: "etcd.service",
      unit: {
        Unit: {
          Description: `etcd member ${node.name} of ${plan.config.patroni.scope}`,
          Documentation: "https://etcd.io/docs/v3.5/op-guide/configuration/",
          After: "network-online.target",
          Wants: "network-online.target",
        },
        Service: {
          Type: "notify",
          // etcd reports ready only once it has joined a quorum. A new cluster's first member waits for the
          // others, which boot minutes apart (each installs its packages first); systemd's default 90 s would
          // kill it, fail runcmd's `systemctl restart` and with it the boot. Waiting is the normal state here.
          TimeoutStartSec: "infinity",
          User: SERVICE_USERS.etcd,
          Group: SERVICE_USERS.etcd,
          // systemd creates /var/lib/etcd owned by etcd, mode 0700 (etcd insists).
          StateDirectory: "etcd",
          StateDirectoryMode: "0700",
          ExecStart: `${NODE_PATHS.etcdBinary} --config-file=${NODE_PATHS.etcdConfig}`,
          Restart: "always",
          RestartSec: "5s",
          LimitNOFILE: 65536,
        },
        Install: { WantedBy: "multi-user.target" },
      },
    });
  }
  if (node.roles.has("postgres")) {
    units.push({
      name: "patroni.service",
      unit: {
        Unit: {
          Description: `Patroni member ${node.name} of ${plan.config.patroni.scope}`,
          Documentation: "https://patroni.readthedocs.io/",
          After: node.roles.has("etcd") ? "network-online.target etcd.service" : "network-online.target",
          Wants: node.roles.has("etcd") ? "network-online.target etcd.service" : "network-online.target",
          // PGDATA's volume has a mount unit that only multi-user.target wants (a missing volume must not stop the
          // boot into a node SSM can reach; pgha-prepare-data-volume writes it), so nothing else orders the mount
          // before Patroni: without this, a reboot can start Patroni on the empty directory of the root disk and
          // initdb there. With it Patroni waits for the mount, and does not start if the mount fails.
          RequiresMountsFor: postgresPaths(plan.config.versions.postgresMajor).mountPoint,
          // And when there is no mount unit at all (a first boot whose volume never came: the package enabled
          // patroni.service, our steps stopped before the mount), RequiresMountsFor= settles for the root disk's
          // mount; this refuses to start Patroni unless PGDATA's directory is a mount point (found by drill c).
          AssertPathIsMountPoint: postgresPaths(plan.config.versions.postgresMajor).mountPoint,
        },
        Service: {
          Type: "simple",
          User: SERVICE_USERS.postgres,
          Group: SERVICE_USERS.postgres,
          EnvironmentFile: NODE_PATHS.patroniEnv,
          ExecStart: `/usr/bin/patroni ${NODE_PATHS.patroniConfig}`,
          ExecReload: "/bin/kill -s HUP $MAINPID",
          // Stop only Patroni; it shuts PostgreSQL down itself.
          KillMode: "process",
          TimeoutStopSec: 60,
          Restart: "on-failure",
          RestartSec: "5s",
          LimitNOFILE: 65536,
        },
        Install: { WantedBy: "multi-user.target" },
      },
    });
  }
  if (node.roles.has("haproxy")) {
    units.push({
      name: "haproxy.service",
      unit: {
        Unit: {
          Description: `HAProxy endpoint ${node.name} of ${plan.config.patroni.scope}`,
          Documentation: "https://docs.haproxy.org/",
          After: "network-online.target",
          Wants: "network-online.target",
        },
        Service: {
          Type: "notify",
          // Starts as root to read its certificate, then drops to `user haproxy`.
          ExecStartPre: `/usr/sbin/haproxy -c -q -f ${NODE_PATHS.haproxyConfig}`,
          ExecStart: `/usr/sbin/haproxy -Ws -f ${NODE_PATHS.haproxyConfig} -p /run/haproxy.pid`,
          ExecReload: "/bin/kill -USR2 $MAINPID",
          RuntimeDirectory: "haproxy",
          KillMode: "mixed",
          Restart: "always",
          RestartSec: "2s",
          LimitNOFILE: 65536,
        },
        Install: { WantedBy: "multi-user.target" },
      },
    });
  }
  return units;
}
