/**
 * The package's public API: what `import … from "pgha-multiregion"` gives a
 * Pulumi program of someone else's (docs/packaging.md).
 *
 * Re-exports only. It must stay free of side effects: no resource is created
 * and no stack config is read on import, so it never imports index.ts (the
 * project's own program, which does both). tests/unit/package-example.test.ts
 * loads the built entry without a Pulumi engine, where creating a resource
 * would throw, and fails if dist/ holds a compiled index.js.
 *
 * The names are listed one by one rather than `export *`: everything here is
 * a promise to consumers across versions; the rest of plan/, cloud-init/ and
 * components/ may change without a major version.
 *
 * Entry points: Pulumi runs this project through Pulumi.yaml's `main:
 * index.ts`; consumers resolve the bare name "pgha-multiregion" through
 * package.json `exports` (dist/library.js, built from this file by
 * tsconfig.build.json). See tsconfig.build.json for why both hold at once.
 */

// The component.
export { PgHaCluster } from "./components/cluster";
export type { BackupRepositoryOutput, HaproxyEndpoint, PgHaClusterArgs } from "./components/cluster";

// The plan: config (every part optional, merged over DEFAULT_CONFIG) → validated plan.
export { buildClusterPlan, CONFIG_KEYS, CONFIG_NAMESPACE, ConfigError, DEFAULT_CONFIG, PORTS, validateConfig } from "./plan";
export type {
  AccessConfig,
  ClusterConfig,
  ClusterConfigInput,
  ClusterPlan,
  ConfigProblem,
  CpuArchitecture,
  EtcdConfig,
  EtcdMemberPlan,
  HaproxyConfig,
  IamConfig,
  InstancesConfig,
  NodeConfig,
  NodePlan,
  NodeRole,
  PatroniConfig,
  PlanOptions,
  RegionConfig,
  RegionPlan,
  SubnetConfig,
  VersionsConfig,
} from "./plan";

// The renderers: plan → the files on a node → cloud-init user-data (pure, no Pulumi).
export { encodeUserData, renderEtcdConfig, renderHaproxyConfig, renderNodeFiles, renderPatroniConfig, renderUserData, USER_DATA_LIMIT_BYTES } from "./cloud-init";
export type { BootInputs, NodeFile } from "./cloud-init";
