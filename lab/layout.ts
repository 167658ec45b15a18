import * as path from "node:path";
import type { ClusterPlan, NodePlan } from "../plan";
import { parseIpv4, parseIpv4Cidr, blockContains, type Ipv4Block } from "../plan";

/**
 * Where the lab puts things and how its network is wired, derived from the
 * plan alone (no address is hard-coded): one namespace per node holding the
 * node's private IP, a router namespace with one bridge per region subnet
 * (holding the subnet's first host address, the "VPC router"), and a client
 * namespace for the application side.
 */

export const NS_PREFIX = "pgha-";
export const ROUTER_NS = `${NS_PREFIX}router`;
export const CLIENT_NS = `${NS_PREFIX}client`;
/** The client's lab name, usable wherever a node name is (transport, roots). */
export const CLIENT = "client";

export const DEFAULT_STATE_DIR = process.env.PGHA_LAB_DIR ?? "/var/lib/pgha-lab";

export interface LinkLayout {
  /** Namespace of the host end. */
  ns: string;
  /** Interface name inside the host namespace. */
  ifname: string;
  /** Router-side veth, enslaved to the subnet's bridge: setting it down cuts the host off. */
  routerIf: string;
  bridge: string;
  address: string;
  prefixLength: number;
  gateway: string;
  /** The interface's MTU: EC2's 9001 on cluster nodes, Ethernet's 1500 on the client. */
  mtu: number;
}

/**
 * MTU of an EC2 interface on the instance types the plan uses (m6i, t3: jumbo
 * frames). The path between regions carries less (WanOptions.pathMtu), as
 * inter-Region VPC peering does.
 */
export const NODE_LINK_MTU = 9001;
/** The application's host: a standard Ethernet interface. */
export const CLIENT_LINK_MTU = 1500;

export interface SubnetLayout {
  cidr: string;
  region: string;
  bridge: string;
  /** The router's address on the subnet (its first host address). */
  gateway: string;
  prefixLength: number;
}

export interface HostLayout {
  /** Node name, or CLIENT. */
  name: string;
  ns: string;
  link: LinkLayout;
  /** The host's root: a node's machine disk (an overlay over the cloud image), or the client's chroot (over the tools rootfs). */
  root: string;
  /** Overlay upper and work directories. */
  upper: string;
  work: string;
  /** Host-side logs. */
  logDir: string;
  /** Region name (client: the region its subnet belongs to). */
  region: string;
}

export interface LabLayout {
  stateDir: string;
  subnets: SubnetLayout[];
  hosts: HostLayout[];
  /** Issued PKI (the lab's SSM endpoint is seeded from it). */
  pkiDir: string;
  /** Written by `up`, read by `down` after a crash. */
  stateFile: string;
  /** The router namespace's own root (WAN delay line only; see lab/wan.ts). */
  router: { root: string; upper: string; work: string; logDir: string };
  /** The WAN emulator's settings while it is on (absent: a LAN lab). */
  wanFile: string;
}

function toDotted(value: number): string {
  return [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join(".");
}

/** The client address: host .100 of the first region's first subnet, or the next free one. */
function clientAddress(plan: ClusterPlan, block: Ipv4Block): string {
  const taken = new Set(plan.nodes.map((node) => node.privateIp));
  for (let offset = 100; block.first + offset < block.last; offset++) {
    const candidate = toDotted(block.first + offset);
    if (!taken.has(candidate)) return candidate;
  }
  throw new Error(`no free client address in ${block.cidr}`);
}

export function labLayout(plan: ClusterPlan, stateDir = DEFAULT_STATE_DIR): LabLayout {
  const subnets: SubnetLayout[] = [];
  let bridgeIndex = 0;
  for (const region of plan.regions) {
    for (const subnet of region.subnets) {
      const block = parseIpv4Cidr(subnet.cidr) as Ipv4Block;
      subnets.push({ cidr: subnet.cidr, region: region.name, bridge: `br${bridgeIndex++}`, gateway: toDotted(block.first + 1), prefixLength: block.prefixLength });
    }
  }
  const subnetOf = (ip: string): SubnetLayout => {
    const value = parseIpv4(ip) as number;
    const found = subnets.find((subnet) => blockContains(parseIpv4Cidr(subnet.cidr) as Ipv4Block, value));
    if (!found) throw new Error(`no subnet holds ${ip}`);
    return found;
  };
  const host = (name: string, ip: string, index: number, region: string, mtu = NODE_LINK_MTU): HostLayout => {
    const subnet = subnetOf(ip);
    const dir = path.join(stateDir, "hosts", name);
    return {
      name,
      ns: `${NS_PREFIX}${name}`,
      region,
      link: {
        ns: `${NS_PREFIX}${name}`,
        ifname: "eth0",
        routerIf: `vr${index}`,
        bridge: subnet.bridge,
        address: ip,
        prefixLength: subnet.prefixLength,
        gateway: subnet.gateway,
        mtu,
      },
      root: path.join(dir, "root"),
      upper: path.join(dir, "upper"),
      work: path.join(dir, "work"),
      logDir: path.join(dir, "log"),
    };
  };
  const hosts = plan.nodes.map((node: NodePlan, index) => host(node.name, node.privateIp, index, node.region));
  const firstSubnet = plan.regions[0]?.subnets[0];
  if (!firstSubnet) throw new Error("the plan has no subnet");
  const clientIp = clientAddress(plan, parseIpv4Cidr(firstSubnet.cidr) as Ipv4Block);
  hosts.push(host(CLIENT, clientIp, plan.nodes.length, plan.regions[0]?.name ?? "", CLIENT_LINK_MTU));
  return {
    stateDir,
    subnets,
    hosts,
    pkiDir: path.join(stateDir, "pki"),
    stateFile: path.join(stateDir, "state.json"),
    router: {
      root: path.join(stateDir, "router", "root"),
      upper: path.join(stateDir, "router", "upper"),
      work: path.join(stateDir, "router", "work"),
      logDir: path.join(stateDir, "router", "log"),
    },
    wanFile: path.join(stateDir, "wan.json"),
  };
}

export function hostLayout(layout: LabLayout, name: string): HostLayout {
  const found = layout.hosts.find((host) => host.name === name);
  if (!found) throw new Error(`no lab host named ${JSON.stringify(name)} (hosts: ${layout.hosts.map((h) => h.name).join(", ")})`);
  return found;
}
