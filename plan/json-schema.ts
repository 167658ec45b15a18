/**
 * The editor schema of the `pgha:` keys, generated from plan/schema.ts so it
 * cannot say something the validator does not.
 *
 * Regenerate after changing the schema (tests/unit/config-schema.test.ts
 * fails while the committed file is stale):
 *
 *   npx tsx plan/json-schema.ts
 *
 * It writes schema/pgha-config.schema.json: a schema of a whole Pulumi stack
 * file (Pulumi.<stack>.yaml), because that is the file editors open; its
 * `config` holds the `pgha:*` keys, and every other namespace (aws:region, …)
 * is left alone. Cross-key rules (overlapping CIDRs, quorum, timing) are not
 * expressible in JSON Schema and are only checked by the program.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { CONFIG_NAMESPACE } from "./validate";
import { configSchema } from "./schema";

/** Where the committed schema lives, relative to the repository root. */
export const CONFIG_SCHEMA_FILE = "schema/pgha-config.schema.json";

type JsonSchema = Record<string, unknown>;

export function configJsonSchema(): JsonSchema {
  // "input": what a user writes, so keys with a default are optional and show it.
  const { properties, $schema } = z.toJSONSchema(configSchema, { io: "input" }) as { properties: Record<string, JsonSchema>; $schema: string };
  const keys = Object.keys(properties).map((key) => `${CONFIG_NAMESPACE}:${key}`);
  return {
    $schema,
    title: "Pulumi stack settings of pgha-multiregion",
    description: `Pulumi.<stack>.yaml with the ${CONFIG_NAMESPACE}: keys of this program. Generated from plan/schema.ts by \`npx tsx plan/json-schema.ts\`; do not edit.`,
    type: "object",
    properties: {
      config: {
        type: "object",
        properties: Object.fromEntries(Object.entries(properties).map(([key, schema]) => [`${CONFIG_NAMESPACE}:${key}`, schema])),
        // A misspelt pgha: key is an error (the program refuses it too); other namespaces belong to other packages.
        propertyNames: { anyOf: [{ not: { pattern: `^${CONFIG_NAMESPACE}:` } }, { enum: keys }] },
      },
    },
  };
}

/** The file's exact text: two-space JSON and a final newline, as the test compares it. */
export function configJsonSchemaText(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}

if (require.main === module) {
  const file = join(__dirname, "..", CONFIG_SCHEMA_FILE);
  writeFileSync(file, configJsonSchemaText());
  console.log(`wrote ${CONFIG_SCHEMA_FILE}`);
}
