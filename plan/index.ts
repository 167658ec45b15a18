// The pure core: config → validated plan. No Pulumi import anywhere below plan/.
export * from "./config";
export * from "./defaults";
export * from "./validate";
export * from "./plan";
export * from "./paths";
export * from "./pki";
export * from "./secrets";
export * from "./etcd-timing";
export * from "./net";
export * from "./os";
