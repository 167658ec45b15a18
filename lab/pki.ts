import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { CA_PLAN, findNode, LEAF_VALIDITY_HOURS, type CertificatePlan, type ClusterPlan, type TlsUse } from "../plan";
import { run } from "./exec";

/**
 * The lab's stand-in for @pulumi/tls and @pulumi/random: a CA and every
 * planned certificate issued with the openssl CLI (ECDSA P-256, the planned
 * SANs and usages), random alphanumeric passwords, all laid out as the
 * parameter directory that `pgha-fetch-secrets --from-dir` reads.
 */

const KEY_USAGE: Partial<Record<TlsUse, string>> = {
  digital_signature: "digitalSignature",
  key_encipherment: "keyEncipherment",
  cert_signing: "keyCertSign",
  crl_signing: "cRLSign",
};
const EXTENDED_KEY_USAGE: Partial<Record<TlsUse, string>> = { server_auth: "serverAuth", client_auth: "clientAuth" };

export function opensslUsages(uses: TlsUse[]): { keyUsage: string[]; extendedKeyUsage: string[] } {
  const keyUsage = uses.map((use) => KEY_USAGE[use]).filter((u): u is string => !!u);
  const extendedKeyUsage = uses.map((use) => EXTENDED_KEY_USAGE[use]).filter((u): u is string => !!u);
  const unknown = uses.filter((use) => !KEY_USAGE[use] && !EXTENDED_KEY_USAGE[use]);
  if (unknown.length) throw new Error(`no openssl mapping for usage(s) ${unknown.join(", ")}`);
  return { keyUsage, extendedKeyUsage };
}

export interface IssuedPki {
  dir: string;
  caCert: string;
  caKey: string;
  /** Certificate id → PEM file paths. */
  leaves: Map<string, { cert: string; key: string }>;
  /** A CA the cluster does not trust, and a client certificate from it (TLS enforcement checks). */
  foreign: { caCert: string; cert: string; key: string };
  passwords: Map<string, string>;
}

async function ecKey(file: string): Promise<void> {
  // SEC1 "EC PRIVATE KEY" PEM, as @pulumi/tls's private_key_pem gives for ECDSA.
  await run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", file]);
  fs.chmodSync(file, 0o600);
}

async function selfSignedCa(dir: string, name: string, subject: string, uses: TlsUse[], days: number): Promise<{ cert: string; key: string }> {
  const key = path.join(dir, `${name}.key`);
  const cert = path.join(dir, `${name}.crt`);
  const cnf = path.join(dir, `${name}.cnf`);
  const { keyUsage } = opensslUsages(uses);
  fs.writeFileSync(
    cnf,
    [
      "[req]",
      "distinguished_name = dn",
      "prompt = no",
      "[dn]",
      "[ext]",
      "basicConstraints = critical,CA:TRUE",
      `keyUsage = critical,${keyUsage.join(",")}`,
      "subjectKeyIdentifier = hash",
      "",
    ].join("\n"),
  );
  await ecKey(key);
  await run(["openssl", "req", "-x509", "-new", "-key", key, "-subj", subject, "-days", String(days), "-sha256", "-config", cnf, "-extensions", "ext", "-out", cert]);
  return { cert, key };
}

interface LeafSpec {
  commonName: string;
  dnsNames: string[];
  ipAddresses: string[];
  uses: TlsUse[];
  days: number;
}

async function leaf(dir: string, ca: { cert: string; key: string }, id: string, spec: LeafSpec): Promise<{ cert: string; key: string }> {
  await ecKey(path.join(dir, `${id}.key`));
  return signLeaf(dir, ca, id, spec);
}

/** A certificate for the key already at `<dir>/<id>.key`, with a fresh random serial. */
async function signLeaf(dir: string, ca: { cert: string; key: string }, id: string, spec: LeafSpec): Promise<{ cert: string; key: string }> {
  const key = path.join(dir, `${id}.key`);
  const cert = path.join(dir, `${id}.crt`);
  const csr = path.join(dir, `${id}.csr`);
  const ext = path.join(dir, `${id}.ext`);
  const { keyUsage, extendedKeyUsage } = opensslUsages(spec.uses);
  const san = [...spec.dnsNames.map((d) => `DNS:${d}`), ...spec.ipAddresses.map((a) => `IP:${a}`)];
  const lines = ["[ext]", "basicConstraints = critical,CA:FALSE", "subjectKeyIdentifier = hash", "authorityKeyIdentifier = keyid"];
  if (keyUsage.length) lines.push(`keyUsage = critical,${keyUsage.join(",")}`);
  if (extendedKeyUsage.length) lines.push(`extendedKeyUsage = ${extendedKeyUsage.join(",")}`);
  if (san.length) lines.push(`subjectAltName = ${san.join(",")}`);
  fs.writeFileSync(ext, `${lines.join("\n")}\n`);
  await run(["openssl", "req", "-new", "-key", key, "-subj", `/CN=${spec.commonName}`, "-out", csr]);
  const serial = `0x${crypto.randomBytes(16).toString("hex")}`;
  await run([
    "openssl",
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    ca.cert,
    "-CAkey",
    ca.key,
    "-set_serial",
    serial,
    "-days",
    String(spec.days),
    "-sha256",
    "-extfile",
    ext,
    "-extensions",
    "ext",
    "-out",
    cert,
  ]);
  fs.rmSync(csr);
  return { cert, key };
}

const ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

export function randomAlphanumeric(length: number): string {
  let out = "";
  while (out.length < length) {
    for (const byte of crypto.randomBytes(length * 2)) {
      // 248 = 4 × 62: rejection sampling keeps the distribution uniform.
      if (byte < 248 && out.length < length) out += ALPHANUMERIC[byte % 62];
    }
  }
  return out;
}

const leafSpec = (c: CertificatePlan): LeafSpec => ({
  commonName: c.commonName,
  dnsNames: c.dnsNames,
  ipAddresses: c.ipAddresses,
  uses: c.allowedUses,
  days: Math.ceil(LEAF_VALIDITY_HOURS / 24),
});

/** Two cores: a few openssl runs at a time. */
async function forEachLeaf(certificates: CertificatePlan[], action: (c: CertificatePlan) => Promise<void>): Promise<void> {
  const queue = [...certificates];
  const worker = async (): Promise<void> => {
    for (let next = queue.shift(); next; next = queue.shift()) await action(next);
  };
  await Promise.all([worker(), worker(), worker()]);
}

/**
 * What `pulumi up` does in a leaf's last LEAF_EARLY_RENEWAL_HOURS: the same
 * key (tls.PrivateKey is not replaced), a new certificate from the same CA
 * with a new serial. `ids` defaults to every planned leaf. Overwrites the
 * certificate files in place; write the parameter dirs again afterwards.
 */
export async function renewLeaves(plan: ClusterPlan, pki: IssuedPki, ids?: string[]): Promise<string[]> {
  const chosen = plan.certificates.filter((c) => !ids || ids.includes(c.id));
  const missing = (ids ?? []).filter((id) => !chosen.some((c) => c.id === id));
  if (missing.length) throw new Error(`no planned certificate ${missing.join(", ")}`);
  await forEachLeaf(chosen, async (c) => {
    await signLeaf(pki.dir, { cert: pki.caCert, key: pki.caKey }, c.id, leafSpec(c));
  });
  return chosen.map((c) => c.id);
}

/** The serial of a PEM certificate file, upper-case hex as `openssl x509 -serial` prints it. */
export async function certificateSerial(certFile: string): Promise<string> {
  const out = await run(["openssl", "x509", "-in", certFile, "-noout", "-serial"]);
  return out
    .trim()
    .replace(/^serial=/, "")
    .toUpperCase();
}

/** Issues everything the plan needs into `dir` (wiped first). */
export async function issuePki(plan: ClusterPlan, dir: string, foreignClientIp: string): Promise<IssuedPki> {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const days = Math.ceil(CA_PLAN.validityHours / 24);
  const ca = await selfSignedCa(dir, "ca", `/O=${CA_PLAN.organization}/CN=${CA_PLAN.commonName}`, CA_PLAN.allowedUses, days);
  const leaves = new Map<string, { cert: string; key: string }>();
  await forEachLeaf(plan.certificates, async (c) => void leaves.set(c.id, await leaf(dir, ca, c.id, leafSpec(c))));
  const foreignDir = path.join(dir, "foreign");
  fs.mkdirSync(foreignDir, { mode: 0o700 });
  const foreignCa = await selfSignedCa(foreignDir, "ca", "/O=intruder/CN=foreign lab CA", CA_PLAN.allowedUses, 30);
  const foreignClient = await leaf(foreignDir, foreignCa, "client", {
    commonName: "intruder client",
    dnsNames: ["localhost"],
    ipAddresses: [foreignClientIp],
    uses: ["digital_signature", "client_auth"],
    days: 30,
  });
  const passwords = new Map<string, string>();
  for (const password of plan.passwords) passwords.set(password.id, randomAlphanumeric(password.length));
  fs.writeFileSync(path.join(dir, "passwords.json"), JSON.stringify(Object.fromEntries(passwords), null, 2), { mode: 0o600 });
  return { dir, caCert: ca.cert, caKey: ca.key, leaves, foreign: { caCert: foreignCa.cert, cert: foreignClient.cert, key: foreignClient.key }, passwords };
}

/** The PKI an earlier `issuePki` left in `dir` (the lab's state), to renew leaves of a running lab. */
export function loadIssuedPki(plan: ClusterPlan, dir: string): IssuedPki {
  const file = (name: string): string => {
    const full = path.join(dir, name);
    if (!fs.existsSync(full)) throw new Error(`${full} is missing: was the lab's PKI issued?`);
    return full;
  };
  const passwords = new Map(Object.entries(JSON.parse(fs.readFileSync(file("passwords.json"), "utf8")) as Record<string, string>));
  const leaves = new Map(plan.certificates.map((c) => [c.id, { cert: file(`${c.id}.crt`), key: file(`${c.id}.key`) }]));
  return {
    dir,
    caCert: file("ca.crt"),
    caKey: file("ca.key"),
    leaves,
    foreign: { caCert: file("foreign/ca.crt"), cert: file("foreign/client.crt"), key: file("foreign/client.key") },
    passwords,
  };
}

/** The value an SSM parameter would hold, exactly as Pulumi would store it. */
function parameterValue(pki: IssuedPki, value: ClusterPlan["secrets"][number]["parameters"][number]["value"]): string {
  switch (value.kind) {
    case "ca-certificate":
      return fs.readFileSync(pki.caCert, "utf8");
    case "certificate":
    case "private-key": {
      const files = pki.leaves.get(value.certificate);
      if (!files) throw new Error(`no issued certificate ${value.certificate}`);
      return fs.readFileSync(value.kind === "certificate" ? files.cert : files.key, "utf8");
    }
    case "password": {
      const password = pki.passwords.get(value.password);
      if (password === undefined) throw new Error(`no password ${value.password}`);
      return password;
    }
  }
}

/**
 * One directory per node holding only that node's parameters (as its
 * instance role only reaches `<path>/*`), each at `<nodeDir>/<parameter name>`.
 */
export function writeParameterDirs(plan: ClusterPlan, pki: IssuedPki, paramsDir: string): Map<string, string> {
  fs.rmSync(paramsDir, { recursive: true, force: true });
  const dirs = new Map<string, string>();
  for (const secrets of plan.secrets) {
    const nodeDir = path.join(paramsDir, secrets.node);
    for (const parameter of secrets.parameters) {
      const file = path.join(nodeDir, ...parameter.name.split("/").filter(Boolean));
      fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      fs.writeFileSync(file, parameterValue(pki, parameter.value), { mode: parameter.secure ? 0o600 : 0o644 });
    }
    dirs.set(secrets.node, nodeDir);
  }
  return dirs;
}

/** One parameter as NodeSecrets creates it (components/node-secrets.ts), in its node's region. */
export interface ParameterRecord {
  name: string;
  type: "SecureString" | "String";
  value: string;
  tier: "Standard";
  description: string;
  region: string;
}

/**
 * Every node's parameters as NodeSecrets creates them on AWS (same names,
 * types, tier, description and values), for the lab's SSM endpoint.
 */
export function parameterRecords(plan: ClusterPlan, pki: IssuedPki, stack: string): ParameterRecord[] {
  return plan.secrets.flatMap((secrets) => {
    const node = findNode(plan, secrets.node);
    return secrets.parameters.map((parameter): ParameterRecord => ({
      name: parameter.name,
      type: parameter.secure ? "SecureString" : "String",
      value: parameterValue(pki, parameter.value),
      tier: "Standard",
      description: `pgha ${stack}: ${parameter.value.kind} for ${node.name}`,
      region: node.awsRegion,
    }));
  });
}

/** Reads back an issued certificate's SANs and usages (self-check against the plan). */
export async function describeCertificate(certFile: string): Promise<{ dns: string[]; ips: string[]; keyUsage: string[]; extendedKeyUsage: string[]; curve: string }> {
  const text = await run(["openssl", "x509", "-in", certFile, "-noout", "-text"]);
  const after = (label: string): string => {
    const match = new RegExp(`${label}:.*\\n\\s*(.*)`).exec(text);
    return match?.[1]?.trim() ?? "";
  };
  const san = after("X509v3 Subject Alternative Name");
  const dns = [...san.matchAll(/DNS:([^,\s]+)/g)].map((m) => m[1]);
  const ips = [...san.matchAll(/IP Address:([^,\s]+)/g)].map((m) => m[1]);
  const names: Record<string, string> = {
    "Digital Signature": "digitalSignature",
    "Key Encipherment": "keyEncipherment",
    "Certificate Sign": "keyCertSign",
    "CRL Sign": "cRLSign",
    "TLS Web Server Authentication": "serverAuth",
    "TLS Web Client Authentication": "clientAuth",
  };
  const mapList = (line: string): string[] =>
    line
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean)
      .map((s) => names[s] ?? s);
  const curve = /NIST CURVE: (\S+)|ASN1 OID: (\S+)/.exec(text);
  return { dns, ips, keyUsage: mapList(after("X509v3 Key Usage")), extendedKeyUsage: mapList(after("X509v3 Extended Key Usage")), curve: curve?.[1] ?? curve?.[2] ?? "" };
}

/** Checks every issued leaf against its plan entry; returns the mismatches. */
export async function checkIssued(plan: ClusterPlan, pki: IssuedPki): Promise<string[]> {
  const problems: string[] = [];
  for (const c of plan.certificates) {
    const files = pki.leaves.get(c.id);
    if (!files) {
      problems.push(`${c.id}: not issued`);
      continue;
    }
    const got = await describeCertificate(files.cert);
    const want = opensslUsages(c.allowedUses);
    const same = (a: string[], b: string[]): boolean => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());
    if (!same(got.dns, c.dnsNames)) problems.push(`${c.id}: DNS SANs ${got.dns.join(",")} != ${c.dnsNames.join(",")}`);
    if (!same(got.ips, c.ipAddresses)) problems.push(`${c.id}: IP SANs ${got.ips.join(",")} != ${c.ipAddresses.join(",")}`);
    if (!same(got.keyUsage, want.keyUsage)) problems.push(`${c.id}: keyUsage ${got.keyUsage.join(",")} != ${want.keyUsage.join(",")}`);
    if (!same(got.extendedKeyUsage, want.extendedKeyUsage)) problems.push(`${c.id}: extendedKeyUsage ${got.extendedKeyUsage.join(",")} != ${want.extendedKeyUsage.join(",")}`);
    if (got.curve !== "P-256" && got.curve !== "prime256v1") problems.push(`${c.id}: curve ${got.curve}, want P-256`);
    const verify = await run(["openssl", "verify", "-CAfile", pki.caCert, files.cert]).catch((e: unknown) => (e as Error).message);
    if (!verify.includes(": OK")) problems.push(`${c.id}: does not verify against the lab CA: ${verify.trim()}`);
  }
  return problems;
}
