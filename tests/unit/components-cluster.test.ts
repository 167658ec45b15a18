/**
 * The whole PgHaCluster under Pulumi mocks, for the reference layout
 * (three regions, one postgres+etcd node and one HAProxy each): asserts the
 * resource graph a `pulumi up` would submit.
 */
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { CA_PLAN, LEAF_EARLY_RENEWAL_HOURS, LEAF_VALIDITY_HOURS, buildClusterPlan, type NodePlan } from "../../plan";
import { decodeUserData, installMocks, MOCK_ACCOUNT_ID, prepareRenderer, valueOf, type Registered } from "./mocks";

const world = installMocks("test");
const APP_CIDRS = ["10.1.0.0/16", "172.20.0.0/16"];
const ADMIN_CIDRS = ["192.168.10.0/24"];
const plan = buildClusterPlan({ access: { applicationCidrs: APP_CIDRS, adminCidrs: ADMIN_CIDRS } }, { stack: "test" });
const renderer = prepareRenderer(() => {
  const { renderUserData } = require("../../cloud-init/user-data") as typeof import("../../cloud-init/user-data");
  renderUserData(plan, "pg-seoul-1", { dataVolumeId: "vol-0123456789abcdef0" });
});
const { PgHaCluster } = require("../../components/cluster") as typeof import("../../components/cluster");
const { iamName } = require("../../components/naming") as typeof import("../../components/naming");

let cluster: InstanceType<typeof PgHaCluster>;
const pgNodes = plan.nodes.filter((n) => n.roles.has("postgres"));
const haproxyNodes = plan.nodes.filter((n) => n.roles.has("haproxy"));
const nodeByIp = (ip: string) => plan.nodes.find((n) => n.privateIp === ip) as NodePlan;
const regionByName = (name: string) => plan.regions.find((r) => r.name === name)!;

before(async () => {
  cluster = new PgHaCluster("pgha", { plan });
  await valueOf(cluster.haproxyEndpoints);
  await world.settle();
});

const of = (type: string) => world.ofType(type);
const only = (items: Registered[], what: string) => {
  assert.equal(items.length, 1, `expected exactly one ${what}, got ${items.length}`);
  return items[0];
};

describe("regions and providers", () => {
  it("creates one explicit aws provider per planned region", () => {
    const providers = of("pulumi:providers:aws");
    assert.deepEqual(providers.map((p) => p.inputs.region).sort(), ["ap-northeast-1", "ap-northeast-2", "ap-southeast-1"]);
  });

  it("sends every AWS resource and invoke through an explicit provider, never the default one", () => {
    const aws = world.resources.filter((r) => r.custom && r.type.startsWith("aws:"));
    assert.ok(aws.length > 100, `expected a full graph, got ${aws.length} AWS resources`);
    for (const r of aws) assert.ok(world.regionOf(r), `${r.type} ${r.name} uses the default provider`);
    for (const call of world.invocations) assert.ok(world.regionOf(call), `invoke ${call.token} uses the default provider`);
  });

  it("creates each VPC, subnet, instance, volume and parameter in its own region", () => {
    for (const vpc of of("aws:ec2/vpc:Vpc")) {
      const region = plan.regions.find((r) => r.vpcCidr === vpc.inputs.cidrBlock)!;
      assert.equal(world.regionOf(vpc), region.awsRegion);
      assert.equal(vpc.inputs.enableDnsHostnames, true);
      assert.equal(vpc.inputs.enableDnsSupport, true);
    }
    assert.equal(of("aws:ec2/vpc:Vpc").length, 3);
    for (const subnet of of("aws:ec2/subnet:Subnet")) {
      const region = plan.regions.find((r) => r.subnets.some((s) => s.cidr === subnet.inputs.cidrBlock) || r.natSubnetCidr === subnet.inputs.cidrBlock)!;
      assert.ok(region, `unplanned subnet ${subnet.inputs.cidrBlock}`);
      assert.equal(world.regionOf(subnet), region.awsRegion);
      assert.ok(String(subnet.inputs.availabilityZone).startsWith(region.awsRegion));
      assert.notEqual(subnet.inputs.mapPublicIpOnLaunch, true);
    }
    for (const instance of of("aws:ec2/instance:Instance")) assert.equal(world.regionOf(instance), nodeByIp(instance.inputs.privateIp).awsRegion);
    for (const volume of of("aws:ebs/volume:Volume")) assert.ok(String(volume.inputs.availabilityZone).startsWith(world.regionOf(volume)!));
    for (const parameter of of("aws:ssm/parameter:Parameter")) {
      const node = plan.nodes.find((n) => String(parameter.inputs.name).startsWith(`${n.parameterPath}/`))!;
      assert.equal(world.regionOf(parameter), node.awsRegion, parameter.inputs.name);
    }
  });

  it("parents every resource under a pgha:aws component", () => {
    const components = world.resources.filter((r) => !r.custom);
    const types = new Set(components.map((c) => c.type));
    for (const t of ["PgHaCluster", "RegionNetwork", "MeshPeering", "ClusterPki", "NodeSecurity", "NodeSecrets", "PatroniNode", "HaproxyNode"]) {
      assert.ok(types.has(`pgha:aws:${t}`), `no pgha:aws:${t} component`);
    }
    for (const r of world.resources) {
      if (r.type === "pgha:aws:PgHaCluster") continue;
      assert.ok(r.parent, `${r.type} ${r.name} has no parent`);
      assert.match(world.byUrn(r.parent)?.type ?? "", /^pgha:aws:/, `${r.name}'s parent is not a component`);
    }
  });
});

describe("region network", () => {
  for (const region of plan.regions) {
    it(`${region.name}: private subnets route 0.0.0.0/0 via the region's single NAT gateway, the NAT subnet via the IGW`, () => {
      const inRegion = (type: string) => of(type).filter((r) => world.regionOf(r) === region.awsRegion);
      const nat = only(inRegion("aws:ec2/natGateway:NatGateway"), "NAT gateway");
      const igw = only(inRegion("aws:ec2/internetGateway:InternetGateway"), "internet gateway");
      const eip = only(inRegion("aws:ec2/eip:Eip"), "EIP");
      assert.equal(eip.inputs.domain, "vpc");
      assert.equal(nat.inputs.allocationId, eip.state.allocationId);
      const natSubnet = inRegion("aws:ec2/subnet:Subnet").find((s) => s.inputs.cidrBlock === region.natSubnetCidr)!;
      assert.equal(nat.inputs.subnetId, natSubnet.id);

      const defaults = inRegion("aws:ec2/route:Route").filter((r) => r.inputs.destinationCidrBlock === "0.0.0.0/0");
      assert.equal(defaults.length, 2);
      const viaNat = only(
        defaults.filter((r) => r.inputs.natGatewayId === nat.id),
        "default route via NAT",
      );
      const viaIgw = only(
        defaults.filter((r) => r.inputs.gatewayId === igw.id),
        "default route via IGW",
      );
      const associations = inRegion("aws:ec2/routeTableAssociation:RouteTableAssociation");
      for (const planned of region.subnets) {
        const subnet = inRegion("aws:ec2/subnet:Subnet").find((s) => s.inputs.cidrBlock === planned.cidr)!;
        assert.equal(subnet.inputs.availabilityZone, planned.availabilityZone);
        const association = only(
          associations.filter((a) => a.inputs.subnetId === subnet.id),
          `association of ${planned.cidr}`,
        );
        assert.equal(association.inputs.routeTableId, viaNat.inputs.routeTableId);
      }
      const natAssociation = only(
        associations.filter((a) => a.inputs.subnetId === natSubnet.id),
        "NAT subnet association",
      );
      assert.equal(natAssociation.inputs.routeTableId, viaIgw.inputs.routeTableId);
    });
  }

  it("empties each VPC's default security group", () => {
    const defaults = of("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup");
    assert.equal(defaults.length, 3);
    for (const group of defaults) {
      assert.deepEqual(group.inputs.ingress ?? [], []);
      assert.deepEqual(group.inputs.egress ?? [], []);
    }
  });
});

describe("mesh peering", () => {
  const vpcRegion = (id: string) => plan.regions.find((r) => r.vpcCidr === of("aws:ec2/vpc:Vpc").find((v) => v.id === id)?.inputs.cidrBlock)!;

  it("creates exactly three peering connections, one per region pair, requested with peerRegion and no autoAccept", () => {
    const connections = of("aws:ec2/vpcPeeringConnection:VpcPeeringConnection");
    assert.equal(connections.length, 3);
    const pairs = connections.map((c) => [vpcRegion(c.inputs.vpcId).name, vpcRegion(c.inputs.peerVpcId).name].sort().join("+")).sort();
    assert.deepEqual(pairs, ["seoul+singapore", "seoul+tokyo", "singapore+tokyo"]);
    for (const c of connections) {
      const requester = vpcRegion(c.inputs.vpcId);
      const accepter = vpcRegion(c.inputs.peerVpcId);
      assert.equal(world.regionOf(c), requester.awsRegion, "requested from the requester's region");
      assert.equal(c.inputs.peerRegion, accepter.awsRegion);
      assert.notEqual(c.inputs.autoAccept, true, "AWS rejects autoAccept together with peerRegion");
    }
  });

  it("accepts each connection in the peer region", () => {
    const accepters = of("aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter");
    assert.equal(accepters.length, 3);
    for (const c of of("aws:ec2/vpcPeeringConnection:VpcPeeringConnection")) {
      const accepter = only(
        accepters.filter((a) => a.inputs.vpcPeeringConnectionId === c.id),
        `accepter of ${c.name}`,
      );
      assert.equal(accepter.inputs.autoAccept, true);
      assert.equal(world.regionOf(accepter), c.inputs.peerRegion);
    }
  });

  it("routes each peer CIDR through the connection from every private route table on both sides, after acceptance", () => {
    const accepters = of("aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter");
    const peeringRoutes = of("aws:ec2/route:Route").filter((r) => r.inputs.vpcPeeringConnectionId);
    assert.equal(peeringRoutes.length, 6);
    const privateTables = new Map(
      of("aws:ec2/route:Route")
        .filter((r) => r.inputs.natGatewayId)
        .map((r) => [world.regionOf(r)!, r.inputs.routeTableId as string]),
    );
    for (const c of of("aws:ec2/vpcPeeringConnection:VpcPeeringConnection")) {
      const a = vpcRegion(c.inputs.vpcId);
      const b = vpcRegion(c.inputs.peerVpcId);
      const accepter = accepters.find((x) => x.inputs.vpcPeeringConnectionId === c.id)!;
      for (const [from, to] of [
        [a, b],
        [b, a],
      ]) {
        const route = only(
          peeringRoutes.filter((r) => r.inputs.vpcPeeringConnectionId === c.id && world.regionOf(r) === from.awsRegion),
          `route ${from.name}→${to.name}`,
        );
        assert.equal(route.inputs.destinationCidrBlock, to.vpcCidr);
        assert.equal(route.inputs.routeTableId, privateTables.get(from.awsRegion));
        assert.ok(route.dependencies.includes(accepter.urn), `route ${from.name}→${to.name} does not wait for acceptance`);
      }
    }
  });

  it("enables remote DNS resolution on each side, in that side's region, only after acceptance", () => {
    const options = of("aws:ec2/peeringConnectionOptions:PeeringConnectionOptions");
    assert.equal(options.length, 6);
    for (const c of of("aws:ec2/vpcPeeringConnection:VpcPeeringConnection")) {
      const accepter = of("aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter").find((x) => x.inputs.vpcPeeringConnectionId === c.id)!;
      const mine = options.filter((o) => o.inputs.vpcPeeringConnectionId === c.id);
      const requesterSide = only(
        mine.filter((o) => o.inputs.requester),
        "requester options",
      );
      const accepterSide = only(
        mine.filter((o) => o.inputs.accepter),
        "accepter options",
      );
      assert.equal(requesterSide.inputs.requester.allowRemoteVpcDnsResolution, true);
      assert.equal(accepterSide.inputs.accepter.allowRemoteVpcDnsResolution, true);
      assert.equal(world.regionOf(requesterSide), world.regionOf(c));
      assert.equal(world.regionOf(accepterSide), c.inputs.peerRegion);
      for (const o of mine) assert.ok(o.dependencies.includes(accepter.urn), `${o.name} does not depend on the accepter`);
    }
  });
});

describe("security groups", () => {
  const groupNode = new Map<string, string>();
  before(() => {
    for (const g of of("aws:ec2/securityGroup:SecurityGroup")) groupNode.set(g.id, g.inputs.tags["pgha:node"]);
  });

  it("gives each node one group, with no inline rules", () => {
    const groups = of("aws:ec2/securityGroup:SecurityGroup");
    assert.equal(groups.length, plan.nodes.length);
    for (const g of groups) {
      assert.ok(!g.inputs.ingress?.length && !g.inputs.egress?.length, `${g.name} has inline rules`);
    }
    assert.equal(of("aws:ec2/securityGroupRule:SecurityGroupRule").length, 0);
  });

  it("allows exactly the planned ports from the planned sources", () => {
    const expected = new Set<string>();
    const add = (node: NodePlan, port: number, sources: string[]) => {
      sources.forEach((cidr) => expected.add(`${node.name} ${port} ${cidr}`));
    };
    const ipsOf = (nodes: NodePlan[], except: NodePlan) => nodes.filter((n) => n !== except).map((n) => `${n.privateIp}/32`);
    for (const node of pgNodes) {
      add(node, 5432, [...ipsOf(pgNodes, node), ...ipsOf(haproxyNodes, node)]);
      add(node, 8008, [...ipsOf(pgNodes, node), ...ipsOf(haproxyNodes, node)]);
      add(node, 2379, ipsOf(pgNodes, node));
      add(node, 2380, ipsOf(pgNodes, node));
    }
    for (const node of haproxyNodes) {
      for (const port of [5000, 5001, 5002]) add(node, port, APP_CIDRS);
      add(node, 7000, ADMIN_CIDRS);
    }
    // Monitoring: every region's Prometheus (on its HAProxy node) scrapes every node; operators open Prometheus and
    // Alertmanager from the admin networks; the Alertmanagers gossip.
    for (const node of [...pgNodes, ...haproxyNodes]) add(node, 9100, ipsOf(haproxyNodes, node));
    for (const node of pgNodes) for (const port of [9187, 2381]) add(node, port, ipsOf(haproxyNodes, node));
    for (const node of haproxyNodes) {
      for (const port of [8405, 9090, 9093, 9094]) add(node, port, ipsOf(haproxyNodes, node));
      for (const port of [9090, 9093]) add(node, port, ADMIN_CIDRS);
    }
    const actual = of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
      .filter((r) => r.inputs.ipProtocol !== "icmp")
      .map((r) => {
        assert.equal(r.inputs.ipProtocol, "tcp");
        assert.equal(r.inputs.fromPort, r.inputs.toPort, `${r.name} opens a port range`);
        return `${groupNode.get(r.inputs.securityGroupId)} ${r.inputs.fromPort} ${r.inputs.cidrIpv4}`;
      });
    assert.equal(actual.length, new Set(actual).size, "duplicate ingress rules");
    assert.deepEqual([...actual].sort(), [...expected].sort());
  });

  it("admits ICMP fragmentation-needed (type 3, code 4) and no other ICMP, from each of the cluster's VPCs only, on every node", () => {
    const icmp = of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule").filter((r) => r.inputs.ipProtocol === "icmp");
    const vpcs = plan.regions.map((r) => r.vpcCidr).sort();
    assert.deepEqual(vpcs, ["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"]);
    const byNode = new Map<string, string[]>();
    for (const r of icmp) {
      assert.deepEqual([r.inputs.fromPort, r.inputs.toPort], [3, 4], `${r.name}: only type 3 code 4`);
      const node = groupNode.get(r.inputs.securityGroupId) as string;
      byNode.set(node, [...(byNode.get(node) ?? []), r.inputs.cidrIpv4]);
    }
    assert.deepEqual([...byNode.keys()].sort(), plan.nodes.map((n) => n.name).sort());
    for (const [node, cidrs] of byNode) assert.deepEqual(cidrs.sort(), vpcs, node);
    assert.ok(!of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule").some((r) => ["-1", "all"].includes(String(r.inputs.ipProtocol))));
  });

  it("never admits 0.0.0.0/0 or SSH, and opens 7000 only to admin networks", () => {
    for (const r of of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")) {
      assert.notEqual(r.inputs.cidrIpv4, "0.0.0.0/0", r.name);
      assert.ok(!r.inputs.cidrIpv4.endsWith("/0"), r.name);
      assert.notEqual(r.inputs.fromPort, 22, r.name);
      assert.equal(r.inputs.cidrIpv6, undefined);
      if (r.inputs.fromPort === 7000) assert.ok(ADMIN_CIDRS.includes(r.inputs.cidrIpv4), `${r.name} opens stats to ${r.inputs.cidrIpv4}`);
    }
  });

  it("allows all outbound traffic from each group (packages via NAT, SSM, peers)", () => {
    const egress = of("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule");
    assert.equal(egress.length, plan.nodes.length);
    for (const r of egress) {
      assert.equal(r.inputs.ipProtocol, "-1");
      assert.equal(r.inputs.cidrIpv4, "0.0.0.0/0");
    }
  });
});

describe("cluster PKI", () => {
  it("creates one ECDSA P-256 CA, self-signed, with the planned uses", () => {
    const ca = only(of("tls:index/selfSignedCert:SelfSignedCert"), "CA certificate");
    assert.equal(ca.inputs.isCaCertificate, true);
    assert.deepEqual(ca.inputs.allowedUses, CA_PLAN.allowedUses);
    assert.equal(ca.inputs.validityPeriodHours, CA_PLAN.validityHours);
    assert.equal(ca.inputs.subject.commonName, CA_PLAN.commonName);
    for (const key of of("tls:index/privateKey:PrivateKey")) {
      assert.equal(key.inputs.algorithm, "ECDSA");
      assert.equal(key.inputs.ecdsaCurve, "P256");
    }
    assert.equal(of("tls:index/privateKey:PrivateKey").length, plan.certificates.length + 1);
  });

  it("issues every planned certificate with the plan's SANs, uses and validity", () => {
    assert.equal(of("tls:index/locallySignedCert:LocallySignedCert").length, plan.certificates.length);
    for (const planned of plan.certificates) {
      const csr = only(
        of("tls:index/certRequest:CertRequest").filter((r) => r.name === `pgha-pki-${planned.id}-csr`),
        `CSR ${planned.id}`,
      );
      const node = plan.nodes.find((n) => n.name === planned.node)!;
      assert.ok(csr.inputs.ipAddresses.includes(node.privateIp), `${planned.id} lacks IP SAN ${node.privateIp}`);
      assert.ok(csr.inputs.dnsNames.includes(node.name), `${planned.id} lacks DNS SAN ${node.name}`);
      assert.deepEqual(csr.inputs.ipAddresses, planned.ipAddresses);
      assert.deepEqual(csr.inputs.dnsNames, planned.dnsNames);
      assert.equal(csr.inputs.subject.commonName, planned.commonName);
      const cert = only(
        of("tls:index/locallySignedCert:LocallySignedCert").filter((r) => r.name === `pgha-pki-${planned.id}`),
        `cert ${planned.id}`,
      );
      assert.deepEqual(cert.inputs.allowedUses, planned.allowedUses);
      assert.equal(cert.inputs.validityPeriodHours, LEAF_VALIDITY_HOURS);
      assert.equal(cert.inputs.earlyRenewalHours, LEAF_EARLY_RENEWAL_HOURS);
      assert.equal(cert.inputs.certRequestPem, csr.state.certRequestPem);
    }
  });

  it("generates the planned passwords without special characters", () => {
    const passwords = of("random:index/randomPassword:RandomPassword");
    assert.equal(passwords.length, plan.passwords.length);
    for (const p of passwords) {
      // Database and REST API passwords are 32 alphanumerics; pgBackRest's repository cipher passphrase 64.
      assert.equal(p.inputs.length, p.name.includes("-backup-cipher-") ? 64 : 32, p.name);
      assert.equal(p.inputs.special, false);
    }
  });
});

describe("node secrets in SSM", () => {
  const keyPem = (certId: string) => of("tls:index/privateKey:PrivateKey").find((k) => k.name === `pgha-pki-${certId}-key`)!.state.privateKeyPem;
  const certPem = (certId: string) => of("tls:index/locallySignedCert:LocallySignedCert").find((c) => c.name === `pgha-pki-${certId}`)!.state.certPem;
  const password = (id: string) => of("random:index/randomPassword:RandomPassword").find((p) => p.name === `pgha-pki-${id}-password`)!.state.result;

  it("stores every planned parameter under the node's own path, SecureString for keys and passwords", () => {
    const parameters = of("aws:ssm/parameter:Parameter");
    assert.equal(
      parameters.length,
      plan.secrets.reduce((sum, s) => sum + s.parameters.length, 0),
    );
    for (const secrets of plan.secrets) {
      for (const planned of secrets.parameters) {
        const p = only(
          parameters.filter((r) => r.inputs.name === planned.name),
          planned.name,
        );
        assert.ok(planned.name.startsWith(`/pgha/test/${secrets.node}/`));
        const secure = planned.value.kind === "private-key" || planned.value.kind === "password";
        assert.equal(p.inputs.type, secure ? "SecureString" : "String", planned.name);
        const v = planned.value;
        const expected =
          v.kind === "ca-certificate"
            ? of("tls:index/selfSignedCert:SelfSignedCert")[0].state.certPem
            : v.kind === "certificate"
              ? certPem(v.certificate)
              : v.kind === "private-key"
                ? keyPem(v.certificate)
                : password(v.password);
        assert.equal(p.inputs.value, expected, `${planned.name} holds the wrong value`);
        assert.ok(p.secretInputs.includes("value"), `${planned.name}'s value is not a secret in the state`);
      }
    }
  });

  it("gives each node its own IAM role and profile, named after stack and node", () => {
    const roles = of("aws:iam/role:Role");
    assert.equal(roles.length, plan.nodes.length);
    assert.equal(new Set(roles.map((r) => r.inputs.name)).size, plan.nodes.length);
    for (const node of plan.nodes) {
      const role = only(
        roles.filter((r) => r.inputs.name === iamName("test", node.name)),
        `role of ${node.name}`,
      );
      assert.match(role.inputs.name, /test/);
      assert.ok(role.inputs.name.includes(node.name));
      assert.equal(JSON.parse(role.inputs.assumeRolePolicy).Statement[0].Principal.Service, "ec2.amazonaws.com");
      const profile = only(
        of("aws:iam/instanceProfile:InstanceProfile").filter((p) => p.inputs.role === role.inputs.name),
        `profile of ${node.name}`,
      );
      const instance = of("aws:ec2/instance:Instance").find((i) => i.inputs.privateIp === node.privateIp)!;
      assert.equal(instance.inputs.iamInstanceProfile, profile.inputs.name);
      const attachments = of("aws:iam/rolePolicyAttachment:RolePolicyAttachment").filter((a) => a.inputs.role === role.inputs.name);
      assert.deepEqual(
        attachments.map((a) => a.inputs.policyArn),
        ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"],
      );
    }
  });

  it("scopes each node's inline policy to its own parameter path and region", () => {
    for (const node of plan.nodes) {
      const policy = only(
        of("aws:iam/rolePolicy:RolePolicy").filter((p) => p.inputs.role === iamName("test", node.name) && p.inputs.name === "read-own-parameters"),
        `policy of ${node.name}`,
      );
      const doc = JSON.parse(policy.inputs.policy);
      const own = `arn:aws:ssm:${node.awsRegion}:${MOCK_ACCOUNT_ID}:parameter${node.parameterPath}/*`;
      const read = doc.Statement.find((s: any) => s.Effect === "Allow" && ([] as string[]).concat(s.Action).includes("ssm:GetParameter"));
      assert.deepEqual([...read.Action].sort(), ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"]);
      for (const resource of read.Resource) assert.ok(resource === own || resource === own.slice(0, -2), `${node.name} may read ${resource}`);
      const decrypt = doc.Statement.find((s: any) => s.Effect === "Allow" && s.Action === "kms:Decrypt");
      assert.equal(decrypt.Condition.StringEquals["kms:ViaService"], `ssm.${node.awsRegion}.amazonaws.com`);
      assert.equal(decrypt.Condition.StringLike["kms:EncryptionContext:PARAMETER_ARN"], own);
      const deny = doc.Statement.find((s: any) => s.Effect === "Deny");
      assert.equal(deny.Action, "kms:Decrypt");
      assert.equal(deny.Condition.StringNotLike["kms:EncryptionContext:PARAMETER_ARN"], own);
      for (const other of plan.nodes.filter((n) => n !== node))
        assert.ok(!policy.inputs.policy.includes(`${other.parameterPath}/`), `${node.name}'s policy names ${other.name}'s path`);
      assert.ok(!/"Resource":"\*"[^}]*"Effect":"Allow"|"Effect":"Allow"[^}]*"Resource":"\*"/.test(policy.inputs.policy), "an Allow on *");
    }
  });

  it("only a parameter's own node may decrypt it: every other node's role is denied kms:Decrypt for it (AmazonSSMManagedInstanceCore lets them fetch its ciphertext)", () => {
    // IAM's glob (`*` spans `/`), as in kms:EncryptionContext:PARAMETER_ARN conditions.
    const glob = (pattern: string, value: string) => new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*")}$`).test(value);
    const parameters = of("aws:ssm/parameter:Parameter").map((p) => ({ name: p.inputs.name as string, region: world.regionOf(p)! }));
    assert.ok(parameters.length >= 20);
    for (const node of plan.nodes) {
      const doc = JSON.parse(
        only(
          of("aws:iam/rolePolicy:RolePolicy").filter((p) => p.inputs.role === iamName("test", node.name) && p.inputs.name === "read-own-parameters"),
          node.name,
        ).inputs.policy,
      );
      const deny = doc.Statement.find((s: any) => s.Effect === "Deny" && s.Action === "kms:Decrypt" && s.Resource === "*");
      const allow = doc.Statement.find((s: any) => s.Effect === "Allow" && s.Action === "kms:Decrypt");
      for (const p of parameters) {
        const arn = `arn:aws:ssm:${p.region}:${MOCK_ACCOUNT_ID}:parameter${p.name}`;
        const own = p.name.startsWith(`${node.parameterPath}/`);
        assert.equal(!glob(deny.Condition.StringNotLike["kms:EncryptionContext:PARAMETER_ARN"], arn), !own, `${node.name} decrypting ${p.name}: deny`);
        const allowed =
          allow.Condition.StringEquals["kms:ViaService"] === `ssm.${p.region}.amazonaws.com` && glob(allow.Condition.StringLike["kms:EncryptionContext:PARAMETER_ARN"], arn);
        assert.equal(allowed, own, `${node.name} decrypting ${p.name}: allow`);
      }
    }
  });
});

describe("instances", () => {
  const instances = () => of("aws:ec2/instance:Instance");

  it("launches one instance per node at its fixed IP, without a public address", () => {
    assert.deepEqual(
      instances()
        .map((i) => i.inputs.privateIp)
        .sort(),
      plan.nodes.map((n) => n.privateIp).sort(),
    );
    for (const i of instances()) {
      const node = nodeByIp(i.inputs.privateIp);
      assert.equal(i.inputs.associatePublicIpAddress, false);
      assert.equal(i.inputs.instanceType, node.instanceType);
      const subnet = of("aws:ec2/subnet:Subnet").find((s) => s.id === i.inputs.subnetId)!;
      assert.equal(subnet.inputs.cidrBlock, node.subnetCidr);
      const group = of("aws:ec2/securityGroup:SecurityGroup").find((g) => g.id === i.inputs.vpcSecurityGroupIds[0])!;
      assert.equal(group.inputs.tags["pgha:node"], node.name);
      assert.deepEqual(
        { Name: i.inputs.tags.Name, region: i.inputs.tags["pgha:region"], stack: i.inputs.tags["pgha:stack"], role: i.inputs.tags["pgha:role"] },
        { Name: node.name, region: node.region, stack: "test", role: [...node.roles].sort().join("+") },
      );
    }
  });

  it("requires IMDSv2 with hop limit 1 and encrypts the gp3 root volume", () => {
    for (const i of instances()) {
      assert.deepEqual(i.inputs.metadataOptions, { httpEndpoint: "enabled", httpTokens: "required", httpPutResponseHopLimit: 1 });
      assert.equal(i.inputs.rootBlockDevice.encrypted, true);
      assert.equal(i.inputs.rootBlockDevice.volumeType, "gp3");
      assert.equal(i.inputs.rootBlockDevice.volumeSize, plan.config.instances.rootVolumeGiB);
    }
  });

  it("uses the region's current Ubuntu 24.04 AMI, looked up once per region through its provider", () => {
    const lookups = world.invocations.filter((c) => c.token === "aws:ssm/getParameter:getParameter");
    assert.deepEqual(lookups.map((c) => world.regionOf(c)).sort(), ["ap-northeast-1", "ap-northeast-2", "ap-southeast-1"]);
    for (const c of lookups) assert.equal(c.inputs.name, "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id");
    const amiOf = new Map(plan.regions.map((r) => [r.awsRegion, new Set<string>()]));
    for (const i of instances()) amiOf.get(world.regionOf(i)!)!.add(i.inputs.ami);
    for (const [region, amis] of amiOf) assert.equal(amis.size, 1, `${region} instances use different AMIs`);
    assert.equal(new Set([...amiOf.values()].map((s) => [...s][0])).size, 3, "regions share an AMI id");
  });

  it("never replaces or reboots nodes for user-data or AMI changes, and replaces delete-first (fixed IP)", () => {
    for (const i of instances()) {
      assert.ok(i.ignoreChanges.includes("userDataBase64"), `${i.name} reacts to user-data changes`);
      assert.ok(i.ignoreChanges.includes("userData"), `${i.name} reacts to user-data changes`);
      assert.ok(i.ignoreChanges.includes("ami"), `${i.name} reacts to AMI changes`);
      assert.equal(i.inputs.userDataReplaceOnChange, false);
      assert.equal(i.deleteBeforeReplace, true);
    }
  });

  it("creates each node's parameters and IAM permissions before its instance", () => {
    for (const i of instances()) {
      const node = nodeByIp(i.inputs.privateIp);
      const parameters = of("aws:ssm/parameter:Parameter").filter((p) => String(p.inputs.name).startsWith(`${node.parameterPath}/`));
      assert.ok(parameters.length > 0);
      for (const p of parameters) assert.ok(i.dependencies.includes(p.urn), `${node.name} may boot before ${p.inputs.name} exists`);
      const policy = of("aws:iam/rolePolicy:RolePolicy").find((p) => p.inputs.role === iamName("test", node.name) && p.inputs.name === "read-own-parameters")!;
      assert.ok(i.dependencies.includes(policy.urn), `${node.name} may boot before it can read its parameters`);
    }
  });

  it("launches each node only after its region's NAT gateway, default route, peering routes and accepters exist", () => {
    for (const i of instances()) {
      const node = nodeByIp(i.inputs.privateIp);
      const inRegion = (type: string) => of(type).filter((r) => world.regionOf(r) === node.awsRegion);
      const nat = only(inRegion("aws:ec2/natGateway:NatGateway"), "NAT gateway");
      const defaultRoute = only(
        inRegion("aws:ec2/route:Route").filter((r) => r.inputs.natGatewayId === nat.id),
        "default route via NAT",
      );
      const peeringRoutes = inRegion("aws:ec2/route:Route").filter((r) => r.inputs.vpcPeeringConnectionId);
      const otherCidrs = plan.regions
        .filter((r) => r.name !== node.region)
        .map((r) => r.vpcCidr)
        .sort();
      assert.deepEqual(peeringRoutes.map((r) => r.inputs.destinationCidrBlock).sort(), otherCidrs, `${node.region} lacks a route to another region`);
      const connections = of("aws:ec2/vpcPeeringConnection:VpcPeeringConnection").filter((c) => peeringRoutes.some((r) => r.inputs.vpcPeeringConnectionId === c.id));
      const accepters = of("aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter").filter((a) => connections.some((c) => c.id === a.inputs.vpcPeeringConnectionId));
      assert.equal(accepters.length, plan.regions.length - 1);
      for (const needed of [nat, defaultRoute, ...peeringRoutes, ...accepters]) {
        assert.ok(i.dependencies.includes(needed.urn), `${node.name} may boot before ${needed.type} ${needed.name} exists`);
      }
    }
  });

  it("gives each postgres node a protected, encrypted gp3 data volume in its AZ, attached as /dev/sdf", () => {
    const volumes = of("aws:ebs/volume:Volume");
    assert.equal(volumes.length, pgNodes.length);
    for (const node of pgNodes) {
      const instance = instances().find((i) => i.inputs.privateIp === node.privateIp)!;
      const volume = only(
        volumes.filter((v) => v.inputs.tags["pgha:node"] === node.name),
        `data volume of ${node.name}`,
      );
      assert.equal(volume.inputs.encrypted, true);
      assert.equal(volume.inputs.type, "gp3");
      assert.equal(volume.inputs.size, plan.config.instances.dataVolumeGiB);
      assert.equal(volume.inputs.availabilityZone, node.availabilityZone);
      assert.equal(volume.protect, true, `${node.name}'s data volume is not protected`);
      const attachment = only(
        of("aws:ec2/volumeAttachment:VolumeAttachment").filter((a) => a.inputs.volumeId === volume.id),
        `attachment of ${node.name}`,
      );
      assert.equal(attachment.inputs.instanceId, instance.id);
      assert.equal(attachment.inputs.deviceName, "/dev/sdf");
    }
    for (const node of haproxyNodes) assert.ok(!volumes.some((v) => v.inputs.tags["pgha:node"] === node.name));
  });
});

describe("user-data", () => {
  const skip = renderer === "stand-in" ? "renderUserData still throws 'not implemented'; ran against a stand-in renderer" : false;

  it("sends every node's rendered document gzip'd within EC2's 16 KB, postgres nodes with their data volume id", () => {
    for (const i of of("aws:ec2/instance:Instance")) {
      const node = nodeByIp(i.inputs.privateIp);
      assert.equal(i.inputs.userData, undefined, "plain userData would exceed EC2's limit on database nodes");
      assert.ok(Buffer.from(i.inputs.userDataBase64, "base64").length <= 16 * 1024);
      const document = decodeUserData(i.inputs.userDataBase64);
      assert.match(document, /^#cloud-config\n/);
      assert.match(document, new RegExp(`hostname: ${node.name}\\b`));
      if (node.roles.has("postgres")) {
        const volume = of("aws:ebs/volume:Volume").find((v) => v.inputs.tags["pgha:node"] === node.name)!;
        assert.ok(document.includes(volume.id), `${node.name}'s user-data lacks ${volume.id}`);
      }
    }
  });

  it("contains no private key and no password", { skip }, () => {
    const secrets = world.secretValues();
    assert.equal(secrets.length, plan.certificates.length + 1 + plan.passwords.length);
    for (const i of of("aws:ec2/instance:Instance")) {
      const userData = decodeUserData(i.inputs.userDataBase64);
      assert.ok(!/BEGIN [A-Z ]*PRIVATE KEY/.test(userData), `${i.name}'s user-data holds a private key`);
      for (const secret of secrets) {
        const body = secret.includes("PRIVATE KEY") ? secret.split("\n")[1] : secret;
        assert.ok(!userData.includes(body), `${i.name}'s user-data holds a secret value`);
      }
    }
  });
});

describe("outputs", () => {
  it("lists writer/reader/sync endpoints for every HAProxy node", async () => {
    const endpoints = await valueOf(cluster.haproxyEndpoints);
    assert.deepEqual(
      endpoints.map((e) => [e.node, e.writer, e.reader, e.sync]),
      haproxyNodes.map((n) => [n.name, `${n.privateIp}:5000`, `${n.privateIp}:5001`, `${n.privateIp}:5002`]),
    );
  });

  it("lists node IPs per region and Patroni REST URLs", async () => {
    const ips = await valueOf(cluster.nodePrivateIps);
    assert.deepEqual(ips, Object.fromEntries(plan.regions.map((r) => [r.name, Object.fromEntries(r.nodes.map((n) => [n.name, n.privateIp]))])));
    assert.deepEqual(await valueOf(cluster.patroniRestUrls), Object.fromEntries(pgNodes.map((n) => [n.name, `https://${n.privateIp}:8008`])));
    assert.equal(regionByName("seoul").nodes[0].privateIp, "10.1.0.10");
  });

  it("exposes the CA certificate, and the superuser password only as a secret", async () => {
    const ca = of("tls:index/selfSignedCert:SelfSignedCert")[0];
    assert.equal(await valueOf(cluster.caCertificatePem), ca.state.certPem);
    assert.equal(await pulumi.isSecret(cluster.superuserPassword), true);
    const superuser = of("random:index/randomPassword:RandomPassword").find((p) => p.name === "pgha-pki-superuser-password")!;
    assert.equal(await valueOf(cluster.superuserPassword), superuser.state.result);
  });
});
