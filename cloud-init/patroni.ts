import { certificateFor, CLUSTER_USERS, NODE_PATHS, nodesWithRole, PORTS, postgresPaths, type ClusterPlan, type NodePlan } from "../plan";
import { archiveCommand, pgbackrestReplicaMethod, restoreCommand } from "./pgbackrest";
import { dumpYaml } from "./yaml";

/** The share of PGDATA's volume that replication slots may hold in pg_wal. */
export const SLOT_WAL_SHARE_OF_VOLUME = 0.1;

/**
 * `max_slot_wal_keep_size`: without it (PostgreSQL's default, -1) the slot of
 * a member that is gone keeps every WAL segment since it left, until pg_wal
 * fills PGDATA's volume and the primary stops. With it, past a tenth of the
 * volume the slot is invalidated instead and that member has to be rebuilt
 * (`patronictl reinit`); the primary keeps running. A tenth of the default
 * 100 GiB is 10 GB of WAL: hours of a busy primary's writes, far more than a
 * reboot or an instance replacement takes.
 */
export function maxSlotWalKeepSize(plan: ClusterPlan): string {
  return `${Math.max(64, Math.floor(plan.config.instances.dataVolumeGiB * 1024 * SLOT_WAL_SHARE_OF_VOLUME))}MB`;
}

/**
 * PostgreSQL parameters every member runs with. They are Patroni dynamic
 * configuration (bootstrap.dcs): after the first boot they live in etcd and
 * change through `patronictl edit-config`, not by editing this file.
 */
function clusterParameters(plan: ClusterPlan): Record<string, string | number | boolean> {
  return {
    wal_level: "replica",
    hot_standby: "on",
    // Required by pg_rewind when data checksums are off, harmless when on.
    wal_log_hints: "on",
    max_wal_senders: 10,
    max_replication_slots: 10,
    // WAL kept for standbys beyond what their slots hold. Small on purpose: PostgreSQL 17's pg_rewind copies every
    // file in the source's pg_wal, so each GB kept here crosses the WAN at every rejoin (1GB made the WAN lab's
    // region-loss rejoin take 114 s of copying). A standby further behind reads the repositories (restore_command).
    wal_keep_size: "128MB",
    // How long a primary's walsender waits for a standby's reply before it gives up on it. Patroni keeps a standby
    // as the synchronous one while its walsender is there, so with PostgreSQL's 60 s a cut primary ↔ sync standby
    // link stalled every commit for 60 s (issue #15) and an isolated primary's shutdown waited as long. 5 s is 70
    // round trips of the longest inter-region link, and standbys reply every second (below), not every ten.
    wal_sender_timeout: "5s",
    wal_receiver_status_interval: "1s",
    max_slot_wal_keep_size: maxSlotWalKeepSize(plan),
    password_encryption: "scram-sha-256",
    // Every WAL segment to every region's pgBackRest repository (cloud-init/pgbackrest.ts), through the async spool.
    archive_mode: "on",
    archive_command: archiveCommand(plan),
    archive_timeout: `${plan.backup.archiveTimeoutSeconds}s`,
    ...plan.config.patroni.parameters,
  };
}

/**
 * pg_hba: TLS and SCRAM for every network connection, and only from the
 * cluster's own VPCs (applications arrive through HAProxy, whose address is
 * inside them). Replication connections come only from the database nodes
 * themselves: a host elsewhere in the VPCs (an application subnet) that learns
 * the replicator's password still cannot stream the whole database. Patroni
 * itself uses the local socket with peer auth.
 */
export function pgHba(plan: ClusterPlan): string[] {
  const fromMembers = nodesWithRole(plan, "postgres").map((member) => `hostssl replication ${CLUSTER_USERS.replication} ${member.privateIp}/32 scram-sha-256`);
  const fromCluster = plan.clusterCidrs.map((cidr) => `hostssl all all ${cidr} scram-sha-256`);
  return [
    `local all ${CLUSTER_USERS.superuser} peer`,
    // postgres_exporter, as the OS user prometheus, with the pg_monitor role pgha-post-bootstrap creates.
    `local all ${CLUSTER_USERS.monitoring} peer`,
    `local all all scram-sha-256`,
    // Patroni opens a replication connection to its own server on localhost
    // every HA cycle on a replica (timeline and LSN checks).
    `hostssl replication ${CLUSTER_USERS.replication} 127.0.0.1/32 scram-sha-256`,
    `hostssl all all 127.0.0.1/32 scram-sha-256`,
    ...fromMembers,
    ...fromCluster,
    `host all all 0.0.0.0/0 reject`,
    `host all all ::/0 reject`,
  ];
}

export function patroniConfig(plan: ClusterPlan, node: NodePlan): Record<string, unknown> {
  if (!node.roles.has("postgres")) throw new Error(`${node.name} has no postgres role`);
  const { patroni, versions } = plan.config;
  const pg = postgresPaths(versions.postgresMajor);
  const rest = certificateFor(plan.certificates, node.name, "patroni-rest");
  const etcdClient = certificateFor(plan.certificates, node.name, "etcd-client");
  const server = certificateFor(plan.certificates, node.name, "postgres-server");
  // Replication and pg_rewind connect to the other members' IPs, which their
  // server certificates carry as SANs: verify-full holds.
  const verifiedTls = { sslmode: "verify-full", sslrootcert: NODE_PATHS.caCert };
  return {
    scope: patroni.scope,
    namespace: patroni.namespace,
    name: node.name,
    restapi: {
      listen: `0.0.0.0:${PORTS.patroniRest}`,
      connect_address: `${node.privateIp}:${PORTS.patroniRest}`,
      certfile: rest.certPath,
      keyfile: rest.keyPath,
      cafile: NODE_PATHS.caCert,
      // Every call, health checks included, must present a certificate from
      // the cluster CA; unsafe calls also need the password (PATRONI_RESTAPI_PASSWORD).
      verify_client: "required",
      authentication: { username: CLUSTER_USERS.restApi },
    },
    // Patroni's own calls to other members and patronictl present this
    // certificate; Patroni does not fall back to restapi.certfile.
    ctl: { certfile: rest.certPath, keyfile: rest.keyPath, cacert: NODE_PATHS.caCert },
    etcd3: {
      hosts: plan.etcd.members.map((m) => m.clientUrl.replace(/^https:\/\//, "")),
      protocol: "https",
      cacert: NODE_PATHS.caCert,
      cert: etcdClient.certPath,
      key: etcdClient.keyPath,
    },
    bootstrap: {
      dcs: {
        ttl: patroni.ttl,
        loop_wait: patroni.loopWait,
        retry_timeout: patroni.retryTimeout,
        maximum_lag_on_failover: patroni.maximumLagOnFailover,
        synchronous_mode: patroni.synchronousMode,
        synchronous_mode_strict: patroni.synchronousModeStrict,
        synchronous_node_count: patroni.synchronousNodeCount,
        failsafe_mode: patroni.failsafeMode,
        postgresql: {
          use_pg_rewind: true,
          use_slots: true,
          parameters: clusterParameters(plan),
        },
      },
      initdb: [{ encoding: "UTF8" }, { locale: "C.UTF-8" }, "data-checksums"],
      // Patroni appends the superuser connection string; the stanza comes first.
      post_bootstrap: `${NODE_PATHS.postBootstrap} ${plan.backup.stanza}`,
    },
    postgresql: {
      listen: `0.0.0.0:${PORTS.postgres}`,
      connect_address: `${node.privateIp}:${PORTS.postgres}`,
      data_dir: pg.dataDir,
      bin_dir: pg.binDir,
      pgpass: "/var/lib/postgresql/.pgpass.patroni",
      use_unix_socket: true,
      authentication: {
        // Passwords come from PATRONI_*_PASSWORD in /etc/patroni/patroni.env.
        superuser: { username: CLUSTER_USERS.superuser },
        replication: { username: CLUSTER_USERS.replication, ...verifiedTls },
        rewind: { username: CLUSTER_USERS.rewind, ...verifiedTls },
      },
      parameters: {
        unix_socket_directories: NODE_PATHS.postgresSocketDir,
        ssl: "on",
        ssl_cert_file: server.certPath,
        ssl_key_file: server.keyPath,
        ssl_ca_file: NODE_PATHS.caCert,
        ssl_min_protocol_version: "TLSv1.2",
      },
      // Local, not dynamic: the allowed networks are the stack's own VPCs,
      // which change only with the infrastructure, node by node.
      pg_hba: pgHba(plan),
      // From the node's own region's repository first; from the primary when there is no backup yet.
      create_replica_methods: ["pgbackrest", "basebackup"],
      pgbackrest: pgbackrestReplicaMethod(plan, node),
      basebackup: [{ checkpoint: "fast" }],
      // A replica whose primary no longer has the WAL it needs (its slot invalidated) reads it from the archive.
      recovery_conf: { restore_command: restoreCommand(plan) },
      // A replica whose pg_rewind fails is re-cloned instead of staying down.
      remove_data_directory_on_rewind_failure: true,
    },
    tags: {
      failover_priority: node.failoverPriority,
      noloadbalance: false,
      clonefrom: false,
      nosync: false,
      region: node.region,
    },
  };
}

export function renderPatroniConfig(plan: ClusterPlan, node: NodePlan): string {
  return dumpYaml(patroniConfig(plan, node));
}

/** The members HAProxy and the drills address, in plan order. */
export function patroniMembers(plan: ClusterPlan): NodePlan[] {
  return nodesWithRole(plan, "postgres");
}
