import { NODE_PATHS, PORTS, type CertificateKind, type ClusterPlan } from "../plan";
import { canonicalJson, sha256 } from "./dynamic-config";
import type { FileEffect } from "./node-files";

/**
 * Node secrets (certificates, keys, passwords) in a rolling change. Their
 * values never travel through the transport: each node fetches its own with
 * `pgha-fetch-secrets` (SSM on AWS, --from-dir in the lab), which in
 * `--check` mode only names the files that differ. The rollout knows them by
 * path alone.
 */

/** A secret file that differs on a node: path and what makes it take effect, no content. */
export interface SecretFileWork {
  path: string;
  effect: FileEffect;
}

/**
 * What a changed secret file needs, verified against the versions the nodes
 * run (Patroni 4.0.7, etcd 3.5, urllib3 2.3):
 *
 * - PostgreSQL server cert/key and the Patroni REST cert/key: SIGHUP to
 *   Patroni. `Patroni.reload_config(sighup=True)` calls
 *   `postgresql.config.reload_config(sighup=True)`, which reloads PostgreSQL
 *   (PostgreSQL ≥ 10 re-reads ssl_cert_file/ssl_key_file on reload), and
 *   `RestApiServer.reload_local_certificate()`, which compares the serial of
 *   restapi.certfile on disk and re-creates the REST listener's SSL context
 *   when it changed — but only when patroni.yml itself did not change in the
 *   same reload (`if local or sighup and self.api.reload_local_certificate()`
 *   short-circuits), so the rollout checks the REST API's served serial and
 *   signals again (see ops/rollout.ts).
 * - etcd member cert/key (client 2379 and peer 2380): nothing. etcd's
 *   `TLSInfo.baseConfig` loads the pair from disk in `GetCertificate` and
 *   `GetClientCertificate`, i.e. on every handshake; established sessions
 *   are not re-verified, so nobody notices the swap.
 * - etcd client cert/key (Patroni's etcd3 client, etcdctl): nothing. Patroni
 *   hands the paths to urllib3, which calls `load_cert_chain` for every new
 *   connection; etcdctl reads them per run.
 * - HAProxy's check bundle: HAProxy reads `crt` at start only, so reload.
 * - The metrics certificate: its HAProxy bundle (the exporter frontend) the
 *   same; the cert/key pair nothing: node_exporter, postgres_exporter,
 *   Prometheus and Alertmanager serve through exporter-toolkit, which loads
 *   the pair in `GetCertificate` on every handshake, and Prometheus re-reads
 *   its scrape client certificate when the files change. (Alertmanager's
 *   gossip TLS keeps the pair it started with: its peers' connections are
 *   long-lived and verified at the handshake only.)
 * - The CA and the passwords are not rolled ("not-rolled" stops the
 *   rollout before any node is touched): a new CA needs a phase where both
 *   are trusted, and a new replication/superuser/rewind password needs an
 *   ALTER ROLE on the primary in step with patroni.env on every member.
 */
export function secretFileEffect(plan: ClusterPlan, node: string, path: string): FileEffect {
  if (path === NODE_PATHS.caCert || path === NODE_PATHS.patroniEnv) return "not-rolled";
  const cert = plan.certificates.find((c) => c.node === node && (c.certPath === path || c.keyPath === path || c.bundlePath === path));
  switch (cert?.kind) {
    case "postgres-server":
    case "patroni-rest":
      return "reload-patroni";
    case "etcd-member":
    case "etcd-client":
      return "reread-on-connect";
    case "haproxy-check":
      return "reload-haproxy";
    case "metrics":
      return path === cert.bundlePath ? "reload-haproxy" : "reread-on-connect";
    default:
      // A manifest entry this plan does not know: nobody reads it yet.
      return "none";
  }
}

/** The JSON line `pgha-fetch-secrets` prints (check and write mode alike). */
export interface SecretFetchReport {
  mode: "check" | "write";
  files: number;
  changed: { path: string; differs: string[] }[];
}

/** The report line of `pgha-fetch-secrets` (its last JSON line on stdout); throws when there is none. */
export function parseSecretFetchReport(stdout: string): SecretFetchReport {
  const line = stdout
    .trim()
    .split("\n")
    .reverse()
    .find((l) => l.trim().startsWith("{"));
  if (!line) throw new Error(`pgha-fetch-secrets printed no report: ${JSON.stringify(stdout.slice(-200))}`);
  // As JSON gives it: the fields are checked or converted below.
  const parsed = JSON.parse(line) as { mode?: unknown; files?: unknown; changed?: { path?: unknown; differs?: unknown[] }[] };
  if ((parsed.mode !== "check" && parsed.mode !== "write") || !Array.isArray(parsed.changed)) throw new Error(`not a pgha-fetch-secrets report: ${line.slice(0, 200)}`);
  return { mode: parsed.mode, files: Number(parsed.files ?? 0), changed: parsed.changed.map((c) => ({ path: String(c.path), differs: (c.differs ?? []).map(String) })) };
}

export function secretWork(plan: ClusterPlan, node: string, report: SecretFetchReport): SecretFileWork[] {
  return report.changed.map((c) => ({ path: c.path, effect: secretFileEffect(plan, node, c.path) }));
}

/** `pgha-fetch-secrets` on a node, with the transport's source of values (none: SSM). */
export function fetchSecretsArgv(extraArgs: string[], check: boolean): string[] {
  return [NODE_PATHS.fetchSecrets, ...(check ? ["--check"] : []), ...extraArgs];
}

/**
 * The rollout's trigger for renewed certificates: a hash over every
 * certificate PEM (the CA and each leaf by id). Certificates are public, so
 * the hash is not a secret; private keys and passwords are deliberately not
 * part of it (a key only changes together with its certificate here).
 */
export function certificatesHash(pems: Record<string, string>): string {
  return sha256(canonicalJson(pems));
}

/** The serial a TLS server presents on a fresh connection (chain verified against `ca`); extra args: client cert/key, -starttls. */
export const SERVED_SERIAL_SCRIPT =
  'addr=$1; ca=$2; shift 2; openssl s_client -connect "$addr" -CAfile "$ca" -verify_return_error "$@" </dev/null 2>/dev/null | openssl x509 -noout -serial';
export const FILE_SERIAL_SCRIPT = 'openssl x509 -in "$1" -noout -serial';

/** Serials compare as hex numbers: openssl and HAProxy print them padded differently. */
export function normaliseSerial(serial: string): string {
  return serial
    .trim()
    .toUpperCase()
    .replace(/^SERIAL=/, "")
    .replace(/:/g, "")
    .replace(/^0+(?=.)/, "");
}

/** `serial=…` out of openssl's output; undefined when there is none (no TLS answer). */
export function serialOf(stdout: string): string | undefined {
  const match = /serial=(\S+)/.exec(stdout);
  return match ? normaliseSerial(match[1]) : undefined;
}

/** The node's own certificate that a server presents, and which one it presents as a client (mTLS). */
export const TLS_SERVERS: { what: string; port: number; serves: CertificateKind; client?: CertificateKind; starttls?: string }[] = [
  { what: "etcd client", port: PORTS.etcdClient, serves: "etcd-member", client: "etcd-member" },
  { what: "etcd peer", port: PORTS.etcdPeer, serves: "etcd-member", client: "etcd-member" },
  { what: "Patroni REST", port: PORTS.patroniRest, serves: "patroni-rest", client: "patroni-rest" },
  { what: "PostgreSQL", port: PORTS.postgres, serves: "postgres-server", starttls: "postgres" },
];
