/**
 * A live table on the terminal: redrawn in place on a TTY, one line per
 * change otherwise (CI logs).
 */
export interface Column {
  key: string;
  title: string;
  width: number;
  align?: "left" | "right";
}

export class LiveTable {
  private readonly rows: Record<string, string>[] = [];
  private drawn = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly tty: boolean;

  constructor(
    private readonly columns: Column[],
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    // isTTY is undefined on a pipe or a file, whatever its type says.
    this.tty = (out.isTTY as boolean | undefined) === true && process.env.CI !== "true";
  }

  add(row: Record<string, string>): number {
    this.rows.push(row);
    this.changed(this.rows.length - 1);
    return this.rows.length - 1;
  }

  update(index: number, values: Record<string, string>): void {
    const row = this.rows[index];
    if (!row) return;
    const before = JSON.stringify(row);
    Object.assign(row, values);
    if (JSON.stringify(row) !== before) this.changed(index);
  }

  private format(row: Record<string, string>): string {
    return this.columns
      .map((c) => {
        let text = row[c.key] ?? "";
        if (text.length > c.width) text = `${text.slice(0, c.width - 1)}…`;
        return c.align === "right" ? text.padStart(c.width) : text.padEnd(c.width);
      })
      .join("  ")
      .trimEnd();
  }

  header(): string {
    const titles = Object.fromEntries(this.columns.map((c) => [c.key, c.title]));
    return `${this.format(titles)}\n${this.columns.map((c) => "─".repeat(c.width)).join("  ")}`;
  }

  private changed(index: number): void {
    if (!this.tty) {
      if (index === 0 && this.drawn === 0) {
        this.out.write(`${this.header()}\n`);
        this.drawn = 1;
      }
      this.out.write(`${this.format(this.rows[index])}\n`);
      return;
    }
    this.timer ??= setTimeout(() => {
      this.redraw();
    }, 200);
  }

  redraw(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.tty) return;
    const lines = [this.header(), ...this.rows.map((r) => this.format(r))].join("\n").split("\n");
    const width = this.out.columns ?? 160;
    const text = lines.map((l) => (l.length > width ? l.slice(0, width - 1) : l));
    if (this.drawn) this.out.write(`\x1b[${this.drawn}A\x1b[J`);
    this.out.write(`${text.join("\n")}\n`);
    this.drawn = text.length;
  }

  /** Final rendering (also on a non-TTY: the whole table once). */
  finish(): string {
    if (this.tty) this.redraw();
    return [this.header(), ...this.rows.map((r) => this.format(r))].join("\n");
  }
}
