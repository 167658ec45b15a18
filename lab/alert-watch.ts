import { prometheusAlerts } from "../checks/monitoring";
import type { ClusterAccess } from "../checks/cluster";
import { nodesWithRole } from "../plan";
import { monotonicSeconds, sleep } from "./exec";

/**
 * Follows one alert on a connected region's Prometheus from a drill's fault
 * on: when it first showed as firing, and, once the drill has restored the
 * cluster, whether (and when) it cleared. Polled through the transport like
 * every drill probe.
 */
export interface AlertTrace {
  alert: string;
  /** The Prometheus that was asked last (a connected HAProxy node). */
  server?: string;
  /** Seconds from the fault to the first poll that saw the alert firing. */
  firedAfterSeconds?: number;
  /** Seconds from `cleared()`'s call (the cluster healthy again) to the first poll without the alert. */
  clearedAfterSeconds?: number;
  /** Errors of the polls, first few. */
  errors: string[];
}

const POLL_MS = 1000;

/** A region's Prometheus the drills can reach: the first HAProxy node not cut off. */
export function connectedPrometheus(access: ClusterAccess): string | undefined {
  return nodesWithRole(access.plan, "haproxy").find((n) => !access.isolated.has(n.name))?.name;
}

/** Whether `alert` is firing on `server`'s Prometheus now. */
export async function alertFiringOn(access: ClusterAccess, server: string, alert: string): Promise<boolean> {
  return (await prometheusAlerts(access, server)).some((a) => a.name === alert && a.state === "firing");
}

export class AlertWatch {
  readonly trace: AlertTrace;
  private stopped = false;
  private readonly loop: Promise<void>;

  constructor(
    private readonly access: ClusterAccess,
    alert: string,
    private readonly faultAt: number,
  ) {
    this.trace = { alert, errors: [] };
    this.loop = this.poll();
  }

  private async firing(): Promise<boolean | undefined> {
    const server = connectedPrometheus(this.access);
    if (!server) return undefined;
    this.trace.server = server;
    try {
      return await alertFiringOn(this.access, server, this.trace.alert);
    } catch (error) {
      if (this.trace.errors.length < 5) this.trace.errors.push((error as Error).message);
      return undefined;
    }
  }

  private async poll(): Promise<void> {
    while (!this.stopped && this.trace.firedAfterSeconds === undefined) {
      if (await this.firing()) this.trace.firedAfterSeconds = Number((monotonicSeconds() - this.faultAt).toFixed(1));
      else await sleep(POLL_MS);
    }
  }

  /** Stops looking for the alert to fire. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  /** After the drill restored the cluster: waits up to `budgetMs` for the alert to clear. */
  async cleared(budgetMs: number): Promise<boolean> {
    await this.stop();
    const started = monotonicSeconds();
    const deadline = Date.now() + budgetMs;
    for (;;) {
      if ((await this.firing()) === false) {
        this.trace.clearedAfterSeconds = Number((monotonicSeconds() - started).toFixed(1));
        return true;
      }
      if (Date.now() > deadline) return false;
      await sleep(POLL_MS);
    }
  }
}
