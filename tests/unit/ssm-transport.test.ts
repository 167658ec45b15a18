/**
 * ops/ssm-transport.ts against a mocked AWS SDK client (aws-sdk-client-mock):
 * success, a failing command, timeouts (SSM's and our own), throttling with
 * retry, undeliverable commands — and the script it sends, executed for real
 * by /bin/sh here, so quoting, env, env files and stdin are proven, not assumed.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { afterEach, describe, it } from "node:test";
import { CancelCommandCommand, GetCommandInvocationCommand, InvocationDoesNotExist, SendCommandCommand, SSMClient } from "@aws-sdk/client-ssm";
import { mockClient } from "aws-sdk-client-mock";
import { isThrottling, remoteScript, SsmCommandError, SsmTransport, type SsmTransportOptions } from "../../ops/ssm-transport";

const ssm = mockClient(SSMClient);
afterEach(() => ssm.reset());

const TARGETS = {
  "pg-seoul-1": { instanceId: "i-0aaaaaaaaaaaaaaa1", region: "ap-northeast-2" },
  "pg-tokyo-1": { instanceId: "i-0bbbbbbbbbbbbbbb2", region: "ap-northeast-1" },
};

/** A transport with a fake clock: sleeps advance it instantly and are recorded. */
function transport(extra: Partial<SsmTransportOptions> = {}): { t: SsmTransport; sleeps: number[]; regions: string[]; logs: string[] } {
  let clock = 1_000_000;
  const sleeps: number[] = [];
  const regions: string[] = [];
  const logs: string[] = [];
  const t = new SsmTransport({
    targets: TARGETS,
    clientFor: (region) => {
      regions.push(region);
      return new SSMClient({ region, credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "x" } });
    },
    sleep: async (ms) => {
      sleeps.push(ms);
      clock += ms;
    },
    now: () => clock,
    random: () => 0.5,
    log: (line) => logs.push(line),
    ...extra,
  });
  return { t, sleeps, regions, logs };
}

function throttle(): Error {
  return Object.assign(new Error("Rate exceeded"), { name: "ThrottlingException", $metadata: { httpStatusCode: 400 } });
}

const sentScript = (index = 0): string => ssm.commandCalls(SendCommandCommand)[index]?.args[0].input.Parameters?.commands?.[0] ?? "";

describe("SsmTransport.run", () => {
  it("sends AWS-RunShellScript to the node's instance in its region and returns the output of a successful command", async () => {
    ssm.on(SendCommandCommand).resolves({ Command: { CommandId: "cmd-1" } });
    ssm
      .on(GetCommandInvocationCommand)
      .rejectsOnce(new InvocationDoesNotExist({ message: "not yet", $metadata: {} }))
      .resolvesOnce({ Status: "InProgress", StatusDetails: "InProgress", ResponseCode: -1 })
      .resolves({ Status: "Success", StatusDetails: "Success", ResponseCode: 0, StandardOutputContent: '[{"Member":"pg-tokyo-1"}]\n', StandardErrorContent: "" });
    const { t, regions } = transport();
    const result = await t.run("pg-tokyo-1", ["patronictl", "list", "-f", "json"], { user: "postgres", timeoutMs: 20_000 });
    assert.deepEqual(result, { code: 0, stdout: '[{"Member":"pg-tokyo-1"}]\n', stderr: "" });
    assert.deepEqual(regions, ["ap-northeast-1"]);
    const send = ssm.commandCalls(SendCommandCommand)[0]?.args[0].input;
    assert.equal(send?.DocumentName, "AWS-RunShellScript");
    assert.deepEqual(send?.InstanceIds, ["i-0bbbbbbbbbbbbbbb2"]);
    assert.deepEqual(send?.Parameters?.executionTimeout, ["20"]);
    assert.ok((send?.TimeoutSeconds ?? 0) >= 30, "SSM's minimum delivery timeout");
    assert.match(sentScript(), /runuser -u 'postgres' -- \/usr\/bin\/env -i "HOME=\$pgha_home" .* 'patronictl' 'list' '-f' 'json' <\/dev\/null/);
    assert.equal(ssm.commandCalls(GetCommandInvocationCommand).length, 3);
    for (const call of ssm.commandCalls(GetCommandInvocationCommand)) assert.deepEqual(call.args[0].input, { CommandId: "cmd-1", InstanceId: "i-0bbbbbbbbbbbbbbb2" });
  });

  it("returns a failed command's exit code and stderr as a result (not an error), like the lab", async () => {
    ssm.on(SendCommandCommand).resolves({ Command: { CommandId: "cmd-2" } });
    ssm
      .on(GetCommandInvocationCommand)
      .resolves({ Status: "Failed", StatusDetails: "Failed", ResponseCode: 3, StandardOutputContent: "", StandardErrorContent: "psql: error: connection refused\n" });
    const { t } = transport();
    assert.deepEqual(await t.run("pg-seoul-1", ["psql", "-c", "select 1"]), { code: 3, stdout: "", stderr: "psql: error: connection refused\n" });
  });

  it("throws when the command never ran (undeliverable: agent offline)", async () => {
    ssm.on(SendCommandCommand).resolves({ Command: { CommandId: "cmd-3" } });
    ssm.on(GetCommandInvocationCommand).resolves({ Status: "Failed", StatusDetails: "Undeliverable", ResponseCode: -1 });
    const { t } = transport();
    await assert.rejects(
      t.run("pg-seoul-1", ["true"]),
      (error: Error) => error instanceof SsmCommandError && error.message.includes("pg-seoul-1: command cmd-3 did not run: Undeliverable"),
    );
  });

  it("maps SSM's execution timeout to exit code 124", async () => {
    ssm.on(SendCommandCommand).resolves({ Command: { CommandId: "cmd-4" } });
    ssm.on(GetCommandInvocationCommand).resolves({ Status: "TimedOut", StatusDetails: "ExecutionTimedOut", ResponseCode: -1, StandardOutputContent: "partial" });
    const { t } = transport();
    const result = await t.run("pg-seoul-1", ["sleep", "100"], { timeoutMs: 5000 });
    assert.equal(result.code, 124);
    assert.equal(result.stdout, "partial");
    assert.match(result.stderr, /timed out after 5 s on pg-seoul-1/);
  });

  it("gives up at its own deadline while the command stays in progress, cancels it and returns 124", async () => {
    ssm.on(SendCommandCommand).resolves({ Command: { CommandId: "cmd-5" } });
    ssm.on(GetCommandInvocationCommand).resolves({ Status: "InProgress", StatusDetails: "InProgress", ResponseCode: -1 });
    ssm.on(CancelCommandCommand).resolves({});
    const { t, sleeps } = transport({ pollIntervalMs: 1000, deliveryTimeoutSeconds: 30 });
    const result = await t.run("pg-seoul-1", ["sleep", "1000"], { timeoutMs: 10_000 });
    assert.equal(result.code, 124);
    assert.match(result.stderr, /timed out after 10000 ms waiting for command cmd-5 on pg-seoul-1 .*cancelled/);
    assert.deepEqual(ssm.commandCalls(CancelCommandCommand)[0]?.args[0].input, { CommandId: "cmd-5", InstanceIds: ["i-0aaaaaaaaaaaaaaa1"] });
    // The budget (10 s) plus delivery slack (30 s), polled every second: bounded, not forever.
    const waited = sleeps.reduce((a, b) => a + b, 0);
    assert.ok(waited > 40_000 && waited <= 42_000, `waited ${waited} ms`);
  });

  it("retries throttled calls with growing backoff, then succeeds", async () => {
    ssm
      .on(SendCommandCommand)
      .rejectsOnce(throttle())
      .rejectsOnce(throttle())
      .resolves({ Command: { CommandId: "cmd-6" } });
    ssm
      .on(GetCommandInvocationCommand)
      .rejectsOnce(Object.assign(new Error("slow down"), { name: "TooManyRequestsException", $metadata: { httpStatusCode: 429 } }))
      .resolves({ Status: "Success", StatusDetails: "Success", ResponseCode: 0, StandardOutputContent: "ok\n" });
    const { t, sleeps, logs } = transport({ retryBaseMs: 400, pollIntervalMs: 1000 });
    const result = await t.run("pg-seoul-1", ["echo", "ok"]);
    assert.equal(result.stdout, "ok\n");
    assert.equal(ssm.commandCalls(SendCommandCommand).length, 3);
    assert.equal(ssm.commandCalls(GetCommandInvocationCommand).length, 2);
    // random() = 0.5 → 75 % of 400 · 2^attempt: 300, 600 for SendCommand; 300 for the poll; 1000 per poll interval.
    assert.deepEqual(sleeps, [300, 600, 1000, 300]);
    assert.equal(logs.filter((l) => l.includes("throttled")).length, 3);
  });

  it("stops retrying after maxRetries and surfaces the throttling error", async () => {
    ssm.on(SendCommandCommand).rejects(throttle());
    const { t } = transport({ maxRetries: 2 });
    await assert.rejects(t.run("pg-seoul-1", ["true"]), (error: Error) => error.name === "ThrottlingException");
    assert.equal(ssm.commandCalls(SendCommandCommand).length, 3);
  });

  it("does not retry errors that are not throttling", async () => {
    ssm.on(SendCommandCommand).rejects(Object.assign(new Error("Instances [i-0aaaaaaaaaaaaaaa1] not in a valid state"), { name: "InvalidInstanceId" }));
    const { t } = transport();
    await assert.rejects(t.run("pg-seoul-1", ["true"]), /not in a valid state/);
    assert.equal(ssm.commandCalls(SendCommandCommand).length, 1);
  });

  it("refuses a node it has no instance for, without calling AWS", async () => {
    const { t } = transport();
    await assert.rejects(t.run("haproxy-9", ["true"]), /haproxy-9: no instance known/);
    assert.equal(ssm.calls().length, 0);
  });

  it("refuses output SSM truncated instead of returning half of it", async () => {
    ssm.on(SendCommandCommand).resolves({ Command: { CommandId: "cmd-7" } });
    ssm.on(GetCommandInvocationCommand).resolves({ Status: "Success", StatusDetails: "Success", ResponseCode: 0, StandardOutputContent: "x".repeat(24_000) });
    const { t } = transport();
    await assert.rejects(t.run("pg-seoul-1", ["cat", "big"]), /truncated/);
  });
});

describe("SsmTransport helpers", () => {
  it("readFile ships the file gzip+base64 and restores it exactly", async () => {
    const content = "scope: pg-multiregion\n# ünïcode\n".repeat(50);
    ssm.on(SendCommandCommand).resolves({ Command: { CommandId: "cmd-8" } });
    ssm
      .on(GetCommandInvocationCommand)
      .resolves({ Status: "Success", StatusDetails: "Success", ResponseCode: 0, StandardOutputContent: `${gzipSync(Buffer.from(content)).toString("base64")}\n` });
    const { t } = transport();
    assert.equal(await t.readFile("pg-seoul-1", "/etc/patroni/patroni.yml"), content);
    assert.match(sentScript(), /'gzip -c -- "\$1" \| base64 -w0' 'pgha-read' '\/etc\/patroni\/patroni.yml'/);
  });

  it("serviceActive is systemctl is-active's exit code; signalProcesses counts what it signalled", async () => {
    ssm.on(SendCommandCommand).resolves({ Command: { CommandId: "cmd-9" } });
    ssm
      .on(GetCommandInvocationCommand)
      .resolvesOnce({ Status: "Failed", StatusDetails: "Failed", ResponseCode: 3 })
      .resolves({ Status: "Success", StatusDetails: "Success", ResponseCode: 0, StandardOutputContent: "2\n" });
    const { t } = transport();
    assert.equal(await t.serviceActive("pg-seoul-1", "patroni.service"), false);
    assert.equal(await t.signalProcesses("pg-seoul-1", "patroni", "SIGHUP"), 2);
    assert.match(sentScript(1), /'pgha-signal' 'HUP' '-f' 'bin\/patroni '/);
  });

  it("spawn is refused with a reason (streams need Session Manager)", () => {
    const { t } = transport();
    assert.throws(() => t.spawn("pg-seoul-1", ["python3", "writer.py"]), /Session Manager/);
  });

  it("recognises throttling by name, HTTP 429 and SDK retry metadata", () => {
    assert.ok(isThrottling(throttle()));
    assert.ok(isThrottling({ name: "Whatever", $metadata: { httpStatusCode: 429 } }));
    assert.ok(isThrottling({ name: "X", $retryable: { throttling: true } }));
    assert.ok(!isThrottling(new InvocationDoesNotExist({ message: "no", $metadata: {} })));
    assert.ok(!isThrottling(undefined));
  });
});

describe("the script a run becomes, executed by /bin/sh", () => {
  const dir = mkdtempSync(join(tmpdir(), "pgha-ssm-script-"));
  const user = execFileSync("id", ["-un"], { encoding: "utf8" }).trim();
  const runScript = (script: string): string => {
    const file = join(dir, `script-${Math.random().toString(16).slice(2)}.sh`);
    writeFileSync(file, script);
    return execFileSync("/bin/sh", [file], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LEAK: "from-the-agent" } });
  };

  it("passes argv verbatim (spaces, quotes, $, globs) and only the listed environment", () => {
    const argv = ["sh", "-c", 'printf "%s|" "$@"; printf "\\n%s %s %s" "$PGHA_X" "${LEAK:-unset}" "$HOME"', "zero", "a b", "it's", "$HOME", "*", ""];
    const out = runScript(remoteScript(argv, { user: user === "root" ? undefined : user, env: { PGHA_X: "x y'z" } }));
    const [args, envLine] = out.split("\n");
    assert.equal(args, "a b|it's|$HOME|*||");
    const home = execFileSync("sh", ["-c", `getent passwd ${user} | cut -d: -f6`], { encoding: "utf8" }).trim();
    assert.equal(envLine, `x y'z unset ${home}`);
  });

  it("feeds input on stdin (gzip+base64 in the script, never plain text)", () => {
    const input = "ttl: 25\nparameters:\n  max_connections: 150\n";
    const script = remoteScript(["cat"], { input });
    assert.ok(!script.includes("max_connections"), "input travels encoded");
    assert.equal(runScript(script), input);
    const packed = /printf '%s' '([^']+)'/.exec(script)?.[1] ?? "";
    assert.equal(gunzipSync(Buffer.from(packed, "base64")).toString("utf8"), input);
  });

  it("sources env files on the node, so their values never appear in the script", () => {
    const envFile = join(dir, "patroni.env");
    writeFileSync(envFile, "PATRONI_RESTAPI_PASSWORD=s3cr3tValue\n", { mode: 0o600 });
    const script = remoteScript(["sh", "-c", 'echo "$PATRONI_RESTAPI_PASSWORD"'], { envFiles: [envFile] });
    assert.ok(!script.includes("s3cr3tValue"));
    assert.equal(runScript(script).trim(), "s3cr3tValue");
  });

  it("fails with 125 for an account the node does not have", () => {
    assert.throws(
      () => runScript(remoteScript(["true"], { user: "no-such-user-pgha" })),
      (error: { status?: number }) => error.status === 125,
    );
  });
});
