import type * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { renderUserData } from "../cloud-init/user-data";
import { TYPE_PREFIX } from "./naming";
import { launchNodeInstance, type NodeInstanceArgs } from "./node-instance";

/** Arguments of {@link HaproxyNode}: those of every node (see {@link NodeInstanceArgs}). */
export type HaproxyNodeArgs = NodeInstanceArgs;

/**
 * A node that only runs HAProxy. Nodes that also hold postgres or etcd are
 * launched as {@link PatroniNode} (they need the data volume and the
 * database-tier rendering), so this refuses them.
 */
export function validateHaproxyNodeArgs(args: HaproxyNodeArgs): void {
  const { node } = args;
  if (!node.roles.has("haproxy")) throw new Error(`HaproxyNode ${node.name}: does not have the haproxy role`);
  if (node.roles.has("postgres") || node.roles.has("etcd")) {
    throw new Error(`HaproxyNode ${node.name}: also holds ${[...node.roles].filter((r) => r !== "haproxy").join(", ")}; use PatroniNode`);
  }
}

/**
 * A HAProxy node: the application's endpoint in its region. It routes to
 * the current primary (read-write port), to replicas (read-only port) and
 * to the synchronous standby, by checking every member's Patroni REST API
 * over mutual TLS. It holds no data, so it has no data volume and can be
 * replaced at any time.
 *
 * Day-2: like every node, user-data and AMI changes are ignored on the
 * running instance; replace it (`pulumi up --replace`) to apply them.
 */
export class HaproxyNode extends pulumi.ComponentResource {
  public readonly instance: aws.ec2.Instance;
  public readonly instanceId: pulumi.Output<string>;
  public readonly privateIp: pulumi.Output<string>;

  constructor(name: string, args: HaproxyNodeArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super(`${TYPE_PREFIX}:HaproxyNode`, name, {}, opts);
    validateHaproxyNodeArgs(args);
    this.instance = launchNodeInstance(`${name}-instance`, args, renderUserData(args.plan, args.node.name, {}), this);
    this.instanceId = this.instance.id;
    this.privateIp = this.instance.privateIp;
    this.registerOutputs({ instanceId: this.instanceId, privateIp: this.privateIp });
  }
}
