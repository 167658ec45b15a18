import { gunzipSync, gzipSync } from "node:zlib";
import { CancelCommandCommand, GetCommandInvocationCommand, SendCommandCommand, SSMClient, type GetCommandInvocationCommandOutput } from "@aws-sdk/client-ssm";
import type { NodeTransport, RunningCommand, RunOptions, RunResult, ServiceName } from "../checks/transport";
import { shellQuote } from "./shell";

export { shellQuote };

/**
 * NodeTransport over AWS Systems Manager Run Command: every `run` is one
 * `SendCommand` of the `AWS-RunShellScript` document to the node's instance,
 * polled with `GetCommandInvocation` until it ends. No port is opened and no
 * SSH key exists: the SSM agent on the node (Ubuntu AMIs ship it) pulls the
 * command over its own outbound channel, authorised by the instance role's
 * AmazonSSMManagedInstanceCore and, on the caller's side, `ssm:SendCommand`,
 * `ssm:GetCommandInvocation` and `ssm:CancelCommand`.
 *
 * Semantics match LabTransport: a command that exits non-zero is a result,
 * not an error; a command that outlives its budget is exit code 124 (and is
 * cancelled); a command that cannot be delivered or run at all throws.
 *
 * Secrets never travel: the script text is visible to anyone who may list
 * the account's commands, so callers pass secrets only as `envFiles` (files
 * on the node, read there) — never in `env` or `input`.
 */

/** Where a node runs. */
export interface SsmTarget {
  instanceId: string;
  /** AWS region code of the instance (each region has its own SSM endpoint). */
  region: string;
}

/** The part of SSMClient the transport uses (a real client, or one under aws-sdk-client-mock). */
export type SsmClientLike = Pick<SSMClient, "send">;

export interface SsmTransportOptions {
  /** Node name → instance. */
  targets: Record<string, SsmTarget>;
  /** Client per region (default: `new SSMClient({ region })`, credentials from the environment). */
  clientFor?: (region: string) => SsmClientLike;
  /** Delay between GetCommandInvocation polls (default 1000 ms). */
  pollIntervalMs?: number;
  /** Retries of a throttled API call before giving up (default 8). */
  maxRetries?: number;
  /** First backoff after throttling, doubled per retry up to 20 s, with jitter (default 500 ms). */
  retryBaseMs?: number;
  /** How long a new command may stay undelivered before it counts as failed (default 60 s; SSM's minimum is 30). */
  deliveryTimeoutSeconds?: number;
  /** Shown as the command's comment in the SSM console and CloudTrail. */
  comment?: string;
  /** Injected for tests. */
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
  random?: () => number;
  log?: (line: string) => void;
}

/** A command that could not be delivered or run (not a non-zero exit). */
export class SsmCommandError extends Error {
  constructor(
    message: string,
    readonly node: string,
    readonly commandId?: string,
    readonly status?: string,
  ) {
    super(message);
    this.name = "SsmCommandError";
  }
}

/** SSM returns at most this many characters of each output stream. */
export const SSM_OUTPUT_LIMIT = 24_000;
/** Scripts above this are refused (Run Command parameters are limited in size). */
export const SSM_SCRIPT_LIMIT = 48 * 1024;

const BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_TIMEOUT_MS = 30_000;
const RUNNING = new Set(["Pending", "InProgress", "Delayed", "Cancelling"]);
/** StatusDetails of a command that never ran on the node. */
const NOT_RUN = new Set(["Undeliverable", "Terminated", "DeliveryTimedOut", "InvalidPlatform", "AccessDenied", "NoInstancesInTag"]);

/**
 * The shell script one `run` becomes on the node (POSIX sh, as root, which
 * is how the SSM agent runs AWS-RunShellScript):
 * - the command gets only PATH, HOME, USER, LOGNAME, LANG and `env`
 *   (`env -i`), like the lab's `env -i`;
 * - `user` other than root: `runuser -u <user> --` (util-linux);
 * - `envFiles`: sourced on the node by the target user right before the
 *   command, so their values never appear in the script;
 * - `input`: gzip + base64 inside the script, piped to the command's stdin.
 */
export function remoteScript(argv: string[], options: RunOptions = {}): string {
  if (argv.length === 0) throw new Error("remoteScript: empty argv");
  const user = options.user ?? "root";
  const env = { PATH: BASE_PATH, USER: user, LOGNAME: user, LANG: "C.UTF-8", ...(options.env ?? {}) };
  for (const key of Object.keys(env)) if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new Error(`remoteScript: bad variable name ${JSON.stringify(key)}`);
  const words = ["/usr/bin/env", "-i", '"HOME=$pgha_home"', ...Object.entries(env).map(([k, v]) => shellQuote(`${k}=${v}`))];
  if (options.envFiles?.length) {
    // sh -c 'set -a; . F1; . F2; set +a; exec "$@"' sh argv...
    const sources = options.envFiles.map((file) => `. ${shellQuote(file)};`).join(" ");
    words.push("/bin/sh", "-c", shellQuote(`set -a; ${sources} set +a; exec "$@"`), "pgha-env");
  }
  words.push(...argv.map(shellQuote));
  const command = (user === "root" ? [] : ["runuser", "-u", shellQuote(user), "--"]).concat(words).join(" ");
  const lines = [
    "#!/bin/sh",
    `# pgha: ${argv.join(" ").replace(/\s+/g, " ").slice(0, 120)}`,
    // The agent's own PATH may lack the sbin directories (runuser, systemctl).
    `PATH=${BASE_PATH}; export PATH`,
    `pgha_home=$(getent passwd ${shellQuote(user)} | cut -d: -f6)`,
    `[ -n "$pgha_home" ] || { echo "no user ${user.replace(/[^A-Za-z0-9_.-]/g, "?")} on this node" >&2; exit 125; }`,
  ];
  if (options.input !== undefined) {
    const packed = gzipSync(Buffer.from(options.input, "utf8")).toString("base64");
    lines.push(`printf '%s' ${shellQuote(packed)} | base64 -d | gzip -dc | ${command}`);
  } else {
    lines.push(`${command} </dev/null`);
  }
  return `${lines.join("\n")}\n`;
}

/** Throttling as the SDK reports it (error name, HTTP 429 or its retry metadata). */
export function isThrottling(error: unknown): boolean {
  const e = error as { name?: string; code?: string; $metadata?: { httpStatusCode?: number }; $retryable?: { throttling?: boolean }; message?: string };
  if (!e || typeof e !== "object") return false;
  const name = e.name ?? e.code ?? "";
  return (
    ["ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException", "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException"].includes(
      name,
    ) ||
    e.$metadata?.httpStatusCode === 429 ||
    e.$retryable?.throttling === true ||
    /rate exceeded/i.test(e.message ?? "")
  );
}

function errorName(error: unknown): string {
  return (error as { name?: string })?.name ?? "";
}

/** Which processes belong to a service, as `pgrep` arguments on the node. */
const PGREP: Record<ServiceName, string[]> = {
  postgres: ["-x", "postgres"],
  patroni: ["-f", "bin/patroni "],
  etcd: ["-x", "etcd"],
  haproxy: ["-x", "haproxy"],
};

export class SsmTransport implements NodeTransport {
  readonly kind = "ssm";
  private readonly clients = new Map<string, SsmClientLike>();
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly now: () => number;
  private readonly random: () => number;

  constructor(private readonly options: SsmTransportOptions) {
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
  }

  target(node: string): SsmTarget {
    const target = this.options.targets[node];
    if (!target) throw new SsmCommandError(`${node}: no instance known for this node (known: ${Object.keys(this.options.targets).join(", ")})`, node);
    return target;
  }

  private client(region: string): SsmClientLike {
    let client = this.clients.get(region);
    if (!client) {
      client = this.options.clientFor ? this.options.clientFor(region) : new SSMClient({ region });
      this.clients.set(region, client);
    }
    return client;
  }

  /** One API call, retried with exponential backoff and jitter while AWS throttles it. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const maxRetries = this.options.maxRetries ?? 8;
    const base = this.options.retryBaseMs ?? 500;
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (error) {
        if (!isThrottling(error) || attempt >= maxRetries) throw error;
        const delay = Math.min(20_000, base * 2 ** attempt) * (0.5 + this.random() / 2);
        this.options.log?.(`${what}: throttled (${errorName(error) || "429"}), retry ${attempt + 1}/${maxRetries} in ${Math.round(delay)} ms`);
        await this.sleep(delay);
      }
    }
  }

  async run(node: string, argv: string[], options: RunOptions = {}): Promise<RunResult> {
    const { instanceId, region } = this.target(node);
    const client = this.client(region);
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const script = remoteScript(argv, options);
    if (script.length > SSM_SCRIPT_LIMIT) throw new SsmCommandError(`${node}: script of ${script.length} bytes exceeds ${SSM_SCRIPT_LIMIT}`, node);
    const executionSeconds = Math.max(1, Math.ceil(timeoutMs / 1000));
    const sent = await this.call(`SendCommand ${node}`, () =>
      client.send(
        new SendCommandCommand({
          DocumentName: "AWS-RunShellScript",
          InstanceIds: [instanceId],
          Parameters: { commands: [script], executionTimeout: [String(executionSeconds)] },
          TimeoutSeconds: Math.max(30, this.options.deliveryTimeoutSeconds ?? 60),
          Comment: (this.options.comment ?? `pgha ${argv[0]}`).slice(0, 100),
        }),
      ),
    );
    const commandId = sent.Command?.CommandId;
    if (!commandId) throw new SsmCommandError(`${node}: SendCommand returned no command id`, node);

    // Our own bound: the node's budget plus delivery and reporting slack.
    const deadline = this.now() + timeoutMs + (this.options.deliveryTimeoutSeconds ?? 60) * 1000;
    const interval = this.options.pollIntervalMs ?? 1000;
    for (;;) {
      await this.sleep(interval);
      let invocation: GetCommandInvocationCommandOutput | undefined;
      try {
        invocation = await this.call(`GetCommandInvocation ${node}`, () => client.send(new GetCommandInvocationCommand({ CommandId: commandId, InstanceId: instanceId })));
      } catch (error) {
        // Right after SendCommand the invocation may not exist yet.
        if (errorName(error) !== "InvocationDoesNotExist") throw error;
      }
      const status = invocation?.Status;
      if (invocation && status && !RUNNING.has(status)) return this.finish(node, commandId, invocation, executionSeconds);
      if (this.now() > deadline) {
        await this.call(`CancelCommand ${node}`, () => client.send(new CancelCommandCommand({ CommandId: commandId, InstanceIds: [instanceId] }))).catch(() => undefined);
        return {
          code: 124,
          stdout: invocation?.StandardOutputContent ?? "",
          stderr: `timed out after ${timeoutMs} ms waiting for command ${commandId} on ${node} (${instanceId}); last status ${status ?? "unknown"}; cancelled\n`,
        };
      }
    }
  }

  private finish(node: string, commandId: string, invocation: GetCommandInvocationCommandOutput, executionSeconds: number): RunResult {
    const status = invocation.Status as string;
    const details = invocation.StatusDetails ?? status;
    const stdout = invocation.StandardOutputContent ?? "";
    const stderr = invocation.StandardErrorContent ?? "";
    const code = invocation.ResponseCode ?? -1;
    if (status === "TimedOut" || details === "ExecutionTimedOut") {
      if (details === "DeliveryTimedOut") throw new SsmCommandError(`${node}: command ${commandId} was not delivered in time (is the SSM agent online?)`, node, commandId, details);
      return { code: 124, stdout, stderr: `${stderr}timed out after ${executionSeconds} s on ${node} (command ${commandId})\n` };
    }
    if (status === "Cancelled") throw new SsmCommandError(`${node}: command ${commandId} was cancelled`, node, commandId, details);
    if (NOT_RUN.has(details) || code < 0)
      throw new SsmCommandError(`${node}: command ${commandId} did not run: ${details}${stderr ? ` (${stderr.trim().slice(0, 200)})` : ""}`, node, commandId, details);
    if (stdout.length >= SSM_OUTPUT_LIMIT)
      throw new SsmCommandError(`${node}: output of command ${commandId} exceeds SSM's ${SSM_OUTPUT_LIMIT} characters and was truncated`, node, commandId, details);
    return { code: status === "Success" ? 0 : code === 0 ? 1 : code, stdout, stderr };
  }

  /** Long-running streams (the drills' writer) need Session Manager, which this transport does not speak. */
  spawn(node: string, argv: string[]): RunningCommand {
    throw new SsmCommandError(`${node}: cannot stream ${argv[0]} over SSM Run Command (long-running commands need Session Manager)`, node);
  }

  /** gzip + base64 on the node, so files up to ~4× SSM's output limit come back whole. */
  async readFile(node: string, file: string): Promise<string> {
    const result = await this.run(node, ["sh", "-c", 'gzip -c -- "$1" | base64 -w0', "pgha-read", file], { timeoutMs: 30_000 });
    if (result.code !== 0) throw new SsmCommandError(`${node}: cannot read ${file}: ${result.stderr.trim() || `exit ${result.code}`}`, node);
    return gunzipSync(Buffer.from(result.stdout.trim(), "base64")).toString("utf8");
  }

  private async systemctl(node: string, args: string[], what: string, timeoutMs = 120_000): Promise<void> {
    const result = await this.run(node, ["sh", "-c", 'systemctl daemon-reload && systemctl "$@"', "pgha-systemctl", ...args], { timeoutMs });
    if (result.code !== 0) throw new SsmCommandError(`${node}: ${what} failed: ${(result.stderr || result.stdout).trim()}`, node);
  }

  async startService(node: string, unit: string): Promise<void> {
    await this.systemctl(node, ["start", unit], `systemctl start ${unit}`);
  }

  async stopService(node: string, unit: string): Promise<void> {
    await this.systemctl(node, ["stop", unit], `systemctl stop ${unit}`);
  }

  async reloadService(node: string, unit: string): Promise<void> {
    await this.systemctl(node, ["reload", unit], `systemctl reload ${unit}`);
  }

  async serviceActive(node: string, unit: string): Promise<boolean> {
    return (await this.run(node, ["systemctl", "is-active", "--quiet", unit])).code === 0;
  }

  async signalProcesses(node: string, service: ServiceName, signal: NodeJS.Signals): Promise<number> {
    const name = signal.replace(/^SIG/, "");
    const script = 'sig=$1; shift; n=0; for p in $(pgrep "$@"); do kill -s "$sig" "$p" 2>/dev/null && n=$((n+1)); done; echo $n';
    const result = await this.run(node, ["sh", "-c", script, "pgha-signal", name, ...PGREP[service]]);
    const count = Number(result.stdout.trim());
    if (result.code !== 0 || !Number.isInteger(count)) throw new SsmCommandError(`${node}: signalling ${service} failed: ${result.stderr.trim()}`, node);
    return count;
  }
}
