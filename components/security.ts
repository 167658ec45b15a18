import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { findNode, hostCidr, PORTS, type ClusterPlan, type NodePlan } from "../plan";
import type { NodeRole } from "../plan";
import { slug, stackTags, TYPE_PREFIX } from "./naming";

/** One allowed inbound flow: a TCP port from one CIDR. */
export interface IngressRule {
  port: number;
  cidr: string;
  description: string;
}

const hasAny = (node: NodePlan, roles: NodeRole[]) => roles.some((role) => node.roles.has(role));

/**
 * The complete inbound allowlist of one node, derived from the plan:
 *
 * | to a node with role | port                      | from                                   |
 * |---------------------|---------------------------|----------------------------------------|
 * | postgres            | 5432 (PostgreSQL)         | every other postgres or haproxy node   |
 * | postgres            | 8008 (Patroni REST)       | every other postgres or haproxy node   |
 * | etcd                | 2379 (etcd client)        | every other postgres or etcd node      |
 * | etcd                | 2380 (etcd peer)          | every other etcd node                  |
 * | haproxy             | primary/replica/sync port | each of `access.applicationCidrs`      |
 * | haproxy             | stats port                | each of `access.adminCidrs`            |
 * | any                 | 9100 (node_exporter)      | every other haproxy node (Prometheus)  |
 * | postgres            | 9187 (postgres_exporter)  | every other haproxy node               |
 * | etcd                | 2381 (etcd metrics)       | every other haproxy node               |
 * | haproxy             | 8405, 9090, 9093          | every other haproxy node               |
 * | haproxy             | 9094 (Alertmanager gossip)| every other haproxy node               |
 * | haproxy             | 9090, 9093                | each of `access.adminCidrs`            |
 *
 * Each region's Prometheus runs on its HAProxy node and scrapes every node
 * (cloud-init/monitoring.ts); Patroni's /metrics is on 8008, which HAProxy
 * nodes reach already.
 *
 * Cluster sources are /32s of node IPs because security groups cannot be
 * referenced across regions. A node's own IP is left out (traffic to
 * itself never leaves the host). There is no SSH rule: operators use SSM
 * Session Manager. Nothing is ever open to 0.0.0.0/0 — the config
 * validator already rejects it in `access.*`, and this function re-checks.
 */
export function nodeIngressRules(plan: ClusterPlan, nodeName: string): IngressRule[] {
  const node = findNode(plan, nodeName);
  const others = plan.nodes.filter((other) => other.name !== node.name);
  const rules: IngressRule[] = [];
  const add = (port: number, cidr: string, description: string) => {
    if (cidr.endsWith("/0")) throw new Error(`security: refusing ${cidr} as a source for port ${port} on ${node.name}`);
    if (!rules.some((rule) => rule.port === port && rule.cidr === cidr)) rules.push({ port, cidr, description });
  };
  const fromNodes = (port: number, what: string, sources: NodePlan[]) => {
    sources.forEach((source) => {
      add(port, hostCidr(source.privateIp), `${what} from ${source.name}`);
    });
  };

  if (node.roles.has("postgres")) {
    const clients = others.filter((other) => hasAny(other, ["postgres", "haproxy"]));
    fromNodes(PORTS.postgres, "PostgreSQL", clients);
    fromNodes(PORTS.patroniRest, "Patroni REST API", clients);
  }
  if (node.roles.has("etcd")) {
    fromNodes(
      PORTS.etcdClient,
      "etcd client",
      others.filter((other) => hasAny(other, ["postgres", "etcd"])),
    );
    fromNodes(
      PORTS.etcdPeer,
      "etcd peer",
      others.filter((other) => other.roles.has("etcd")),
    );
  }
  if (node.roles.has("haproxy")) {
    const { haproxy, access } = plan.config;
    const listeners: [number, string][] = [
      [haproxy.primaryPort, "HAProxy primary (read-write)"],
      [haproxy.replicaPort, "HAProxy replicas (read-only)"],
      [haproxy.synchronousPort, "HAProxy synchronous standby"],
    ];
    for (const [port, what] of listeners) for (const cidr of access.applicationCidrs) add(port, cidr, `${what} from application network ${cidr}`);
    for (const cidr of access.adminCidrs) add(haproxy.statsPort, cidr, `HAProxy stats from admin network ${cidr}`);
  }
  // Monitoring: the regions' Prometheus servers (on the HAProxy nodes) scrape every node.
  const monitors = others.filter((other) => other.roles.has("haproxy"));
  fromNodes(PORTS.nodeExporter, "node_exporter scrape", monitors);
  if (node.roles.has("postgres")) fromNodes(PORTS.postgresExporter, "postgres_exporter scrape", monitors);
  if (node.roles.has("etcd")) fromNodes(PORTS.etcdMetrics, "etcd metrics scrape", monitors);
  if (node.roles.has("haproxy")) {
    fromNodes(PORTS.haproxyMetrics, "HAProxy exporter scrape", monitors);
    fromNodes(PORTS.prometheus, "Prometheus self-scrape from another region", monitors);
    fromNodes(PORTS.alertmanager, "Alertmanager (alerts and scrape)", monitors);
    fromNodes(PORTS.alertmanagerCluster, "Alertmanager cluster gossip", monitors);
    for (const cidr of plan.config.access.adminCidrs) {
      add(PORTS.prometheus, cidr, `Prometheus from admin network ${cidr}`);
      add(PORTS.alertmanager, cidr, `Alertmanager from admin network ${cidr}`);
    }
  }
  return rules;
}

/** ICMP type 3 (destination unreachable), code 4 (fragmentation needed and DF set). */
export const ICMP_FRAGMENTATION_NEEDED = { type: 3, code: 4 } as const;

/**
 * Where a node accepts ICMP "fragmentation needed" from: every VPC of the
 * cluster. Path-MTU discovery needs those messages to reach the sender
 * (security groups drop them otherwise), and a path between regions carries
 * less than the nodes' 9001-byte interfaces (pgha-path-mtu sets the routes;
 * this lets the kernel learn a smaller size should any hop carry even less).
 */
export function nodeIcmpSources(plan: ClusterPlan): string[] {
  return [...plan.clusterCidrs];
}

/** Arguments of {@link NodeSecurity}. */
export interface NodeSecurityArgs {
  /** The cluster plan: the allowlist depends on every node's roles and IP, and on `access.*`. */
  plan: ClusterPlan;
  /** The node this security group protects. */
  node: NodePlan;
  /** VPC of the node's region. */
  vpcId: pulumi.Input<string>;
  /** Stack name, written to the `pgha:stack` tag. */
  stack: string;
  /** The explicit AWS provider of the node's region. */
  provider: aws.Provider;
}

/**
 * The security group of one node: exactly {@link nodeIngressRules}, each as
 * its own `aws.vpc.SecurityGroupIngressRule` (so a rule change never
 * rewrites the whole group), ICMP "fragmentation needed" from the cluster's
 * VPCs ({@link nodeIcmpSources}), and one egress rule.
 *
 * Egress is open (all protocols to 0.0.0.0/0) on purpose: nodes install
 * PostgreSQL/Patroni/HAProxy from apt and PGDG and download etcd through the
 * NAT gateway, fetch their secrets from the regional SSM endpoint, and talk
 * to the other nodes over peering. There is no inbound path from the
 * internet (no public IP, NAT only), so open egress does not widen what can
 * reach the node.
 */
export class NodeSecurity extends pulumi.ComponentResource {
  public readonly securityGroupId: pulumi.Output<string>;
  /** The allowlist this group implements, as planned. */
  public readonly rules: IngressRule[];

  constructor(name: string, args: NodeSecurityArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super(`${TYPE_PREFIX}:NodeSecurity`, name, {}, opts);
    const { node, stack, provider } = args;
    const child: pulumi.CustomResourceOptions = { parent: this, provider };
    const tags = stackTags(stack, { Name: `pgha-${stack}-${node.name}`, "pgha:region": node.region, "pgha:node": node.name });

    const group = new aws.ec2.SecurityGroup(
      `${name}-sg`,
      // The description is immutable in AWS (changing it replaces the group), so it stays generic.
      { vpcId: args.vpcId, description: `pgha cluster node allowlist`, tags },
      child,
    );
    this.rules = nodeIngressRules(args.plan, node.name);
    for (const rule of this.rules) {
      new aws.vpc.SecurityGroupIngressRule(
        `${name}-in-${rule.port}-${slug(rule.cidr)}`,
        { securityGroupId: group.id, ipProtocol: "tcp", fromPort: rule.port, toPort: rule.port, cidrIpv4: rule.cidr, description: rule.description, tags },
        child,
      );
    }
    for (const cidr of nodeIcmpSources(args.plan)) {
      new aws.vpc.SecurityGroupIngressRule(
        `${name}-in-icmp-frag-${slug(cidr)}`,
        {
          securityGroupId: group.id,
          // For ICMP, AWS takes the type as fromPort and the code as toPort.
          ipProtocol: "icmp",
          fromPort: ICMP_FRAGMENTATION_NEEDED.type,
          toPort: ICMP_FRAGMENTATION_NEEDED.code,
          cidrIpv4: cidr,
          description: `ICMP fragmentation needed (path-MTU discovery) from cluster network ${cidr}`,
          tags,
        },
        child,
      );
    }
    new aws.vpc.SecurityGroupEgressRule(
      `${name}-out-all`,
      { securityGroupId: group.id, ipProtocol: "-1", cidrIpv4: "0.0.0.0/0", description: "packages and SSM via NAT, cluster traffic via peering", tags },
      child,
    );

    this.securityGroupId = group.id;
    this.registerOutputs({ securityGroupId: this.securityGroupId });
  }
}
