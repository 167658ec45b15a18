/**
 * A tiny emitter for haproxy.cfg: sections of directives, each directive a
 * list of tokens. HAProxy splits lines on white space, so a token holding a
 * space, a tab, a newline or a `#` would silently change the meaning of the
 * line; the emitter refuses such tokens instead of quoting them.
 */
export type HaproxyDirective = (string | number)[];

export interface HaproxySection {
  /** e.g. ["global"], ["defaults"], ["listen", "pg_primary"]. */
  header: string[];
  directives: HaproxyDirective[];
}

const SAFE_TOKEN = /^[^\s#"'\\]+$/;

function token(value: string | number, where: string): string {
  const text = String(value);
  if (!SAFE_TOKEN.test(text)) throw new Error(`haproxy.cfg: unsafe token ${JSON.stringify(text)} in ${where}`);
  return text;
}

export function emitHaproxyConfig(sections: HaproxySection[], preamble: string[] = []): string {
  const lines = preamble.map((line) => `# ${line}`);
  for (const section of sections) {
    const header = section.header.map((t) => token(t, "a section header")).join(" ");
    if (lines.length > 0) lines.push("");
    lines.push(header);
    for (const directive of section.directives) {
      if (directive.length === 0) throw new Error(`haproxy.cfg: empty directive in ${header}`);
      lines.push(`    ${directive.map((t) => token(t, header)).join(" ")}`);
    }
  }
  return `${lines.join("\n")}\n`;
}
