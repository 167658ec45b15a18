import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { renderUserData } from "../cloud-init/user-data";
import { TYPE_PREFIX } from "./naming";
import { launchNodeInstance, nodeTags, type NodeInstanceArgs } from "./node-instance";

/** Arguments of {@link PatroniNode}: those of every node (see {@link NodeInstanceArgs}). */
export type PatroniNodeArgs = NodeInstanceArgs;

/** The device name the data volume is attached as (it shows up as NVMe; the boot step finds it by volume id). */
export const DATA_VOLUME_DEVICE = "/dev/sdf";

/** A database-tier node must carry the postgres or the etcd role. */
export function validatePatroniNodeArgs(args: PatroniNodeArgs): void {
  const { node } = args;
  if (!node.roles.has("postgres") && !node.roles.has("etcd")) {
    throw new Error(`PatroniNode ${node.name}: has neither the postgres nor the etcd role (roles: ${[...node.roles].join(", ")}); use HaproxyNode`);
  }
}

/**
 * A database-tier node: PostgreSQL + Patroni and/or an etcd member (plus
 * HAProxy if the plan co-locates it), as rendered by `renderUserData`.
 *
 * A node with the postgres role gets PGDATA on its own encrypted gp3 EBS
 * volume in the node's AZ, attached as {@link DATA_VOLUME_DEVICE}. The
 * volume is `protect`ed when `instances.protectDataVolumes` is on, so no
 * `pulumi up` or `destroy` can delete a database; replacing the instance
 * detaches it (stopping the instance first) and attaches it to the new one.
 *
 * Day-2: user-data and AMI changes are ignored on existing instances
 * (`NODE_IGNORE_CHANGES`), so a config change never reboots or replaces
 * every database node in one `pulumi up`. Roll configuration out through
 * Patroni's dynamic configuration (`patronictl edit-config`) or by
 * replacing one node at a time once its replica is in sync.
 */
export class PatroniNode extends pulumi.ComponentResource {
  public readonly instance: aws.ec2.Instance;
  public readonly instanceId: pulumi.Output<string>;
  public readonly privateIp: pulumi.Output<string>;
  /** PGDATA volume; absent on etcd-only nodes. */
  public readonly dataVolume?: aws.ebs.Volume;

  constructor(name: string, args: PatroniNodeArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super(`${TYPE_PREFIX}:PatroniNode`, name, {}, opts);
    validatePatroniNodeArgs(args);
    const { plan, node, provider } = args;

    let userData: pulumi.Input<string>;
    if (node.roles.has("postgres")) {
      this.dataVolume = new aws.ebs.Volume(
        `${name}-data`,
        {
          availabilityZone: node.availabilityZone,
          size: plan.config.instances.dataVolumeGiB,
          type: "gp3",
          encrypted: true,
          tags: { ...nodeTags(plan.stack, node), Name: `${node.name}-pgdata` },
        },
        { parent: this, provider, protect: plan.config.instances.protectDataVolumes },
      );
      userData = this.dataVolume.id.apply((dataVolumeId) => renderUserData(plan, node.name, { dataVolumeId }));
    } else {
      userData = renderUserData(plan, node.name, {});
    }

    this.instance = launchNodeInstance(`${name}-instance`, args, userData, this);
    if (this.dataVolume) {
      new aws.ec2.VolumeAttachment(
        `${name}-data-attachment`,
        { deviceName: DATA_VOLUME_DEVICE, volumeId: this.dataVolume.id, instanceId: this.instance.id, stopInstanceBeforeDetaching: true },
        { parent: this, provider },
      );
    }

    this.instanceId = this.instance.id;
    this.privateIp = this.instance.privateIp;
    this.registerOutputs({ instanceId: this.instanceId, privateIp: this.privateIp, dataVolumeId: this.dataVolume?.id });
  }
}
