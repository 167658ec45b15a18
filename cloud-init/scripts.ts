import { readFileSync } from "node:fs";
import { join } from "node:path";

/**
 * Boot scripts shipped verbatim in user-data. They live as real files in
 * cloud-init/scripts so they can be read, linted and run on their own; their
 * inputs come as arguments or from the rendered manifest, never by templating.
 */
export type BootScript =
  | "pgha-fetch-secrets.py"
  | "pgha-prepare-data-volume.sh"
  | "pgha-install-etcd.sh"
  | "pgha-check-versions.sh"
  | "pgha-path-mtu.sh"
  | "pgha-wait-package-sources.sh"
  | "pgha-certificate-metrics.sh"
  | "pgha-post-bootstrap.sh"
  | "pgha-backup.sh"
  | "pgha-restore.sh";

/**
 * The script as it ships: without its comment lines. EC2 takes at most 16 KB
 * of (compressed) user-data and the comments were a fifth of a database
 * node's; a node that is also its region's HAProxy went over. The second line
 * names the commented original in this repository. Lines inside a here-document
 * or a Python string are kept: they are data, not comments (a Python module's
 * opening docstring keeps only its summary line).
 */
export function bootScript(name: BootScript): string {
  return withoutCommentLines(readFileSync(join(__dirname, "scripts", name), "utf8"), name);
}

export function withoutCommentLines(text: string, name: string): string {
  const [shebang, ...lines] = text.split("\n");
  const python = name.endsWith(".py");
  const kept: string[] = [shebang ?? "", `# cloud-init/scripts/${name} in the pgha repository, without its comments`];
  let heredocEnd: string | undefined;
  let inPythonString = false;
  // A Python module's docstring ships as its summary line only (a script may print it: argparse's description);
  // the rest is documentation, and stays in the repository's copy.
  const first = lines[0] ?? "";
  if (python && first.startsWith('"""') && !(first.length > 6 && first.trimEnd().endsWith('"""'))) {
    const end = lines.findIndex((line, index) => index > 0 && line.includes('"""'));
    if (end > 0) lines.splice(0, end + 1, `${first.trimEnd()}"""`);
  }
  for (const line of lines) {
    const inData = heredocEnd !== undefined || inPythonString;
    if (heredocEnd !== undefined && line.trim() === heredocEnd) heredocEnd = undefined;
    else if (!python && heredocEnd === undefined) heredocEnd = /<<-?\s*['"]?([A-Za-z_][A-Za-z0-9_]*)['"]?/.exec(line)?.[1];
    if (python && (line.split('"""').length - 1) % 2 === 1) inPythonString = !inPythonString;
    if (!inData && /^\s*#/.test(line)) continue;
    kept.push(line);
  }
  return kept.join("\n");
}
