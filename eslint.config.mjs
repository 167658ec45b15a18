// ESLint flat config: typescript-eslint's strict and stylistic type-checked sets on every .ts file
// of the root tsconfig.json (one program for the whole tree; `npm run lint` runs it with --cache).
import js from "@eslint/js";
import { defineConfig } from "eslint/config";
import tseslint from "typescript-eslint";

export default defineConfig(
  {
    ignores: ["node_modules/", "bin/", "dist/", ".lab/", "policy/bin/"],
  },
  {
    // TEMPORARY: being edited concurrently; linted in the final pass.
    ignores: [
      "plan/validate.ts",
      "plan/schema.ts",
      "plan/zz-tmp.ts",
      "schema/",
      "library.ts",
      "build-package.mjs",
      "lab/cli.ts",
      "lab/session.ts",
      "tests/unit/plan.test.ts",
      "tests/unit/workflows.test.ts",
      "tests/unit/lab-cli*.test.ts",
      "tests/unit/docs-links.test.ts",
      "tests/unit/package-example.test.ts",
      "tests/lab/drills.test.ts",
      ".github/",
      "examples/",
    ],
  },
  {
    files: ["**/*.ts"],
    extends: [js.configs.recommended, tseslint.configs.strictTypeChecked, tseslint.configs.stylisticTypeChecked],
    languageOptions: {
      parserOptions: { project: "./tsconfig.json", tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      // Messages and command lines interpolate numbers (ports, counts, milliseconds) everywhere.
      "@typescript-eslint/restrict-template-expressions": ["error", { allowNumber: true }],
      // node:test's test()/describe()/it() return promises the runner itself awaits.
      "@typescript-eslint/no-floating-promises": ["error", { allowForKnownSafeCalls: [{ from: "package", package: "node:test", name: ["test", "describe", "it", "suite"] }] }],
      // Contradicts strict's no-non-null-assertion: it rewrites `x as T` into `x!`.
      "@typescript-eslint/non-nullable-type-assertion-style": "off",
    },
  },
  {
    files: ["**/*.mjs"],
    extends: [js.configs.recommended],
    languageOptions: { globals: { console: "readonly", process: "readonly" } },
  },
);
