import { exec, run } from "./exec";
import { NODE_LINK_MTU, NS_PREFIX, ROUTER_NS, type HostLayout, type LabLayout } from "./layout";

/** Every network namespace with a `pgha-` name (other tools use the prefix too: filter before touching). */
export async function existingNamespaces(): Promise<string[]> {
  const result = await exec(["ip", "netns", "list"]);
  return result.stdout
    .split("\n")
    .map((line) => line.trim().split(/\s+/)[0] ?? "")
    .filter((name) => name.startsWith(NS_PREFIX));
}

/** PIDs living in a namespace (`ip netns pids`), the only reliable way to find the lab's processes. */
export async function namespacePids(ns: string): Promise<number[]> {
  const result = await exec(["ip", "netns", "pids", ns]);
  if (result.code !== 0) return [];
  return result.stdout
    .split(/\s+/)
    .filter(Boolean)
    .map(Number)
    .filter((pid) => Number.isInteger(pid) && pid > 1);
}

const ip = (ns: string, ...args: string[]): Promise<string> => run(["ip", "-n", ns, ...args]);

async function sysctl(ns: string, key: string, value: string): Promise<void> {
  await run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", `${key}=${value}`]);
}

/**
 * Router namespace with one bridge per subnet (holding the subnet's gateway
 * address) and forwarding on; one namespace per host, its veth enslaved to
 * its subnet's bridge in the router. Nothing is created in the root namespace.
 */
export async function createNetwork(layout: LabLayout): Promise<void> {
  await run(["ip", "netns", "add", ROUTER_NS]);
  await ip(ROUTER_NS, "link", "set", "lo", "up");
  await sysctl(ROUTER_NS, "net.ipv4.ip_forward", "1");
  for (const key of ["net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"]) await sysctl(ROUTER_NS, key, "0");
  for (const subnet of layout.subnets) {
    // The bridge carries jumbo frames between a region's nodes, as a VPC does (a port's own MTU still limits it).
    await ip(ROUTER_NS, "link", "add", subnet.bridge, "mtu", String(NODE_LINK_MTU), "type", "bridge", "stp_state", "0", "forward_delay", "0");
    await ip(ROUTER_NS, "addr", "add", `${subnet.gateway}/${subnet.prefixLength}`, "dev", subnet.bridge);
    await ip(ROUTER_NS, "link", "set", subnet.bridge, "up");
  }
  for (const host of layout.hosts) await createHostLink(host);
}

async function createHostLink(host: HostLayout): Promise<void> {
  const { link } = host;
  await run(["ip", "netns", "add", host.ns]);
  await ip(host.ns, "link", "set", "lo", "up");
  await ip(ROUTER_NS, "link", "add", link.routerIf, "mtu", String(link.mtu), "type", "veth", "peer", "name", link.ifname, "mtu", String(link.mtu), "netns", host.ns);
  await ip(ROUTER_NS, "link", "set", link.routerIf, "master", link.bridge);
  await ip(ROUTER_NS, "link", "set", link.routerIf, "up");
  await ip(host.ns, "addr", "add", `${link.address}/${link.prefixLength}`, "dev", link.ifname);
  await ip(host.ns, "link", "set", link.ifname, "up");
  await ip(host.ns, "route", "add", "default", "via", link.gateway, "dev", link.ifname);
}

/** Cuts a host off the network (its router-side veth down); its processes keep running. */
export async function cutLink(host: HostLayout): Promise<void> {
  await ip(ROUTER_NS, "link", "set", host.link.routerIf, "down");
}

export async function restoreLink(host: HostLayout): Promise<void> {
  await ip(ROUTER_NS, "link", "set", host.link.routerIf, "up");
}

export async function linkIsUp(host: HostLayout): Promise<boolean> {
  const out = await ip(ROUTER_NS, "-o", "link", "show", host.link.routerIf);
  return /[<,]UP[,>]/.test(out);
}

export async function deleteNamespace(ns: string): Promise<void> {
  await exec(["ip", "netns", "del", ns]);
}

/**
 * `ip rule` priority of a path cut in the router: before the WAN emulator's
 * rules (lab/wan.ts, 40 and 100), so a cut path drops even over the WAN.
 */
export const PATH_CUT_RULE_PREF = 30;

function pathCutRules(a: HostLayout, b: HostLayout): string[][] {
  if (a.link.bridge === b.link.bridge) {
    // Same subnet: the bridge switches their frames without the router's rules ever seeing them.
    throw new Error(`${a.name} and ${b.name} share a subnet (${a.link.bridge}); a path cut needs hosts the router routes between`);
  }
  return [
    ["pref", String(PATH_CUT_RULE_PREF), "from", `${a.link.address}/32`, "to", `${b.link.address}/32`, "blackhole"],
    ["pref", String(PATH_CUT_RULE_PREF), "from", `${b.link.address}/32`, "to", `${a.link.address}/32`, "blackhole"],
  ];
}

/**
 * Drops every packet between two hosts, both directions, while each still
 * reaches everyone else: the cut of one link (a peering route, a security
 * group rule), not of a host or a region.
 */
export async function cutPath(a: HostLayout, b: HostLayout): Promise<void> {
  for (const rule of pathCutRules(a, b)) await ip(ROUTER_NS, "rule", "add", ...rule);
}

export async function restorePath(a: HostLayout, b: HostLayout): Promise<void> {
  for (const rule of pathCutRules(a, b)) await exec(["ip", "-n", ROUTER_NS, "rule", "del", ...rule]);
}

/** Removes every path cut; returns the address pairs (from → to) it removed. */
export async function restoreAllPaths(): Promise<string[]> {
  const rules = JSON.parse(await ip(ROUTER_NS, "-j", "rule", "show")) as { priority?: number; src?: string; dst?: string; action?: string }[];
  const removed: string[] = [];
  for (const rule of rules) {
    if (rule.priority !== PATH_CUT_RULE_PREF || rule.action !== "blackhole" || !rule.src || !rule.dst) continue;
    await ip(ROUTER_NS, "rule", "del", "pref", String(PATH_CUT_RULE_PREF), "from", `${rule.src}/32`, "to", `${rule.dst}/32`, "blackhole");
    removed.push(`${rule.src} → ${rule.dst}`);
  }
  return removed;
}
