import { renderNodeFiles } from "../cloud-init/node-files";
import { PATH_MTU_UNIT } from "../cloud-init/systemd";
import { NODE_PATHS, type ClusterPlan, type NodePlan } from "../plan";
import { canonicalJson, sha256 } from "./dynamic-config";

/**
 * Node-local files: what `renderNodeFiles` wants on each node, and what a
 * changed file needs done so it takes effect. Instances ignore user-data
 * changes (NODE_IGNORE_CHANGES), so a rolling change ships these files over
 * the transport instead, one node at a time.
 */

/** What to do after a file changed. */
export type FileEffect =
  /** Written only (boot scripts, apt pins, the secrets manifest: read at the next boot). */
  | "none"
  /** SIGHUP to Patroni: it reloads patroni.yml (tags, REST API, local parameters); a parameter that needs a restart shows as pending_restart. */
  | "reload-patroni"
  /** patroni.service itself changed: restart it (restarts PostgreSQL on that node). */
  | "restart-patroni"
  /** etcd has no reload: restart the member (quorum holds with the others). */
  | "restart-etcd"
  /** The reader opens the file again for every new TLS connection (etcd's certificates, see ops/node-secrets.ts): written only. */
  | "reread-on-connect"
  /** A secret the rollout does not rotate (the CA, passwords): the rollout stops before touching any node. */
  | "not-rolled"
  /** `systemctl reload haproxy` (seamless), where the transport has it; else a restart. */
  | "reload-haproxy"
  | "restart-haproxy"
  /** The inter-region routes or the sysctl changed (a region added, another MTU): re-run pgha-path-mtu.service. */
  | "restart-path-mtu";

export interface DesiredFile {
  path: string;
  owner: string;
  permissions: string;
  content: string;
  sha256: string;
  effect: FileEffect;
}

export function fileEffect(path: string): FileEffect {
  switch (path) {
    case NODE_PATHS.patroniConfig:
      return "reload-patroni";
    case NODE_PATHS.etcdConfig:
      return "restart-etcd";
    case NODE_PATHS.haproxyConfig:
      return "reload-haproxy";
    case `${NODE_PATHS.systemdDir}/patroni.service`:
      return "restart-patroni";
    case `${NODE_PATHS.systemdDir}/etcd.service`:
      return "restart-etcd";
    case `${NODE_PATHS.systemdDir}/haproxy.service`:
      return "restart-haproxy";
    case `${NODE_PATHS.systemdDir}/${PATH_MTU_UNIT}`:
    case NODE_PATHS.pathMtu:
    case NODE_PATHS.sysctl:
      return "restart-path-mtu";
    default:
      return "none";
  }
}

/** Effects that restart PostgreSQL on the node: never done to the primary without a switchover first. */
export function restartsPostgres(effect: FileEffect): boolean {
  return effect === "restart-patroni";
}

export function desiredFiles(plan: ClusterPlan, node: NodePlan): DesiredFile[] {
  return renderNodeFiles(plan, node).map((f) => ({
    path: f.path,
    owner: f.owner,
    permissions: f.permissions,
    content: f.content,
    sha256: sha256(f.content),
    effect: fileEffect(f.path),
  }));
}

/** The trigger for node-local changes: changes exactly when a rendered file, its owner or its mode does. */
export function nodeFilesHash(plan: ClusterPlan): string {
  const all = plan.nodes.map((node) => [node.name, desiredFiles(plan, node).map((f) => [f.path, f.owner, f.permissions, f.sha256])]);
  return sha256(canonicalJson(all));
}

/** What a node has for one file: content hash, `owner:group` and octal mode; undefined when missing. */
export interface FileState {
  sha256: string;
  owner: string;
  mode: string;
}

/** One line per file: `<sha256> <owner:group> <mode> <path>`, or `- - - <path>` when missing. */
export const FILE_STATE_SCRIPT =
  'for f in "$@"; do if [ -f "$f" ]; then printf \'%s %s %s\\n\' "$(sha256sum < "$f" | cut -d" " -f1)" "$(stat -c \'%U:%G %a\' "$f")" "$f"; else printf \'%s\\n\' "- - - $f"; fi; done';

export function parseFileStates(stdout: string): Map<string, FileState | undefined> {
  const states = new Map<string, FileState | undefined>();
  for (const line of stdout.split("\n")) {
    const match = /^(\S+) (\S+) (\S+) (.+)$/.exec(line.trim());
    if (!match) continue;
    const [, hash, owner, mode, path] = match as unknown as [string, string, string, string, string];
    states.set(path, hash === "-" ? undefined : { sha256: hash, owner, mode });
  }
  return states;
}

const normaliseMode = (mode: string): string => mode.replace(/^0+(?=\d)/, "");

/** The desired files whose content, owner or mode differ from what the node has (missing ones included). */
export function changedFiles(desired: DesiredFile[], states: Map<string, FileState | undefined>): DesiredFile[] {
  return desired.filter((file) => {
    const state = states.get(file.path);
    return state?.sha256 !== file.sha256 || state.owner !== file.owner || normaliseMode(state.mode) !== normaliseMode(file.permissions);
  });
}

/** Atomic replace on the node: write beside, set owner and mode, rename over. Content arrives on stdin. */
export const WRITE_FILE_SCRIPT = 'set -e; umask 077; mkdir -p "$(dirname "$1")"; t="$1.pgha-new"; cat > "$t"; chown "$2" "$t"; chmod "$3" "$t"; mv -f "$t" "$1"';
