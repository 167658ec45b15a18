import type { NodePlan } from "./plan";
import { NODE_PATHS } from "./paths";

/** Key usages as @pulumi/tls spells them (snake_case), also mapped for openssl in the lab. */
export type TlsUse = "digital_signature" | "key_encipherment" | "server_auth" | "client_auth" | "cert_signing" | "crl_signing";

/**
 * One certificate per purpose, so a leaked HAProxy check key cannot act as
 * an etcd peer and a PostgreSQL server key cannot sign etcd client requests.
 */
export type CertificateKind = "etcd-member" | "etcd-client" | "patroni-rest" | "postgres-server" | "haproxy-check" | "metrics";

export interface CertificatePlan {
  /** Unique id: `<node>-<kind>`. */
  id: string;
  node: string;
  kind: CertificateKind;
  commonName: string;
  /** SANs: the node's hostname and localhost. */
  dnsNames: string[];
  /** SANs: the node's private IP and 127.0.0.1. */
  ipAddresses: string[];
  allowedUses: TlsUse[];
  /** Service user that must read the key. */
  owner: string;
  certPath: string;
  keyPath: string;
  /** When set, cert and key are (also) delivered concatenated in this one file (HAProxy `crt`). */
  bundlePath?: string;
  /** Whether certPath and keyPath are delivered too (false: the bundle only). */
  separateFiles: boolean;
}

export const CA_PLAN = {
  commonName: "pgha cluster CA",
  organization: "pgha",
  allowedUses: ["cert_signing", "crl_signing", "digital_signature"] as TlsUse[],
  validityHours: 10 * 365 * 24,
};

/**
 * ECDSA P-256 everywhere: small keys keep each SSM parameter far below the
 * 4 KB standard tier, and etcd, Python, PostgreSQL and HAProxy all accept it.
 */
export const KEY_ALGORITHM = { algorithm: "ECDSA", ecdsaCurve: "P256" } as const;

/** Leaf certificates last two years and are re-issued by `pulumi up` in their last 30 days. */
export const LEAF_VALIDITY_HOURS = 2 * 365 * 24;
export const LEAF_EARLY_RENEWAL_HOURS = 30 * 24;

interface KindSpec {
  kind: CertificateKind;
  /** The node role that gets it; `any` for every node. */
  role: "postgres" | "etcd" | "haproxy" | "any";
  uses: TlsUse[];
  owner: string;
  /**
   * Deliver cert and key as one file for HAProxy (`crt`): instead of the two files, or, on nodes with the given
   * role, as well as them (HAProxy 2.8, Ubuntu 24.04's, cannot load a key from a file of its own name).
   */
  bundle?: { instead: true } | { alsoOn: "haproxy" };
}

const KINDS: KindSpec[] = [
  // Serves clients on 2379 and authenticates to peers on 2380 (peer-client-cert-auth).
  { kind: "etcd-member", role: "etcd", uses: ["server_auth", "client_auth"], owner: "etcd" },
  // Patroni's and etcdctl's identity towards etcd.
  { kind: "etcd-client", role: "postgres", uses: ["client_auth"], owner: "postgres" },
  // Serves the REST API and, as ctl.certfile, authenticates Patroni to other members' REST APIs.
  { kind: "patroni-rest", role: "postgres", uses: ["server_auth", "client_auth"], owner: "postgres" },
  { kind: "postgres-server", role: "postgres", uses: ["server_auth"], owner: "postgres" },
  // HAProxy's client certificate for TLS health checks against verify_client: required.
  { kind: "haproxy-check", role: "haproxy", uses: ["client_auth"], owner: "haproxy", bundle: { instead: true } },
  // The monitoring identity (docs/monitoring.md): it serves the node's exporters (and, on HAProxy nodes, HAProxy's
  // exporter, Prometheus and Alertmanager) to scrapers that must present a cluster certificate, and is what each
  // region's Prometheus presents when it scrapes and Alertmanager when it gossips. Its own kind, so a leaked
  // exporter key cannot act as etcd, Patroni or PostgreSQL.
  { kind: "metrics", role: "any", uses: ["server_auth", "client_auth"], owner: "prometheus", bundle: { alsoOn: "haproxy" } },
];

export function planCertificates(nodes: NodePlan[]): CertificatePlan[] {
  // Applications reach PostgreSQL through HAProxy's TCP passthrough, so the
  // server certificate also names every HAProxy endpoint: clients can use
  // sslmode=verify-full against the address they actually dial.
  const endpoints = nodes.filter((node) => node.roles.has("haproxy"));
  return nodes.flatMap((node) =>
    KINDS.filter((spec) => spec.role === "any" || node.roles.has(spec.role)).map((spec): CertificatePlan => {
      const base = `${NODE_PATHS.tlsDir}/${spec.kind}`;
      const bundled = spec.bundle !== undefined && ("instead" in spec.bundle || node.roles.has(spec.bundle.alsoOn));
      const viaHaproxy = spec.kind === "postgres-server" ? endpoints.filter((e) => e.name !== node.name) : [];
      return {
        id: `${node.name}-${spec.kind}`,
        node: node.name,
        kind: spec.kind,
        commonName: `${node.name} ${spec.kind}`,
        dnsNames: [node.name, "localhost", ...viaHaproxy.map((e) => e.name)],
        ipAddresses: [node.privateIp, "127.0.0.1", ...viaHaproxy.map((e) => e.privateIp)],
        allowedUses: ["digital_signature", ...spec.uses],
        owner: spec.owner,
        certPath: `${base}.crt`,
        keyPath: `${base}.key`,
        ...(bundled ? { bundlePath: `${base}.pem` } : {}),
        separateFiles: !(spec.bundle && "instead" in spec.bundle),
      };
    }),
  );
}

export function certificateFor(certificates: CertificatePlan[], node: string, kind: CertificateKind): CertificatePlan {
  const found = certificates.find((c) => c.node === node && c.kind === kind);
  if (!found) throw new Error(`no ${kind} certificate planned for node ${node}`);
  return found;
}
