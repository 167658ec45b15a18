import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { stackTags, TYPE_PREFIX } from "./naming";

/** One side of the mesh: a region's VPC and the provider that manages it. */
export interface PeeredRegion {
  /** Region name from the plan (e.g. `seoul`); used in child names and tags. */
  name: string;
  /** AWS region code of the VPC (e.g. `ap-northeast-2`). */
  awsRegion: string;
  /** The VPC's CIDR; the other regions route this block over the peering. */
  vpcCidr: string;
  vpcId: pulumi.Input<string>;
  /** Route tables that must reach the other regions (the private ones). */
  privateRouteTableIds: pulumi.Input<string>[];
  /** The explicit AWS provider of `awsRegion`. */
  provider: aws.Provider;
}

/** Arguments of {@link MeshPeering}. */
export interface MeshPeeringArgs {
  /** Regions to connect, every one with every other. Order decides which side requests. */
  regions: PeeredRegion[];
  /** Stack name, written to the `pgha:stack` tag. */
  stack: string;
}

/** Every unordered pair, in order: the earlier region of a pair is the requester. */
export function peeringPairs<T>(items: readonly T[]): [T, T][] {
  return items.flatMap((a, i) => items.slice(i + 1).map((b): [T, T] => [a, b]));
}

/** Checks the mesh's inputs; throws on the first problem. */
export function validateMeshPeeringArgs(args: MeshPeeringArgs): void {
  const names = new Set<string>();
  const awsRegions = new Set<string>();
  for (const region of args.regions) {
    if (names.has(region.name)) throw new Error(`MeshPeering: region name ${region.name} appears twice`);
    // Same-region peering takes no peerRegion and a different accepter flow; the plan never produces it.
    if (awsRegions.has(region.awsRegion)) throw new Error(`MeshPeering: AWS region ${region.awsRegion} appears twice; one VPC per AWS region`);
    names.add(region.name);
    awsRegions.add(region.awsRegion);
  }
}

/**
 * A full mesh of inter-region VPC peerings: each pair of regions gets one
 * peering connection, requested from the first region with `peerRegion`
 * set and accepted by a `VpcPeeringConnectionAccepter` in the second.
 *
 * - The requester does not set `autoAccept`: AWS refuses it together with
 *   `peerRegion`; acceptance always happens in the peer region.
 * - Every private route table on both sides gets a route to the other VPC's
 *   CIDR through the connection. Routes and DNS options wait for the
 *   accepter, so nothing points at a connection still pending acceptance.
 * - Remote DNS resolution is switched on per side, each with its own
 *   region's provider (cross-region options cannot be set from one side).
 */
export class MeshPeering extends pulumi.ComponentResource {
  /** Peering connection ids keyed `<requester>-<accepter>` (e.g. `seoul-tokyo`). */
  public readonly connectionIds: Record<string, pulumi.Output<string>>;
  /** Per region name: the accepters of its connections and the routes in its own route tables. */
  private readonly bootPaths: Map<string, pulumi.Resource[]>;

  constructor(name: string, args: MeshPeeringArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super(`${TYPE_PREFIX}:MeshPeering`, name, {}, opts);
    validateMeshPeeringArgs(args);
    const connectionIds: Record<string, pulumi.Output<string>> = {};
    const bootPaths = new Map<string, pulumi.Resource[]>(args.regions.map((region) => [region.name, []]));
    const bootPath = (region: PeeredRegion) => bootPaths.get(region.name) as pulumi.Resource[];

    for (const [requester, accepter] of peeringPairs(args.regions)) {
      const pair = `${requester.name}-${accepter.name}`;
      const prefix = `${name}-${pair}`;
      const tags = stackTags(args.stack, { Name: `pgha-${args.stack}-${pair}`, "pgha:peering": pair });
      const onRequester: pulumi.CustomResourceOptions = { parent: this, provider: requester.provider };
      const onAccepter: pulumi.CustomResourceOptions = { parent: this, provider: accepter.provider };

      const connection = new aws.ec2.VpcPeeringConnection(
        prefix,
        { vpcId: requester.vpcId, peerVpcId: accepter.vpcId, peerRegion: accepter.awsRegion, tags: { ...tags, Side: "requester" } },
        onRequester,
      );
      const acceptance = new aws.ec2.VpcPeeringConnectionAccepter(
        `${prefix}-accept`,
        { vpcPeeringConnectionId: connection.id, autoAccept: true, tags: { ...tags, Side: "accepter" } },
        onAccepter,
      );
      bootPath(requester).push(acceptance);
      bootPath(accepter).push(acceptance);
      const afterAcceptance = (side: pulumi.CustomResourceOptions): pulumi.CustomResourceOptions => ({ ...side, dependsOn: [acceptance] });

      const addRoutes = (from: PeeredRegion, to: PeeredRegion, side: pulumi.CustomResourceOptions) => {
        from.privateRouteTableIds.forEach((routeTableId, index) => {
          const route = new aws.ec2.Route(
            `${prefix}-route-${from.name}-${index}`,
            { routeTableId, destinationCidrBlock: to.vpcCidr, vpcPeeringConnectionId: connection.id },
            afterAcceptance(side),
          );
          bootPath(from).push(route);
        });
      };
      addRoutes(requester, accepter, onRequester);
      addRoutes(accepter, requester, onAccepter);

      new aws.ec2.PeeringConnectionOptions(
        `${prefix}-dns-requester`,
        { vpcPeeringConnectionId: connection.id, requester: { allowRemoteVpcDnsResolution: true } },
        afterAcceptance(onRequester),
      );
      new aws.ec2.PeeringConnectionOptions(
        `${prefix}-dns-accepter`,
        { vpcPeeringConnectionId: connection.id, accepter: { allowRemoteVpcDnsResolution: true } },
        afterAcceptance(onAccepter),
      );
      connectionIds[pair] = connection.id;
    }

    this.connectionIds = connectionIds;
    this.bootPaths = bootPaths;
    this.registerOutputs({ connectionIds });
  }

  /**
   * What a node in `region` needs before it boots to reach the other
   * regions: the peering routes in its own region's route tables and the
   * accepters of its region's connections. The first boot joins etcd and
   * Patroni across regions (and a replica clones from a remote primary);
   * booting before the routes exist wastes that first attempt. The routes
   * on the far side belong to the far region's nodes, which depend on them
   * in turn.
   */
  routesFor(region: string): pulumi.Resource[] {
    const resources = this.bootPaths.get(region);
    if (!resources) throw new Error(`MeshPeering: no region named ${region} in the mesh (regions: ${[...this.bootPaths.keys()].join(", ")})`);
    return [...resources];
  }
}
