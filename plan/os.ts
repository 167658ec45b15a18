/**
 * The operating systems a node can run (`instances.os`), and everything that
 * differs between them, in one place. Production runs Ubuntu 24.04 LTS (the
 * default); the local lab boots Debian 13. Pure data: no Pulumi import.
 */
import type { CpuArchitecture } from "./config";

export const OS_NAMES = ["ubuntu-24.04", "debian-13"] as const;

/** A value of `instances.os`. */
export type OsName = (typeof OS_NAMES)[number];

export interface OsProfile {
  /** A short human name, for messages and docs. */
  label: string;
  /** The release codename; cloud-init puts it where an apt source says `$RELEASE`. */
  codename: string;
  /** The public SSM parameter holding the current AMI id of this OS for an architecture (looked up per region). */
  amiParameter(architecture: CpuArchitecture): string;
}

export const OS_PROFILES: Readonly<Record<OsName, OsProfile>> = {
  "ubuntu-24.04": {
    label: "Ubuntu 24.04 LTS",
    codename: "noble",
    // Canonical's parameter for the current gp3 image.
    amiParameter: (architecture) => `/aws/service/canonical/ubuntu/server/24.04/stable/current/${architecture}/hvm/ebs-gp3/ami-id`,
  },
  "debian-13": {
    label: "Debian 13",
    codename: "trixie",
    // The path the Debian cloud team publishes its images under (https://wiki.debian.org/Cloud/AmazonEC2Image);
    // not resolved against AWS from where this was written.
    amiParameter: (architecture) => `/aws/service/debian/release/13/latest/${architecture}`,
  },
};

export function osProfile(name: OsName): OsProfile {
  return OS_PROFILES[name];
}
