/**
 * Pulumi mocks for the component tests: every registered resource and every
 * invoke is recorded, with the resource options the engine would see
 * (provider, parent, protect, ignoreChanges, dependsOn), so tests assert on
 * the resource graph a `pulumi up` would submit.
 *
 * Call {@link installMocks} before requiring anything that creates resources.
 */
import { createHash } from "node:crypto";
import { gunzipSync } from "node:zlib";
import * as pulumi from "@pulumi/pulumi";

export interface Registered {
  type: string;
  name: string;
  urn: string;
  id: string;
  custom: boolean;
  /** Inputs with secret envelopes removed (see `secretInputs`). */
  inputs: Record<string, any>;
  /** Top-level input names whose value arrived as a secret. */
  secretInputs: string[];
  /** What the mock returned as the resource's state (its outputs). */
  state: Record<string, any>;
  /** Provider reference `<urn>::<id>`; empty when the default provider would be used. */
  provider: string;
  parent: string;
  protect: boolean;
  ignoreChanges: string[];
  /** URNs this resource depends on (explicit dependsOn plus input dependencies). */
  dependencies: string[];
  deleteBeforeReplace: boolean;
}

export interface Invocation {
  token: string;
  inputs: Record<string, any>;
  provider: string;
}

export const MOCK_ACCOUNT_ID = "123456789012";

export interface MockWorld {
  resources: Registered[];
  invocations: Invocation[];
  /** Resolves once no registration or invoke is in flight for a while. */
  settle(): Promise<void>;
  ofType(type: string): Registered[];
  byUrn(urn: string): Registered | undefined;
  /** The AWS region of the explicit provider a resource or invoke went through (undefined: default provider). */
  regionOf(item: { provider: string }): string | undefined;
  /** Every private key PEM and password value the mocks generated. */
  secretValues(): string[];
}

const isSecretEnvelope = (value: any) => typeof value === "object" && value !== null && value[pulumi.runtime.specialSigKey] === pulumi.runtime.specialSecretSig;

/** Removes secret envelopes at any depth. */
function unwrap(value: any): any {
  if (isSecretEnvelope(value)) return unwrap(value.value);
  if (Array.isArray(value)) return value.map(unwrap);
  if (typeof value === "object" && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, unwrap(v)]));
  return value;
}

const hex = (text: string, length: number) => createHash("sha256").update(text).digest("hex").slice(0, length);

/** What each mocked resource type returns; unknown types echo their inputs. `region`: of the resource's explicit provider. */
function mockState(type: string, name: string, inputs: Record<string, any>, stashed: Record<string, unknown>, region: string): { id: string; state: Record<string, any> } {
  switch (type) {
    // A Stash keeps what it was created with: `stashed` plays an earlier deployment's record.
    case "pulumi:index:Stash":
      return { id: `stash-${hex(name, 8)}`, state: { input: inputs.input, output: name in stashed ? stashed[name] : inputs.input } };
    case "tls:index/privateKey:PrivateKey": {
      const pem = `-----BEGIN EC PRIVATE KEY-----\nMOCKKEY${hex(name, 32)}\n-----END EC PRIVATE KEY-----\n`;
      return { id: `key-${hex(name, 8)}`, state: { ...inputs, privateKeyPem: pem, privateKeyPemPkcs8: pem, publicKeyPem: `PUBLIC-${name}` } };
    }
    case "tls:index/selfSignedCert:SelfSignedCert":
    case "tls:index/locallySignedCert:LocallySignedCert":
      return { id: `cert-${hex(name, 8)}`, state: { ...inputs, certPem: `-----BEGIN CERTIFICATE-----\nMOCKCERT ${name}\n-----END CERTIFICATE-----\n` } };
    case "tls:index/certRequest:CertRequest":
      return { id: `csr-${hex(name, 8)}`, state: { ...inputs, certRequestPem: `-----BEGIN CERTIFICATE REQUEST-----\n${name}\n-----END CERTIFICATE REQUEST-----\n` } };
    case "random:index/randomPassword:RandomPassword":
      return { id: "none", state: { ...inputs, result: `Pw${hex(name, Math.max(8, Number(inputs.length ?? 32) - 2))}` } };
    case "aws:ec2/eip:Eip":
      return { id: `eipalloc-${hex(name, 8)}`, state: { ...inputs, allocationId: `eipalloc-${hex(name, 8)}`, publicIp: `203.0.113.${parseInt(hex(name, 2), 16) % 250}` } };
    case "aws:ebs/volume:Volume":
      return { id: `vol-0${hex(name, 16)}`, state: inputs };
    case "aws:ec2/instance:Instance":
      return { id: `i-0${hex(name, 16)}`, state: { ...inputs, privateIp: inputs.privateIp } };
    case "aws:iam/role:Role":
      return { id: inputs.name, state: { ...inputs, arn: `arn:aws:iam::${MOCK_ACCOUNT_ID}:role/${inputs.name}` } };
    case "aws:iam/instanceProfile:InstanceProfile":
      return { id: inputs.name, state: { ...inputs, arn: `arn:aws:iam::${MOCK_ACCOUNT_ID}:instance-profile/${inputs.name}` } };
    case "aws:ssm/parameter:Parameter":
      return { id: inputs.name, state: inputs };
    // A bucket's id is its name, as in AWS.
    case "aws:s3/bucket:Bucket":
      return { id: inputs.bucket, state: { ...inputs, arn: `arn:aws:s3:::${inputs.bucket}`, region } };
    case "aws:kms/key:Key": {
      const h = hex(name, 32);
      const keyId = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
      return { id: keyId, state: { ...inputs, keyId, arn: `arn:aws:kms:${region}:${MOCK_ACCOUNT_ID}:key/${keyId}` } };
    }
    default:
      return { id: `${name}-id`, state: inputs };
  }
}

/**
 * Installs the mocks (project "pgha-multiregion", the given stack, not a
 * preview) and returns the recorder. `stashed`: Stash outputs by resource
 * name, as an earlier deployment left them.
 */
export function installMocks(stack = "test", options: { stashed?: Record<string, unknown> } = {}): MockWorld {
  const resources: Registered[] = [];
  const invocations: Invocation[] = [];
  const inputsByKey = new Map<string, { inputs: Record<string, any>; secretInputs: string[]; state: Record<string, any> }>();
  let inFlight = 0;

  const mocks: pulumi.runtime.Mocks = {
    newResource(args) {
      const inputs = unwrap(args.inputs);
      const secretInputs = Object.keys(args.inputs).filter((key) => isSecretEnvelope(args.inputs[key]));
      const { id, state } = mockState(args.type, args.name, inputs, options.stashed ?? {}, world.regionOf({ provider: args.provider ?? "" }) ?? "default");
      inputsByKey.set(`${args.type}::${args.name}`, { inputs, secretInputs, state });
      return { id, state };
    },
    call(args) {
      invocations.push({ token: args.token, inputs: unwrap(args.inputs), provider: args.provider ?? "" });
      switch (args.token) {
        case "aws:ssm/getParameter:getParameter": {
          const region = world.regionOf({ provider: args.provider ?? "" }) ?? "default";
          const ami = `ami-0${hex(region, 16)}`;
          return {
            arn: `arn:aws:ssm:${region}::parameter${args.inputs.name}`,
            id: args.inputs.name,
            name: args.inputs.name,
            type: "String",
            value: ami,
            insecureValue: ami,
            version: 1,
            withDecryption: true,
          };
        }
        case "aws:index/getCallerIdentity:getCallerIdentity":
          return { accountId: MOCK_ACCOUNT_ID, arn: `arn:aws:iam::${MOCK_ACCOUNT_ID}:user/test`, id: MOCK_ACCOUNT_ID, userId: "AIDATEST" };
        case "aws:index/getPartition:getPartition":
          return { id: "aws", partition: "aws", dnsSuffix: "amazonaws.com", reverseDnsPrefix: "com.amazonaws" };
        default:
          throw new Error(`unmocked invoke ${args.token}`);
      }
    },
  };
  void pulumi.runtime.setMocks(mocks, "pgha-multiregion", stack, false);

  // The mock monitor passes newResource only type/name/inputs/provider; wrap
  // it to also see the options and to know when nothing is in flight.
  const monitor = pulumi.runtime.getMonitor() as any;
  const register = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req: any, callback: (err: any, resp: any) => void) => {
    inFlight++;
    return register(req, (err: any, resp: any) => {
      inFlight--;
      if (!err && resp) {
        const key = `${req.getType()}::${req.getName()}`;
        const recorded = inputsByKey.get(key) ?? { inputs: {}, secretInputs: [], state: {} };
        resources.push({
          type: req.getType(),
          name: req.getName(),
          urn: resp.getUrn(),
          id: resp.getId(),
          custom: req.getCustom(),
          inputs: recorded.inputs,
          secretInputs: recorded.secretInputs,
          state: recorded.state,
          provider: req.getProvider() ?? "",
          parent: req.getParent() ?? "",
          protect: req.getProtect() === true,
          ignoreChanges: req.getIgnorechangesList(),
          dependencies: req.getDependenciesList(),
          deleteBeforeReplace: req.getDeletebeforereplace(),
        });
      }
      callback(err, resp);
    });
  };
  const invoke = monitor.invoke.bind(monitor);
  monitor.invoke = (req: any, callback: (err: any, resp: any) => void) => {
    inFlight++;
    return invoke(req, (err: any, resp: any) => {
      inFlight--;
      callback(err, resp);
    });
  };

  const world: MockWorld = {
    resources,
    invocations,
    async settle() {
      for (let quiet = 0; quiet < 4;) {
        await new Promise((resolve) => setTimeout(resolve, 5));
        quiet = inFlight === 0 ? quiet + 1 : 0;
      }
    },
    ofType: (type) => resources.filter((r) => r.type === type),
    byUrn: (urn) => resources.find((r) => r.urn === urn),
    regionOf(item) {
      if (!item.provider) return undefined;
      const provider = resources.find((r) => r.type === "pulumi:providers:aws" && item.provider.startsWith(`${r.urn}::`));
      return provider?.inputs.region;
    },
    secretValues() {
      const keys = resources.filter((r) => r.type === "tls:index/privateKey:PrivateKey").map((r) => r.state.privateKeyPem as string);
      const passwords = resources.filter((r) => r.type === "random:index/randomPassword:RandomPassword").map((r) => r.state.result as string);
      return [...keys, ...passwords];
    },
  };
  return world;
}

/** The `#cloud-config` document inside an instance's `userDataBase64` (gzip, then base64). */
export function decodeUserData(userDataBase64: string): string {
  return gunzipSync(Buffer.from(userDataBase64, "base64")).toString("utf8");
}

/** The value of an output (mocks never run as a preview, so every value is known). */
export function valueOf<T>(output: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) =>
    output.apply((value) => {
      resolve(value);
    }),
  );
}

/**
 * Makes `renderUserData` usable while the lead's renderer is still the
 * "not implemented" stub: if the real one throws that, the module is swapped
 * in the require cache for a stand-in that returns a minimal document.
 * Returns which one the components will use. Must run before the components
 * are required.
 */
export function prepareRenderer(probe: () => void): "real" | "stand-in" {
  try {
    probe();
    return "real";
  } catch (error) {
    if (!(error instanceof Error) || !/not implemented/i.test(error.message)) throw error;
    const id = require.resolve("../../cloud-init/user-data");
    const cached = require.cache[id];
    if (!cached) throw new Error("cloud-init/user-data was not loaded by the probe", { cause: error });
    cached.exports = {
      ...cached.exports,
      renderUserData: (_plan: unknown, nodeName: string, boot: { dataVolumeId?: string }) =>
        `#cloud-config\nhostname: ${nodeName}\n# stand-in renderer (tests only)${boot.dataVolumeId ? `\n# data volume ${boot.dataVolumeId}` : ""}\n`,
    };
    return "stand-in";
  }
}

/**
 * The smallest three-region topology: Seoul's one node runs everything, Tokyo a second database node, Singapore
 * only an etcd witness. `zones` picks each region's availability zone suffix (seoul, tokyo, singapore).
 */
export function witnessRegions(zones: [string, string, string] = ["a", "a", "a"]): Record<string, unknown>[] {
  return [
    {
      name: "seoul",
      awsRegion: "ap-northeast-2",
      vpcCidr: "10.1.0.0/16",
      subnets: [{ cidr: "10.1.0.0/24", availabilityZone: `ap-northeast-2${zones[0]}` }],
      natSubnetCidr: "10.1.255.0/28",
      nodes: [{ name: "pg-seoul-1", privateIp: "10.1.0.10", roles: ["postgres", "etcd", "haproxy"] }],
    },
    {
      name: "tokyo",
      awsRegion: "ap-northeast-1",
      vpcCidr: "10.2.0.0/16",
      subnets: [{ cidr: "10.2.0.0/24", availabilityZone: `ap-northeast-1${zones[1]}` }],
      natSubnetCidr: "10.2.255.0/28",
      nodes: [{ name: "pg-tokyo-1", privateIp: "10.2.0.10", roles: ["postgres", "etcd"] }],
    },
    {
      name: "singapore",
      awsRegion: "ap-southeast-1",
      vpcCidr: "10.3.0.0/16",
      subnets: [{ cidr: "10.3.0.0/24", availabilityZone: `ap-southeast-1${zones[2]}` }],
      natSubnetCidr: "10.3.255.0/28",
      nodes: [{ name: "witness-1", privateIp: "10.3.0.10", roles: ["etcd"] }],
    },
  ];
}
