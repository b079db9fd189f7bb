// End-of-test summary shared by the scripts (handleSummary replaces k6's text summary, and the
// stock one lives on a CDN we cannot reach). Prints the metrics that matter, every threshold with
// its verdict, and derived checks (message loss from totals); writes report.json next to the
// --summary-export file when RESULTS_DIR is set.

function fmt(v) {
  if (v === undefined || v === null) return '-';
  if (typeof v !== 'number') return String(v);
  if (Math.abs(v) >= 1000) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function describe(name, m) {
  const v = m.values;
  if (m.type === 'trend') {
    return `${name.padEnd(24)} avg=${fmt(v.avg)} p50=${fmt(v.med)} p90=${fmt(v['p(90)'])} ` +
      `p95=${fmt(v['p(95)'])} p99=${fmt(v['p(99)'])} max=${fmt(v.max)}`;
  }
  if (m.type === 'counter') return `${name.padEnd(24)} ${fmt(v.count)} (${fmt(v.rate)}/s)`;
  if (m.type === 'rate') return `${name.padEnd(24)} ${(100 * v.rate).toFixed(2)}% (${v.passes} of ${v.passes + v.fails})`;
  return `${name.padEnd(24)} value=${fmt(v.value)} min=${fmt(v.min)} max=${fmt(v.max)}`;
}

export function count(data, name) {
  const m = data.metrics[name];
  return m ? m.values.count || 0 : 0;
}

export function trend(data, name) {
  const m = data.metrics[name];
  if (!m) return null;
  const v = m.values;
  return { avg: v.avg, p50: v.med, p90: v['p(90)'], p95: v['p(95)'], p99: v['p(99)'], max: v.max, n: v.count };
}

/**
 * `derivedChecks`: [{name, ok, detail}] computed by the script from totals; `figures`: an object
 * of headline numbers for report.json.
 */
export function summarize(data, script, derivedChecks, figures) {
  const lines = [];
  const dur = data.state.testRunDurationMs / 1000;
  lines.push(`\n== ${script}: ${dur.toFixed(0)} s, VUs max ${data.metrics.vus_max ? data.metrics.vus_max.values.max : '?'} ==`);
  const wanted = Object.keys(data.metrics)
    .filter((n) => !/^(http_|data_|iteration_duration|group_duration|checks)/.test(n) || n === 'checks')
    .sort();
  for (const name of wanted) {
    if (name.includes('{')) continue; // sub-metrics are listed with their thresholds
    lines.push('  ' + describe(name, data.metrics[name]));
  }
  // Tagged sub-metrics (errors by code etc.) that have samples.
  for (const name of Object.keys(data.metrics).sort()) {
    if (name.includes('{') && data.metrics[name].type === 'counter' && count(data, name) > 0) {
      lines.push('  ' + describe(name, data.metrics[name]));
    }
  }
  const thresholds = [];
  for (const [name, m] of Object.entries(data.metrics)) {
    for (const [expr, t] of Object.entries(m.thresholds || {})) {
      thresholds.push({ metric: name, expr, ok: !!t.ok });
    }
  }
  thresholds.sort((a, b) => (a.metric + a.expr).localeCompare(b.metric + b.expr));
  lines.push('thresholds:');
  for (const t of thresholds) lines.push(`  ${t.ok ? 'PASS' : 'FAIL'} ${t.metric}: ${t.expr}`);
  for (const c of derivedChecks) lines.push(`  ${c.ok ? 'PASS' : 'FAIL'} ${c.name}: ${c.detail}`);
  const passed = thresholds.filter((t) => t.ok).length + derivedChecks.filter((c) => c.ok).length;
  const failed = thresholds.length + derivedChecks.length - passed;
  lines.push(`${script}: ${passed} passed, ${failed} failed\n`);
  const text = lines.join('\n');

  const out = { stdout: text };
  if (__ENV.RESULTS_DIR) {
    out[`${__ENV.RESULTS_DIR}/summary.txt`] = text;
    out[`${__ENV.RESULTS_DIR}/report.json`] = JSON.stringify({
      script,
      vus: Number(__ENV.VUS || 0),
      duration_s: dur,
      passed,
      failed,
      thresholds,
      derived_checks: derivedChecks,
      figures,
    }, null, 2);
  }
  return out;
}
