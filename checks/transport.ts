/**
 * How the checks, the rollout and the drills reach a node. The lab implements
 * it with `ip netns exec` + chroot + setpriv (lab/transport.ts); a real stack
 * over SSM Run Command (ops/ssm-transport.ts), so the same checks run against
 * AWS.
 */
export interface RunOptions {
  /** Run as this account of the node (default root). */
  user?: string;
  timeoutMs?: number;
  /** Extra environment; the command gets only PATH, HOME, USER, LOGNAME and these. */
  env?: Record<string, string>;
  /**
   * EnvironmentFiles on the node whose variables the command also gets (after
   * `env`). They are read on the node itself, so a secret in them (the
   * Patroni REST password) never travels through the transport.
   */
  envFiles?: string[];
  input?: string;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A long-running command whose stdout is read line by line (the writer). */
export interface RunningCommand {
  onLine(handler: (line: string) => void): void;
  /** Resolves with the exit code. */
  readonly exited: Promise<number>;
  stop(): Promise<number>;
  stderr(): string;
}

/** What runs on a node, as a service manager sees it. */
export type ServiceName = "etcd" | "patroni" | "postgres" | "haproxy";

export interface NodeTransport {
  readonly kind: string;
  run(node: string, argv: string[], options?: RunOptions): Promise<RunResult>;
  spawn(node: string, argv: string[], options?: RunOptions): RunningCommand;
  readFile(node: string, path: string): Promise<string>;
  startService(node: string, unit: string): Promise<void>;
  stopService(node: string, unit: string): Promise<void>;
  /** `systemctl is-active`-like: true when the unit's main process runs. */
  serviceActive(node: string, unit: string): Promise<boolean>;
  /** Signals the processes of a service on the node (kill -9 of Patroni/PostgreSQL). Returns how many. */
  signalProcesses(node: string, service: ServiceName, signal: NodeJS.Signals): Promise<number>;
  /** `systemctl reload`; absent where the service manager has no reload (callers restart instead). */
  reloadService?(node: string, unit: string): Promise<void>;
}
