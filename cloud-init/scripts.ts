import { readFileSync } from "node:fs";
import { join } from "node:path";

/**
 * Boot scripts shipped verbatim in user-data. They live as real files in
 * cloud-init/scripts so they can be read, linted and run on their own; their
 * inputs come as arguments or from the rendered manifest, never by templating.
 */
export type BootScript =
  "pgha-fetch-secrets.py" | "pgha-prepare-data-volume.sh" | "pgha-install-etcd.sh" | "pgha-check-versions.sh" | "pgha-path-mtu.sh" | "pgha-wait-package-sources.sh";

export function bootScript(name: BootScript): string {
  return readFileSync(join(__dirname, "scripts", name), "utf8");
}
