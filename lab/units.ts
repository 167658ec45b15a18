/**
 * Just enough of systemd to run the rendered units in a chroot: the unit
 * file parser, EnvironmentFile= parsing and ExecStart= command-line
 * splitting with $VAR / ${VAR} expansion (systemd.service(5) "Command lines").
 */

import { parseEnvironmentFile } from "../checks/env-file";

export type UnitFile = Map<string, Map<string, string[]>>;

export function parseUnitFile(text: string): UnitFile {
  const unit: UnitFile = new Map();
  let section: Map<string, string[]> | undefined;
  const lines = text.replace(/\\\n/g, " ").split("\n");
  for (const raw of lines) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = unit.get(header[1]) ?? new Map<string, string[]>();
      unit.set(header[1], section);
      continue;
    }
    const eq = line.indexOf("=");
    if (eq < 0 || !section) throw new Error(`unit file: cannot parse line ${JSON.stringify(raw)}`);
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    // An empty assignment resets a list setting.
    if (value === "") section.set(key, []);
    else section.set(key, [...(section.get(key) ?? []), value]);
  }
  return unit;
}

/** Environment= values: space-separated assignments, each optionally double-quoted. */
export function parseEnvironmentDirective(value: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const word of splitWords(value)) {
    const eq = word.indexOf("=");
    if (eq > 0) env[word.slice(0, eq)] = word.slice(eq + 1);
  }
  return env;
}

/** Splits on unquoted whitespace, honouring "..." and '...' and backslash escapes. */
export function splitWords(text: string): string[] {
  const words: string[] = [];
  let current = "";
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quote) {
      if (ch === quote) quote = undefined;
      else if (ch === "\\" && quote === '"' && i + 1 < text.length) current += text[++i];
      else current += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      inWord = true;
    } else if (ch === "\\" && i + 1 < text.length) {
      current += text[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(current);
      current = "";
      inWord = false;
    } else {
      current += ch;
      inWord = true;
    }
  }
  if (quote) throw new Error(`unterminated quote in ${JSON.stringify(text)}`);
  if (inWord) words.push(current);
  return words;
}

export interface CommandLine {
  argv: string[];
  /** `-` prefix: a failure is ignored. */
  ignoreFailure: boolean;
  /** `+` prefix: runs with full privileges regardless of User=. */
  privileged: boolean;
}

/**
 * One Exec*= line → argv: specifiers (%% %n %N %p %H) first, then a word
 * that is exactly `$VAR` splits into words, `${VAR}` substitutes inline.
 */
export function parseCommandLine(value: string, env: Record<string, string>, specifiers: { unit: string; host: string }): CommandLine {
  let rest = value.trim();
  let ignoreFailure = false;
  let privileged = false;
  for (;;) {
    const prefix = rest[0];
    if (prefix === "-") ignoreFailure = true;
    else if (prefix === "+" || prefix === "!") privileged = true;
    else if (prefix !== "@" && prefix !== ":") break;
    rest = rest.slice(1);
  }
  const prefixName = specifiers.unit.replace(/\.[^.]+$/, "").replace(/@.*$/, "");
  rest = rest.replace(
    /%([%nNpH])/g,
    (_, s: string) => ({ "%": "%", n: specifiers.unit, N: specifiers.unit.replace(/\.[^.]+$/, ""), p: prefixName, H: specifiers.host })[s] as string,
  );
  const argv: string[] = [];
  for (const word of splitWords(rest)) {
    const whole = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(word);
    if (whole) {
      argv.push(...(env[whole[1]] ?? "").split(/\s+/).filter(Boolean));
      continue;
    }
    argv.push(word.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => env[name] ?? ""));
  }
  if (argv.length === 0) throw new Error(`empty command line ${JSON.stringify(value)}`);
  return { argv, ignoreFailure, privileged };
}

/** systemd time span ("5s", "100ms", "1min", "2", "infinity") in seconds. */
export function parseTimeSpan(value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (value === "infinity") return 24 * 3600;
  let total = 0;
  const units: Record<string, number> = { us: 1e-6, ms: 1e-3, s: 1, sec: 1, m: 60, min: 60, h: 3600, hr: 3600 };
  const re = /(\d+(?:\.\d+)?)\s*([a-z]*)/g;
  let matched = false;
  for (let m = re.exec(value); m; m = re.exec(value)) {
    matched = true;
    const factor = m[2] ? units[m[2]] : 1;
    if (factor === undefined) throw new Error(`time span ${JSON.stringify(value)}: unknown unit ${m[2]}`);
    total += Number(m[1]) * factor;
  }
  if (!matched) throw new Error(`time span ${JSON.stringify(value)} not understood`);
  return total;
}

/** What the lab supervisor needs to run one service, resolved from the unit. */
export interface ServiceSpec {
  unit: string;
  type: string;
  user: string;
  group?: string;
  env: Record<string, string>;
  execStartPre: CommandLine[];
  execStart: CommandLine;
  execStartPost: CommandLine[];
  /** Type=oneshot: stays "exited" (active) after ExecStart= succeeded, until stopped. */
  remainAfterExit: boolean;
  restart: string;
  restartSec: number;
  killMode: string;
  timeoutStopSec: number;
  limitNofile?: number;
  workingDirectory?: string;
  stateDirectories: { path: string; mode: number }[];
  runtimeDirectories: { path: string; mode: number }[];
  logsDirectories: { path: string; mode: number }[];
  /** Directives the lab does not emulate (reported, not silently dropped). */
  ignored: string[];
}

const HANDLED = new Set([
  "Type",
  "User",
  "Group",
  "Environment",
  "EnvironmentFile",
  "ExecStartPre",
  "ExecStart",
  "ExecStartPost",
  "ExecReload",
  "RemainAfterExit",
  "Restart",
  "RestartSec",
  "KillMode",
  "TimeoutStopSec",
  "TimeoutStartSec",
  "LimitNOFILE",
  "WorkingDirectory",
  "StateDirectory",
  "StateDirectoryMode",
  "RuntimeDirectory",
  "RuntimeDirectoryMode",
  "LogsDirectory",
  "LogsDirectoryMode",
]);

/**
 * Resolves a unit into a ServiceSpec. `readFile` reads a path inside the
 * node (EnvironmentFile=); a missing file without `-` is an error, as in systemd.
 */
export function serviceSpec(unitName: string, text: string, host: string, readFile: (path: string) => string | undefined): ServiceSpec {
  const unit = parseUnitFile(text);
  const service = unit.get("Service");
  if (!service) throw new Error(`${unitName}: no [Service] section`);
  const one = (key: string): string | undefined => service.get(key)?.at(-1);
  const env: Record<string, string> = { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" };
  for (const value of service.get("Environment") ?? []) Object.assign(env, parseEnvironmentDirective(value));
  for (const value of service.get("EnvironmentFile") ?? []) {
    const optional = value.startsWith("-");
    const file = optional ? value.slice(1) : value;
    const content = readFile(file);
    if (content === undefined) {
      if (!optional) throw new Error(`${unitName}: EnvironmentFile=${file} does not exist on the node`);
      continue;
    }
    Object.assign(env, parseEnvironmentFile(content));
  }
  const specifiers = { unit: unitName, host };
  const commands = (key: string): CommandLine[] => (service.get(key) ?? []).map((v) => parseCommandLine(v, env, specifiers));
  const starts = commands("ExecStart");
  if (starts.length !== 1) throw new Error(`${unitName}: expected exactly one ExecStart=, found ${starts.length}`);
  const dirs = (key: string, base: string): { path: string; mode: number }[] => {
    const mode = parseInt(one(`${key}Mode`) ?? "0755", 8);
    return (service.get(key) ?? [])
      .flatMap((v) => v.split(/\s+/))
      .filter(Boolean)
      .map((d) => ({ path: `${base}/${d}`, mode }));
  };
  const limit = one("LimitNOFILE");
  const ignored: string[] = [];
  for (const [section, entries] of unit) {
    if (section !== "Service") continue;
    for (const key of entries.keys()) if (!HANDLED.has(key)) ignored.push(`${section}.${key}`);
  }
  return {
    unit: unitName,
    type: one("Type") ?? "simple",
    user: one("User") ?? "root",
    group: one("Group"),
    env,
    execStartPre: commands("ExecStartPre"),
    execStart: starts[0],
    execStartPost: commands("ExecStartPost"),
    remainAfterExit: ["yes", "true", "on", "1"].includes((one("RemainAfterExit") ?? "no").toLowerCase()),
    restart: one("Restart") ?? "no",
    restartSec: parseTimeSpan(one("RestartSec"), 0.1),
    killMode: one("KillMode") ?? "control-group",
    timeoutStopSec: parseTimeSpan(one("TimeoutStopSec"), 90),
    limitNofile: limit && limit !== "infinity" ? Number(limit.split(":").at(-1)) : undefined,
    workingDirectory: one("WorkingDirectory"),
    stateDirectories: dirs("StateDirectory", "/var/lib"),
    runtimeDirectories: dirs("RuntimeDirectory", "/run"),
    logsDirectories: dirs("LogsDirectory", "/var/log"),
    ignored,
  };
}
