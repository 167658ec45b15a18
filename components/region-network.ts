import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import type { RegionPlan } from "../plan";
import { slug, stackTags, TYPE_PREFIX } from "./naming";

/** Arguments of {@link RegionNetwork}. */
export interface RegionNetworkArgs {
  /**
   * The region's slice of the cluster plan: VPC CIDR, the private subnets
   * that hold the nodes, and the small public subnet for the NAT gateway.
   */
  region: RegionPlan;
  /** Stack name, written to the `pgha:stack` tag of every resource. */
  stack: string;
  /**
   * The explicit AWS provider of `region.awsRegion`. Every child is created
   * through it; nothing here falls back to the default provider.
   */
  provider: aws.Provider;
}

/** Checks a region plan before anything is created; throws on the first problem. */
export function validateRegionNetworkArgs(args: RegionNetworkArgs): void {
  const { region } = args;
  if (region.subnets.length === 0) throw new Error(`RegionNetwork ${region.name}: at least one private subnet is required`);
  const cidrs = new Set<string>();
  for (const subnet of region.subnets) {
    if (cidrs.has(subnet.cidr)) throw new Error(`RegionNetwork ${region.name}: subnet ${subnet.cidr} is listed twice`);
    cidrs.add(subnet.cidr);
  }
  if (cidrs.has(region.natSubnetCidr)) throw new Error(`RegionNetwork ${region.name}: natSubnetCidr ${region.natSubnetCidr} is also a private subnet`);
  for (const node of region.nodes) {
    if (!cidrs.has(node.subnetCidr)) throw new Error(`RegionNetwork ${region.name}: node ${node.name} sits in ${node.subnetCidr}, which is not a subnet of this region`);
  }
}

/**
 * The network of one region: a VPC, the private subnets the nodes live in,
 * and a single NAT gateway (in its own public subnet, with an internet
 * gateway and an Elastic IP) that gives the nodes outbound access for package
 * installs and the SSM API. Nothing in the private subnets gets a public
 * address; inbound access only ever arrives through peering and the security
 * groups.
 *
 * The VPC's default security group is adopted and emptied, so an instance
 * launched into it by mistake is unreachable rather than open to the VPC.
 *
 * Private route tables are exposed so {@link MeshPeering} can add routes to
 * the other regions; routes are separate `aws.ec2.Route` resources for that
 * reason (inline routes would fight with them).
 */
export class RegionNetwork extends pulumi.ComponentResource {
  /** Id of the region's VPC. */
  public readonly vpcId: pulumi.Output<string>;
  /** The VPC's CIDR, as planned. */
  public readonly vpcCidr: string;
  /** Route tables of the private subnets (peering routes go here). */
  public readonly privateRouteTableIds: pulumi.Output<string>[];
  /** Private subnet ids keyed by their planned CIDR (a node's `subnetCidr`). */
  public readonly subnetIds: Record<string, pulumi.Output<string>>;
  /** The NAT gateway's public address: what package mirrors and AWS APIs see. */
  public readonly natPublicIp: pulumi.Output<string>;
  /**
   * The region's way out: the NAT gateway and the private route table's
   * default route to it. Instances depend on these, because cloud-init's
   * package steps run once at first boot and are not retried: a node that
   * boots while the NAT gateway is still pending (it takes minutes) never
   * installs its packages, and no later `pulumi up` reruns them.
   */
  public readonly egressReady: pulumi.Resource[];

  constructor(name: string, args: RegionNetworkArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super(`${TYPE_PREFIX}:RegionNetwork`, name, {}, opts);
    validateRegionNetworkArgs(args);
    const { region, stack, provider } = args;
    const child: pulumi.CustomResourceOptions = { parent: this, provider };
    const tags = (suffix: string, extra: Record<string, string> = {}) => stackTags(stack, { Name: `pgha-${stack}-${region.name}${suffix}`, "pgha:region": region.name, ...extra });

    const vpc = new aws.ec2.Vpc(`${name}-vpc`, { cidrBlock: region.vpcCidr, enableDnsHostnames: true, enableDnsSupport: true, tags: tags("") }, child);

    new aws.ec2.DefaultSecurityGroup(`${name}-default-sg`, { vpcId: vpc.id, ingress: [], egress: [], tags: tags("-default-unused") }, child);

    // Public side: the NAT gateway's subnet routes to the internet gateway.
    const igw = new aws.ec2.InternetGateway(`${name}-igw`, { vpcId: vpc.id, tags: tags("-igw") }, child);
    const natSubnet = new aws.ec2.Subnet(
      `${name}-nat-${slug(region.natSubnetCidr)}`,
      {
        vpcId: vpc.id,
        cidrBlock: region.natSubnetCidr,
        availabilityZone: region.subnets[0].availabilityZone,
        mapPublicIpOnLaunch: false,
        tags: tags("-nat", { "pgha:tier": "nat" }),
      },
      child,
    );
    const publicRouteTable = new aws.ec2.RouteTable(`${name}-public-rt`, { vpcId: vpc.id, tags: tags("-public") }, child);
    new aws.ec2.Route(`${name}-public-default`, { routeTableId: publicRouteTable.id, destinationCidrBlock: "0.0.0.0/0", gatewayId: igw.id }, child);
    new aws.ec2.RouteTableAssociation(`${name}-nat-rta`, { routeTableId: publicRouteTable.id, subnetId: natSubnet.id }, child);

    const eip = new aws.ec2.Eip(`${name}-nat-eip`, { domain: "vpc", tags: tags("-nat") }, { ...child, dependsOn: [igw] });
    const nat = new aws.ec2.NatGateway(
      `${name}-nat`,
      { subnetId: natSubnet.id, allocationId: eip.allocationId, connectivityType: "public", tags: tags("-nat") },
      // AWS wants the internet gateway attached before the NAT gateway can route.
      { ...child, dependsOn: [igw] },
    );

    // Private side: one route table for every private subnet, default route via NAT.
    const privateRouteTable = new aws.ec2.RouteTable(`${name}-private-rt`, { vpcId: vpc.id, tags: tags("-private") }, child);
    const privateDefault = new aws.ec2.Route(`${name}-private-default`, { routeTableId: privateRouteTable.id, destinationCidrBlock: "0.0.0.0/0", natGatewayId: nat.id }, child);

    const subnetIds: Record<string, pulumi.Output<string>> = {};
    for (const planned of region.subnets) {
      const subnetName = `${name}-private-${slug(planned.cidr)}`;
      const subnet = new aws.ec2.Subnet(
        subnetName,
        {
          vpcId: vpc.id,
          cidrBlock: planned.cidr,
          availabilityZone: planned.availabilityZone,
          mapPublicIpOnLaunch: false,
          tags: tags(`-private-${planned.availabilityZone}`, { "pgha:tier": "private" }),
        },
        child,
      );
      new aws.ec2.RouteTableAssociation(`${subnetName}-rta`, { routeTableId: privateRouteTable.id, subnetId: subnet.id }, child);
      subnetIds[planned.cidr] = subnet.id;
    }

    this.vpcId = vpc.id;
    this.vpcCidr = region.vpcCidr;
    this.privateRouteTableIds = [privateRouteTable.id];
    this.subnetIds = subnetIds;
    this.natPublicIp = eip.publicIp;
    this.egressReady = [nat, privateDefault];
    this.registerOutputs({
      vpcId: this.vpcId,
      privateRouteTableIds: this.privateRouteTableIds,
      subnetIds: this.subnetIds,
      natPublicIp: this.natPublicIp,
    });
  }
}
