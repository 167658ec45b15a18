import * as yaml from "js-yaml";

/**
 * The one YAML emitter every renderer uses. js-yaml quotes strings that
 * YAML 1.1 readers (PyYAML in Patroni and cloud-init) would take for
 * booleans, so `"on"` stays a string on the node.
 */
export function dumpYaml(document: unknown): string {
  return yaml.dump(document, { lineWidth: -1, noRefs: true, sortKeys: false });
}
