import { gunzipSync } from "node:zlib";
import * as yaml from "js-yaml";

/** One write_files entry as cloud-init would apply it. */
export interface WriteFile {
  path: string;
  content: string;
  owner: string;
  permissions: string;
  defer: boolean;
}

export interface ParsedUserData {
  writeFiles: WriteFile[];
  runcmd: string[][];
  /** Accounts from `users:` (names only; "default" excluded). */
  users: { name: string; system: boolean; homedir?: string; shell?: string }[];
  /** Top-level keys the lab knowingly does not replay (the rootfs already has the packages). */
  notReplayed: string[];
}

/**
 * Parses a rendered `#cloud-config` document (never renders a second time).
 * Throws with every problem that cloud-init would reject or misapply.
 */
export function parseUserData(text: string): ParsedUserData {
  if (!text.startsWith("#cloud-config\n")) throw new Error("user-data does not start with '#cloud-config'");
  const doc = yaml.load(text) as Record<string, unknown> | null;
  if (!doc || typeof doc !== "object") throw new Error("user-data is not a YAML mapping");
  const problems: string[] = [];
  const writeFiles: WriteFile[] = [];
  for (const [index, raw] of ((doc.write_files as unknown[]) ?? []).entries()) {
    const entry = raw as Record<string, unknown>;
    const where = `write_files[${index}] ${String(entry.path)}`;
    if (typeof entry.path !== "string" || !entry.path.startsWith("/")) problems.push(`${where}: path must be an absolute path string`);
    if (entry.permissions !== undefined && typeof entry.permissions !== "string")
      problems.push(`${where}: permissions must be a string such as '0644', got ${typeof entry.permissions} ${JSON.stringify(entry.permissions)}`);
    if (entry.owner !== undefined && typeof entry.owner !== "string") problems.push(`${where}: owner must be a string`);
    let content = entry.content === undefined ? "" : entry.content;
    if (typeof content !== "string") {
      problems.push(`${where}: content must be a string`);
      continue;
    }
    const encoding = typeof entry.encoding === "string" ? entry.encoding : "text/plain";
    if (["b64", "base64"].includes(encoding)) content = Buffer.from(content, "base64").toString("utf8");
    else if (["gz+b64", "gzip+base64", "gz+base64", "gzip+b64"].includes(encoding)) content = gunzipSync(Buffer.from(content, "base64")).toString("utf8");
    else if (encoding !== "text/plain") problems.push(`${where}: encoding ${encoding} not supported by the lab`);
    if (entry.append) problems.push(`${where}: append is not supported by the lab`);
    writeFiles.push({
      path: String(entry.path),
      content: content as string,
      owner: typeof entry.owner === "string" ? entry.owner : "root:root",
      permissions: typeof entry.permissions === "string" ? entry.permissions : "0644",
      defer: entry.defer === true,
    });
  }
  const runcmd: string[][] = [];
  for (const [index, raw] of ((doc.runcmd as unknown[]) ?? []).entries()) {
    if (typeof raw === "string") runcmd.push(["/bin/sh", "-c", raw]);
    else if (Array.isArray(raw) && raw.every((part) => typeof part === "string")) runcmd.push(raw);
    else problems.push(`runcmd[${index}]: must be a string or a list of strings, got ${JSON.stringify(raw)}`);
  }
  const users: ParsedUserData["users"] = [];
  for (const raw of (doc.users as unknown[]) ?? []) {
    if (raw === "default") continue;
    if (typeof raw === "string") users.push({ name: raw, system: false });
    else if (raw && typeof raw === "object") {
      const u = raw as Record<string, unknown>;
      users.push({ name: String(u.name), system: u.system === true, homedir: u.homedir as string | undefined, shell: u.shell as string | undefined });
    }
  }
  const handled = new Set(["write_files", "runcmd", "users"]);
  const notReplayed = Object.keys(doc).filter((key) => !handled.has(key));
  if (problems.length) throw new Error(`user-data problems:\n  ${problems.join("\n  ")}`);
  return { writeFiles, runcmd, users, notReplayed };
}

/** A runcmd step as the lab interprets it. */
export type BootStep =
  | { kind: "install-etcd"; argv: string[] }
  | { kind: "check-versions"; argv: string[] }
  | { kind: "prepare-data-volume"; argv: string[] }
  | { kind: "fetch-secrets"; argv: string[] }
  | { kind: "daemon-reload"; argv: string[] }
  | { kind: "enable"; argv: string[]; units: string[] }
  | { kind: "start"; argv: string[]; unit: string }
  | { kind: "command"; argv: string[] };

export function classifyStep(argv: string[], paths: { installEtcd: string; checkVersions: string; prepareDataVolume: string; fetchSecrets: string }): BootStep[] {
  const [command, ...args] = argv;
  if (command === paths.installEtcd) return [{ kind: "install-etcd", argv }];
  if (command === paths.checkVersions) return [{ kind: "check-versions", argv }];
  if (command === paths.prepareDataVolume) return [{ kind: "prepare-data-volume", argv }];
  if (command === paths.fetchSecrets) return [{ kind: "fetch-secrets", argv }];
  if (command === "systemctl" || command === "/usr/bin/systemctl" || command === "/bin/systemctl") {
    const verb = args.find((a) => !a.startsWith("-"));
    const units = args.filter((a) => !a.startsWith("-") && a !== verb).map((u) => (u.includes(".") ? u : `${u}.service`));
    if (verb === "daemon-reload") return [{ kind: "daemon-reload", argv }];
    if (verb === "enable" && args.includes("--now")) return [{ kind: "enable", argv, units }, ...units.map((unit): BootStep => ({ kind: "start", argv, unit }))];
    if (verb === "enable") return [{ kind: "enable", argv, units }];
    if (verb === "start" || verb === "restart") return units.map((unit): BootStep => ({ kind: "start", argv, unit }));
    throw new Error(`runcmd: systemctl ${verb} is not replayed by the lab: ${argv.join(" ")}`);
  }
  return [{ kind: "command", argv }];
}
