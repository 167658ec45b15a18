import { scrapeJobs } from "../cloud-init/monitoring";
import { nodesWithRole, PORTS } from "../plan";
import { httpsOnNode, type ClusterAccess } from "./cluster";
import type { Check } from "./readiness";

/**
 * What the regions' Prometheus servers say, asked on the HAProxy node that
 * runs each one (its HTTP API on 127.0.0.1, TLS with the node's metrics
 * certificate), through the transport only: the readiness gate, `lab status`
 * and the drills read alerts and samples the same way.
 */

/** One sample of an instant vector. */
export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

/** One alert as Prometheus's /api/v1/alerts lists it (pending or firing). */
export interface PromAlert {
  name: string;
  state: "pending" | "firing";
  labels: Record<string, string>;
  activeAt: string;
}

/** GET on a Prometheus API path on `node` (a HAProxy node); the parsed `data` of a successful answer. */
export async function prometheusApi(access: ClusterAccess, node: string, apiPath: string, timeoutMs = 10_000): Promise<unknown> {
  const answer = await httpsOnNode(access, node, "metrics", `https://127.0.0.1:${PORTS.prometheus}${apiPath}`, timeoutMs);
  const what = `${node}: Prometheus ${apiPath.split("?")[0]}`;
  if (answer.status !== 200) throw new Error(`${what}: HTTP ${answer.status} ${answer.body.trim().slice(0, 200)}`);
  const parsed = JSON.parse(answer.body) as { status?: string; data?: unknown; error?: string };
  if (parsed.status !== "success") throw new Error(`${what}: ${parsed.error ?? answer.body.slice(0, 200)}`);
  return parsed.data;
}

/** An instant query on `node`'s Prometheus; the vector's samples (a scalar answer is one sample without labels). */
export async function promQuery(access: ClusterAccess, node: string, expr: string): Promise<PromSample[]> {
  const data = (await prometheusApi(access, node, `/api/v1/query?query=${encodeURIComponent(expr)}`)) as {
    resultType: string;
    result: { metric: Record<string, string>; value: [number, string] }[] | [number, string];
  };
  if (data.resultType === "scalar") return [{ metric: {}, value: Number((data.result as [number, string])[1]) }];
  return (data.result as { metric: Record<string, string>; value: [number, string] }[]).map((sample) => ({ metric: sample.metric, value: Number(sample.value[1]) }));
}

/** The alerts `node`'s Prometheus currently holds, pending and firing. */
export async function prometheusAlerts(access: ClusterAccess, node: string): Promise<PromAlert[]> {
  const data = (await prometheusApi(access, node, "/api/v1/alerts")) as { alerts: { labels: Record<string, string>; state: string; activeAt: string }[] };
  return data.alerts.map((alert) => ({
    name: alert.labels.alertname ?? "?",
    state: alert.state === "firing" ? "firing" : "pending",
    labels: alert.labels,
    activeAt: alert.activeAt,
  }));
}

/** Every target the plan's Prometheus config scrapes, as its `instance` label. */
export function expectedTargets(access: ClusterAccess): string[] {
  return scrapeJobs(access.plan).flatMap((job) => job.nodes.map((node) => `${job.job}/${node.name}:${job.port}`));
}

/**
 * Monitoring is ready when every connected region's Prometheus scrapes every
 * planned target successfully and its Alertmanagers form one cluster. A node
 * whose exporter does not answer, or a certificate a scraper refuses, shows
 * here by name.
 */
export async function checkMonitoring(access: ClusterAccess): Promise<Check[]> {
  const servers = nodesWithRole(access.plan, "haproxy").filter((n) => !access.isolated.has(n.name));
  const expected = expectedTargets(access);
  const alertmanagers = nodesWithRole(access.plan, "haproxy").length;
  return Promise.all(
    servers.map(async (server): Promise<Check> => {
      const id = `prometheus ${server.name}`;
      try {
        const up = await promQuery(access, server.name, "up");
        const seen = new Map(up.map((s) => [`${s.metric.job}/${s.metric.instance}`, s.value]));
        const missing = expected.filter((target) => !seen.has(target));
        const down = expected.filter((target) => seen.get(target) === 0);
        const members = await promQuery(access, server.name, `alertmanager_cluster_members{job="alertmanager"}`);
        const split = members.filter((s) => s.value !== alertmanagers).map((s) => `${s.metric.node} sees ${s.value}`);
        const problems = [
          ...(down.length ? [`down: ${down.join(", ")}`] : []),
          ...(missing.length ? [`not scraped yet: ${missing.join(", ")}`] : []),
          ...(members.length < alertmanagers ? [`${members.length} of ${alertmanagers} Alertmanagers report`] : []),
          ...(split.length ? [`Alertmanager cluster of ${alertmanagers} split: ${split.join(", ")}`] : []),
        ];
        return { id, ok: problems.length === 0, detail: problems.join("; ") || `${expected.length} targets up, ${alertmanagers} Alertmanagers in one cluster` };
      } catch (error) {
        return { id, ok: false, detail: (error as Error).message };
      }
    }),
  );
}
