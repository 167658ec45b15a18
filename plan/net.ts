import * as ipaddr from "ipaddr.js";

/** An IPv4 CIDR block as an inclusive integer range. */
export interface Ipv4Block {
  cidr: string;
  prefixLength: number;
  first: number;
  last: number;
}

function toInt(address: ipaddr.IPv4): number {
  return address.toByteArray().reduce((acc, byte) => acc * 256 + byte, 0);
}

function fromInt(value: number): string {
  return new ipaddr.IPv4([(value >>> 24) & 255, (value >>> 16) & 255, (value >>> 8) & 255, value & 255]).toString();
}

/** A dotted-quad IPv4 address with exactly four decimal parts, or undefined. */
export function parseIpv4(text: string): number | undefined {
  if (!ipaddr.IPv4.isValidFourPartDecimal(text)) return undefined;
  return toInt(ipaddr.IPv4.parse(text));
}

export type CidrProblem = "syntax" | "host-bits";

/** Parses `a.b.c.d/n`; rejects host bits set (10.1.0.5/24), which AWS refuses too. */
export function parseIpv4Cidr(text: string): Ipv4Block | CidrProblem {
  if (!ipaddr.IPv4.isValidCIDRFourPartDecimal(text)) return "syntax";
  const [address, prefixLength] = ipaddr.IPv4.parseCIDR(text);
  const network = ipaddr.IPv4.networkAddressFromCIDR(text);
  if (toInt(network) !== toInt(address)) return "host-bits";
  const first = toInt(network);
  const last = toInt(ipaddr.IPv4.broadcastAddressFromCIDR(text));
  return { cidr: text, prefixLength, first, last };
}

export function blockContains(block: Ipv4Block, address: number): boolean {
  return address >= block.first && address <= block.last;
}

export function blockWithin(inner: Ipv4Block, outer: Ipv4Block): boolean {
  return inner.first >= outer.first && inner.last <= outer.last;
}

export function blocksOverlap(a: Ipv4Block, b: Ipv4Block): boolean {
  return a.first <= b.last && b.first <= a.last;
}

/**
 * The five addresses AWS reserves in every subnet: network, VPC router,
 * DNS, future use, and broadcast.
 */
export function awsReservedAddresses(block: Ipv4Block): string[] {
  return [block.first, block.first + 1, block.first + 2, block.first + 3, block.last].map(fromInt);
}

/** The single-address CIDR for an IP, as security-group rules want it. */
export function hostCidr(ip: string): string {
  return `${ip}/32`;
}
