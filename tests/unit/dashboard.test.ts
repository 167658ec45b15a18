import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, test } from "node:test";
import * as prettier from "prettier";
import { DASHBOARD_FILE, dashboardQueries, defaultDashboardPlan, grafanaDashboard, grafanaDashboardText } from "../../cloud-init/dashboard";
import { buildClusterPlan } from "../../plan";

const ROOT = path.join(__dirname, "..", "..");

describe("Grafana dashboard", () => {
  const dashboard = grafanaDashboard(defaultDashboardPlan());

  test(`${DASHBOARD_FILE} is the renderer's output for the default plan (regenerate: npx tsx cloud-init/dashboard.ts)`, () => {
    assert.equal(fs.readFileSync(path.join(ROOT, DASHBOARD_FILE), "utf8"), grafanaDashboardText(defaultDashboardPlan()));
  });

  test("the generated text is already as Prettier formats it (npm run lint checks the file)", async () => {
    const file = path.join(ROOT, DASHBOARD_FILE);
    const text = grafanaDashboardText(defaultDashboardPlan());
    assert.equal(await prettier.format(text, { ...(await prettier.resolveConfig(file)), filepath: file }), text);
  });

  test("every panel has a unique id, a title and at least one non-empty query", () => {
    const ids = dashboard.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, `duplicate panel ids: ${ids.join(", ")}`);
    for (const panel of dashboard.panels) {
      assert.ok(panel.title.length > 0, `panel ${panel.id} has no title`);
      assert.ok(panel.targets.length > 0, `${panel.title}: no query`);
      for (const target of panel.targets) assert.ok(target.expr.trim().length > 0, `${panel.title}: empty expr`);
      const refIds = panel.targets.map((t) => t.refId);
      assert.equal(new Set(refIds).size, refIds.length, `${panel.title}: duplicate refIds`);
    }
  });

  test("schema 39, a Prometheus data source variable, a region variable; panels inside the 24-column grid without overlap", () => {
    assert.equal(dashboard.schemaVersion, 39);
    const [datasource, region] = dashboard.templating.list;
    assert.deepEqual([datasource.type, datasource.name, datasource.query], ["datasource", "datasource", "prometheus"]);
    assert.equal(region.name, "region");
    assert.ok(region.type === "custom");
    assert.deepEqual(region.query.split(","), ["seoul", "tokyo", "singapore"]);
    const cells = new Set<string>();
    for (const { gridPos, title } of dashboard.panels) {
      assert.ok(gridPos.x >= 0 && gridPos.x + gridPos.w <= 24, `${title} leaves the grid`);
      for (let x = gridPos.x; x < gridPos.x + gridPos.w; x++) {
        for (let y = gridPos.y; y < gridPos.y + gridPos.h; y++) {
          assert.ok(!cells.has(`${x},${y}`), `${title} overlaps another panel at ${x},${y}`);
          cells.add(`${x},${y}`);
        }
      }
    }
    for (const panel of dashboard.panels) assert.equal(panel.datasource.uid, "${datasource}", `${panel.title} does not use the data source variable`);
  });

  test("every query filters on the cluster; region-scoped queries use the variable", () => {
    for (const panel of dashboard.panels) {
      for (const { expr } of panel.targets) {
        assert.match(expr, /cluster="pg-multiregion"/, `${panel.title}: ${expr}`);
        assert.match(expr, /region=~"\$region"/, `${panel.title}: ${expr}`);
      }
    }
  });

  test("dashboardQueries substitutes every variable: region to any, $__rate_interval to 4 × the scrape interval", () => {
    const queries = dashboardQueries(dashboard);
    assert.equal(queries.length, dashboard.panels.flatMap((p) => p.targets).length);
    for (const { panel, expr } of queries) assert.ok(!expr.includes("$"), `${panel}: ${expr}`);
    assert.ok(
      queries.some((q) => q.expr.includes("[60s])")),
      "15 s scrapes: a 60 s rate window",
    );
    const lab = dashboardQueries(grafanaDashboard(buildClusterPlan({ monitoring: { scrapeIntervalSeconds: 2 } }, { stack: "dev" })));
    assert.ok(
      lab.some((q) => q.expr.includes("[8s])")),
      "2 s scrapes: an 8 s rate window",
    );
    // node_exporter is scraped every 15 s at most: its rates span four of its own scrapes, not the plan's.
    const cpu = lab.find((q) => q.expr.includes("node_cpu_seconds_total"));
    assert.match(cpu?.expr ?? "", /\[60s\]\)/, "node_exporter's rate window at a 2 s plan");
    assert.ok(lab.every((q) => q.expr.includes('region=~".+"')));
  });

  test("dashboardQueries refuses a variable it does not know", () => {
    const broken = structuredClone(dashboard);
    broken.panels[0].targets[0].expr = 'up{node="$nodename"}';
    assert.throws(() => dashboardQueries(broken), /unknown variable \$nodename/);
  });
});
