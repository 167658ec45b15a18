// ESLint flat config: typescript-eslint's strict and stylistic type-checked sets on every .ts file
// of the root tsconfig.json (one program for the whole tree). `npm run lint` runs it with --cache in
// node_modules/.cache/eslint/, keyed on each file's content: a type change in one file does not re-lint
// the files that use it (a fresh checkout, as in CI, lints everything; `rm -r node_modules/.cache/eslint` forces it).
import js from "@eslint/js";
import { defineConfig } from "eslint/config";
import tseslint from "typescript-eslint";

export default defineConfig(
  {
    ignores: ["node_modules/", "bin/", "dist/", ".lab/", "policy/bin/"],
  },
  {
    // The example imports the package by name ("pgha-multiregion"), which resolves only against the packed
    // package: tests/unit/package-example.test.ts type-checks it there, so it is not part of the root program.
    ignores: ["examples/"],
  },
  {
    files: ["**/*.ts"],
    extends: [js.configs.recommended, tseslint.configs.strictTypeChecked, tseslint.configs.stylisticTypeChecked],
    languageOptions: {
      parserOptions: { project: "./tsconfig.json", tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      // Messages and command lines interpolate numbers (ports, counts, milliseconds) everywhere, and print a missing leader,
      // serial or term as `undefined` (84 sites; a follow-up may word each as "none"); booleans, RegExps, arrays, any stay errors.
      // The options are all given: options here replace strict's, and the rule's own defaults would allow everything.
      "@typescript-eslint/restrict-template-expressions": [
        "error",
        { allowNumber: true, allowNullish: true, allowAny: false, allowBoolean: false, allowRegExp: false, allowNever: false, allowArray: false },
      ],
      // node:test's test()/describe()/it() return promises the runner itself awaits.
      "@typescript-eslint/no-floating-promises": ["error", { allowForKnownSafeCalls: [{ from: "package", package: "node:test", name: ["test", "describe", "it", "suite"] }] }],
      // Contradicts strict's no-non-null-assertion: it rewrites `x as T` into `x!`.
      "@typescript-eslint/non-nullable-type-assertion-style": "off",
      // Without noUncheckedIndexedAccess it calls the guards on array and Record lookups (`if (!found)`, `map[key] ?? x`) dead; removing them would change behaviour.
      "@typescript-eslint/no-unnecessary-condition": "off",
      // `_` marks a value dropped on purpose (`const { name: _name, ...rest } = x`); tsc's noUnusedLocals/Parameters check the rest.
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", destructuredArrayIgnorePattern: "^_", ignoreRestSiblings: true }],
      // Transports and their fakes implement Promise-returning interfaces with `async` so a throw rejects; dropping `async` would change that.
      "@typescript-eslint/require-await": "off",
    },
  },
  {
    // Tests read the Pulumi mocks' recorded inputs and the SDK's untyped gRPC/protobuf modules (`any` by nature),
    // dereference what they just asserted exists (`find(...)!`), and require() the program after installing the mocks.
    files: ["tests/**/*.ts", "policy/testing/**/*.ts"],
    rules: {
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-return": "off",
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-non-null-assertion": "off",
      "@typescript-eslint/no-require-imports": "off",
      "@typescript-eslint/restrict-template-expressions": [
        "error",
        { allowNumber: true, allowNullish: true, allowAny: true, allowBoolean: false, allowRegExp: false, allowNever: false, allowArray: false },
      ],
    },
  },
  {
    files: ["**/*.mjs"],
    extends: [js.configs.recommended],
    languageOptions: { globals: { console: "readonly", process: "readonly" } },
  },
);
