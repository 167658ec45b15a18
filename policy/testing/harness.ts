/**
 * Calls the pack's policies the way the analyzer does, without its gRPC
 * server: `validateResource` with a resource's inputs, `validateStack` with
 * every resource of the stack (outputs, parents, dependencies and
 * per-property dependencies resolved to resource objects). The enforcement
 * level of each policy, and a per-policy config as given with
 * `--policy-pack-config`, are honoured as in @pulumi/policy's server.
 *
 * Test tooling only: nothing here is loaded by the policy pack itself.
 */
import type {
  EnforcementLevel,
  PolicyResource,
  PolicyResourceOptions,
  ResourceValidationArgs,
  ResourceValidationPolicy,
  StackValidationArgs,
  StackValidationPolicy,
} from "@pulumi/policy";
import type { GraphResource, ProgramGraph } from "./program-graph";

type AnyPolicy = ResourceValidationPolicy | StackValidationPolicy;

export interface Violation {
  policy: string;
  message: string;
  urn?: string;
  enforcementLevel: EnforcementLevel;
}

/** `--policy-pack-config` shape: a level, or properties with an optional level. */
export type PackConfig = Record<string, EnforcementLevel | ({ enforcementLevel?: EnforcementLevel } & Record<string, unknown>)>;

class NotApplicable extends Error {}

const DEFAULT_OPTS: PolicyResourceOptions = {
  protect: false,
  ignoreChanges: [],
  aliases: [],
  customTimeouts: { createSeconds: 0, updateSeconds: 0, deleteSeconds: 0 },
  additionalSecretOutputs: [],
};

/** What a test writes for one resource: type and props, the rest optional. */
export interface ResourceSpec {
  type: string;
  props: Record<string, any>;
  name?: string;
  urn?: string;
  opts?: Partial<PolicyResourceOptions>;
}

export const TEST_STACK = "pr-test-1a2b3c";

export function urnFor(type: string, name: string, stack = TEST_STACK): string {
  return `urn:pulumi:${stack}::pgha-multiregion::${type}::${name}`;
}

function policyConfig(config: PackConfig | undefined, policy: string): Record<string, unknown> {
  const entry = config?.[policy];
  if (!entry || typeof entry === "string") return {};
  const { enforcementLevel: _level, ...properties } = entry;
  return properties;
}

function levelOf(policy: AnyPolicy, packLevel: EnforcementLevel, config?: PackConfig): EnforcementLevel {
  const entry = config?.[policy.name];
  const configured = typeof entry === "string" ? entry : entry?.enforcementLevel;
  return configured ?? policy.enforcementLevel ?? packLevel;
}

const isResourcePolicy = (policy: AnyPolicy): policy is ResourceValidationPolicy => "validateResource" in policy;
const isStackPolicy = (policy: AnyPolicy): policy is StackValidationPolicy => "validateStack" in policy;

/** Runs one resource policy on one resource; returns the violation messages (enforcement level ignored). */
export async function validateResource(policy: ResourceValidationPolicy, spec: ResourceSpec, config: Record<string, unknown> = {}): Promise<string[]> {
  const messages: string[] = [];
  const name = spec.name ?? "subject";
  const args: ResourceValidationArgs = {
    type: spec.type,
    props: spec.props,
    urn: spec.urn ?? urnFor(spec.type, name),
    name,
    opts: { ...DEFAULT_OPTS, ...spec.opts },
    stackTags: new Map(),
    isType: (resourceClass: any) => resourceClass?.__pulumiType === spec.type,
    asType: ((resourceClass: any) => (resourceClass?.__pulumiType === spec.type ? spec.props : undefined)) as ResourceValidationArgs["asType"],
    getConfig: (() => config) as ResourceValidationArgs["getConfig"],
    notApplicable: (reason?: string): never => {
      throw new NotApplicable(reason);
    },
  };
  const validations = policy.validateResource === undefined ? [] : Array.isArray(policy.validateResource) ? policy.validateResource : [policy.validateResource];
  for (const validation of validations) {
    try {
      await validation(args, (message) => messages.push(message));
    } catch (error) {
      if (!(error instanceof NotApplicable)) throw error;
    }
  }
  return messages;
}

/** Turns specs into linked PolicyResources (parents and dependencies by URN). */
export function stackResources(specs: (ResourceSpec & { parent?: string; dependencies?: string[]; propertyDependencies?: Record<string, string[]> })[]): PolicyResource[] {
  const resources = specs.map((spec, index) => {
    const name = spec.name ?? `resource-${index}`;
    const resource: PolicyResource = {
      type: spec.type,
      props: spec.props,
      urn: spec.urn ?? urnFor(spec.type, name),
      name,
      opts: { ...DEFAULT_OPTS, ...spec.opts },
      dependencies: [],
      propertyDependencies: {},
      isType: (resourceClass: any) => resourceClass?.__pulumiType === spec.type,
      asType: ((resourceClass: any) => (resourceClass?.__pulumiType === spec.type ? spec.props : undefined)) as PolicyResource["asType"],
    };
    return resource;
  });
  const byUrn = new Map(resources.map((r) => [r.urn, r]));
  specs.forEach((spec, index) => {
    const resource = resources[index];
    if (spec.parent) resource.parent = byUrn.get(spec.parent);
    resource.dependencies = (spec.dependencies ?? []).map((urn) => byUrn.get(urn)).filter((r): r is PolicyResource => r !== undefined);
    for (const [property, urns] of Object.entries(spec.propertyDependencies ?? {})) {
      resource.propertyDependencies[property] = urns.map((urn) => byUrn.get(urn)).filter((r): r is PolicyResource => r !== undefined);
    }
  });
  return resources;
}

/** Runs one stack policy over resources; returns `{message, urn}` per violation. */
export async function validateStack(
  policy: StackValidationPolicy,
  resources: PolicyResource[],
  config: Record<string, unknown> = {},
): Promise<{ message: string; urn?: string }[]> {
  const violations: { message: string; urn?: string }[] = [];
  const args: StackValidationArgs = {
    resources,
    stackTags: new Map(),
    getConfig: (() => config) as StackValidationArgs["getConfig"],
    notApplicable: (reason?: string): never => {
      throw new NotApplicable(reason);
    },
  };
  try {
    await policy.validateStack(args, (message, urn) => violations.push({ message, urn }));
  } catch (error) {
    if (!(error instanceof NotApplicable)) throw error;
  }
  return violations;
}

/** The graph of a mocked program run as the analyzer sees it at the end of `pulumi up`: outputs as props. */
export function graphResources(graph: ProgramGraph): PolicyResource[] {
  return stackResources(
    graph.resources.map((r: GraphResource) => ({
      type: r.type,
      name: r.name,
      urn: r.urn,
      props: r.custom ? r.state : {},
      opts: { protect: r.protect, ignoreChanges: r.ignoreChanges, deleteBeforeReplace: r.deleteBeforeReplace, parent: r.parent || undefined },
      parent: r.parent || undefined,
      dependencies: r.dependencies,
      propertyDependencies: r.propertyDependencies,
    })),
  );
}

/**
 * Runs the whole pack over a mocked program run: every resource policy on
 * every custom resource's inputs (as `Analyze` does before each step) and
 * every stack policy on the graph (as `AnalyzeStack` does at the end).
 * Disabled policies are skipped, as the server does.
 */
export async function runPack(policies: AnyPolicy[], packLevel: EnforcementLevel, graph: ProgramGraph, config?: PackConfig): Promise<Violation[]> {
  const violations: Violation[] = [];
  for (const policy of policies) {
    const enforcementLevel = levelOf(policy, packLevel, config);
    if (enforcementLevel === "disabled") continue;
    const properties = policyConfig(config, policy.name);
    if (isResourcePolicy(policy)) {
      for (const r of graph.resources.filter((resource) => resource.custom)) {
        const opts = { protect: r.protect, ignoreChanges: r.ignoreChanges, deleteBeforeReplace: r.deleteBeforeReplace };
        for (const message of await validateResource(policy, { type: r.type, name: r.name, urn: r.urn, props: r.inputs, opts }, properties)) {
          violations.push({ policy: policy.name, message, urn: r.urn, enforcementLevel });
        }
      }
    } else if (isStackPolicy(policy)) {
      for (const v of await validateStack(policy, graphResources(graph), properties)) violations.push({ policy: policy.name, ...v, enforcementLevel });
    }
  }
  return violations;
}
