/**
 * The policy pack as the Pulumi CLI runs it: `@pulumi/pulumi/cmd/run-policy-pack`
 * in policy/ (type-checking index.ts with the SDK's bundled ts-node), which
 * constructs the PolicyPack and serves the analyzer on a loopback port. The
 * test speaks the analyzer's gRPC protocol to it — GetAnalyzerInfo, Analyze,
 * AnalyzeStack, Configure — as the engine would during `pulumi preview`
 * and `pulumi up --policy-pack policy [--policy-pack-config policy/ephemeral.json]`.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { policies, POLICY_PACK_NAME, TYPES } from "../../policy/policies";

const ROOT = join(__dirname, "..", "..");
const POLICY_DIR = join(ROOT, "policy");
// The gRPC and protobuf modules the SDK's generated stubs use (not whatever is hoisted).
const sdkRequire = (id: string) => require(require.resolve(id, { paths: [dirname(require.resolve("@pulumi/pulumi/proto/analyzer_pb"))] }));
const grpc = sdkRequire("@grpc/grpc-js") as typeof import("@grpc/grpc-js");
const analyzerGrpc = sdkRequire("./analyzer_grpc_pb");
const analyzerPb = sdkRequire("./analyzer_pb");
const { Empty } = sdkRequire("google-protobuf/google/protobuf/empty_pb.js");
const { Struct } = sdkRequire("google-protobuf/google/protobuf/struct_pb.js");

const LEVEL_NAMES: Record<number, string> = Object.fromEntries(Object.entries(analyzerPb.EnforcementLevel as Record<string, number>).map(([k, v]) => [v, k.toLowerCase()]));

let server: ChildProcess;
let client: any;
let stderr = "";

function call<T>(method: string, request: unknown): Promise<T> {
  return new Promise((resolve, reject) =>
    client[method](request, (error: Error | null, response: T) => {
      if (error) reject(error);
      else resolve(response);
    }),
  );
}

function options(protect = false) {
  const opts = new analyzerPb.AnalyzerResourceOptions();
  opts.setProtect(protect);
  opts.setCustomtimeouts(new analyzerPb.AnalyzerResourceOptions.CustomTimeouts());
  return opts;
}

function analyzeRequest(type: string, name: string, props: Record<string, unknown>, protect = false) {
  const request = new analyzerPb.AnalyzeRequest();
  request.setType(type);
  request.setName(name);
  request.setUrn(`urn:pulumi:pr-x-123456::pgha-multiregion::${type}::${name}`);
  request.setProperties(Struct.fromJavaScript(props));
  request.setOptions(options(protect));
  return request;
}

function stackResource(type: string, name: string, props: Record<string, unknown>, propertyDependencies: Record<string, string[]> = {}) {
  const resource = new analyzerPb.AnalyzerResource();
  resource.setType(type);
  resource.setName(name);
  resource.setUrn(`urn:pulumi:pr-x-123456::pgha-multiregion::${type}::${name}`);
  resource.setProperties(Struct.fromJavaScript(props));
  resource.setOptions(options());
  for (const [key, urns] of Object.entries(propertyDependencies)) {
    const deps = new analyzerPb.AnalyzerPropertyDependencies();
    deps.setUrnsList(urns);
    resource.getPropertydependenciesMap().set(key, deps);
  }
  return resource;
}

const diagnostics = (response: any) =>
  response.getDiagnosticsList().map((d: any) => ({ policy: d.getPolicyname(), level: LEVEL_NAMES[d.getEnforcementlevel()], message: d.getMessage(), pack: d.getPolicypackname() }));

const goodInstance = {
  instanceType: "t3.medium",
  associatePublicIpAddress: false,
  metadataOptions: { httpTokens: "required", httpPutResponseHopLimit: 1 },
  rootBlockDevice: { encrypted: true, volumeSize: 10 },
  tags: { "pgha:role": "etcd+postgres" },
  userData: "#cloud-config\npackages: [postgresql-17]\n",
};

before(async () => {
  const runner = require.resolve("@pulumi/pulumi/cmd/run-policy-pack", { paths: [ROOT] });
  server = spawn(process.execPath, [runner, "127.0.0.1:0", "."], { cwd: POLICY_DIR, stdio: ["ignore", "pipe", "pipe"] });
  server.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => {
      reject(new Error(`the policy pack printed no port within 60 s:\n${stderr}`));
    }, 60_000);
    server.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      out += chunk;
      const match = /^(\d+)\s*$/m.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    server.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the policy pack exited with ${code}:\n${stderr}${out}`));
    });
  });
  client = new analyzerGrpc.AnalyzerClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
});

after(() => {
  client?.close();
  server?.kill();
});

describe("the policy pack served as the CLI runs it", () => {
  it("type-checks and starts, and describes itself: name, version from policy/package.json, every policy with its level", async () => {
    const info = await call<any>("getAnalyzerInfo", new Empty());
    assert.equal(info.getName(), POLICY_PACK_NAME);
    assert.equal(info.getVersion(), JSON.parse(readFileSync(join(POLICY_DIR, "package.json"), "utf8")).version);
    const served = info.getPoliciesList().map((p: any) => [p.getName(), LEVEL_NAMES[p.getEnforcementlevel()]]);
    assert.deepEqual(
      served,
      policies.map((p) => [p.name, p.enforcementLevel]),
    );
  });

  it("Analyze passes a compliant database node", async () => {
    assert.deepEqual(diagnostics(await call("analyze", analyzeRequest(TYPES.instance, "db", goodInstance))), []);
  });

  it("Analyze reports each broken promise of a non-compliant node as mandatory", async () => {
    const bad = {
      ...goodInstance,
      associatePublicIpAddress: true,
      metadataOptions: { httpTokens: "optional" },
      rootBlockDevice: { volumeSize: 10 },
      userData: "password: hunter2hunter2\n",
    };
    const found = diagnostics(await call("analyze", analyzeRequest(TYPES.instance, "db", bad)));
    assert.deepEqual(found.map((d: any) => d.policy).sort(), ["ebs-encrypted", "imdsv2-required", "no-public-ip-on-database-nodes", "no-secrets-in-user-data"]);
    assert.ok(found.every((d: any) => d.level === "mandatory" && d.pack === POLICY_PACK_NAME));
    const ingress = diagnostics(
      await call("analyze", analyzeRequest(TYPES.securityGroupIngressRule, "open", { ipProtocol: "tcp", fromPort: 5432, toPort: 5432, cidrIpv4: "0.0.0.0/0" })),
    );
    assert.deepEqual(
      ingress.map((d: any) => d.policy),
      ["no-public-database-ingress"],
    );
  });

  it("AnalyzeStack reports a peering to a VPC outside the stack, and passes one between its own VPCs", async () => {
    const vpcUrn = (name: string) => `urn:pulumi:pr-x-123456::pgha-multiregion::${TYPES.vpc}::${name}`;
    const own = new analyzerPb.AnalyzeStackRequest();
    own.setResourcesList([
      stackResource(TYPES.vpc, "a", { cidrBlock: "10.1.0.0/16" }),
      stackResource(TYPES.vpc, "b", { cidrBlock: "10.2.0.0/16" }),
      stackResource(TYPES.peering, "a-b", {}, { vpcId: [vpcUrn("a")], peerVpcId: [vpcUrn("b")] }),
    ]);
    assert.deepEqual(diagnostics(await call("analyzeStack", own)), []);
    const foreign = new analyzerPb.AnalyzeStackRequest();
    foreign.setResourcesList([stackResource(TYPES.vpc, "a", {}), stackResource(TYPES.peering, "a-x", { peerVpcId: "vpc-0other" }, { vpcId: [vpcUrn("a")] })]);
    assert.deepEqual(
      diagnostics(await call("analyzeStack", foreign)).map((d: any) => d.policy),
      ["peering-within-stack"],
    );
  });

  it("policy/ephemeral.json turns on ephemeral-stack-destroyable (after which a protected volume fails)", async () => {
    const protectedVolume = () => analyzeRequest(TYPES.volume, "data", { size: 10, encrypted: true }, true);
    assert.deepEqual(diagnostics(await call("analyze", protectedVolume())), []);

    const config = JSON.parse(readFileSync(join(POLICY_DIR, "ephemeral.json"), "utf8")) as Record<string, { enforcementLevel: string }>;
    const request = new analyzerPb.ConfigureAnalyzerRequest();
    for (const [policy, value] of Object.entries(config)) {
      const policyConfig = new analyzerPb.PolicyConfig();
      policyConfig.setEnforcementlevel(analyzerPb.EnforcementLevel[value.enforcementLevel.toUpperCase()]);
      policyConfig.setProperties(Struct.fromJavaScript({}));
      request.getPolicyconfigMap().set(policy, policyConfig);
    }
    await call("configure", request);
    const found = diagnostics(await call("analyze", protectedVolume()));
    assert.deepEqual(
      found.map((d: any) => [d.policy, d.level]),
      [["ephemeral-stack-destroyable", "mandatory"]],
    );
  });
});
