/**
 * The three descriptions of the `pgha:` keys agree: the zod schema
 * (plan/schema.ts) the program validates with, the editor schema generated
 * from it (schema/pgha-config.schema.json) and the keys Pulumi.yaml declares.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { load } from "js-yaml";
import { CONFIG_KEYS, CONFIG_NAMESPACE, validateConfig } from "../../plan";
import { CONFIG_SCHEMA_FILE, configJsonSchema } from "../../plan/json-schema";
import { SCHEMA_KEYS } from "../../plan/schema";

const ROOT = join(__dirname, "..", "..");
const namespaced = (keys: readonly string[]): string[] => keys.map((key) => `${CONFIG_NAMESPACE}:${key}`);

interface ProjectConfigEntry {
  description?: string;
  value?: unknown;
  type?: unknown;
  default?: unknown;
}

function projectConfig(): Record<string, ProjectConfigEntry> {
  const project = load(readFileSync(join(ROOT, "Pulumi.yaml"), "utf8")) as { config?: Record<string, ProjectConfigEntry> };
  assert.ok(project.config, "Pulumi.yaml has no config: block");
  return project.config;
}

/** What the editor schema says of each pgha: key, by its namespaced name. */
function editorSchemaKeys(): Record<string, { description?: string }> {
  const schema = configJsonSchema() as { properties: { config: { properties: Record<string, { description?: string }> } } };
  return schema.properties.config.properties;
}

describe("the pgha: config schema", () => {
  test("knows exactly the keys of plan/config.ts, in the same order", () => {
    assert.deepEqual(SCHEMA_KEYS, CONFIG_KEYS);
  });

  test(`${CONFIG_SCHEMA_FILE} is what \`npx tsx plan/json-schema.ts\` generates now`, () => {
    const committed: unknown = JSON.parse(readFileSync(join(ROOT, CONFIG_SCHEMA_FILE), "utf8"));
    assert.deepEqual(committed, configJsonSchema(), `${CONFIG_SCHEMA_FILE} is stale: run \`npx tsx plan/json-schema.ts\` and commit the result`);
  });

  test("the editor schema describes every key and refuses a misspelt pgha: key", () => {
    const keys = editorSchemaKeys();
    assert.deepEqual(Object.keys(keys), namespaced(SCHEMA_KEYS));
    for (const [key, schema] of Object.entries(keys)) assert.ok(schema.description, `${key} has no description`);
    const names = (configJsonSchema() as { properties: { config: { propertyNames: unknown } } }).properties.config.propertyNames;
    assert.deepEqual(names, { anyOf: [{ not: { pattern: `^${CONFIG_NAMESPACE}:` } }, { enum: namespaced(SCHEMA_KEYS) }] });
  });
});

describe("Pulumi.yaml's config: block", () => {
  test("declares exactly the schema's top-level keys, described as the schema describes them", () => {
    const declared = projectConfig();
    assert.deepEqual(Object.keys(declared).sort(), namespaced(SCHEMA_KEYS).sort());
    const described = editorSchemaKeys();
    for (const [key, entry] of Object.entries(declared)) assert.equal(entry.description, described[key]?.description, key);
  });

  test("gives no type or default, which Pulumi refuses on a namespace other than the project's", () => {
    for (const [key, entry] of Object.entries(projectConfig())) {
      assert.equal(entry.type, undefined, `${key}: Pulumi refuses to load a project typing a key outside its own namespace`);
      assert.equal(entry.default, undefined, `${key}: Pulumi refuses a default outside the project's namespace (it wants value)`);
      assert.notEqual(entry.value, undefined, `${key}: Pulumi requires a value on a key outside the project's namespace`);
    }
  });

  test("its values are neutral: a stack that sets nothing still gets plan/defaults.ts", () => {
    // Pulumi hands every stack the project's value for each key the stack leaves out.
    const values = Object.fromEntries(Object.entries(projectConfig()).map(([key, entry]) => [key.slice(CONFIG_NAMESPACE.length + 1), entry.value]));
    assert.deepEqual(validateConfig(values), validateConfig(undefined));
  });
});
