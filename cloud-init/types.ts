/** One file as it lands on a node (a cloud-init `write_files` entry). */
export interface NodeFile {
  path: string;
  content: string;
  /** `user:group`. */
  owner: string;
  /** Octal mode as a string ("0644"): cloud-init's schema rejects YAML integers. */
  permissions: string;
  /**
   * Write in cloud-init's final stage, after packages are installed, because
   * the owner (postgres, etcd, haproxy) only exists from then on.
   */
  defer: boolean;
}

/** What is only known once cloud resources exist, passed in by the consumer. */
export interface BootInputs {
  /**
   * EBS volume id (vol-…) of the node's PGDATA volume. Its NVMe device shows
   * up as /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol…, a path that
   * does not depend on attachment order. Required for postgres nodes on AWS;
   * the lab passes none and gives PGDATA a plain directory.
   */
  dataVolumeId?: string;
}

/**
 * A boot step in `runcmd`, as an argv list (cloud-init runs it without a
 * shell).
 */
export type BootCommand = string[];
