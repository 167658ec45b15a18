import { createHash } from "node:crypto";
import { patroniConfig } from "../cloud-init/patroni";
import { nodesWithRole, type ClusterPlan } from "../plan";

/**
 * Patroni's dynamic configuration as the plan wants it: exactly what every
 * member's patroni.yml carries as `bootstrap.dcs` (one renderer, so the
 * bootstrap of a new cluster and a day-2 change can never disagree). After
 * the first boot these settings live in etcd and change only through
 * Patroni (`PATCH /config`, `patronictl edit-config`); editing patroni.yml
 * does not change them.
 */
export interface DynamicSettings {
  ttl: number;
  loop_wait: number;
  retry_timeout: number;
  maximum_lag_on_failover: number;
  synchronous_mode: boolean;
  synchronous_mode_strict: boolean;
  synchronous_node_count: number;
  failsafe_mode: boolean;
  postgresql: {
    use_pg_rewind: boolean;
    use_slots: boolean;
    parameters: Record<string, string | number | boolean>;
  };
}

export function dynamicSettings(plan: ClusterPlan): DynamicSettings {
  const node = nodesWithRole(plan, "postgres")[0];
  if (!node) throw new Error("dynamicSettings: the plan has no postgres node");
  const bootstrap = patroniConfig(plan, node).bootstrap as { dcs: DynamicSettings };
  return JSON.parse(JSON.stringify(bootstrap.dcs)) as DynamicSettings;
}

/** JSON with object keys sorted at every depth: the same settings always hash alike. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    return `{${entries
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
}

export function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** The trigger of the rolling change: changes exactly when a dynamic setting does. */
export function dynamicSettingsHash(plan: ClusterPlan): string {
  return sha256(canonicalJson(dynamicSettings(plan)));
}

const BOOLEAN_WORDS: Record<string, boolean> = { on: true, true: true, yes: true, "1": true, off: false, false: false, no: false, "0": false };

/**
 * Whether two settings mean the same: equal JSON, or equal once spelled
 * alike (`100` and `"100"`, `on` and `true`, `1GB` and `1gb`) — Patroni
 * keeps what was written, PostgreSQL reports its own spelling.
 */
export function sameSetting(a: unknown, b: unknown): boolean {
  if (canonicalJson(a) === canonicalJson(b)) return true;
  if (a === null || b === null || a === undefined || b === undefined) return false;
  if (typeof a === "object" || typeof b === "object") return false;
  // Neither is an object here: a string, number, boolean or bigint.
  const spelled = (value: string | number | boolean | bigint) => String(value).trim().toLowerCase();
  const [x, y] = [spelled(a as string | number | boolean | bigint), spelled(b as string | number | boolean | bigint)];
  if (x === y) return true;
  if (x in BOOLEAN_WORDS && y in BOOLEAN_WORDS) return BOOLEAN_WORDS[x] === BOOLEAN_WORDS[y];
  return x !== "" && y !== "" && Number.isFinite(Number(x)) && Number(x) === Number(y);
}

/**
 * The smallest `PATCH /config` body that turns `current` (Patroni's
 * `GET /config`) into `desired`: changed top-level settings, changed
 * `postgresql` settings, changed parameters, and `null` (Patroni's "remove")
 * for parameters the plan no longer has. Keys the plan does not manage
 * (anything else under `postgresql`, e.g. `pg_hba` set by hand, or other
 * top-level keys) are left alone. Empty when nothing differs.
 */
export function dynamicConfigPatch(current: Record<string, unknown>, desired: DynamicSettings): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(desired)) {
    if (key !== "postgresql" && !sameSetting(current[key], value)) patch[key] = value;
  }
  const currentPg = (current.postgresql && typeof current.postgresql === "object" ? current.postgresql : {}) as Record<string, unknown>;
  const pgPatch: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(desired.postgresql)) {
    if (key !== "parameters" && !sameSetting(currentPg[key], value)) pgPatch[key] = value;
  }
  const currentParameters = (currentPg.parameters && typeof currentPg.parameters === "object" ? currentPg.parameters : {}) as Record<string, unknown>;
  const parameters: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(desired.postgresql.parameters)) {
    if (!sameSetting(currentParameters[name], value)) parameters[name] = value;
  }
  for (const name of Object.keys(currentParameters)) {
    if (!(name in desired.postgresql.parameters) && currentParameters[name] !== null) parameters[name] = null;
  }
  if (Object.keys(parameters).length) pgPatch.parameters = parameters;
  if (Object.keys(pgPatch).length) patch.postgresql = pgPatch;
  return patch;
}

/** The PostgreSQL parameters a patch sets or removes. */
export function patchedParameters(patch: Record<string, unknown>): Record<string, unknown> {
  const pg = patch.postgresql as { parameters?: Record<string, unknown> } | undefined;
  return { ...(pg?.parameters ?? {}) };
}
