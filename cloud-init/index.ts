// Renderers: plan → the exact files on a node → cloud-init user-data. No Pulumi import.
export * from "./types";
export * from "./user-data";
export * from "./node-files";
export * from "./etcd";
export * from "./patroni";
export * from "./haproxy";
export * from "./haproxy-emitter";
export * from "./systemd";
export * from "./yaml";
