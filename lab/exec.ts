import { spawn, type SpawnOptions } from "node:child_process";
import * as fs from "node:fs";

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
  /** True when the command was killed because it ran past its time budget. */
  timedOut: boolean;
}

export interface ExecOptions {
  timeoutMs?: number;
  input?: string;
  env?: Record<string, string>;
  cwd?: string;
}

/** Runs argv (no shell) and collects its output. Never throws for a non-zero exit. */
export function exec(argv: string[], options: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    const spawnOptions: SpawnOptions = { stdio: ["pipe", "pipe", "pipe"], cwd: options.cwd };
    if (options.env) spawnOptions.env = options.env;
    const child = spawn(argv[0], argv.slice(1), spawnOptions);
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    let settled = false;
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const timer = options.timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          child.kill("SIGKILL");
        }, options.timeoutMs)
      : undefined;
    const finish = (code: number, extra = ""): void => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      resolve({ code, stdout, stderr: stderr + extra, timedOut });
    };
    child.on("error", (error) => {
      finish(127, `${error.message}\n`);
    });
    child.on("close", (code, signal) => {
      if (timedOut) finish(124, `timed out after ${options.timeoutMs} ms: ${argv.join(" ")}\n`);
      else finish(code ?? 128 + (signal ? signalNumber(signal) : 0));
    });
    child.stdin?.on("error", () => undefined);
    if (options.input !== undefined) child.stdin?.end(options.input);
    else child.stdin?.end();
  });
}

function signalNumber(signal: NodeJS.Signals): number {
  const table: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15, SIGABRT: 6, SIGSEGV: 11 };
  return table[signal] ?? 0;
}

/** Like exec, but throws with the command and its stderr when the exit code is not 0. */
export async function run(argv: string[], options: ExecOptions = {}): Promise<string> {
  const result = await exec(argv, options);
  if (result.code !== 0) {
    throw new Error(`command failed (exit ${result.code}): ${argv.join(" ")}\n${result.stderr.trim() || result.stdout.trim()}`);
  }
  return result.stdout;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Seconds on CLOCK_MONOTONIC, the same clock as Python's time.monotonic() in the lab's processes. */
export function monotonicSeconds(): number {
  return Number(process.hrtime.bigint()) / 1e9;
}

/** Polls `probe` until it returns a value other than undefined, or the deadline passes. */
export async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, intervalMs = 500): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const detail = lastError instanceof Error ? `: ${lastError.message}` : "";
      throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}${detail}`);
    }
    await sleep(intervalMs);
  }
}

/** The last lines of a log file, or a note that there is none (for error messages). */
export function tailOf(file: string, lines = 25, missing = "(no log)"): string {
  try {
    return fs.readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return missing;
  }
}
