import { createHash } from "node:crypto";

/**
 * Naming and tagging shared by every component. Child resource names are
 * derived from the component's own name plus something stable from the plan
 * (a CIDR, a node name, a port), never from a list index, so reordering the
 * config does not rename — and therefore replace — anything.
 */

/** Type-token prefix of every component in this program. */
export const TYPE_PREFIX = "pgha:aws";

/** Turns `10.1.0.0/24` or `/tls/ca.crt` into a name fragment: `10-1-0-0-24`, `tls-ca-crt`. */
export function slug(text: string): string {
  return text
    .replace(/[^A-Za-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .toLowerCase();
}

/** Tags every resource of a stack carries, plus the given extras. */
export function stackTags(stack: string, extra: Record<string, string> = {}): Record<string, string> {
  return { "pgha:stack": stack, ...extra };
}

/** IAM names allow at most 64 characters. */
const IAM_NAME_MAX = 64;

/**
 * A deterministic IAM name, unique per stack and node: `pgha-<stack>-<node>`.
 * When that exceeds IAM's 64 characters (stack names may have 40, node names
 * 32), it is cut and suffixed with a short hash of the full name, so two long
 * names that share a prefix still differ.
 */
export function iamName(stack: string, node: string): string {
  const full = `pgha-${stack}-${node}`;
  if (full.length <= IAM_NAME_MAX) return full;
  const digest = createHash("sha256").update(full).digest("hex").slice(0, 8);
  return `${full.slice(0, IAM_NAME_MAX - digest.length - 1)}-${digest}`;
}
