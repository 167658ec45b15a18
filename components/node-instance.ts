import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { encodeUserData } from "../cloud-init/user-data";
import { osProfile, type ClusterPlan, type NodePlan } from "../plan";
import { stackTags } from "./naming";

/**
 * What {@link PatroniNode} and {@link HaproxyNode} share: the instance
 * settings every node gets, and how the AMI is found.
 */

/**
 * The AMI for a region: `instances.amiOverrides[awsRegion]` when set, else
 * the current image of `instances.os` (plan/os.ts: Canonical's Ubuntu 24.04
 * LTS by default), looked up in that region through its provider from the
 * OS's public SSM parameter. The id changes whenever the publisher releases
 * an image; instances ignore later changes (see {@link NODE_IGNORE_CHANGES}).
 */
export function regionAmi(plan: ClusterPlan, awsRegion: string, provider: aws.Provider, parent: pulumi.Resource): pulumi.Output<string> {
  const { amiOverrides, os, architecture } = plan.config.instances;
  const override = amiOverrides[awsRegion];
  if (override) return pulumi.output(override);
  // `insecureValue`: an AMI id is not a secret, and `value` would mark every instance's ami as one.
  return aws.ssm.getParameterOutput({ name: osProfile(os).amiParameter(architecture) }, { provider, parent }).insecureValue;
}

/** IMDSv2 only, and a hop limit of 1 so containers or forwarded traffic cannot reach the metadata service. */
export const METADATA_OPTIONS = { httpEndpoint: "enabled", httpTokens: "required", httpPutResponseHopLimit: 1 } as const;

/**
 * What a node was launched with that EC2 cannot change in place: a change of
 * either makes Pulumi replace the instance by itself. The subnet stands for
 * the availability zone too.
 */
export interface LaunchIdentity {
  privateIp: string;
  subnetId: string;
}

/**
 * The refusal, when a node's launch identity changed, else undefined.
 *
 * Why refuse: Pulumi applies `ignoreChanges` ({@link NODE_IGNORE_CHANGES})
 * to a replacement too, so the replacement would boot the user-data and AMI
 * recorded at launch — old configuration, old certificates' fingerprints,
 * perhaps a removed etcd peer list — while the plan says otherwise. A
 * deliberate rebuild removes the node's launch record with the instance,
 * and the fresh create then uses the current user-data and AMI.
 */
export function launchIdentityChange(node: string, launched: LaunchIdentity | undefined, current: LaunchIdentity, launchUrn: string): string | undefined {
  // No record yet (first launch, or the record was just removed): nothing to compare.
  if (!launched) return undefined;
  const changed = (["privateIp", "subnetId"] as const).filter((key) => launched[key] !== current[key]);
  if (changed.length === 0) return undefined;
  const what = changed.map((key) => `${key} ${JSON.stringify(launched[key])} → ${JSON.stringify(current[key])}`).join(", ");
  return (
    `pgha: refusing to replace ${node}: ${what} can only be applied by a new instance, and Pulumi would boot it with the user-data and AMI recorded at launch (ignoreChanges). ` +
    `Rebuild the node on purpose instead: pulumi destroy --target '${launchUrn}' --target-dependents, then pulumi up (it boots with the current user-data and AMI).`
  );
}

/**
 * Changes to these never touch a running node:
 * - `userDataBase64` (and `userData`, not used): rendered config changes
 *   (Patroni, HAProxy, etcd settings) would otherwise stop/start or replace every node in one `pulumi up`,
 *   i.e. take the whole cluster down at once. Roll them out node by node
 *   instead: dynamic settings through Patroni's DCS (`patronictl
 *   edit-config`), the rest by replacing one node at a time
 *   (`pulumi up --replace <instance urn>`), which boots with the new user-data.
 * - `ami`: the OS image lookup returns a new id every few weeks; new images
 *   reach a node only when it is replaced on purpose.
 */
export const NODE_IGNORE_CHANGES = ["userDataBase64", "userData", "ami"];

/** Tags every node's resources carry. */
export function nodeTags(stack: string, node: NodePlan): Record<string, string> {
  return stackTags(stack, {
    Name: node.name,
    "pgha:region": node.region,
    "pgha:role": [...node.roles].sort().join("+"),
    "pgha:node": node.name,
  });
}

/** Arguments shared by {@link PatroniNode} and {@link HaproxyNode}. */
export interface NodeInstanceArgs {
  /** The whole cluster plan: the node's user-data is rendered from it. */
  plan: ClusterPlan;
  /** The node to launch. */
  node: NodePlan;
  /** AMI id for the node's region (see {@link regionAmi}). */
  ami: pulumi.Input<string>;
  /** Id of the private subnet holding `node.privateIp`. */
  subnetId: pulumi.Input<string>;
  /** Security groups of the node (its {@link NodeSecurity} group). */
  securityGroupIds: pulumi.Input<string>[];
  /** Instance profile allowed to read the node's SSM parameters. */
  instanceProfileName: pulumi.Input<string>;
  /**
   * Resources that must exist before the instance boots: the node's SSM
   * parameters and its IAM permissions (`NodeSecrets.bootDependencies`).
   */
  bootDependencies: pulumi.Resource[];
  /**
   * The network paths the first boot needs: the region's egress
   * (`RegionNetwork.egressReady`: NAT gateway and default route) and the
   * peering routes toward the other regions (`MeshPeering.routesFor`).
   * cloud-init installs packages and joins the cluster once, at first boot;
   * an instance launched before these exist half-boots for good.
   */
  networkDependencies: pulumi.Resource[];
  /** The explicit AWS provider of the node's region. */
  provider: aws.Provider;
}

/**
 * Launches a node's instance: fixed private IP, no public IP, IMDSv2 with
 * hop limit 1, encrypted gp3 root volume, user-data from the renderer.
 *
 * `userData` is the rendered `#cloud-config` document; it is sent gzip'd and
 * base64'd (`encodeUserData`) as `userDataBase64`, because a database
 * node's plain document exceeds EC2's 16 KB user-data limit.
 *
 * `deleteBeforeReplace`: the fixed private IP cannot be held by the old and
 * the new instance at once, so a replacement must delete first.
 *
 * A child Stash `<name>-launch` records the node's {@link LaunchIdentity};
 * when the plan changes it, the update fails before the instance is touched
 * (see {@link launchIdentityChange}).
 */
export function launchNodeInstance(name: string, args: NodeInstanceArgs, userData: pulumi.Input<string>, parent: pulumi.Resource): aws.ec2.Instance {
  const { plan, node } = args;
  const tags = nodeTags(plan.stack, node);
  // The identity the instance was launched with, kept in state: a Stash's
  // output stays what it was created with while its input follows the plan.
  const current = pulumi.output(args.subnetId).apply((subnetId): LaunchIdentity => ({ privateIp: node.privateIp, subnetId }));
  const launch = new pulumi.Stash(`${name}-launch`, { input: current }, { parent });
  const userDataBase64 = pulumi.all([launch.output, launch.urn, current, userData]).apply(([launched, urn, now, text]) => {
    const refusal = launchIdentityChange(node.name, launched as LaunchIdentity | undefined, now, urn);
    if (refusal) throw new Error(refusal);
    return encodeUserData(text);
  });
  return new aws.ec2.Instance(
    name,
    {
      ami: args.ami,
      instanceType: node.instanceType,
      subnetId: args.subnetId,
      privateIp: node.privateIp,
      associatePublicIpAddress: false,
      vpcSecurityGroupIds: args.securityGroupIds,
      iamInstanceProfile: args.instanceProfileName,
      metadataOptions: { ...METADATA_OPTIONS },
      rootBlockDevice: {
        volumeType: "gp3",
        volumeSize: plan.config.instances.rootVolumeGiB,
        encrypted: true,
        deleteOnTermination: true,
        tags,
      },
      userDataBase64,
      userDataReplaceOnChange: false,
      tags,
    },
    {
      parent,
      provider: args.provider,
      dependsOn: [...args.bootDependencies, ...args.networkDependencies],
      ignoreChanges: NODE_IGNORE_CHANGES,
      deleteBeforeReplace: true,
    },
  );
}
