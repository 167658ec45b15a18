import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, test } from "node:test";

/**
 * The documentation's relative links resolve: every `[text](path#anchor)` in
 * README.md and docs/*.md names a file (or folder) that exists and, for a
 * Markdown target, a heading it has, by GitHub's anchor rules. Links to other
 * sites (`https:`, `mailto:`) are not followed.
 */

const ROOT = path.join(__dirname, "..", "..");

/** README.md and every Markdown file under docs/, relative to the root with forward slashes. */
function documentationFiles(): string[] {
  const out = ["README.md"];
  const walk = (dir: string): void => {
    if (!fs.existsSync(path.join(ROOT, dir))) return;
    for (const entry of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
      const rel = `${dir}/${entry.name}`;
      if (entry.isDirectory()) walk(rel);
      else if (entry.isFile() && entry.name.endsWith(".md")) out.push(rel);
    }
  };
  walk("docs");
  return out.sort();
}

/** The text outside fenced code blocks, line by line (fence lines become empty, so line numbers stay). */
function proseLines(markdown: string): string[] {
  let fence: string | undefined;
  return markdown.split("\n").map((line) => {
    const opener = /^\s{0,3}(`{3,}|~{3,})/.exec(line);
    if (fence === undefined) {
      if (opener) {
        fence = opener[1];
        return "";
      }
      return line;
    }
    // A fence closes with the same character, at least as long, and nothing else on the line.
    const closer = opener?.[1];
    if (closer?.startsWith(fence[0]) && closer.length >= fence.length && line.trim() === closer) fence = undefined;
    return "";
  });
}

/** A line without its inline code spans (a link inside backticks is text, not a link). */
function withoutCodeSpans(line: string): string {
  return line.replace(/(`+)[\s\S]*?\1/g, "");
}

/**
 * GitHub's anchor for a heading: its rendered text lowercased, every character
 * that is not a letter, digit, space, '-' or '_' dropped, spaces turned into
 * '-'; a repeated anchor gets '-1', '-2', … in order.
 */
export function githubSlug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, "$1") // links and images: their text
    .replace(/<[^>]+>/g, "") // inline HTML
    .replace(/`/g, "");
  return text
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, "")
    .replace(/ /g, "-");
}

/** Every anchor a Markdown file offers: its headings' slugs (with GitHub's suffixes) and explicit `id`/`name` anchors. */
export function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const line of proseLines(markdown)) {
    const heading = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading) {
      const base = githubSlug(heading[1]);
      const count = seen.get(base) ?? 0;
      seen.set(base, count + 1);
      anchors.add(count === 0 ? base : `${base}-${count}`);
    }
    for (const m of line.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) anchors.add(m[1]);
  }
  return anchors;
}

interface Link {
  file: string;
  line: number;
  target: string;
}

/** The relative links of a Markdown file (inline `[x](target)` and reference definitions `[x]: target`). */
export function relativeLinks(file: string, markdown: string): Link[] {
  const links: Link[] = [];
  proseLines(markdown).forEach((raw, i) => {
    const line = withoutCodeSpans(raw);
    const targets: string[] = [];
    for (const m of line.matchAll(/\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)/g)) targets.push(m[1]);
    const definition = /^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$/.exec(line);
    if (definition) targets.push(definition[1]);
    for (const target of targets) {
      if (target === "" || /^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:, …
      links.push({ file, line: i + 1, target });
    }
  });
  return links;
}

/** Why a link does not resolve, or undefined when it does. */
function brokenReason(link: Link): string | undefined {
  const hash = link.target.indexOf("#");
  const pathPart = decodeURIComponent(hash < 0 ? link.target : link.target.slice(0, hash));
  const anchor = hash < 0 ? undefined : decodeURIComponent(link.target.slice(hash + 1));
  const resolved = pathPart === "" ? path.join(ROOT, link.file) : path.resolve(path.dirname(path.join(ROOT, link.file)), pathPart);
  if (!resolved.startsWith(ROOT)) return `${pathPart} is outside the repository`;
  if (!fs.existsSync(resolved)) return `${path.relative(ROOT, resolved)} does not exist`;
  if (anchor === undefined || anchor === "") return undefined;
  if (!resolved.endsWith(".md")) return `#${anchor} points into ${path.relative(ROOT, resolved)}, which is not Markdown`;
  if (!anchorsOf(fs.readFileSync(resolved, "utf8")).has(anchor)) return `${path.relative(ROOT, resolved)} has no heading with the anchor #${anchor}`;
  return undefined;
}

describe("documentation links", () => {
  test("GitHub's anchor rules, as the check applies them", () => {
    assert.equal(githubSlug("`pulumi up` means the cluster works"), "pulumi-up-means-the-cluster-works");
    assert.equal(githubSlug("First boot: what it waits for and what it refuses"), "first-boot-what-it-waits-for-and-what-it-refuses");
    assert.equal(githubSlug("The policy pack (`policy/`)"), "the-policy-pack-policy");
    assert.equal(githubSlug("What the WAN costs (`wan proof`, `wan measure`, `wan stability`)"), "what-the-wan-costs-wan-proof-wan-measure-wan-stability");
    assert.equal(githubSlug("1. Let GitHub's OIDC tokens into the account (once per account)"), "1-let-githubs-oidc-tokens-into-the-account-once-per-account");
    assert.equal(githubSlug("Seoul ⇄ Singapore — snake_case"), "seoul--singapore--snake_case");
    assert.deepEqual([...anchorsOf("# A\n## A\n```\n# not a heading\n```\n### A\n")], ["a", "a-1", "a-2"]);
  });

  test("a broken file or anchor is found (control)", () => {
    const links = relativeLinks(
      "docs/x.md",
      "[ok](../README.md) [gone](missing.md) `[code](missing.md)` [web](https://example.com)\n```\n[fenced](missing.md)\n```\n[bad anchor](../README.md#no-such-heading)\n",
    );
    assert.deepEqual(
      links.map((l) => l.target),
      ["../README.md", "missing.md", "../README.md#no-such-heading"],
    );
    assert.deepEqual(
      links.map((l) => brokenReason(l) !== undefined),
      [false, true, true],
    );
  });

  for (const file of documentationFiles()) {
    test(`${file}: every relative link resolves to a file and heading`, () => {
      const broken = relativeLinks(file, fs.readFileSync(path.join(ROOT, file), "utf8"))
        .map((link) => ({ link, reason: brokenReason(link) }))
        .filter((b) => b.reason !== undefined)
        .map((b) => `${b.link.file}:${b.link.line}: (${b.link.target}) ${b.reason}`);
      assert.deepEqual(broken, []);
    });
  }

  test("README.md's first code block keeps the two commands CI and users run, byte for byte", () => {
    const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
    const block = /^```sh\n([\s\S]*?)^```$/m.exec(readme);
    assert.ok(block, "README.md has no ```sh code block");
    const lines = block[1].split("\n");
    assert.ok(lines.includes("npm ci && sudo npm run setup && sudo npm run test:lab"), block[1]);
    assert.ok(lines.includes("sudo npm test"), block[1]);
  });
});
