import * as yaml from "js-yaml";
import type { BootCommand, NodeFile } from "./types";

/** What a consumer of rendered user-data (the lab, the render tests) reads back out of it. */
export interface ParsedUserData {
  hostname: string;
  files: NodeFile[];
  runcmd: BootCommand[];
  packages: string[];
}

/**
 * Reads a `#cloud-config` document back into files and boot steps, so the
 * lab and the tests consume the very bytes EC2 would get, never a second
 * rendering. Only the shapes our renderer emits are accepted.
 */
export function parseUserData(text: string): ParsedUserData {
  if (!text.startsWith("#cloud-config\n")) throw new Error("user-data does not start with #cloud-config");
  const document = yaml.load(text) as Record<string, unknown>;
  const files = (document.write_files as Record<string, unknown>[] | undefined ?? []).map((entry): NodeFile => {
    const { path, content, owner, permissions, defer } = entry;
    if (typeof path !== "string" || typeof content !== "string" || typeof owner !== "string" || typeof permissions !== "string") {
      throw new Error(`write_files entry ${JSON.stringify(path)} lacks path, content, owner or permissions`);
    }
    return { path, content, owner, permissions, defer: defer === true };
  });
  const runcmd = (document.runcmd as unknown[] | undefined ?? []).map((command) => {
    if (!Array.isArray(command) || !command.every((arg) => typeof arg === "string")) {
      throw new Error(`runcmd entry ${JSON.stringify(command)} is not an argv list`);
    }
    return command as string[];
  });
  return {
    hostname: String(document.hostname ?? ""),
    files,
    runcmd,
    packages: (document.packages as string[] | undefined) ?? [],
  };
}
