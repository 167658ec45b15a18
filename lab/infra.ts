import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { topicRegion } from "../cloud-init/monitoring";
import type { ClusterPlan } from "../plan";
import { exec, run, sleep, tailOf } from "./exec";
import { ROUTER_NS, type HostLayout, type LabLayout } from "./layout";
import { mountRoot, mkdirInRoot, resolveInRoot } from "./roots";
import { labInstanceId } from "./machine";
import type { ParameterRecord } from "./pki";

/**
 * The lab's cloud around the machines, in namespaces of its own:
 * - the infrastructure namespace (INFRA_NS, behind the router like a NAT
 *   gateway's far side) serves the signed apt mirror and the etcd release
 *   archive over HTTP, and an SSM-, SNS- and S3-compatible endpoint (Debian 13's
 *   moto_server) over TLS under the lab infrastructure CA, at the names the
 *   nodes' image resolves ssm.<region>.amazonaws.com and
 *   sns.<region>.amazonaws.com to; the stack's alert topic there has an SQS
 *   queue subscribed, the lab's stand-in for whoever is on call;
 * - the instance metadata service (lab/assets/imds.py) on 169.254.169.254 in
 *   the router namespace, so it stays reachable when "egress" is cut, as IMDS
 *   is on EC2 before the NAT gateway carries traffic.
 */

export const INFRA_NS = "pgha-infra";
export const INFRA_ADDRESS = "10.254.0.10";
const INFRA_GATEWAY = "10.254.0.1";
const INFRA_PREFIX = 24;
const INFRA_BRIDGE = "brinfra";
const INFRA_ROUTER_IF = "vinfra";
export const IMDS_ADDRESS = "169.254.169.254";

/** The lab's infrastructure keys (lab/infra-keys.sh): its CA and its apt archive key. */
export function infraKeysDir(): string {
  return path.join(process.env.PGHA_ROOTFS_CACHE ?? "/var/cache/pgha-lab", "infra");
}

/**
 * The AWS endpoint names the nodes call, all served by the one moto_server
 * (the image maps them to INFRA_ADDRESS): SSM in every region of the plan,
 * and SNS in the alert topic's region.
 */
export function awsEndpointNames(plan: ClusterPlan): string[] {
  const topic = plan.config.monitoring.alertTopicArn;
  return [
    ...new Set([
      ...plan.regions.map((region) => `ssm.${region.awsRegion}.amazonaws.com`),
      ...(topic ? [`sns.${topicRegion(topic)}.amazonaws.com`] : []),
      // pgBackRest addresses each repository's bucket virtual-hosted style, <bucket>.s3.<region>.amazonaws.com.
      ...plan.backup.repositories.map((repo) => `${repo.bucket}.${repo.endpoint}`),
    ]),
  ];
}

export function infraHost(layout: LabLayout): HostLayout {
  const dir = path.join(layout.stateDir, "infra");
  return {
    name: "infra",
    ns: INFRA_NS,
    region: "",
    link: { ns: INFRA_NS, ifname: "eth0", routerIf: INFRA_ROUTER_IF, bridge: INFRA_BRIDGE, address: INFRA_ADDRESS, prefixLength: INFRA_PREFIX, gateway: INFRA_GATEWAY, mtu: 1500 },
    root: path.join(dir, "root"),
    upper: path.join(dir, "upper"),
    work: path.join(dir, "work"),
    logDir: path.join(dir, "log"),
  };
}

const ip = (ns: string, ...args: string[]): Promise<string> => run(["ip", "-n", ns, ...args]);

async function createInfraNetwork(host: HostLayout): Promise<void> {
  const { link } = host;
  await ip(ROUTER_NS, "link", "add", INFRA_BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0");
  await ip(ROUTER_NS, "addr", "add", `${INFRA_GATEWAY}/${INFRA_PREFIX}`, "dev", INFRA_BRIDGE);
  await ip(ROUTER_NS, "link", "set", INFRA_BRIDGE, "up");
  await run(["ip", "netns", "add", host.ns]);
  await ip(host.ns, "link", "set", "lo", "up");
  await ip(ROUTER_NS, "link", "add", link.routerIf, "type", "veth", "peer", "name", link.ifname, "netns", host.ns);
  await ip(ROUTER_NS, "link", "set", link.routerIf, "master", INFRA_BRIDGE);
  await ip(ROUTER_NS, "link", "set", link.routerIf, "up");
  await ip(host.ns, "addr", "add", `${link.address}/${link.prefixLength}`, "dev", link.ifname);
  await ip(host.ns, "link", "set", link.ifname, "up");
  await ip(host.ns, "route", "add", "default", "via", INFRA_GATEWAY, "dev", link.ifname);
  // The metadata address lives on the router itself: reachable from every node, from nowhere else.
  await ip(ROUTER_NS, "addr", "add", `${IMDS_ADDRESS}/32`, "dev", "lo");
}

/** moto_server's plain HTTP port inside the infrastructure namespace, behind HAProxy's TLS on 443. */
const MOTO_PORT = 4566;

/** HAProxy in front of moto_server: TLS with the endpoint certificate on 443 of every address, HTTP to moto. */
function endpointProxyConfig(): string {
  return [
    "global",
    "  maxconn 4096",
    "defaults",
    "  mode http",
    "  timeout connect 5s",
    // A backup's multipart upload or a restore's download streams for as long as the part takes.
    "  timeout client 10m",
    "  timeout server 10m",
    "frontend aws",
    "  bind :443 ssl crt /etc/pgha-lab-infra/endpoint.pem",
    "  default_backend moto",
    "backend moto",
    `  server moto 127.0.0.1:${String(MOTO_PORT)}`,
    "",
  ].join("\n");
}

/** Cuts the nodes off the mirror and the SSM endpoint (drill b: no NAT gateway yet); IMDS stays. */
export async function setEgress(up: boolean): Promise<void> {
  await ip(ROUTER_NS, "link", "set", INFRA_ROUTER_IF, up ? "up" : "down");
}

function startDaemon(host: HostLayout, name: string, argv: string[], options: { chroot: boolean; ns?: string }): void {
  fs.mkdirSync(host.logDir, { recursive: true });
  const out = fs.openSync(path.join(host.logDir, `${name}.log`), "a");
  const inner = options.chroot ? ["chroot", host.root, ...argv] : argv;
  const child = spawn("ip", ["netns", "exec", options.ns ?? host.ns, ...inner], {
    detached: true,
    stdio: ["ignore", out, out],
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8" },
  });
  child.unref();
  fs.closeSync(out);
}

async function waitTcp(ns: string, address: string, port: number, what: string, logFile: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const probe = await exec(["ip", "netns", "exec", ns, "bash", "-c", `exec 3<>/dev/tcp/${address}/${String(port)}`], { timeoutMs: 5000 });
    if (probe.code === 0) return;
    await sleep(250);
  }
  throw new Error(`${what} did not listen on ${address}:${String(port)} within ${timeoutMs / 1000} s:\n${tailOf(logFile, 15)}`);
}

/** The SSM endpoint's certificate under the lab infrastructure CA, for every region's endpoint name. */
async function issueEndpointCertificate(plan: ClusterPlan, dir: string): Promise<{ cert: string; key: string; ca: string }> {
  const keys = infraKeysDir();
  const ca = path.join(keys, "ca.crt");
  const key = path.join(dir, "endpoint.key");
  const cert = path.join(dir, "endpoint.crt");
  const csr = path.join(dir, "endpoint.csr");
  const ext = path.join(dir, "endpoint.ext");
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const names = [...awsEndpointNames(plan), "localhost"].map((name) => `DNS:${name}`);
  fs.writeFileSync(ext, `subjectAltName=${[...names, `IP:${INFRA_ADDRESS}`].join(",")}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`);
  await run([
    "openssl",
    "req",
    "-new",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    key,
    "-subj",
    "/CN=ssm.amazonaws.com (pgha lab)",
    "-out",
    csr,
  ]);
  await run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", path.join(keys, "ca.key"), "-CAcreateserial", "-days", "30", "-extfile", ext, "-out", cert]);
  return { cert, key, ca };
}

export interface InfraOptions {
  plan: ClusterPlan;
  layout: LabLayout;
  /** The tools rootfs (Debian 13 with python3-moto) the infrastructure services run from. */
  rootfs: string;
  /** The mirror directory (lab/build-mirror.sh). */
  mirror: string;
  parameters: ParameterRecord[];
  log: (line: string) => void;
}

/** Credentials the metadata service hands each node (moto accepts any key pair). */
function imdsConfig(plan: ClusterPlan): Record<string, unknown> {
  return Object.fromEntries(
    plan.nodes.map((node) => [
      node.privateIp,
      {
        instanceId: labInstanceId(node.name),
        region: node.awsRegion,
        role: `pgha-lab-${node.name}`,
        accessKeyId: `ASIALAB${labInstanceId(node.name).slice(2, 15).toUpperCase()}`,
        secretAccessKey: `lab-secret-${node.name}`,
      },
    ]),
  );
}

/** Starts the mirror, the SSM endpoint (seeded with every parameter) and the metadata service. */
export async function startInfra(options: InfraOptions): Promise<void> {
  const { plan, layout, log } = options;
  const host = infraHost(layout);
  await createInfraNetwork(host);
  await mountRoot(host, options.rootfs);
  const mirrorInRoot = mkdirInRoot(host.root, "/srv/mirror");
  await run(["mount", "--bind", "-o", "ro", options.mirror, mirrorInRoot]);
  await run(["mount", "-o", "remount,bind,ro", mirrorInRoot]);

  const tls = await issueEndpointCertificate(plan, path.join(path.dirname(host.root), "tls"));
  const tlsInRoot = mkdirInRoot(host.root, "/etc/pgha-lab-infra");
  for (const [from, to] of [
    [tls.cert, "endpoint.crt"],
    [tls.key, "endpoint.key"],
    [tls.ca, "ca.crt"],
  ] as const)
    fs.copyFileSync(from, path.join(tlsInRoot, to));
  const assets = mkdirInRoot(host.root, "/usr/local/lib/pgha-lab");
  for (const asset of ["ssm-seed.py", "alert-inbox.py", "s3-buckets.py"]) fs.copyFileSync(path.join(__dirname, "assets", asset), path.join(assets, asset));

  startDaemon(host, "mirror", ["python3", "-m", "http.server", "80", "--bind", INFRA_ADDRESS, "--directory", "/srv/mirror"], { chroot: true });
  // moto_server's own TLS (Werkzeug's) answers `Connection: close` and then drops the connection without a TLS
  // close_notify; pgBackRest (OpenSSL 3) takes that for a truncated response and retries until it gives up. HAProxy
  // terminates TLS in front of it instead, as an AWS endpoint does, and keeps client connections alive.
  fs.writeFileSync(path.join(tlsInRoot, "endpoint.pem"), fs.readFileSync(tls.cert, "utf8") + fs.readFileSync(tls.key, "utf8"), { mode: 0o600 });
  fs.writeFileSync(path.join(tlsInRoot, "haproxy.cfg"), endpointProxyConfig());
  startDaemon(host, "ssm", ["moto_server", "--host", "127.0.0.1", "--port", String(MOTO_PORT)], { chroot: true });
  startDaemon(host, "endpoint-tls", ["haproxy", "-db", "-f", "/etc/pgha-lab-infra/haproxy.cfg"], { chroot: true });
  const imdsFile = path.join(path.dirname(host.root), "imds.json");
  fs.writeFileSync(imdsFile, JSON.stringify(imdsConfig(plan), null, 2), { mode: 0o600 });
  startDaemon(host, "imds", ["python3", path.join(__dirname, "assets", "imds.py"), imdsFile], { chroot: false, ns: ROUTER_NS });

  await waitTcp(INFRA_NS, INFRA_ADDRESS, 80, "the apt mirror", path.join(host.logDir, "mirror.log"));
  await waitTcp(INFRA_NS, "127.0.0.1", MOTO_PORT, "the SSM, SNS and S3 endpoint (moto_server)", path.join(host.logDir, "ssm.log"));
  await waitTcp(INFRA_NS, "127.0.0.1", 443, "the endpoint's TLS (HAProxy)", path.join(host.logDir, "endpoint-tls.log"));
  await waitTcp(ROUTER_NS, IMDS_ADDRESS, 80, "the metadata service", path.join(host.logDir, "imds.log"));

  const seeded = await putParameters(layout, options.parameters);
  const buckets = await createBuckets(layout, plan);
  const topic = plan.config.monitoring.alertTopicArn;
  // A new moto_server starts with an empty queue: so does the lab's record of what it delivered.
  fs.rmSync(alertNotificationsFile(layout), { force: true });
  const inbox = topic ? `, alert topic ${(await alertInbox(layout, "create", topic)).trim()}` : "";
  log(`infra: mirror on http://${INFRA_ADDRESS}/, SSM and S3 endpoint on https://${INFRA_ADDRESS}/ (${seeded}; ${buckets})${inbox}, IMDS on ${IMDS_ADDRESS}`);
}

/** The backup repositories' buckets, one per region, as the stack's BackupRepository components create them. */
async function createBuckets(layout: LabLayout, plan: ClusterPlan): Promise<string> {
  const host = infraHost(layout);
  const repositories = plan.backup.repositories.map((repo) => ({ bucket: repo.bucket, region: repo.awsRegion }));
  const result = await exec(
    ["ip", "netns", "exec", INFRA_NS, "chroot", host.root, "python3", "/usr/local/lib/pgha-lab/s3-buckets.py", "https://localhost:443", "/etc/pgha-lab-infra/ca.crt"],
    { input: JSON.stringify(repositories), timeoutMs: 60_000 },
  );
  if (result.code !== 0) throw new Error(`creating the backup buckets in the S3 endpoint failed: ${result.stderr.trim()}`);
  return result.stdout.trim();
}

async function alertInbox(layout: LabLayout, command: "create" | "drain", topicArn: string): Promise<string> {
  const host = infraHost(layout);
  const argv = ["python3", "/usr/local/lib/pgha-lab/alert-inbox.py", "https://localhost:443", "/etc/pgha-lab-infra/ca.crt", command, topicArn];
  const result = await exec(["ip", "netns", "exec", INFRA_NS, "chroot", host.root, ...argv], { timeoutMs: 60_000 });
  if (result.code !== 0) throw new Error(`alert inbox ${command}: ${result.stderr.trim()}`);
  return result.stdout;
}

/** One alert notification as SNS delivered it to the lab's queue. */
export interface AlertNotification {
  subject: string;
  message: string;
  /** SNS's publish time (ISO 8601). */
  timestamp: string;
}

/**
 * Every notification the Alertmanagers published to the stack's alert topic
 * since `up`: drains the queue into the lab's state (a message is received
 * once) and returns all of them, oldest first.
 */
function alertNotificationsFile(layout: LabLayout): string {
  return path.join(path.dirname(infraHost(layout).root), "alert-notifications.jsonl");
}

export async function alertNotifications(layout: LabLayout, topicArn: string): Promise<AlertNotification[]> {
  const file = alertNotificationsFile(layout);
  const drained = (await alertInbox(layout, "drain", topicArn)).trim();
  if (drained) fs.appendFileSync(file, `${drained}\n`);
  const lines = fs.existsSync(file) ? fs.readFileSync(file, "utf8").trim().split("\n").filter(Boolean) : [];
  return lines.map((line) => JSON.parse(line) as AlertNotification).sort((a, b) => a.timestamp.localeCompare(b.timestamp));
}

/**
 * Writes parameters to the lab's SSM endpoint (put-parameter, overwriting),
 * as NodeSecrets does on `pulumi up`; returns the seeder's counts.
 */
export async function putParameters(layout: LabLayout, parameters: ParameterRecord[]): Promise<string> {
  const host = infraHost(layout);
  const seeded = await exec(
    ["ip", "netns", "exec", INFRA_NS, "chroot", host.root, "python3", "/usr/local/lib/pgha-lab/ssm-seed.py", "https://localhost:443", "/etc/pgha-lab-infra/ca.crt"],
    { input: JSON.stringify(parameters), timeoutMs: 120_000 },
  );
  if (seeded.code !== 0) throw new Error(`writing parameters to the SSM endpoint failed: ${seeded.stderr.trim()}`);
  return seeded.stdout.trim();
}

/** Reads a file of the infrastructure root (its logs are host-side in logDir). */
export function infraFile(layout: LabLayout, file: string): string {
  return resolveInRoot(infraHost(layout).root, file);
}
